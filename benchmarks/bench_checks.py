#!/usr/bin/env python
"""Cost of the reliability checks of a training step and of an epoch's commit (mininsnn.train).

    python benchmarks/bench_checks.py                  # mnist-4bit, batch 128, T = 25
    python benchmarks/bench_checks.py --T 100 --steps 5

Per batch the trainer checks that the BatchNorm statistics, the gradients, the weights and both
Adam moments hold no NaN or inf (mininsnn.optim.find_nonfinite over 36k parameters x 4 + 160
BatchNorm values); Network.backward checks dL/dS. Per epoch the state is checked before it is
saved (mininsnn.runs.check_training_tree). This script times each check on its own (median of
many repeats), and whole training steps with and without the per-batch checks, interleaved, so
the ratio is measured in one run. The machine is shared and noisy: compare numbers of one run.
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as mininsnn.cli

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mininsnn.config import make_config  # noqa: E402
from mininsnn.data import load_data  # noqa: E402
from mininsnn.optim import find_nonfinite  # noqa: E402
from mininsnn.runs import check_training_tree  # noqa: E402
from mininsnn.train import Trainer  # noqa: E402


def median_us(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e6 * statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="mnist-4bit")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--T", type=int, default=25, help="time steps of a training sample")
    p.add_argument("--steps", type=int, default=9, help="training steps timed per variant")
    p.add_argument("--repeats", type=int, default=3000, help="repeats of each check on its own")
    a = p.parse_args()

    cfg = make_config(a.config, batch_size=a.batch_size, num_steps=a.T, subset=a.batch_size * 4,
                      test_subset=a.batch_size)
    train, test = load_data(cfg)
    t = Trainer(cfg, train, test, log=lambda m: None)
    x, y = next(iter(t.batches.epoch(0)))
    t.train_step(x, y)                                     # compile / warm up, real state
    net, opt = t.net, t.opt
    n_params = sum(v.size for v in net.params.values())
    print(f"{a.config}: {n_params} parameters, batch {a.batch_size}, T={a.T}; "
          f"numpy {np.__version__}")
    try:
        np.show_runtime()                                  # which BLAS kernels (np.dot) ran
    except AttributeError:
        pass

    checks = {
        "BatchNorm statistics": lambda: find_nonfinite(net.buffers),
        "gradients": lambda: find_nonfinite(net.grads),
        "weights": lambda: find_nonfinite(net.params),
        "Adam m": lambda: find_nonfinite(opt.exp_avg),
        "Adam v": lambda: find_nonfinite(opt.exp_avg_sq),
        "dL/dS in backward": lambda: np.isfinite(np.zeros((a.T, a.batch_size, 10), np.float32)).all(),
    }
    total = 0.0
    for name, fn in checks.items():
        us = median_us(fn, a.repeats)
        total += us
        print(f"  check {name:22s} {us:8.1f} us")
    print(f"  all per-batch checks     {total:8.1f} us")
    tree = t.state()
    ms = median_us(lambda: check_training_tree(tree, "x"), 200) / 1e3
    print(f"  per epoch: check_training_tree of the state {ms:.2f} ms")

    # whole steps, with and without the trainer's per-batch checks, interleaved
    real = Trainer._check_finite
    step_ms = {"with checks": [], "without": []}
    for i in range(2 * a.steps):
        variant = "with checks" if i % 2 == 0 else "without"
        Trainer._check_finite = real if variant == "with checks" else (lambda self, w, arr: None)
        t0 = time.perf_counter()
        t.train_step(x, y)
        step_ms[variant].append(1e3 * (time.perf_counter() - t0))
    Trainer._check_finite = real
    w, wo = (statistics.median(step_ms[k]) for k in ("with checks", "without"))
    print(f"  training step: {w:.1f} ms with checks, {wo:.1f} ms without (median of {a.steps} each); "
          f"checks alone {total / 1e3:.3f} ms = {100 * total / 1e3 / wo:.3f} % of a step")


if __name__ == "__main__":
    main()
