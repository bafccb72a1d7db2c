"""Run folders: what a training run leaves on disk, and reading it back.

A run folder holds:

    config.json    the full run configuration
    command.txt    every command that trained this run (the first one and each resume), each
                   with its time and machine
    metrics.jsonl  one JSON object per epoch;   metrics.csv  the same rows as CSV
    steps.csv      step, epoch, lr, loss, train_acc of every batch
    last.h5        checkpoint after the last finished epoch;  best.h5  at the best test accuracy
    epochs/epochNNN.h5   with ``keep_epochs``: the checkpoint after every epoch (to branch from)

A checkpoint (mininsnn.checkpoint) holds the weights and BatchNorm buffers, the Adam moments, the
schedule state, the dropout RNG state, epoch, step, the configuration and the metric history, so
that resuming from ``last.h5`` reproduces the uninterrupted run bit for bit.
"""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from mininsnn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mininsnn.config import ConfigError

__all__ = ["RUN_FILES", "CHECKPOINT_KIND", "RunFolder", "check_new_run_dir", "load_run",
           "read_training_checkpoint", "load_checkpoint_source", "unstarted_run_config",
           "read_metrics", "machine", "command_line", "atomic_write_text"]

RUN_FILES = ("config.json", "command.txt", "metrics.jsonl", "metrics.csv", "steps.csv",
             "last.h5", "best.h5")
CHECKPOINT_KIND = "mininsnn-run"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: a crash leaves either
    the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise


def machine() -> str:
    """The CPU's model name and the versions that decide a run's bits and speed, e.g.
    'AMD EPYC, numpy 2.4.6, numba 0.68.1' (+ OPENBLAS_CORETYPE when set): the same command on
    another CPU can round differently (BENCHMARKS.md), so each command.txt line names it."""
    import numba
    import numpy
    cpu = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), None)
    except OSError:
        pass
    text = f"{cpu or platform.processor() or platform.machine()}, numpy {numpy.__version__}, " \
           f"numba {numba.__version__}"
    if os.environ.get("OPENBLAS_CORETYPE"):
        text += f", OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']}"
    return text


def command_line(argv) -> str:
    """The command.txt entry of a ``mininsnn`` command: a comment with time, folder and machine,
    then the command itself."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return (f"# {stamp}  cwd {os.getcwd()}  on {machine()}  invoked as: {shlex.join(sys.argv)}\n"
            f"mininsnn {shlex.join(argv)}")


class RunFolder:
    """The files of one run (see the module docstring)."""

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self):
        return f"RunFolder({str(self.path)!r})"

    def epoch_checkpoint(self, epoch: int) -> Path:
        """Where ``keep_epochs`` saves the checkpoint after ``epoch``: epochs/epochNNN.h5."""
        return self.path / "epochs" / f"epoch{epoch:03d}.h5"

    def prepare(self, config: dict, history: list, step: int, command: str) -> None:
        """Create the folder (or bring a resumed one in line with the restored state):
        config.json, command.txt appended, metrics from the history, steps cut to ``step``."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / "config.json", json.dumps(config, indent=2) + "\n")
        with open(self.path / "command.txt", "a", encoding="utf-8") as f:
            f.write(command.rstrip("\n") + "\n")
        self.write_metrics(history)
        steps = self.path / "steps.csv"
        if steps.exists():                 # drop batches trained after the checkpoint
            with open(steps, encoding="utf-8") as f:
                rows = f.read().splitlines()
            keep = rows[:1] + [r for r in rows[1:] if r and int(r.split(",", 1)[0]) < step]
            atomic_write_text(steps, "".join(r + "\n" for r in keep))

    def copy_steps_from(self, source_run: Path) -> None:
        """Start steps.csv as a copy of another run's (a branch continues its batches)."""
        src = Path(source_run) / "steps.csv"
        self.path.mkdir(parents=True, exist_ok=True)
        if src.exists():
            atomic_write_text(self.path / "steps.csv", src.read_text(encoding="utf-8"))

    def open_steps(self):
        """steps.csv opened for appending (header written if new)."""
        path = self.path / "steps.csv"
        new = not path.exists() or path.stat().st_size == 0
        f = open(path, "a", encoding="utf-8")
        if new:
            f.write("step,epoch,lr,loss,train_acc\n")
        return f

    def write_metrics(self, history: list) -> None:
        """Rewrite metrics.jsonl / metrics.csv from the history (atomically; the same rows an
        append would give, and consistent with last.h5 after a crash)."""
        lines = "".join(json.dumps(r) + "\n" for r in history)
        atomic_write_text(self.path / "metrics.jsonl", lines)
        buf = io.StringIO()
        if history:
            # every key of every row, in first-seen order (rows resumed from an older version
            # may lack columns that later rows have)
            fields = list(dict.fromkeys(k for r in history for k in r))
            w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
            w.writeheader()
            w.writerows(history)
        atomic_write_text(self.path / "metrics.csv", buf.getvalue())

    def save_epoch(self, tree: dict, improved: bool, keep: bool) -> None:
        """The files of a finished epoch: last.h5, best.h5 (if ``improved``), the kept epoch
        checkpoint (if ``keep``) and the metrics."""
        save_checkpoint(self.path / "last.h5", tree)
        if improved:
            save_checkpoint(self.path / "best.h5", tree)
        if keep:
            kept = self.epoch_checkpoint(tree["epoch"])
            kept.parent.mkdir(exist_ok=True)
            save_checkpoint(kept, tree)
        self.write_metrics(tree["history"])


def check_new_run_dir(run_dir) -> None:
    """ConfigError if ``run_dir`` already holds a run (never overwrite one)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} exists and is not a folder; choose another --out")
    found = [f for f in RUN_FILES if (run_dir / f).exists()]
    if found:
        raise ConfigError(f"{run_dir} already holds a run ({found[0]}); continue it with "
                          f"--resume {run_dir} or choose another --out")


def read_training_checkpoint(path) -> dict:
    """The tree of the training checkpoint file ``path``; ConfigError if it is damaged or is not
    a mininsnn training checkpoint."""
    try:
        tree = load_checkpoint(path)
    except CheckpointError as e:
        raise ConfigError(f"{e}; restore it or start a new run") from None
    if tree.get("kind") != CHECKPOINT_KIND or "config" not in tree:
        raise ConfigError(f"{path} is not a mininsnn training checkpoint")
    return tree


def load_run(run_dir) -> dict:
    """The checkpoint tree of ``run_dir/last.h5``; ConfigError if the folder or file is unusable."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run dir {run_dir} does not exist; pass the folder of an earlier run")
    path = run_dir / "last.h5"
    if not path.exists():
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
    except ValueError:
        raise ConfigError(f"{run_dir / 'config.json'} is not valid JSON and the run has no "
                          "finished epoch; delete the folder and start it again") from None


def load_checkpoint_source(path) -> tuple[Path, dict]:
    """(file, tree) of a training checkpoint given as a file or as a run folder (its last.h5)."""
    path = Path(path)
    if path.is_dir():
        return path / "last.h5", load_run(path)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; pass a run folder or a checkpoint file")
    return path, read_training_checkpoint(path)


def read_metrics(run_dir) -> list[dict]:
    """The rows of ``run_dir/metrics.jsonl`` (empty list if there are none yet)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
