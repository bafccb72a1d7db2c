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

What a crash can leave, and why no crash leaves a run wrong
-----------------------------------------------------------
``last.h5`` is the single commit point of an epoch. Every file is written atomically (a
temporary file in the same folder, fsync, ``os.replace``; a kill leaves the old file and a
temporary ``.NAME.*.tmp`` / ``.NAME.tmp``), and :meth:`RunFolder.save_epoch` writes the files of
epoch N in this order:

    1. last.h5                 the state after epoch N; it names the best epoch so far
                               (``tree["best"]``) and holds every metrics row (``tree["history"]``)
    2. best.h5                 if epoch N is the best so far: the same tree as last.h5
    3. epochs/epochNNN.h5      with keep_epochs: the same tree as last.h5
    4. metrics.jsonl, .csv     the rows of last.h5's history

Each file after step 1 is a function of last.h5 alone. :meth:`RunFolder.repair` re-derives them
from last.h5: best.h5 when last.h5 names its own epoch as the best, the kept checkpoint of
last.h5's epoch, the metrics files, and steps.csv cut to last.h5's step (batches trained after
it are trained again). Every process that trains a folder repairs it first (on start and on
resume, also when ``--resume`` finds the run already trained), under an exclusive lock on the
folder, and removes the temporary files a kill left behind. By induction over the epochs, at
every moment:

    last.h5 holds some epoch N (or is absent: no epoch finished), and best.h5 either holds the
    epoch last.h5 names as the best or is behind while last.h5 names epoch N itself;
    epochs/ holds epochs 1..N-1 (with keep_epochs) and possibly N; the metrics files hold
    last.h5's rows, or N-1 of them.

A kill before step 1 completes leaves epoch N-1 committed: the resumed run trains epoch N again
and, everything being seeded, gets the same bits. A kill after step 1 leaves epoch N committed
and the rest repairable. Readers see through an unrepaired folder: :func:`read_metrics` takes
last.h5's rows when metrics.jsonl is behind it, and ``mininsnn eval`` evaluates last.h5 as the
best checkpoint when best.h5 is behind. (tests/test_crash.py kills a training process 20+ times,
also inside these writes, and checks the resumed run equals an uninterrupted one bit for bit.)

A write that fails (disk full, permissions, I/O error) raises :class:`WriteError` naming the file;
the trainer turns it into a one-line error saying which epoch last.h5 still holds. Checkpoints
that hold NaN or inf are never written (mininsnn.train stops a diverging run first) and are
refused, naming the file, when read.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import platform
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy

from mininsnn.atomic import write_text
from mininsnn.checkpoint import save_checkpoint
from mininsnn.config import ConfigError
# the reading side, re-exported: mininsnn.runs is where a run folder's functions are found
from mininsnn.runfiles import (CHECKPOINT_KIND, check_training_tree, checkpoint_epoch,
                               load_checkpoint_source, load_run, os_reason, read_metrics,
                               read_training_checkpoint, unstarted_run_config)

try:                                     # advisory folder locks (POSIX); none on Windows
    import fcntl
except ImportError:                      # pragma: no cover
    fcntl = None

__all__ = ["RUN_FILES", "CHECKPOINT_KIND", "WriteError", "RunFolder", "check_new_run_dir",
           "check_writable", "load_run", "read_training_checkpoint", "check_training_tree",
           "load_checkpoint_source", "unstarted_run_config", "read_metrics", "machine",
           "command_line", "atomic_write_text", "writing", "os_reason"]

RUN_FILES = ("config.json", "command.txt", "metrics.jsonl", "metrics.csv", "steps.csv",
             "last.h5", "best.h5")
STEPS_HEADER = "step,epoch,lr,loss,train_acc"

# Temporary files that only a killed writer leaves behind: atomic_write_text's ".NAME.tmp",
# save_checkpoint's ".NAME.XXXXXXXX.tmp" (mkstemp), check_writable's probe.
_STALE_TEMP = re.compile(r"\.(config\.json|metrics\.jsonl|metrics\.csv|steps\.csv)\.tmp"
                         r"|\.(last|best)\.h5\.[A-Za-z0-9_]+\.tmp"
                         r"|\.write-test\.[A-Za-z0-9_]+\.tmp")
_STALE_KEPT_TEMP = re.compile(r"\.epoch\d+\.h5\.[A-Za-z0-9_]+\.tmp")


class WriteError(RuntimeError):
    """A file of a run folder could not be written (disk full, permissions, I/O error); the
    message names the file and the reason in one line."""


@contextlib.contextmanager
def writing(path):
    """Within the block, an OSError becomes a :class:`WriteError` naming ``path``."""
    try:
        yield
    except OSError as e:
        raise WriteError(f"cannot write {path}: {os_reason(e)}") from None


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (``mininsnn.atomic``), through the fixed temporary
    name ``.NAME.tmp`` that the clean-up of a run folder knows."""
    write_text(path, text, temp=path.with_name(f".{path.name}.tmp"))


def _write_text_if_changed(path: Path, text: str) -> bool:
    """atomic_write_text unless ``path`` already holds ``text``; True if it wrote."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    atomic_write_text(path, text)
    return True


