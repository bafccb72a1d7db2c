"""Search spaces of studies (mininsnn.tune): declared on the command line (``--param``,
``--grid``) or in a JSON file, checked against the settings table (mininsnn.config.SETTINGS).

    {setting: {"choices": [...]}}   or   {setting: {"low": L, "high": H, "log": bool, "step": S}}

:func:`check_space` normalises a space and states every rule once; :func:`grid_points` lists a
grid. No Optuna here.
"""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

from mininsnn.config import SETTINGS, ConfigError

__all__ = ["PAPER_SPACE", "RATES", "BY_NAME", "setting_kind", "parse_param", "read_space_file",
           "check_space", "grid_points", "describe_space"]

# mininsnn's default search space: the settings the paper tuned (beta, threshold, slope, lr,
# dropout) and the targets of the mse_count loss. The ranges are mininsnn's: they enclose the
# values of all six paper configurations (mininsnn.config.CONFIGS).
PAPER_SPACE = {
    "beta": {"low": 0.3, "high": 0.999},
    "threshold": {"low": 0.25, "high": 5.0, "log": True},
    "slope": {"low": 2.0, "high": 30.0, "log": True},
    "lr": {"low": 1e-4, "high": 1e-2, "log": True},
    "dropout": {"low": 0.0, "high": 0.4},
    "correct_rate": {"low": 0.6, "high": 1.0},
    "incorrect_rate": {"low": 0.0, "high": 0.3},
}
RATES = ("correct_rate", "incorrect_rate")      # used by the mse_count loss only


#: the settings that have a command-line flag, by key and by flag name (num_steps, num-steps)
BY_NAME = {}
for _s in SETTINGS:
    if _s.help is not None:
        BY_NAME[_s.key] = BY_NAME[_s.flag[2:]] = _s



def setting_kind(s) -> str:
    """How a setting's values are drawn: 'float', 'int' (ranges or choices), 'bool', 'choice'."""
    if s.key == "bits" or s.default is None:
        return "int"                          # bits and the optional integers
    if isinstance(s.default, bool):
        return "bool"
    if getattr(s.check, "choices", None) is not None:
        return "choice"
    return "float" if isinstance(s.default, float) else "int"


def _setting(key: str, where: str):
    s = BY_NAME.get(key)
    if s is None:
        raise ConfigError(f"{where}: unknown setting {key!r}; settings: "
                          f"{', '.join(sorted({x.key for x in BY_NAME.values()}))}")
    return s


def _parse_value(s, text: str, where: str):
    """A value of setting ``s`` written on the command line (not yet range-checked)."""
    kind, t = setting_kind(s), text.strip()
    try:
        if kind == "bool":
            if t.lower() not in ("true", "false", "yes", "no", "1", "0"):
                raise ValueError
            return t.lower() in ("true", "yes", "1")
        if kind == "int":
            return None if s.key == "bits" and t.lower() == "none" else int(t)
        if kind == "float":
            return float(t)
        return t
    except ValueError:
        what = {"int": "an integer", "float": "a number"}.get(kind, "true or false")
        raise ConfigError(f"{where}: {t!r} is not {what}") from None


def parse_param(text: str, where: str = "--param") -> tuple[str, dict]:
    """(setting, spec) of one command-line declaration:

        lr=1e-4:1e-2:log      a range (log-uniform)        beta=0.9:0.999     a range
        num_steps=10:50:10    an integer range, step 10    loss=mse_count,ce_rate   choices
    """
    key, eq, spec = text.partition("=")
    key = key.strip()
    if not eq or not key or not spec.strip():
        raise ConfigError(f"{where} {text!r}: expected KEY=LOW:HIGH[:log|:STEP] or KEY=A,B,...")
    s = _setting(key, f"{where} {text!r}")
    where = f"{where} {s.key}"
    if ":" in spec:
        parts = spec.split(":")
        if len(parts) not in (2, 3):
            raise ConfigError(f"{where}: a range is LOW:HIGH[:log|:STEP], got {spec!r}")
        out = {"low": _parse_value(s, parts[0], where), "high": _parse_value(s, parts[1], where)}
        if len(parts) == 3:
            if parts[2].strip().lower() == "log":
                out["log"] = True
            else:
                out["step"] = _parse_value(s, parts[2], where)
        return s.key, out
    values = [_parse_value(s, v, where) for v in spec.split(",")]
    if len(values) == 1:
        raise ConfigError(f"{where}: one value is not a search; fix it with its own flag "
                          f"({s.flag} {spec}) or give several (A,B,...) or a range (LOW:HIGH)")
    return s.key, {"choices": values}


