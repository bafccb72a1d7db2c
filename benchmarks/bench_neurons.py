#!/usr/bin/env python
"""Time forward + BPTT of the recurrent neuron layers against a Leaky layer of the same size.

    python benchmarks/bench_neurons.py                    # n = 256, B = 64, T = 100, 9 repeats
    python benchmarks/bench_neurons.py --n 128 --batch 32 --steps 50 --repeats 5 --threads 1

Rows (medians over the repeats, ms per call of forward + backward, and per step):
  Leaky            the reference neuron (kernels/lif.py), scalar beta and threshold
  Leaky general    the same neuron on kernels/neuron.py (per-neuron parameter vectors)
  Synaptic         current-based LIF, kernels/neuron.py
  RLeaky           Leaky + feedback through W_rec (kernels/recurrent.py)
  RSynaptic        Synaptic + feedback through W_rec
  Linear + Leaky   a feed-forward layer of the same size and weights: Linear(n, n) then Leaky, the
                   cost a recurrent layer is fairly held against (its W_rec is an n x n weight too)
  W_rec matmuls    the dense products the feedback costs, done by NumPy/BLAS: T x (B, n) @ (n, n)
                   forward and backward, plus dW_rec = (n, T*B) @ (T*B, n): a yardstick for the
                   feedback's arithmetic (the kernels add the forward's product by the spikes that fired)
Ratios come from the same run. The machine may be shared: compare ratios, not absolute numbers
(``--clock cpu`` times the process's CPU time instead of the wall clock: with one thread, less
sensitive to other processes). The first line names the BLAS kernel set the NumPy row ran with.
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as mininsnn.cli: BLAS inside Numba threads stays single-threaded

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numba  # noqa: E402

from bench_step import blas_info  # noqa: E402  (this directory is on the path when run as a script)
from mininsnn.layers import Context, Linear  # noqa: E402
from mininsnn.neurons import Leaky, Synaptic  # noqa: E402
from mininsnn.recurrent import RLeaky, RSynaptic  # noqa: E402


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter  # set by --clock


def time_layer(layer, x, g, ctx, repeats):
    """Median ms of forward + backward, after one warm-up call (compilation)."""
    layer.forward(x, ctx)
    layer.backward(g)
    times = []
    for _ in range(repeats):
        t0 = clock()
        layer.forward(x, ctx)
        layer.backward(g)
        times.append(clock() - t0)
    return 1e3 * float(np.median(times)), layer.firing_rate


class _Chain:
    """Linear then Leaky, timed as one layer: forward in order, backward in reverse."""

    def __init__(self, *layers):
        self.layers = layers

    def forward(self, x, ctx):
        for layer in self.layers:
            x = layer.forward(x, ctx)
        return x

    def backward(self, g):
        for layer in reversed(self.layers):
            g = layer.backward(g)
        return g

    @property
    def firing_rate(self):
        return self.layers[-1].firing_rate


def time_matmuls(T, B, n, repeats, rng):
    """Median ms of the dense products of the feedback, in NumPy."""
    W = rng.standard_normal((n, n)).astype(np.float32)
    S = (rng.random((T, B, n)) < 0.1).astype(np.float32)
    D = rng.standard_normal((T, B, n)).astype(np.float32)
    out = np.empty((B, n), np.float32)
    times = []
    for _ in range(repeats + 1):
        t0 = clock()
        for t in range(1, T):
            np.matmul(S[t - 1], W.T, out=out)  # forward: W S[t-1]
            np.matmul(D[t], W, out=out)  # backward: W^T dXin[t]
        D[1:].reshape(-1, n).T @ S[:-1].reshape(-1, n)  # dW_rec
        times.append(clock() - t0)
    return 1e3 * float(np.median(times[1:]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=None, help="Numba threads (default: all)")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="wall clock or process CPU time")
    a = ap.parse_args()
    global clock
    clock = CLOCKS[a.clock]
    if a.threads:
        numba.set_num_threads(a.threads)
    T, B, n = a.steps, a.batch, a.n
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((T, B, n)) * 0.5 + 0.3).astype(np.float32)  # a current that fires ~10-20 %
    g = rng.standard_normal((T, B, n)).astype(np.float32)
    ctx = Context(T=T, training=True, rng=rng)
    layers = {
        "Leaky": Leaky(0.9, 1.0),
        "Leaky general": Leaky(np.full(n, 0.9), 1.0),
        "Synaptic": Synaptic(0.8, 0.9, 1.0),
        "RLeaky": RLeaky(n, 0.9, 1.0, rng=np.random.default_rng(1)),
        "RSynaptic": RSynaptic(n, 0.8, 0.9, 1.0, rng=np.random.default_rng(1)),
        "Linear + Leaky": _Chain(Linear(n, n, rng=np.random.default_rng(1)), Leaky(0.9, 1.0)),
    }
    print("BLAS:", ", ".join(f"{k} {v}" for k, v in blas_info().items()))
    print(f"n = {n}, B = {B}, T = {T}, float32, {numba.get_num_threads()} Numba thread(s), {a.repeats} repeats, "
          f"{a.clock} clock")
    res = {}
    for name, layer in layers.items():
        ms, rate = time_layer(layer, x, g, ctx, a.repeats)
        res[name] = ms
        print(f"  {name:14s} {ms:9.2f} ms  ({1e3 * ms / T:7.1f} us/step)  firing rate {rate:.3f}")
    mm = time_matmuls(T, B, n, a.repeats, rng)
    print(f"  {'W_rec matmuls':14s} {mm:9.2f} ms  ({1e3 * mm / T:7.1f} us/step)  (NumPy/BLAS, dense)")
    ref = res["Leaky"]
    print("ratios to Leaky (same run):")
    for name in ("Leaky general", "Synaptic", "RLeaky", "RSynaptic"):
        print(f"  {name:14s} {res[name] / ref:6.2f}x")
    print(f"  RLeaky - W_rec matmuls (dense BLAS yardstick): {(res['RLeaky'] - mm) / ref:6.2f}x Leaky")
    print(f"  RLeaky / Leaky general: {res['RLeaky'] / res['Leaky general']:6.2f}x")
    print(f"  RLeaky / (Linear + Leaky), a feed-forward layer of the same size: "
          f"{res['RLeaky'] / res['Linear + Leaky']:6.2f}x")


if __name__ == "__main__":
    main()
