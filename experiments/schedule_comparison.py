"""The paper's question for one config: periodic cosine vs constant LR vs halve-on-rising-loss vs
cosine with warm restarts, trained for the same number of epochs, with the least compute.

    python -m experiments.schedule_comparison --config fmnist-4bit --quant-grad ste+scale \\
        --epochs 20 --seed 0 -- --data-dir ../shared/data/fashion-mnist

Four run folders, experiments/runs/<config>-<schedule>[-<tag>][-scalegrad]-seed<seed>, each resumed
if it exists. --tag names a variant trained with other flags after `--`, so its runs get folders of
their own (a resume with other settings is refused anyway), e.g. the loss's targets:

    python -m experiments.schedule_comparison --config fmnist-4bit --tag inc0 \\
        -- --incorrect-rate 0 --data-dir ../shared/data/fashion-mnist

How each run starts:

- cosine and halve_on_rise train from scratch (or resume), keeping every epoch's checkpoint;
- warm_restarts (T_0 = T_max) gives the cosine's LR up to batch T_max, so it branches from the
  cosine run's checkpoint of the last epoch within T_max (epoch 10 of the reference configs);
- constant gives halve_on_rise's LR until the first epoch whose training loss rises, so it
  branches from the halve_on_rise run's checkpoint of that epoch (if the loss never rises, the
  two are the same run: constant is not trained, and the halve_on_rise run stands for both).

A run whose checkpoint to branch from is gone (checkpoints are not in git, so a fresh clone lacks
them) trains from scratch instead: the same run on one machine (not across CPUs: BENCHMARKS.md),
with more compute.

A branch is bit-identical to the straight run on one machine (tests/test_train.py), so this
only saves time.
Each training runs as its own `mininsnn train` process with one Numba thread, started as soon
as what it branches from exists (up to four at once; the OS shares the cores). Arguments after
`--` go to every `mininsnn train` (e.g. --data-dir). Console logs go to
experiments/runs/<run>.log (not in git). Then `python -m experiments.schedules RUN...` prints the
comparison.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from experiments import RUNS


def first_rise(rows: list[dict]):
    """The first epoch after which halve_on_rise lowered its LR (its training loss rose), or
    None: replays mininsnn's HalveOnRise over the recorded epoch losses, so the rule lives in
    one place."""
    from mininsnn.schedule import HalveOnRise
    schedule = HalveOnRise(1.0)
    for row in rows:
        schedule.end_epoch(row["train_loss"])
        if schedule.current_lr < 1.0:
            return row["epoch"]
    return None


def last_epoch_within(rows: list[dict], steps: int):
    """The last recorded epoch that ends at or before batch ``steps``, or None."""
    inside = [r["epoch"] for r in rows if r["step"] <= steps]
    return max(inside) if inside else None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--quant-grad", default="ste+scale")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=os.path.relpath(RUNS),
                   help="folder of the run folders (default: experiments/runs/)")
    p.add_argument("--tag", default="",
                   help="part of the run folders' names for a variant set by the flags after --")
    p.add_argument("--poll", type=float, default=15.0, help="seconds between checks")
    p.add_argument("extra", nargs="*", help="after --: flags for every mininsnn train (e.g. --data-dir)")
    a = p.parse_args(argv)

    from mininsnn.config import make_config
    from mininsnn.runs import read_metrics
    cfg = make_config(a.config, quant_grad=a.quant_grad)
    tag = f"-{a.tag}" if a.tag else ""
    tag += "-scalegrad" if cfg["bits"] is not None and a.quant_grad == "ste+scale" else ""
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = {s: out / f"{a.config}-{s}{tag}-seed{a.seed}"
           for s in ("cosine", "warm_restarts", "halve_on_rise", "constant")}
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    train = [sys.executable, "-m", "mininsnn.cli", "train"]
    common = ["--epochs", str(a.epochs), "--keep-epochs"]

    def args(s, source=None, epoch=None):
        """mininsnn train arguments: resume run s if it exists, else start it (from scratch, or
        as a branch of ``source``'s checkpoint of ``epoch``)."""
        if (run[s] / "config.json").exists():         # started before: continue it
            return ["--resume", str(run[s]), *common, *a.extra]
        ckpt = None if source is None else source / "epochs" / f"epoch{epoch:03d}.h5"
        if ckpt is not None and ckpt.exists():
            start = ["--branch", str(ckpt)]
        else:
            if ckpt is not None:
                print(f"{ckpt} was not kept: {s} trains from scratch instead, which gives the "
                      "same run on this machine at the cost of the shared epochs", flush=True)
            start = ["--config", a.config, "--quant-grad", a.quant_grad, "--seed", str(a.seed)]
        return [*start, "--schedule", s, "--out", str(run[s]), *common, *a.extra]

    # when each run may start: its arguments, or None while what it branches from is not there
    def when_warm():
        rows = read_metrics(run["cosine"])
        if not rows:
            return None
        t_max = json.loads((run["cosine"] / "config.json").read_text())["T_max"]
        if rows[-1]["step"] < t_max and len(rows) < a.epochs:
            return None                                   # not yet past batch T_max
        return args("warm_restarts", run["cosine"], last_epoch_within(rows, t_max))

    def when_constant():
        rows = read_metrics(run["halve_on_rise"])
        rise = first_rise(rows)
        if rise is not None:
            return args("constant", run["halve_on_rise"], rise)
        if len(rows) >= a.epochs:             # never rose: constant would be the same run
            same.add("constant")
        return None

    ready = {"cosine": lambda: args("cosine"), "halve_on_rise": lambda: args("halve_on_rise"),
             "warm_restarts": when_warm, "constant": when_constant}
    proc = {}
    same = set()                  # runs that would repeat another one exactly
    while True:
        for s, when in ready.items():
            if s in proc or s in same or len(read_metrics(run[s])) >= a.epochs:
                continue
            argv_s = when()
            if argv_s is not None:
                log = open(f"{run[s]}.log", "a")
                print(f"{time.strftime('%H:%M:%S')} start {s}: mininsnn train {' '.join(argv_s)}",
                      flush=True)
                proc[s] = subprocess.Popen(train + argv_s, stdout=log, stderr=subprocess.STDOUT,
                                           env=env)
        for s, q in proc.items():
            if q.poll() not in (None, 0):
                sys.exit(f"{s} failed (exit {q.returncode}); see {run[s]}.log (the other runs "
                         "go on; run this again to resume them all)")
        if all(q.poll() is not None for q in proc.values()) and \
                all(len(read_metrics(run[s])) >= a.epochs for s in run if s not in same):
            break
        time.sleep(a.poll)
    if same:
        print(f"halve_on_rise's training loss never rose in {a.epochs} epochs, so it never halved "
              "the LR: the constant-LR run would be the same run, and was not trained")
    print("done; compare with: python -m experiments.schedules "
          + " ".join(str(run[s]) for s in run if s not in same))


if __name__ == "__main__":
    main()