def machine() -> str:
    """The CPU's model name and the versions that decide a run's bits and speed, e.g.
    'AMD EPYC, numpy 2.4.6, numba 0.68.1' (+ OPENBLAS_CORETYPE when set): the same command on
    another CPU can round differently (BENCHMARKS.md), so each command.txt line names it."""
    import numba      # here, for its version only: reading run folders needs no Numba
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


def _metrics_text(history: list) -> tuple[str, str]:
    """(metrics.jsonl, metrics.csv) of the rows ``history``."""
    lines = "".join(json.dumps(r) + "\n" for r in history)
    buf = io.StringIO()
    if history:
        # every key of every row, in first-seen order (rows resumed from an older version
        # may lack columns that later rows have)
        fields = list(dict.fromkeys(k for r in history for k in r))
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(history)
    return lines, buf.getvalue()


class RunFolder:
    """The files of one run (see the module docstring)."""

    def __init__(self, path):
        self.path = Path(path)
        self._lock_fd = None
        self._lock_depth = 0

    def __repr__(self):
        return f"RunFolder({str(self.path)!r})"

    def epoch_checkpoint(self, epoch: int) -> Path:
        """Where ``keep_epochs`` saves the checkpoint after ``epoch``: epochs/epochNNN.h5."""
        return self.path / "epochs" / f"epoch{epoch:03d}.h5"

    # -- the lock ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self):
        """Hold an exclusive lock on the folder within the block (re-entrant), creating the
        folder if needed: one process trains a run at a time, so none removes another's
        temporary files or interleaves its commits. ConfigError if another process holds it.
        (An advisory ``flock`` on the folder itself: the kernel drops it when the process
        dies, even by kill -9; where the file system has no flock the block runs unlocked.)"""
        if self._lock_depth == 0:
            self._acquire()
        self._lock_depth += 1
        try:
            yield self
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0 and self._lock_fd is not None:
                os.close(self._lock_fd)         # closing the descriptor releases the lock
                self._lock_fd = None

    def _acquire(self) -> None:
        with writing(self.path):
            self.path.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            return
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:                      # a folder we may not open: go on unlocked
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"another process is training the run in {self.path} (its folder "
                              "is locked); wait for it to end, or stop it first") from None
        except OSError:                      # no flock on this file system: go on unlocked
            os.close(fd)
            return
        self._lock_fd = fd

    # -- start, resume, repair ---------------------------------------------------------------
    def remove_stale_temps(self) -> list[str]:
        """Remove the temporary files a killed writer left (see _STALE_TEMP); returns their
        names. Only a process holding the folder's lock may call it."""
        removed = []
        for folder, pattern in ((self.path, _STALE_TEMP), (self.path / "epochs", _STALE_KEPT_TEMP)):
            if not folder.is_dir():
                continue
            for p in folder.iterdir():
                if pattern.fullmatch(p.name) and p.is_file():
                    with writing(p):
                        p.unlink()
                    removed.append(str(p.relative_to(self.path)))
        return removed

    def prepare(self, config: dict, history: list, step: int, command: str) -> None:
        """Create the folder (or bring a resumed one in line with the restored state):
        stale temporary files removed, config.json, ``command`` appended to command.txt (unless
        empty), metrics from the history, steps cut to ``step``."""
        with self.locked():
            self.remove_stale_temps()
            with writing(self.path / "config.json"):
                _write_text_if_changed(self.path / "config.json",
                                       json.dumps(config, indent=2) + "\n")
            if command:
                with writing(self.path / "command.txt"):
                    with open(self.path / "command.txt", "a", encoding="utf-8") as f:
                        f.write(command.rstrip("\n") + "\n")
            self.write_metrics(history)
            self.cut_steps(step)

    def repair(self, tree: dict, keep: bool = False) -> list[str]:
        """Re-derive from ``tree`` (the content of last.h5) what a kill after last.h5's commit
        left behind (module docstring): best.h5 when ``tree`` names its own epoch as the best,
        epochs/epochNNN.h5 of its epoch (if ``keep``), the metrics, steps.csv cut to its step;
        stale temporary files are removed. Returns the files it rewrote or removed (empty
        when the folder was consistent: nothing is written then)."""
        fixed = []
        with self.locked():
            fixed += self.remove_stale_temps()
            epoch, best = int(tree["epoch"]), tree.get("best")
            if best is not None and int(best["epoch"]) == epoch \
                    and checkpoint_epoch(self.path / "best.h5") != epoch:
                with writing(self.path / "best.h5"):
                    save_checkpoint(self.path / "best.h5", tree)
                fixed.append("best.h5")
            kept = self.epoch_checkpoint(epoch)
            if keep and epoch > 0 and checkpoint_epoch(kept) != epoch:
                with writing(kept):
                    kept.parent.mkdir(exist_ok=True)
                    save_checkpoint(kept, tree)
                fixed.append(str(kept.relative_to(self.path)))
            fixed += self.write_metrics(tree["history"])
            if self.cut_steps(int(tree["step"])):
                fixed.append("steps.csv")
        return fixed

    def cut_steps(self, step: int) -> bool:
        """Keep the rows of steps.csv for batches before ``step`` (a crash may have left rows of
        batches trained after the checkpoint, or a torn last row); True if it rewrote it."""
        path = self.path / "steps.csv"
        if not path.exists():
            return False
        with writing(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                rows = f.read().splitlines()
            keep = [STEPS_HEADER]
            for r in rows[1:]:
                fields = r.split(",")
                if len(fields) == 5 and fields[0].isdigit() and int(fields[0]) < step:
                    keep.append(r)
            return _write_text_if_changed(path, "".join(r + "\n" for r in keep))

    def copy_steps_from(self, source_run: Path) -> None:
        """Start steps.csv as a copy of another run's (a branch continues its batches)."""
        src = Path(source_run) / "steps.csv"
        with writing(self.path / "steps.csv"):
            self.path.mkdir(parents=True, exist_ok=True)
            if src.exists():
                atomic_write_text(self.path / "steps.csv", src.read_text(encoding="utf-8"))

    # -- during training ---------------------------------------------------------------------
    def open_steps(self):
        """steps.csv opened for appending (header written if new)."""
        path = self.path / "steps.csv"
        with writing(path):
            new = not path.exists() or path.stat().st_size == 0
            f = open(path, "a", encoding="utf-8")
            if new:
                f.write(STEPS_HEADER + "\n")
        return f

    def write_metrics(self, history: list) -> list[str]:
        """Rewrite metrics.jsonl / metrics.csv from the history (atomically; the same rows an
        append would give, and consistent with last.h5 after a crash). Returns the names of
        the files it changed."""
        changed = []
        for name, text in zip(("metrics.jsonl", "metrics.csv"), _metrics_text(history)):
            with writing(self.path / name):
                if _write_text_if_changed(self.path / name, text):
                    changed.append(name)
        return changed

    def save_epoch(self, tree: dict, improved: bool, keep: bool) -> None:
        """The files of a finished epoch, last.h5 first (the commit point; module docstring):
        last.h5, best.h5 (if ``improved``), the kept epoch checkpoint (if ``keep``), the
        metrics."""
        with self.locked():
            with writing(self.path / "last.h5"):
                save_checkpoint(self.path / "last.h5", tree)
            if improved:
                with writing(self.path / "best.h5"):
                    save_checkpoint(self.path / "best.h5", tree)
            if keep:
                kept = self.epoch_checkpoint(tree["epoch"])
                with writing(kept):
                    kept.parent.mkdir(exist_ok=True)
                    save_checkpoint(kept, tree)
            self.write_metrics(tree["history"])

    def kept_message(self) -> str:
        """What a failed or interrupted run keeps: 'epoch N is in RUN/last.h5' (read from
        disk), or that it holds no checkpoint."""
        epoch = checkpoint_epoch(self.path / "last.h5")
        if epoch is None:
            return f"{self.path} holds no checkpoint (no epoch had finished)"
        return f"epoch {epoch} is in {self.path / 'last.h5'}"

    # -- reading -----------------------------------------------------------------------------
    def best_is_behind(self, last: dict) -> bool:
        """True if a kill after last.h5's commit left best.h5 behind: ``last`` (last.h5's tree)
        names its own epoch as the best and best.h5 does not hold it. :meth:`repair` fixes
        that; until then last.h5 is the best checkpoint."""
        best = last.get("best")
        return (best is not None and int(best["epoch"]) == int(last["epoch"])
                and checkpoint_epoch(self.path / "best.h5") != int(last["epoch"]))


def check_new_run_dir(run_dir) -> None:
    """ConfigError if ``run_dir`` already holds a run (never overwrite one)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} exists and is not a folder; choose another --out")
    found = [f for f in RUN_FILES if (run_dir / f).exists()]
    if found and not (run_dir / "config.json").exists() and not (run_dir / "last.h5").exists():
        raise ConfigError(f"{run_dir} holds {found[0]} but no run to resume (no config.json or "
                          "last.h5: a start or --branch stopped before its first checkpoint?); "
                          "delete the folder and run the command again, or choose another --out")
    if found:
        raise ConfigError(f"{run_dir} already holds a run ({found[0]}); continue it with "
                          f"--resume {run_dir} or choose another --out")


def check_writable(run_dir) -> None:
    """ConfigError unless files can be created in ``run_dir`` (or, if it does not exist yet, in
    the nearest folder above it that does): checked by creating and removing a temporary file,
    so it also catches read-only mounts, ACLs and a path below a regular file, for root too."""
    run_dir = Path(run_dir)
    probe = run_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        where = "is" if probe == run_dir else f"lies below {probe}, which is"
        raise ConfigError(f"run folder {run_dir} {where} a file, not a folder; choose another "
                          "--out")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".write-test.", suffix=".tmp", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        what = "" if probe == run_dir else f" (to create run folder {run_dir})"
        raise ConfigError(f"cannot write to {probe}{what}: {os_reason(e)}; choose another --out "
                          "or fix its permissions") from None


