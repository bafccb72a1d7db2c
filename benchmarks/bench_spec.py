#!/usr/bin/env python
"""A network built from a spec costs what the same layers cost built by hand: one training step each.

    python benchmarks/bench_spec.py                         # batch 64, T = 50, 7 repeats
    python benchmarks/bench_spec.py --batch 128 --steps 100 --repeats 5

The paper's 4-bit MNIST network two ways: mininsnn.models.reference_network (by hand) and
mininsnn.spec.build_network(paper_spec(...)) (from data), the same seed, so the same weights.
Both run forward + BPTT + Adam on the same MNIST batch, alternating, after one warm-up step each;
the medians and their ratio come from the same run. The first line names the BLAS kernel set.
"""
import os
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as mininsnn.cli: BLAS inside Numba threads stays single-threaded
import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_step import blas_info  # noqa: E402
from mininsnn.config import ARCHITECTURES, make_config, model_settings  # noqa: E402
from mininsnn.data import load_mnist  # noqa: E402
from mininsnn.loss import mse_count_loss  # noqa: E402
from mininsnn.models import build_from_config  # noqa: E402
from mininsnn.optim import Adam  # noqa: E402
from mininsnn.spec import build_network, paper_spec  # noqa: E402


def step(net, opt, x, y, T):
    spikes = net.forward(x, num_steps=T)
    _, d = mse_count_loss(spikes, y)
    net.zero_grad()
    net.backward(d)
    opt.step(net.grads)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=50, help="time steps T")
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args()
    cfg = make_config("mnist-4bit", seed=0)
    shape, c1, c2, n = ARCHITECTURES["mnist"]
    nets = {"by hand": build_from_config(cfg),
            "from a spec": build_network(paper_spec(shape, (c1, c2), n), model_settings(cfg), seed=0)}
    for k in nets["by hand"].state_dict():
        assert np.array_equal(nets["by hand"].state_dict()[k], nets["from a spec"].state_dict()[k]), k
    data = load_mnist("train", root=HERE.parent / "datasets" / "mnist")
    x = (data.images[:a.batch][:, None] / np.float32(255)).astype(np.float32)
    y = data.labels[:a.batch]
    opts = {k: Adam(net.params, lr=cfg["lr"]) for k, net in nets.items()}
    times = {k: [] for k in nets}
    for k, net in nets.items():                      # warm-up: compilation, work arrays
        step(net, opts[k], x, y, a.steps)
    for _ in range(a.repeats):
        for k, net in nets.items():
            t0 = time.perf_counter()
            step(net, opts[k], x, y, a.steps)
            times[k].append(time.perf_counter() - t0)
    print("BLAS:", ", ".join(f"{k} {v}" for k, v in blas_info().items()))
    print(f"mnist-4bit, batch {a.batch}, T = {a.steps}, {a.repeats} alternating repeats")
    med = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    for k, m in med.items():
        print(f"  {k:12s} {m:9.1f} ms per training step (median; min {1e3 * min(times[k]):.1f})")
    print(f"  ratio from a spec / by hand: {med['from a spec'] / med['by hand']:.3f}")


if __name__ == "__main__":
    main()
