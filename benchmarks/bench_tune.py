#!/usr/bin/env python
"""A small Optuna study end to end, with 1 and with 2 local workers in the same run.

    python benchmarks/bench_tune.py                      # 12 trials, 4-bit MNIST subset (~10 min)
    python benchmarks/bench_tune.py --trials 4 --subset 256 --validation 256 --test-subset 256 \\
        --num-steps 8 --epochs 2                        # a quick check that it works

Each study runs `mininsnn tune` as a user would (a new process; the default SQLite storage in a
fresh folder) over the paper's search space (beta, threshold, slope, lr, dropout and the
mse_count targets) on the first --subset training images, scored on the last --validation
training images, with the median pruner and the same sampler seed. Reported for each: the wall
time of the whole command, the epochs trained (pruned trials train fewer, so wall time per epoch
trained is the fair comparison), and the best trial: its settings, its validation accuracy and
the test accuracy of its best.h5 on the whole test set (evaluated afterwards; the study never
sees it). With one worker Numba uses every core; with two, each worker gets cores / 2 threads
(mininsnn.tune.run_workers), which is what a user of --workers gets.

Timings on a machine shared with other work are noisy: say so when quoting them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(cmd, env) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(map(str, cmd))}\n{r.stdout}\n{r.stderr}")
    return wall, r.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--config", default="mnist-4bit")
    p.add_argument("--subset", type=int, default=8192, help="training images (the first ones)")
    p.add_argument("--validation", type=int, default=4096, help="held-out training images")
    p.add_argument("--test-subset", type=int, default=4096,
                   help="test images recorded per epoch in the trials (never used to choose)")
    p.add_argument("--num-steps", type=int, default=25)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--workers", default="1,2", help="worker counts to compare (default 1,2)")
    p.add_argument("--sampler-seed", type=int, default=0)
    p.add_argument("--keep", help="keep the studies in this folder (default: a temporary one)")
    a = p.parse_args()

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO),
                                                       os.environ.get("PYTHONPATH", "")]))
    env.pop("NUMBA_NUM_THREADS", None)            # let --workers share the cores out
    sys.path.insert(0, str(REPO))
    import numpy
    from mininsnn.runs import machine
    print(f"machine: {machine()}; {os.cpu_count()} cores; Python {platform.python_version()}")
    try:
        from threadpoolctl import threadpool_info
        print("BLAS:", "; ".join(f"{i.get('internal_api')} {i.get('version')} "
                                 f"{i.get('architecture')} x{i.get('num_threads')}"
                                 for i in threadpool_info()))
    except ImportError:
        numpy.show_runtime()
    import optuna
    print(f"optuna {optuna.__version__}")

    base = tempfile.mkdtemp(prefix="bench-tune-") if a.keep is None else a.keep
    common = ["--config", a.config, "--subset", a.subset, "--validation", a.validation,
              "--test-subset", a.test_subset, "--num-steps", a.num_steps, "--epochs", a.epochs,
              "--trials", a.trials, "--sampler-seed", a.sampler_seed, "--space", "paper"]
    results = []
    for n in (int(x) for x in a.workers.split(",")):
        folder = Path(base) / f"workers{n}"
        cmd = [sys.executable, "-m", "mininsnn.cli", "tune", folder, *common, "--workers", n]
        print(f"\n$ {' '.join(map(str, cmd[1:]))}", flush=True)
        wall, out = run(list(map(str, cmd)), env)
        study = optuna.load_study(study_name=folder.name,
                                  storage=f"sqlite:///{folder / 'study.db'}")
        trials = [t for t in study.get_trials() if t.state.name in ("COMPLETE", "PRUNED")]
        epochs = sum(t.user_attrs.get("epochs_done", 0) for t in trials)
        pruned = sum(t.state.name == "PRUNED" for t in trials)
        best = study.best_trial
        run_dir = best.user_attrs["run_dir"]
        _, ev = run([sys.executable, "-m", "mininsnn.cli", "eval", str(Path(run_dir) / "best.h5")],
                    env)
        test_full = float(re.search(r"test accuracy ([\d.]+)%", ev).group(1))
        r = {"workers": n, "wall_s": wall, "trials": len(trials), "pruned": pruned,
             "epochs_trained": epochs, "wall_per_epoch_s": wall / max(epochs, 1),
             "best_trial": best.number, "best_params": best.params,
             "best_epoch": best.user_attrs["best_epoch"],
             "valid_acc": 100 * best.user_attrs["valid_acc"],
             "test_acc_recorded_subset": 100 * best.user_attrs["test_acc"],
             "test_acc_full_test_set": test_full, "run_dir": run_dir}
        results.append(r)
        print(f"workers {n}: {wall:.1f} s wall for {len(trials)} trials ({pruned} pruned, "
              f"{epochs} epochs trained, {r['wall_per_epoch_s']:.2f} s per epoch)")
        print(f"  best: trial {best.number}, epoch {r['best_epoch']}: validation "
              f"{r['valid_acc']:.2f}%, test {test_full:.2f}% (whole test set; "
              f"{r['test_acc_recorded_subset']:.2f}% on the recorded {a.test_subset})")
        print("  settings: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in best.params.items()))
    if len(results) == 2:
        one, two = results
        print(f"\nwall time {two['workers']} workers / {one['workers']}: "
              f"{two['wall_s'] / one['wall_s']:.2f}; per epoch trained: "
              f"{two['wall_per_epoch_s'] / one['wall_per_epoch_s']:.2f}")
    print("\n" + json.dumps(results, indent=1))
    print(f"studies in {base}")


if __name__ == "__main__":
    main()
