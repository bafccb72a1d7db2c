"""Run folders (mininsnn.runs) after kills and failed writes: last.h5 is the commit point of an
epoch and everything else is repaired from it, stale temporary files go, a folder is trained by
one process at a time, and a write that fails is a one-line error saying what was kept.

A kill is simulated in-process by an exception raised right after the n-th file rename (every
file of a run folder is written through a temporary file and ``os.replace``) or the n-th steps.csv
row: the process "dies" with every earlier operation done and no later one. tests/test_crash.py
does the same with real kill -9s of a training subprocess, also inside the writes.
"""
import errno
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from mininsnn import checkpoint, data, runs
from mininsnn.checkpoint import load_checkpoint, save_checkpoint
from mininsnn.cli import main
from mininsnn.config import ConfigError
from mininsnn.runs import RunFolder, read_metrics
from tests.runcheck import assert_same_run, mount_tmpfs, unmount

# 2 batches per epoch; at lr 0.03 the test accuracy of epochs 1..3 is 18.75 %, 12.5 %, 25 %, so
# the run has a best epoch, an epoch that is not the best and a final epoch that is
TINY = ["--subset", "32", "--test-subset", "16", "--num-steps", "4", "--batch-size", "16",
        "--lr", "0.03"]
EPOCHS = 3


class Killed(BaseException):
    """A simulated kill -9: raised between two file operations, caught by nothing."""


@pytest.fixture
def cached_data(monkeypatch):
    """load_data reads the MNIST files once per test module, not once per command."""
    cache = {}
    real = data.load_data

    def load(cfg, *args, **kw):
        key = (cfg["dataset"], cfg["subset"], cfg["test_subset"], kw.get("splits"))
        if key not in cache:
            cache[key] = real(cfg, *args, **kw)
        return cache[key]
    monkeypatch.setattr(data, "load_data", load)


def train(out: Path, *more) -> int:
    return main(["train", *TINY, "--epochs", str(EPOCHS), "--keep-epochs", "--out", str(out), *more])


def restart(out: Path, capsys) -> int:
    """What a user does after a kill: resume the run if it has started, else start it again."""
    if (out / "config.json").exists():
        rc = main(["train", "--resume", str(out), "--epochs", str(EPOCHS), "--keep-epochs"])
    else:
        rc = train(out)
    err = capsys.readouterr().err
    assert rc == 0 or (rc == 2 and "already trained" in err), err
    return rc


