"""What every command shares: the one-line usage error, the parser that raises it, flag types
and the setting flags made from mininsnn.config.SETTINGS."""
from __future__ import annotations

import argparse

from mininsnn.config import SETTINGS
from mininsnn.spec import SpecError, resolve_spec

__all__ = ["UsageError", "Parser", "EXIT_USAGE", "bits", "frac_bits", "model_spec", "SpecArg",
           "add_setting_flags", "check_positive"]

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad command-line input; the message is printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but errors are a one-line UsageError instead of usage text + sys.exit."""

    def error(self, message):
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def bits(text: str):
    """--bits: an integer (checked with the other settings), or none/fp/32 for full precision."""
    if text.lower() in ("none", "fp", "float", "32"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer 2..16 or 'none', got {text!r}")


def frac_bits(text: str):
    """--frac-bits: 'max', one integer, or three comma-separated integers (one per LIF layer)."""
    if text == "max":
        return "max"
    try:
        vals = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'max', an integer or three integers, got "
                                         f"{text!r}") from None
    if len(vals) not in (1, 3):
        raise argparse.ArgumentTypeError(f"expected 'max', an integer or three integers, got "
                                         f"{text!r}")
    return vals[0] if len(vals) == 1 else vals


class SpecArg(dict):
    """The checked spec of --model; ``where`` says where it was read, for later errors."""

    where = "spec"


def model_spec(text: str) -> SpecArg:
    """--model: a spec file, a built-in spec's name or a spec as JSON text, checked here so that a
    bad spec is refused before anything else is read (its one line names file, layer, field)."""
    try:
        spec, where = resolve_spec(text)
    except SpecError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    arg = SpecArg(spec)
    arg.where = where
    return arg


def add_setting_flags(p) -> None:
    """One flag per setting of mininsnn.config.SETTINGS that has a help line."""
    for s in SETTINGS:
        if s.help is None:
            continue
        kw = {"dest": s.key, "help": s.help}
        choices = getattr(s.check, "choices", None)
        if s.key == "bits":
            kw["type"] = bits
        elif s.key == "model":
            kw.update(type=model_spec, metavar="SPEC")
        elif isinstance(s.default, bool):
            kw["action"] = argparse.BooleanOptionalAction
        elif choices is not None:
            kw["choices"] = list(choices())
        else:                                   # numbers: the type their check parses
            kw["type"] = s.check.type
        p.add_argument(s.flag, **kw)


def check_positive(a, names) -> None:
    """UsageError '--NAME must be >= 1, got V' for the first given option below 1."""
    for name in names:
        v = getattr(a, name)
        if v is not None and v < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
