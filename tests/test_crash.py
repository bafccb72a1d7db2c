"""kill -9 a training process again and again; the resumed run must equal an uninterrupted one.

``python -m mininsnn.cli train`` (a few dozen MNIST images, T = 4, 12 epochs, --keep-epochs) is
killed with SIGKILL 22 times at seeded random points and resumed after each kill, as a user
would (``--resume``, or the start again when no config.json was written): two runs of 11 kills
each, side by side (one per core). The kill points:

    tmp     a temporary file appears in the run folder: inside a checkpoint write (last.h5,
            best.h5, epochs/epochNNN.h5) or a metrics/config/steps write
    commit  last.h5 has just been renamed into place (before best.h5, the kept epoch, metrics)
    row     steps.csv has gained its first or second row of the epoch (mid-epoch)
    time    a random moment after the start (imports, data loading, repair, training)

Every trigger is capped: a process is killed at the latest when it starts writing its second
last.h5, so each kill advances a run by at most one epoch and 12 epochs leave room for 11
kills. After each kill the folder must satisfy mininsnn.runs's invariant (last.h5 loads and
holds the uninterrupted run's first N epochs, best.h5 and the metrics are at most one commit
behind it), and at the end every file equals the uninterrupted run's (except timing columns
and command.txt). The kill points come from a seed, printed at the start; set
MININSNN_CRASH_SEED to replay one (the timing of a kill still depends on the machine).
"""
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mininsnn.checkpoint import load_checkpoint
from tests.runcheck import assert_same_run, untimed

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 12
KILLS = 22
CHAINS = 2
ARGS = ["--subset", "32", "--test-subset", "16", "--num-steps", "4", "--batch-size", "16",
        "--lr", "0.03", "--keep-epochs"]
CHECKPOINT_TEMP = re.compile(r"\.(last|best)\.h5\.\w+\.tmp|\.epoch\d+\.h5\.\w+\.tmp")
ANY_TEMP = re.compile(CHECKPOINT_TEMP.pattern + r"|\.(metrics\.jsonl|metrics\.csv|steps\.csv|"
                      r"config\.json)\.tmp")
TEMP_TARGETS = [r"\.last\.h5\.\w+\.tmp", r"\.best\.h5\.\w+\.tmp", r"\.epoch\d+\.h5\.\w+\.tmp",
                r"\.metrics\.(jsonl|csv)\.tmp"]


def command(run: Path) -> list:
    """The command a user types next: resume the run if it has started, else start it."""
    cli = [sys.executable, "-m", "mininsnn.cli", "train"]
    if (run / "config.json").exists():
        return cli + ["--resume", str(run), "--epochs", str(EPOCHS), "--keep-epochs"]
    return cli + [*ARGS, "--epochs", str(EPOCHS), "--out", str(run)]


def environment() -> dict:
    # one Numba thread: the child keeps one core, the polling parent the other
    return {**os.environ, "PYTHONPATH": str(REPO), "NUMBA_NUM_THREADS": "1"}


def files(run: Path) -> set:
    """Names of the files in the run folder and in its epochs/ folder."""
    names = set()
    for folder, prefix in ((run, ""), (run / "epochs", "epochs/")):
        try:
            names.update(prefix + e.name for e in os.scandir(folder))
        except FileNotFoundError:
            pass
    return names


def last_h5_id(run: Path):
    try:
        st = os.stat(run / "last.h5")
        return st.st_ino, st.st_mtime_ns
    except FileNotFoundError:
        return None


def steps_state(run: Path):
    """(inode, size) of steps.csv, or None."""
    try:
        st = os.stat(run / "steps.csv")
        return st.st_ino, st.st_size
    except FileNotFoundError:
        return None


def steps_done(run: Path) -> int:
    """The highest step index in steps.csv, + 1 (0 if none)."""
    try:
        rows = (run / "steps.csv").read_text().splitlines()[1:]
    except FileNotFoundError:
        return 0
    steps = [int(r.split(",", 1)[0]) for r in rows if r.split(",", 1)[0].isdigit()]
    return max(steps) + 1 if steps else 0


def new_rows(run: Path, start, start_step: int) -> bool:
    """steps.csv holds a row of step ``start_step`` or later written by this process (a resume
    first cuts the rows a kill left after last.h5's step, replacing the file)."""
    now = steps_state(run)
    if now is None or now == start:
        return False
    grew = start is None or now[0] != start[0] or now[1] > start[1]
    return grew and steps_done(run) >= start_step