def die_after(monkeypatch, kind: str, n: int, run: Path) -> list:
    """Make the n-th rename into the folder ``run`` ("replace") or the n-th steps.csv row ("row")
    the process's last operation. Returns a list that collects what was done (the counter).
    (Renames elsewhere, e.g. of Numba's cache files, are not counted.)"""
    done = []
    if kind == "replace":
        real = os.replace

        def replace(src, dst):
            real(src, dst)
            if Path(run) not in Path(dst).parents:
                return
            done.append(Path(dst).name)
            if len(done) == n:
                raise Killed(dst)
        monkeypatch.setattr(os, "replace", replace)
    else:
        real_open = RunFolder.open_steps

        class Rows:
            def __init__(self, f):
                self.f = f

            def write(self, text):
                self.f.write(text)

            def flush(self):
                self.f.flush()
                done.append("row")
                if len(done) == n:
                    raise Killed("row")

            def close(self):
                self.f.close()
        monkeypatch.setattr(RunFolder, "open_steps", lambda self: Rows(real_open(self)))
    return done


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run, and how many renames and steps rows it made."""
    mp = pytest.MonkeyPatch()
    out = tmp_path_factory.mktemp("straight") / "run"
    replaced = die_after(mp, "replace", -1, out)
    rows = die_after(mp, "row", -1, out)
    try:
        assert train(out) == 0
    finally:
        mp.undo()
    return out, len(replaced), len(rows), replaced


@pytest.mark.slow
def test_the_straight_run_commits_last_h5_first(straight):
    out, _, rows, replaced = straight
    # the start, then epoch 1 (best), epoch 2 (not the best), epoch 3 (best again), each in the
    # order of mininsnn.runs's docstring: last.h5, best.h5, the kept epoch, the metrics (the
    # start also records the data files read, data.json)
    assert replaced == ["config.json", "metrics.jsonl", "metrics.csv", "data.json",
                        "last.h5", "best.h5", "epoch001.h5", "metrics.jsonl", "metrics.csv",
                        "last.h5", "epoch002.h5", "metrics.jsonl", "metrics.csv",
                        "last.h5", "best.h5", "epoch003.h5", "metrics.jsonl", "metrics.csv"]
    assert rows == 2 * EPOCHS
    assert load_checkpoint(out / "best.h5")["epoch"] == 3
    assert [r["epoch"] for r in read_metrics(out)] == [1, 2, 3]


@pytest.mark.slow
def test_a_kill_at_every_commit_point_is_repaired_bit_for_bit(straight, tmp_path, monkeypatch,
                                                             capsys, cached_data):
    """A kill after each rename and after each steps.csv row of the whole run, then a restart
    (resume, or a new start when no config.json was written): every one ends as the straight
    run, file for file. A kill after the final epoch's last.h5 is repaired by the resume that
    answers 'already trained'."""
    ref, n_replace, n_rows, _ = straight
    points = [("replace", n) for n in range(1, n_replace + 1)] + \
             [("row", n) for n in range(1, n_rows + 1)]
    repaired_at_the_end = 0
    for kind, n in points:
        out = tmp_path / f"{kind}{n}"
        with monkeypatch.context() as mp:
            die_after(mp, kind, n, out)
            with pytest.raises(Killed):
                train(out)
        capsys.readouterr()
        if restart(out, capsys) == 2:
            repaired_at_the_end += 1
        assert_same_run(ref, out)
    # the kills after the final last.h5 (before best.h5, the kept epoch and both metrics files)
    assert repaired_at_the_end >= 4


def killed_after_final_last_h5(out: Path, monkeypatch, epochs: int = 1):
    """A run of ``epochs`` epochs killed right after its final last.h5 was renamed into place."""
    real = os.replace
    commits = []

    def replace(src, dst):
        real(src, dst)
        if Path(dst).name == "last.h5":
            commits.append(dst)
            if len(commits) == epochs:
                raise Killed(dst)
    with monkeypatch.context() as mp:
        mp.setattr(os, "replace", replace)
        with pytest.raises(Killed):
            main(["train", *TINY, "--epochs", str(epochs), "--out", str(out)])


@pytest.mark.slow
def test_resume_repairs_before_saying_already_trained(tmp_path, monkeypatch, capsys, cached_data):
    ref, out = tmp_path / "ref", tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(ref)]) == 0
    killed_after_final_last_h5(out, monkeypatch)
    assert not (out / "best.h5").exists() and read_metrics(out)          # read_metrics sees through
    assert (out / "metrics.jsonl").read_text() == ""
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {out} has already trained 1 epoch(s) (repaired best.h5, metrics.jsonl, "
                   f"metrics.csv from last.h5); pass --epochs N with N > 1 to continue it\n")
    assert_same_run(ref, out)
    before = {p: p.read_bytes() for p in out.iterdir()}
    assert main(["train", "--resume", str(out), "--epochs", "1"]) == 2    # nothing left to repair
    assert "repaired" not in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.slow
def test_eval_sees_through_a_kill_before_best_h5(tmp_path, monkeypatch, capsys, cached_data):
    out = tmp_path / "run"
    killed_after_final_last_h5(out, monkeypatch, epochs=3)   # epoch 3 is the best, best.h5 has 1
    assert load_checkpoint(out / "best.h5")["epoch"] == 1
    assert [r["epoch"] for r in read_metrics(out)] == [1, 2, 3]   # metrics.jsonl has 2 rows
    capsys.readouterr()
    assert main(["eval", str(out), "--test-subset", "16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{out / 'best.h5'} (behind last.h5 after an interrupted run: "
                               "evaluating last.h5, which holds the best epoch): epoch 3, ")
    assert lines[1].startswith(f"{out / 'last.h5'}: epoch 3, ")
    assert lines[0].split("): ", 1)[1].split("(")[0] == lines[1].split(": ", 1)[1].split("(")[0]


STALE = [".last.h5.k3j_9x2a.tmp", ".best.h5.abcdefgh.tmp", ".metrics.jsonl.tmp", ".metrics.csv.tmp",
         ".config.json.tmp", ".steps.csv.tmp", ".write-test.q1w2e3r4.tmp",
         "epochs/.epoch002.h5.zz_top00.tmp"]
KEPT = ["notes.tmp", ".my.tmp", "last.h5.tmp", ".last.h5.tmp.bak", "epochs/.epoch2.txt.tmp"]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["start", "resume"])
def test_stale_temporary_files_are_removed_on_start_and_resume(tmp_path, how, capsys, cached_data):
    out = tmp_path / "run"
    if how == "resume":
        assert main(["train", *TINY, "--epochs", "1", "--keep-epochs", "--out", str(out)]) == 0
    for name in STALE + KEPT:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(b"partial")
    argv = ["--resume", str(out), "--epochs", "2"] if how == "resume" else \
        [*TINY, "--epochs", "1", "--out", str(out)]
    assert main(["train", *argv]) == 0
    left = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert not left & set(STALE)
    assert set(KEPT) <= left                                  # files that are not ours stay


@pytest.mark.slow
def test_one_process_trains_a_folder_at_a_time(tmp_path, capsys, cached_data):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    holder = RunFolder(out)
    with holder.locked():
        with holder.locked():                                 # re-entrant in its own holder
            pass
        (out / ".last.h5.livewrite.tmp").write_bytes(b"another process is writing this")
        with pytest.raises(ConfigError, match="another process is training the run in .*locked"):
            RunFolder(out).repair(load_checkpoint(out / "last.h5"))
        capsys.readouterr()
        assert main(["train", "--resume", str(out), "--epochs", "2"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: another process is training") and err.count("\n") == 1
        assert (out / ".last.h5.livewrite.tmp").exists()     # its temporary files are left alone
    (out / ".last.h5.livewrite.tmp").unlink()
    assert main(["train", "--resume", str(out), "--epochs", "2"]) == 0   # released


def test_the_lock_dies_with_its_process(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    code = ("import os, sys; from mininsnn.runs import RunFolder; f = RunFolder(sys.argv[1]); "
            "f.locked().__enter__(); print('locked', flush=True); os.kill(os.getpid(), 9)")
    p = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert p.stdout == "locked\n" and p.returncode == -9
    with RunFolder(out).locked():
        pass


# -- writes that fail ---------------------------------------------------------------------------

def failing_h5(monkeypatch, name: str, nth: int, err: int):
    """Writing a checkpoint's bytes raises OSError(err) at the nth write whose target is ``name``."""
    real = checkpoint._write_bytes
    seen = []

    def write(path, data):
        if Path(path).name.startswith(f".{name}."):
            seen.append(path)
            if len(seen) == nth:
                raise OSError(err, os.strerror(err))
        return real(path, data)
    monkeypatch.setattr(checkpoint, "_write_bytes", write)