def read_space_file(path) -> dict:
    """The search space in JSON file ``path``: {setting: [choices...] | {"choices": [...]} |
    {"low": L, "high": H[, "log": true][, "step": S]}} (checked by :func:`check_space`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"search space {path}: cannot read it ({e.strerror or e})") from None
    try:
        space = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"search space {path}: not valid JSON ({e})") from None
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"search space {path}: expected a JSON object {{setting: range or "
                          f"choices}}, got {type(space).__name__ if space else 'an empty one'}")
    return space


def _check_value(s, v, where: str):
    if v is None and s.key != "bits":
        raise ConfigError(f"{where}: None cannot be given on the command line of a trial")
    try:
        return s.check(v)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


def check_space(space: dict, base: dict, where: str, grid: bool = False) -> dict:
    """The normalised search space, or a one-line ConfigError naming ``where`` and the setting.

    ``space``: {setting: [v, ...] or {"choices": [v, ...]}} or {setting: {"low": L, "high": H[,
    "log": bool][, "step": S]}} (float and integer settings; an integer setting draws integers).
    ``base``: the validated configuration the space varies. ``grid``: every setting must list
    values (integer ranges are expanded to LOW, LOW+STEP, ..., HIGH). Each value and each end of
    a range passes the setting's own check; the targets of mse_count must stay ordered
    (correct_rate > incorrect_rate) at every point of the space."""
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{where}: the search space is empty")
    out = {}
    for key, spec in space.items():
        s = _setting(key, where)
        w = f"{where}: {s.key}"
        if s.key in out:
            raise ConfigError(f"{w} is declared twice")
        if isinstance(spec, list):
            spec = {"choices": spec}                  # [A, B] is short for {"choices": [A, B]}
        if not isinstance(spec, dict) or not (set(spec) == {"choices"} or
                                              {"low", "high"} <= set(spec) <= {"low", "high",
                                                                               "log", "step"}):
            raise ConfigError(f"{w}: expected [A, B, ...], {{\"choices\": [...]}} or "
                              f"{{\"low\": L, \"high\": H[, \"log\": true][, \"step\": S]}}, "
                              f"got {json.dumps(spec)}")
        out[s.key] = _check_choices(s, spec["choices"], w) if "choices" in spec else \
            _check_range(s, spec, w, grid)
    if grid:
        return out
    if "validation" in out:
        raise ConfigError(f"{where}: validation cannot be searched: every trial must be scored "
                          f"on the same validation set")
    _check_rates(out, base, where)
    return out


def _check_choices(s, values, w: str) -> dict:
    """{"choices": values}, each value checked by setting ``s``."""
    if not isinstance(values, list) or len(values) < 1:
        raise ConfigError(f"{w}: choices must be a non-empty list, got {json.dumps(values)}")
    values = [_check_value(s, v, w) for v in values]
    if any(isinstance(v, (list, tuple, dict)) for v in values):
        raise ConfigError(f"{w}: choices must be numbers, strings, true/false or null")
    if len({json.dumps(v) for v in values}) != len(values):
        raise ConfigError(f"{w}: choices {json.dumps(values)} repeat a value")
    return {"choices": values}


def _check_range(s, spec: dict, w: str, grid: bool) -> dict:
    """{"low", "high", "log", "step"} of a range of setting ``s`` (a grid: its values listed)."""
    kind = setting_kind(s)
    if kind not in ("float", "int"):
        raise ConfigError(f"{w} takes one of a list of values, not a range; give choices "
                          f"(A,B,... or [A, B])")
    lo, hi, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    number = "an integer" if kind == "int" else "a number"
    for name, v in (("low", lo), ("high", hi)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or \
                (kind == "int" and not float(v).is_integer()):
            raise ConfigError(f"{w}: {name} must be {number}, got {json.dumps(v)}")
    lo, hi = _check_value(s, lo, w + " low"), _check_value(s, hi, w + " high")
    if not lo < hi:
        raise ConfigError(f"{w}: low {lo} must be below high {hi}")
    if not isinstance(log, bool):
        raise ConfigError(f"{w}: log must be true or false, got {json.dumps(log)}")
    if log and lo <= 0:
        raise ConfigError(f"{w}: a log range needs low > 0, got {lo}")
    if step is not None:
        if log:
            raise ConfigError(f"{w}: give log or step, not both")
        if isinstance(step, bool) or not isinstance(step, (int, float)) or \
                not math.isfinite(step) or step <= 0 or \
                (kind == "int" and not float(step).is_integer()):
            raise ConfigError(f"{w}: step must be {number} > 0, got {json.dumps(step)}")
        step = int(step) if kind == "int" else float(step)
    if grid:
        if kind != "int":
            raise ConfigError(f"{w}: a grid lists its values (A,B,...); a range of "
                              f"{s.key} has no end of values")
        return {"choices": list(range(int(lo), int(hi) + 1, step or 1))}
    return {"low": lo, "high": hi, "log": log, "step": step}


def _extremes(spec: dict | None, fixed):
    """(smallest, largest) value a setting can take in a space (or its fixed value)."""
    if spec is None:
        return fixed, fixed
    if "choices" in spec:
        return min(spec["choices"]), max(spec["choices"])
    return spec["low"], spec["high"]


def _check_rates(space: dict, base: dict, where: str) -> None:
    losses = space.get("loss", {}).get("choices", [base["loss"]])
    rates = [k for k in RATES if k in space]
    if rates and "mse_count" not in losses:
        raise ConfigError(f"{where}: {' and '.join(rates)} set the targets of the mse_count loss;"
                          f" this study's loss is {', '.join(losses)}")
    lo_correct = _extremes(space.get("correct_rate"), base["correct_rate"])[0]
    hi_incorrect = _extremes(space.get("incorrect_rate"), base["incorrect_rate"])[1]
    if rates and not lo_correct > hi_incorrect:
        raise ConfigError(f"{where}: correct_rate can be {lo_correct} and incorrect_rate "
                          f"{hi_incorrect}, but correct_rate must exceed incorrect_rate at every "
                          f"point of the space")


def grid_points(space: dict) -> list[dict]:
    """Every point of a grid (a checked space of choices), the last setting varying fastest."""
    keys = list(space)
    return [dict(zip(keys, values))
            for values in itertools.product(*(space[k]["choices"] for k in keys))]


def describe_space(space: dict) -> str:
    """One line: 'lr 0.0001..0.01 (log), loss in {mse_count, ce_rate}'."""
    parts = []
    for k, spec in space.items():
        if "choices" in spec:
            parts.append(f"{k} in {{{', '.join(str(v) for v in spec['choices'])}}}")
        else:
            extra = " (log)" if spec["log"] else f" step {spec['step']}" if spec["step"] else ""
            parts.append(f"{k} {spec['low']:g}..{spec['high']:g}{extra}")
    return ", ".join(parts)

