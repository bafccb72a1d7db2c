#!/usr/bin/env python
"""Inference speed of the integer engines against the float engine, in the same run.

    python benchmarks/bench_deploy.py                    # shipped mnist-4bit, batch 256, T = 100
    python benchmarks/bench_deploy.py --repeats 7 --numpy-images 256

Prints images/s (median and range over repeats; also images per CPU second, which is less
sensitive to other processes on a shared machine) of: the float engine in eval mode (the training
engine, float32), the integer Numba engine, the integer NumPy engine; their ratios; and the
working set of each at the batch size (NumPy arrays from tracemalloc's peak; the Numba engine's
per-sample arrays counted from their shapes). The machine is shared: compare ratios from one run.
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numba  # noqa: E402

from mininsnn import pretrained  # noqa: E402
from mininsnn.data import load_mnist  # noqa: E402
from mininsnn.deploy import engine as npe  # noqa: E402
from mininsnn.deploy import numba_engine as nbe  # noqa: E402


def timed(fn, n_images):
    """(images per wall-clock second, images per CPU second summed over threads) of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return n_images / (time.perf_counter() - t0), n_images / (time.process_time() - c0)


def peak_bytes(fn):
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def blas_info():
    """The OpenBLAS kernel set NumPy runs with (only the float engine's conv1 uses BLAS; the
    integer engines never do), from bench_step's reader, and the host's OpenBLAS variables."""
    from bench_step import blas_info as openblas   # this folder is on sys.path when run as a script
    b = openblas()
    return (f"OpenBLAS core {b['openblas_core']} ({b['openblas_config']}), OPENBLAS_CORETYPE="
            f"{b['OPENBLAS_CORETYPE']}, OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE', '(unset)')}; "
            f"CPU {b['cpu']}")


def float_buffers(net):
    """Bytes of the float network's work arrays (layer buffers and caches) after a forward."""
    seen, total = set(), 0
    for layer in net.layers:
        arrays = list(layer._work.values())
        if isinstance(layer.cache, tuple):
            arrays += [c for c in layer.cache if isinstance(c, np.ndarray)]
        for arr in arrays:
            key = arr.__array_interface__["data"][0]
            if key not in seen:
                seen.add(key)
                total += arr.nbytes
    return total


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mnist-4bit")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--num-steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--numpy-images", type=int, default=256, help="images per NumPy-engine repeat")
    a = p.parse_args()
    T, B = a.num_steps, a.batch
    net = pretrained.load(a.model)
    model = pretrained.load_integer(a.model)
    x = load_mnist("test").images[:B][:, None]
    xf = (x / np.float32(255)).astype(np.float32)
    xn = load_mnist("test").images[:a.numpy_images][:, None]
    # warm-up: JIT compilation, and the float engine's work arrays at this batch size (its
    # first call at a new shape allocates ~600 MiB and ran at a sixth of its speed)
    net.forward(xf, num_steps=T)
    nbe.predict(model, x, T)
    print(f"{a.model}, batch {B}, T = {T}, {numba.get_num_threads()} Numba threads, "
          f"{os.cpu_count()} CPUs; BLAS: {blas_info()}")
    npe.predict(model, xn[:2], T)       # builds the NumPy engine's tables once
    results = {"float": [], "int (Numba)": [], "int (NumPy)": []}
    for _ in range(a.repeats):          # interleaved, so that load changes hit all three alike
        results["float"].append(timed(lambda: net.forward(xf, num_steps=T), B))
        results["int (Numba)"].append(timed(lambda: nbe.predict(model, x, T), B))
        results["int (NumPy)"].append(timed(lambda: npe.predict(model, xn, T), len(xn)))
    cpu = {k: float(np.median([r[1] for r in v])) for k, v in results.items()}
    results = {k: (float(np.median([r[0] for r in v])), min(r[0] for r in v),
                   max(r[0] for r in v)) for k, v in results.items()}
    for k, (med, lo, hi) in results.items():
        print(f"  {k:12s} {med:8.1f} images/s (median; range {lo:.1f}..{hi:.1f}); "
              f"{cpu[k]:.1f} images per CPU second")
    f, fc = results["float"][0], cpu["float"]
    print(f"  ratio int (Numba) / float = {results['int (Numba)'][0] / f:.2f} "
          f"(CPU time: {cpu['int (Numba)'] / fc:.2f}); int (NumPy) / float = "
          f"{results['int (NumPy)'][0] / f:.2f} (CPU time: {cpu['int (NumPy)'] / fc:.2f})")
    # working sets at batch B
    net.forward(xf, num_steps=T)
    float_peak = float_buffers(net)
    numpy_peak = peak_bytes(lambda: npe.predict(model, x, T))
    N1 = int(np.prod(model.layers[0].out_shape))
    N2 = int(np.prod(model.layers[1].out_shape))
    K = model.num_classes
    # layer 1: A1, I1, cand, Vc/Ic/thc (<= N1 each), S1 (T, nc), tstart, the spike steps
    # (<= T nc, int32); conv2's A2 (T, N2) int16; layers 2 and 3 step by step
    per_sample = (8 + 4 + 4 + 12) * N1 + T * N1 + 4 * N1 + 4 * T * N1 + 2 * T * N2 \
        + (4 + 4 + 1 + 4) * N2 + 16 * K
    weights = sum(arr.nbytes for arr in nbe.prepare(model)[:5])
    print(f"  working set at batch {B}: float {float_peak / 2**20:.1f} MiB (its layers' work "
          f"arrays); int (NumPy) {numpy_peak / 2**20:.1f} MiB (peak, it runs "
          f"{npe.BATCH} samples at a time); int (Numba) at most {per_sample / 1024:.1f} KiB per "
          f"sample in flight ({numba.get_num_threads()} at a time) + {weights / 1024:.1f} KiB of tables "
          f"+ input {x.nbytes / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