@pytest.mark.slow
@pytest.mark.parametrize("name, nth, err, kept", [
    ("last.h5", 2, errno.ENOSPC, 1),          # epoch 2's commit fails: epoch 1 kept
    ("best.h5", 2, errno.EACCES, 3),          # after epoch 3's last.h5: epoch 3 kept
    ("epoch002.h5", 1, errno.EIO, 2),
])
def test_a_failed_checkpoint_write_is_one_line_and_the_run_resumes(
        straight, tmp_path, monkeypatch, capsys, cached_data, name, nth, err, kept):
    out = tmp_path / "run"
    with monkeypatch.context() as mp:
        failing_h5(mp, name, nth, err)
        capsys.readouterr()
        assert train(out) == 1
    msg = capsys.readouterr().err
    assert msg == (f"error: cannot write {out / (name if 'epoch' not in name else 'epochs/' + name)}: "
                   f"{os.strerror(err)}; epoch {kept} is in {out / 'last.h5'}; once the problem is "
                   f"fixed, continue with `mininsnn train --resume {out} --epochs {EPOCHS}`\n")
    assert load_checkpoint(out / "last.h5")["epoch"] == kept
    assert not [p for p in out.rglob(".*.tmp")]               # the failed write cleaned up
    assert restart(out, capsys) in (0, 2)
    assert_same_run(straight[0], out)