def run_and_kill(run: Path, trigger: tuple, log) -> str:
    """Start the next command, kill -9 it at ``trigger`` (or at the cap), return what fired."""
    kind, arg = trigger
    start_id, start_step, start_steps = last_h5_id(run), None, steps_state(run)
    if kind == "row":
        tree_step = load_checkpoint(run / "last.h5")["step"] if start_id else 0
        start_step = tree_step + arg
    seen_last_tmp, before = set(), files(run)    # a kill's leftovers do not count, only new files
    with open(log, "ab") as err:
        proc = subprocess.Popen(command(run), stdout=subprocess.DEVNULL, stderr=err,
                                env=environment())
    t0 = time.monotonic()
    fired = None
    while fired is None:
        if proc.poll() is not None:
            return f"exited {proc.returncode}"
        names = files(run) - before
        seen_last_tmp |= {n for n in names if n.startswith(".last.h5.")}
        if kind == "tmp" and any(re.fullmatch(arg, n.split("/")[-1]) for n in names):
            fired = "tmp"
        elif kind == "commit" and last_h5_id(run) not in (start_id, None):
            fired = "commit"
        elif kind == "row" and new_rows(run, start_steps, start_step):
            fired = "row"
        elif kind == "time" and time.monotonic() - t0 >= arg:
            fired = "time"
        elif len(seen_last_tmp) >= 2:           # the cap: at most one epoch of progress
            fired = "cap"
        else:
            time.sleep(0.0005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return fired


def check_invariant(run: Path, ref_rows: list, ref_best: list, why: str) -> int:
    """mininsnn.runs's invariant after a kill; returns the epoch last.h5 holds."""
    if not (run / "last.h5").exists():
        assert not (run / "best.h5").exists(), why
        return 0
    tree = load_checkpoint(run / "last.h5")
    n = tree["epoch"]
    assert untimed(tree["history"]) == untimed(ref_rows[:n]), why    # the same bits so far
    assert tree["best"]["epoch"] == ref_best[n - 1], why
    best = load_checkpoint(run / "best.h5")["epoch"] if (run / "best.h5").exists() else None
    if tree["best"]["epoch"] != n:
        assert best == tree["best"]["epoch"], why
    else:                                      # behind by at most the commit of epoch n
        assert best in (n, ref_best[n - 2] if n > 1 else None), why
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert untimed(rows) in (untimed(ref_rows[:n]), untimed(ref_rows[:n - 1])), why
    kept = sorted(p.name for p in (run / "epochs").glob("epoch*.h5"))
    assert kept in ([f"epoch{k:03d}.h5" for k in range(1, n + 1)],
                    [f"epoch{k:03d}.h5" for k in range(1, n)]), why
    return n


def kill_chain(run: Path, rng: random.Random, kills: int, ref_rows: list, ref_best: list,
               log: Path, replay: str) -> list:
    """Kill the training of ``run`` ``kills`` times at points drawn from ``rng``, checking the
    invariant after each kill; returns one (trigger, what fired, a checkpoint write was cut) per
    kill."""
    record = []
    while len(record) < kills:
        kind = rng.choices(["tmp", "commit", "row", "time"], weights=[45, 20, 20, 15])[0]
        arg = {"tmp": lambda: rng.choice(TEMP_TARGETS), "commit": lambda: None,
               "row": lambda: rng.choice([1, 2]), "time": lambda: round(rng.uniform(0.0, 3.5), 3)}[kind]()
        why = f"{run.name}, kill {len(record) + 1} ({kind} {arg}); {replay}; child stderr in {log}"
        before = files(run)
        what = run_and_kill(run, (kind, arg), log)
        assert not what.startswith("exited"), f"{why}: the process {what} before the kill point"
        cut = any(CHECKPOINT_TEMP.fullmatch(n.split("/")[-1]) for n in files(run) - before)
        record.append((f"{kind} {arg}", what, cut))
        check_invariant(run, ref_rows, ref_best, why)
    return record


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_equals_the_uninterrupted_run(tmp_path):
    seed = int(os.environ.get("MININSNN_CRASH_SEED", random.SystemRandom().randrange(2**32)))
    replay = f"seed {seed}, replay with MININSNN_CRASH_SEED={seed}"
    print(f"\nkill points from seed {seed} (replay: MININSNN_CRASH_SEED={seed})")
    log = tmp_path / "stderr.log"
    ref = tmp_path / "ref"
    done = subprocess.run(command(ref), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          env=environment(), text=True)
    assert done.returncode == 0, done.stderr
    ref_rows = [json.loads(r) for r in (ref / "metrics.jsonl").read_text().splitlines()]
    ref_best, best = [], None
    for r in ref_rows:                         # the best epoch after each epoch
        best = r["epoch"] if best is None or r["test_acc"] > ref_rows[best - 1]["test_acc"] else best
        ref_best.append(best)

    # two independent chains of kills, one per core (each child uses one Numba thread)
    runs = [tmp_path / f"run{c}" for c in range(CHAINS)]
    records, errors = [None] * CHAINS, []

    def chain(c):
        try:
            kills = KILLS // CHAINS + (c < KILLS % CHAINS)
            records[c] = kill_chain(runs[c], random.Random(f"{seed}-{c}"), kills, ref_rows,
                                    ref_best, log, replay)
        except BaseException as e:             # reported by the main thread
            errors.append(e)
    threads = [threading.Thread(target=chain, args=(c,)) for c in range(CHAINS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    for c, record in enumerate(records):
        print(f"run{c}: " + "; ".join(f"{trigger} -> {what}{' (inside a checkpoint write)' if cut else ''}"
                                       for trigger, what, cut in record))
    # the last resume of each run, uninterrupted: it repairs and trains what is left
    last = [subprocess.Popen(command(run), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env=environment(), text=True) for run in runs]
    for run, proc in zip(runs, last):
        err = proc.communicate()[1]
        assert proc.returncode == 0 or "already trained" in err, err
        assert not [n for n in files(run) if ANY_TEMP.fullmatch(n.split("/")[-1])], replay
        assert_same_run(ref, run)
    cuts = sum(cut for record in records for _, _, cut in record)
    assert sum(len(r) for r in records) >= 20
    assert cuts >= 1, f"no kill landed inside a checkpoint write ({replay})"
