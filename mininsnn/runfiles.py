"""Reading a run folder back (mininsnn.runs writes it): training checkpoints, checked before
use; the metrics rows, seen through a folder a kill left unrepaired; a resumable run's last.h5.

Every problem is a one-line ConfigError naming the file.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from mininsnn.checkpoint import CheckpointError, load_checkpoint
from mininsnn.config import ConfigError
from mininsnn.optim import find_nonfinite

__all__ = ["CHECKPOINT_KIND", "os_reason", "checkpoint_epoch", "check_training_tree",
           "read_training_checkpoint", "load_run", "unstarted_run_config",
           "load_checkpoint_source", "read_metrics"]

CHECKPOINT_KIND = "mininsnn-run"


def os_reason(e: OSError) -> str:
    """The one-line reason of an OSError ('No space left on device'); h5py's messages run over
    several lines, so the errno's text is preferred."""
    if e.errno:
        return os.strerror(e.errno)
    lines = str(e).splitlines()
    return lines[0] if lines else type(e).__name__


def checkpoint_epoch(path: Path) -> int | None:
    """The epoch stored in the checkpoint ``path``; None if it is absent or unreadable."""
    try:
        return int(load_checkpoint(path)["epoch"])
    except (CheckpointError, KeyError, TypeError, ValueError, OSError):
        return None


def _finite_arrays(arrays, where: str) -> None:
    if not isinstance(arrays, dict) or not all(isinstance(a, np.ndarray)
                                                for a in arrays.values()):
        raise ConfigError(f"{where} is not a dict of arrays")
    bad = find_nonfinite(arrays)
    if bad is not None:
        raise ConfigError(f"{where} {bad} holds NaN or inf (a diverged run?)")


def check_training_tree(tree: dict, where) -> None:
    """ConfigError naming ``where`` unless ``tree`` has the entries of a training checkpoint
    (mininsnn.train.Trainer.state) with the right types, and finite weights, BatchNorm
    statistics and Adam moments. (Whether the arrays fit the configuration's network is
    checked by mininsnn.train.check_loadable.)"""
    if tree.get("kind") != CHECKPOINT_KIND or not isinstance(tree.get("config"), dict):
        raise ConfigError(f"{where} is not a mininsnn training checkpoint")
    for key, types in (("epoch", int), ("step", int), ("model", dict), ("optimizer", dict),
                       ("schedule", dict), ("rng", dict), ("history", list),
                       ("best", (dict, type(None)))):
        v = tree.get(key, KeyError)
        if v is KeyError:
            raise ConfigError(f"{where}: the checkpoint has no {key!r} entry (damaged?)")
        if not isinstance(v, types) or (types is int and (isinstance(v, bool) or v < 0)):
            raise ConfigError(f"{where}: the checkpoint's {key!r} entry is not "
                              f"{'a non-negative integer' if types is int else 'valid'}")
    history = tree["history"]
    if not all(isinstance(r, dict) for r in history) or len(history) != tree["epoch"]:
        raise ConfigError(f"{where}: the checkpoint's history does not hold one row per epoch")
    best = tree["best"]
    if best is not None and not (isinstance(best.get("epoch"), int)
                                 and 1 <= best["epoch"] <= tree["epoch"]
                                 and isinstance(best.get("test_acc"), float)
                                 and math.isfinite(best["test_acc"])):
        raise ConfigError(f"{where}: the checkpoint's 'best' entry is not valid")
    _finite_arrays(tree["model"], f"{where}: model entry")
    for key in ("exp_avg", "exp_avg_sq"):
        _finite_arrays(tree["optimizer"].get(key, {}), f"{where}: Adam {key}")


def read_training_checkpoint(path) -> dict:
    """The tree of the training checkpoint file ``path``; ConfigError naming the file if it is
    damaged, is not a mininsnn training checkpoint or holds NaN or inf."""
    try:
        tree = load_checkpoint(path)
    except CheckpointError as e:
        raise ConfigError(f"{e}; restore it or start a new run") from None
    check_training_tree(tree, path)
    return tree


def load_run(run_dir) -> dict:
    """The checkpoint tree of ``run_dir/last.h5``; ConfigError if the folder or file is unusable."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run dir {run_dir} does not exist; pass the folder of an earlier run")
    path = run_dir / "last.h5"
    if not path.exists():
        if not (run_dir / "config.json").exists():
            raise ConfigError(f"{run_dir} holds no run to resume (no last.h5 or config.json: a "
                              "start or --branch stopped before its first checkpoint?); delete "
                              "the folder and run the command again without --resume")
        raise ConfigError(f"{run_dir} has no last.h5 checkpoint to resume from; start it afresh "
                          "without --resume")
    return read_training_checkpoint(path)


def unstarted_run_config(run_dir) -> dict | None:
    """The saved config of a run folder that never finished an epoch (config.json, no last.h5):
    resuming it starts it from epoch 0. None for any other folder."""
    run_dir = Path(run_dir)
    if (run_dir / "last.h5").exists() or not (run_dir / "config.json").is_file():
        return None
    try:
        return json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        reason = os_reason(e) if isinstance(e, OSError) else "not valid JSON"
        raise ConfigError(f"{run_dir / 'config.json'}: {reason}, and the run has no finished "
                          "epoch; delete the folder and start it again") from None


def load_checkpoint_source(path) -> tuple[Path, dict]:
    """(file, tree) of a training checkpoint given as a file or as a run folder (its last.h5)."""
    path = Path(path)
    if path.is_dir():
        return path / "last.h5", load_run(path)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; pass a run folder or a checkpoint file")
    return path, read_training_checkpoint(path)


def read_metrics(run_dir) -> list[dict]:
    """The rows of ``run_dir/metrics.jsonl`` (empty list if there are none yet); last.h5's
    history instead when a kill left metrics.jsonl behind last.h5 (module docstring).
    ConfigError naming the file and line for a line that is not a JSON object."""
    run_dir = Path(run_dir)
    path, last = run_dir / "metrics.jsonl", run_dir / "last.h5"
    rows = []
    if path.exists():
        with open(path, encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    row = None
                if not isinstance(row, dict):
                    raise ConfigError(f"{path}: line {lineno} is not a JSON object (a damaged or "
                                      "hand-edited file?)")
                rows.append(row)
    try:                          # metrics are written after last.h5: older means behind
        behind = last.exists() and (not path.exists()
                                    or last.stat().st_mtime_ns >= path.stat().st_mtime_ns)
    except OSError:
        behind = False
    if behind:
        try:
            history = load_checkpoint(last)["history"]
        except (CheckpointError, KeyError):
            return rows
        if isinstance(history, list) and len(history) > len(rows):
            return [dict(r) for r in history]
    return rows