@pytest.mark.slow
def test_failed_steps_and_metrics_writes_are_one_line(straight, tmp_path, monkeypatch, capsys,
                                                      cached_data):
    out = tmp_path / "run"
    real_open = RunFolder.open_steps

    class Full:
        rows = 0

        def __init__(self, f):
            self.f = f

        def write(self, text):
            Full.rows += 1
            if Full.rows == 3:                                # the first batch of epoch 2
                raise OSError(errno.ENOSPC, "No space left on device")
            self.f.write(text)

        def flush(self):
            self.f.flush()

        def close(self):
            self.f.close()
    with monkeypatch.context() as mp:
        mp.setattr(RunFolder, "open_steps", lambda self: Full(real_open(self)))
        assert train(out) == 1
    assert capsys.readouterr().err.startswith(
        f"error: cannot write {out / 'steps.csv'}: No space left on device; epoch 1 is in ")
    with monkeypatch.context() as mp:                         # at the start: nothing trained
        real = runs.atomic_write_text

        def denied(path, text):
            if path.name == "config.json":
                raise PermissionError(errno.EACCES, "Permission denied")
            real(path, text)
        mp.setattr(runs, "atomic_write_text", denied)
        assert train(tmp_path / "new") == 1
    assert capsys.readouterr().err == (f"error: cannot write {tmp_path / 'new' / 'config.json'}: "
                                       f"Permission denied; {tmp_path / 'new'} holds no checkpoint "
                                       "(no epoch had finished)\n")
    assert restart(out, capsys) == 0
    assert_same_run(straight[0], out)


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 1.6 MB tmpfs (room for three 0.5 MB checkpoints, not four); skipped where mounting is
    not permitted."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if not mount_tmpfs(mnt, "1600k"):
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
    try:
        yield mnt
    finally:
        unmount(mnt)


@pytest.mark.slow
def test_a_really_full_disk_is_one_line_and_keeps_the_last_epoch(tiny_tmpfs, capsys, cached_data):
    out = tiny_tmpfs / "run"
    assert main(["train", *TINY, "--epochs", "4", "--keep-epochs", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write ") and err.count("\n") == 1
    assert ": No space left on device; epoch 1 is in " in err, err
    assert load_checkpoint(out / "last.h5")["epoch"] == 1
    assert not [p for p in out.rglob(".*.tmp")]


@pytest.mark.slow
def test_checkpoints_with_nan_are_refused_naming_the_file(tmp_path, capsys, cached_data):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    with h5py.File(out / "last.h5", "a") as f:
        f["model/bn2.running_var"][3] = np.inf
    capsys.readouterr()
    for argv in (["train", "--resume", str(out), "--epochs", "2"], ["eval", str(out / "last.h5")],
                 ["train", "--branch", str(out), "--epochs", "2", "--out", str(tmp_path / "b")]):
        assert main(argv) == 2
        assert capsys.readouterr().err == (f"error: {out / 'last.h5'}: model entry bn2.running_var "
                                           "holds NaN or inf (a diverged run?)\n")


@pytest.mark.parametrize("edit, problem", [
    (lambda t: t.update(epoch=-1), "'epoch' entry is not a non-negative integer"),
    (lambda t: t.update(history=t["history"] * 2), "history does not hold one row per epoch"),
    (lambda t: t.update(best={"epoch": 5, "test_acc": 0.5}), "'best' entry is not valid"),
    (lambda t: t.pop("optimizer"), "has no 'optimizer' entry"),
    (lambda t: t["optimizer"]["exp_avg"].update({"fc1.weight": np.full((10, 1024), np.nan, np.float32)}),
     "Adam exp_avg fc1.weight holds NaN or inf"),
    (lambda t: t["model"].update({"fc1.weight": np.zeros((10, 3), np.float32)}),
     "does not fit its configuration: load_state_dict: 'fc1.weight' expected shape"),
    (lambda t: t["config"].update(lr=-1.0), "the checkpoint's configuration: lr must be"),
])
def test_damaged_training_checkpoints_name_the_file(tmp_path, capsys, cached_data, edit, problem):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    tree = load_checkpoint(out / "last.h5")
    edit(tree)
    save_checkpoint(out / "last.h5", tree)
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out / 'last.h5'}: ") and problem in err and err.count("\n") == 1


def test_a_damaged_metrics_file_is_named(tmp_path):
    (tmp_path / "metrics.jsonl").write_bytes(b'{"epoch": 1}\n\xff\xfe garbage\n')
    with pytest.raises(ConfigError, match=r"metrics.jsonl: line 2 is not a JSON object"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n[1, 2]\n')
    with pytest.raises(ConfigError, match=r"metrics.jsonl: line 2 is not a JSON object"):
        read_metrics(tmp_path)


def test_already_trained_also_removes_what_a_kill_inside_a_write_left(tmp_path, capsys, cached_data):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    (out / ".best.h5.x1y2z3w4.tmp").write_bytes(b"half a checkpoint")
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--epochs", "1"]) == 2
    assert capsys.readouterr().err == (f"error: {out} has already trained 1 epoch(s) (removed 1 "
                                       "temporary file(s) a kill left); pass --epochs N with N > 1 "
                                       "to continue it\n")
    assert not (out / ".best.h5.x1y2z3w4.tmp").exists()
