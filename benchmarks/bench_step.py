#!/usr/bin/env python
"""Time one training step (forward + BPTT + Adam) of a reference config on real MNIST batches.

    python benchmarks/bench_step.py                          # mnist-4bit, batch 128, T = 100
    python benchmarks/bench_step.py --layers                 # plus a per-layer breakdown
    python benchmarks/bench_step.py --sweep                  # ms/step for T in {25,50,100,200}, B in {32,128,256}
    python benchmarks/bench_step.py --reference-python /tmp/refenv/bin/python   # ratio to snnTorch + Brevitas

Prints the median and spread of ms/step, peak RSS, firing rates, the dense-equivalent GFLOP/s of
the conv/linear work, and eval-mode throughput. The machine is shared and noisy: compare ratios
measured in the same run, not absolute numbers across runs.
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as mininsnn.cli: BLAS inside Numba threads stays single-threaded

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mininsnn.data import load_mnist  # noqa: E402
from mininsnn.loss import mse_count_loss  # noqa: E402
from mininsnn.models import build_model  # noqa: E402
from mininsnn.optim import Adam  # noqa: E402


def dense_flops(batch, T):
    """Multiply-adds x 2 of the unfused dense conv/linear work of one training step (fwd + both grads)."""
    conv1 = batch * 16 * 24 * 24 * 25            # once per batch (static input), fwd + dW
    conv2 = batch * T * 64 * 8 * 8 * 16 * 25     # per step: fwd, dW, dX
    fc = batch * T * 10 * 1024                   # fwd, dW, dX
    return 2 * (2 * conv1 + 3 * conv2 + 3 * fc)


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def instrument(net):
    """Wrap every layer's forward/backward with a timer; returns the dicts of times."""
    tf, tb = collections.defaultdict(list), collections.defaultdict(list)
    for layer in net.layers:
        f0, b0 = layer.forward, layer.backward

        def f(x, ctx, _f=f0, _n=layer.name):
            t = time.perf_counter()
            out = _f(x, ctx)
            tf[_n].append(time.perf_counter() - t)
            return out

        def b(d, _b=b0, _n=layer.name):
            t = time.perf_counter()
            out = _b(d)
            tb[_n].append(time.perf_counter() - t)
            return out

        layer.forward, layer.backward = f, b
    return tf, tb


def time_steps(config, batch, T, repeats, warmup, data, layers=False):
    net = build_model(config, seed=0, num_steps=T)
    adam = Adam(net.params, lr=net.config["lr"])
    tf = tb = None
    if layers:
        tf, tb = instrument(net)
    times, rates = [], []
    n = len(data)
    for k in range(warmup + repeats):
        idx = np.arange(k * batch, (k + 1) * batch) % n
        x, y = data.get_batch(idx)
        t0 = time.perf_counter()
        spk = net.forward(x, num_steps=T)
        _, dspk = mse_count_loss(spk, y)
        net.zero_grad()
        net.backward(dspk)
        adam.step(net.grads)
        dt = time.perf_counter() - t0
        if k >= warmup:
            times.append(dt)
            rates.append(net.firing_rates())
    return np.array(times), rates, (tf, tb), net


def time_eval(net, data, T, batch=256, batches=4):
    net.eval()
    x, _ = data.get_batch(np.arange(batch))
    net.forward(x, num_steps=T)  # warm-up
    t = time.perf_counter()
    for k in range(batches):
        x, _ = data.get_batch(np.arange(k * batch, (k + 1) * batch) % len(data))
        net.forward(x, num_steps=T)
    return batches * batch / (time.perf_counter() - t)


def reference_step(python, batch, T, repeats):
    """Median seconds of the snnTorch + Brevitas step, run by ``python`` (an interpreter that has
    torch, snntorch and brevitas: they are never mininsnn dependencies); None if it cannot run."""
    script = Path(__file__).with_name("reference_torch.py")
    cmd = [python, str(script), "--batch", str(batch), "--num-steps", str(T), "--repeats", str(repeats)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800).stdout
    except (OSError, subprocess.SubprocessError) as e:
        print(f"reference: not measured ({e})")
        return None
    res = json.loads(out.strip().splitlines()[-1])
    print(f"reference: torch {res['torch']}, snntorch {res['snntorch']}, {res['threads']} threads, B={batch}")
    return float(np.median(res["step_s"]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="mnist-4bit")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--num-steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--layers", action="store_true", help="per-layer forward/backward times")
    ap.add_argument("--sweep", action="store_true", help="ms/step over T and batch size")
    ap.add_argument("--reference-python", metavar="PYTHON",
                    help="also time the snnTorch + Brevitas reference with this interpreter")
    ap.add_argument("--json", help="write the numbers to this file")
    args = ap.parse_args(argv)

    import numba  # noqa: PLC0415

    data = load_mnist("train")
    print(f"machine: {platform.processor() or platform.machine()}, numba threads {numba.get_num_threads()}, "
          f"numpy {np.__version__}, numba {numba.__version__}")
    B, T = args.batch, args.num_steps
    times, rates, (tf, tb), net = time_steps(args.config, B, T, args.repeats, args.warmup, data, args.layers)
    med = float(np.median(times))
    flops = dense_flops(B, T)
    out = {"config": args.config, "batch": B, "T": T, "median_ms": med * 1e3,
           "min_ms": float(times.min() * 1e3), "max_ms": float(times.max() * 1e3),
           "peak_rss_mib": peak_rss_mib(), "dense_gflops_per_s": flops / med / 1e9,
           "firing_rates": {k: float(np.mean([r[k] for r in rates])) for k in rates[0]}}
    print(f"train step {args.config} B={B} T={T}: median {med * 1e3:.0f} ms "
          f"(min {times.min() * 1e3:.0f}, max {times.max() * 1e3:.0f}, n={len(times)}); "
          f"peak RSS {out['peak_rss_mib']:.0f} MiB; dense-equivalent {out['dense_gflops_per_s']:.0f} GFLOP/s")
    print("firing rates: " + ", ".join(f"{k} {v:.3f}" for k, v in out["firing_rates"].items()))
    if args.layers:
        print(f"{'layer':10s} {'fwd ms':>8s} {'bwd ms':>8s}")
        for layer in net.layers:
            f = np.median(tf[layer.name][args.warmup:]) * 1e3
            b = np.median(tb[layer.name][args.warmup:]) * 1e3 if tb[layer.name] else 0.0
            print(f"{layer.name:10s} {f:8.1f} {b:8.1f}")
    ips = time_eval(net, data, T)
    out["eval_images_per_s"] = ips
    print(f"eval (T={T}): {ips:.0f} images/s")
    if args.sweep:
        out["sweep"] = []
        for Tk in (25, 50, 100, 200):
            for Bk in (32, 128, 256):
                tk, _, _, _ = time_steps(args.config, Bk, Tk, 3, 1, data)
                ms = float(np.median(tk) * 1e3)
                out["sweep"].append({"T": Tk, "batch": Bk, "ms": ms})
                print(f"  T={Tk:3d} B={Bk:3d}: {ms:7.0f} ms/step  {ms / (Tk * Bk) * 1e3:6.1f} us per sample-step")
    if args.reference_python:
        ref = reference_step(args.reference_python, B, T, max(3, args.repeats // 2))
        if ref is not None:
            out["reference_median_ms"] = ref * 1e3
            out["speedup"] = ref / med
            print(f"reference (snnTorch + Brevitas, PyTorch CPU): median {ref * 1e3:.0f} ms/step; "
                  f"mininsnn is {ref / med:.1f}x faster in this run")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
