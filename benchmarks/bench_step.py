#!/usr/bin/env python
"""Time one training step (forward + BPTT + Adam) of a reference config on real MNIST batches.

    python benchmarks/bench_step.py                          # mnist-4bit, batch 128, T = 100
    python benchmarks/bench_step.py --layers                 # plus a per-layer breakdown
    python benchmarks/bench_step.py --sweep                  # ms/step for T in {25,50,100,200}, B in {32,128,256}
    python benchmarks/bench_step.py --reference-python /tmp/refenv/bin/python   # ratio to snnTorch + Brevitas

    python benchmarks/bench_step.py --threads 1,2 --layers   # the step (and each layer) at 1 and 2 Numba threads
    python benchmarks/bench_step.py --sparse 0.1,0.2,0.5     # also the sparse backward at these B
    python benchmarks/bench_step.py --both-blas --reference-python /tmp/refenv/bin/python
        # the whole run twice: as is, then in a subprocess with OPENBLAS_CORETYPE=Haswell set for
        # that command alone; each beside the reference measured under the same setting

Prints the BLAS kernel set it ran with (OpenBLAS's own core name, OPENBLAS_CORETYPE, the CPU), the
median and spread of ms/step, peak RSS, firing rates, the dense-equivalent GFLOP/s of the
conv/linear work, and eval-mode throughput. The machine is shared and noisy: compare ratios
measured in the same run, not absolute numbers across runs. The final benchmark is one line:

    python benchmarks/bench_step.py --both-blas --threads 1,2 --layers --sparse 0.1,0.2,0.5 --repeats 9 \
        --reference-python /tmp/refenv/bin/python --json benchmarks/results.json --log benchmarks/bench_step.log
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as mininsnn.cli: BLAS inside Numba threads stays single-threaded

import argparse  # noqa: E402
import collections  # noqa: E402
import gc  # noqa: E402
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


def blas_info():
    """The OpenBLAS kernel set NumPy runs with: OpenBLAS's own core name (ctypes into NumPy's
    bundled library; threadpoolctl is not needed), OPENBLAS_CORETYPE, and the CPU model."""
    import ctypes  # noqa: PLC0415
    import glob  # noqa: PLC0415
    core = config = "unknown"
    for lib in glob.glob(str(Path(np.__file__).parent.parent / "numpy.libs" / "*openblas*")):
        dll = ctypes.CDLL(lib)
        for prefix, suffix in (("scipy_openblas", "64_"), ("openblas", "64_"), ("openblas", "")):
            f = getattr(dll, f"{prefix}_get_corename{suffix}", None)
            g = getattr(dll, f"{prefix}_get_config{suffix}", None)
            if f is not None:
                f.restype = g.restype = ctypes.c_char_p
                core, config = f().decode(), g().decode()
                break
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"openblas_core": core, "openblas_config": config,
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)"), "cpu": cpu}


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


def time_steps(config, batch, T, repeats, warmup, data, layers=False, **overrides):
    net = build_model(config, seed=0, num_steps=T, **overrides)
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
    print(f"reference: torch {res['torch']}, snntorch {res['snntorch']}, {res['threads']} threads, B={batch}, "
          f"steps (s): {', '.join(f'{t:.2f}' for t in res['step_s'])}")
    return float(np.median(res["step_s"]))


def layer_table(net, tf, tb, warmup):
    """{layer: (forward ms, backward ms)}, medians after the warm-up steps."""
    return {layer.name: (float(np.median(tf[layer.name][warmup:]) * 1e3),
                         float(np.median(tb[layer.name][warmup:]) * 1e3) if tb[layer.name] else 0.0)
            for layer in net.layers}


def measure(args, data):
    """One benchmark run under the BLAS setting of this process: the numbers as a dict."""
    import numba  # noqa: PLC0415

    B, T = args.batch, args.num_steps
    out = {"config": args.config, "batch": B, "T": T, "blas": blas_info(),
           "numpy": np.__version__, "numba": numba.__version__, "threads": {}}
    print(f"BLAS: OpenBLAS core {out['blas']['openblas_core']} ({out['blas']['openblas_config']}), "
          f"OPENBLAS_CORETYPE={out['blas']['OPENBLAS_CORETYPE']}, CPU {out['blas']['cpu']}")
    print(f"numpy {np.__version__}, numba {numba.__version__}, OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS')}")
    threads = [int(t) for t in args.threads.split(",")] if args.threads else [numba.get_num_threads()]
    net = None
    for nt in threads:
        numba.set_num_threads(nt)
        net = tf = tb = None  # one network alive at a time: peak RSS is that of one training step
        gc.collect()  # (instrument()'s wrappers make each network a reference cycle)
        times, rates, (tf, tb), net = time_steps(args.config, B, T, args.repeats, args.warmup, data, args.layers)
        med = float(np.median(times))
        r = {"median_ms": med * 1e3, "min_ms": float(times.min() * 1e3), "max_ms": float(times.max() * 1e3),
             "dense_gflops_per_s": dense_flops(B, T) / med / 1e9,
             "firing_rates": {k: float(np.mean([x[k] for x in rates])) for k in rates[0]}}
        print(f"train step {args.config} B={B} T={T}, {nt} Numba thread(s): median {med * 1e3:.0f} ms "
              f"(min {times.min() * 1e3:.0f}, max {times.max() * 1e3:.0f}, n={len(times)}); "
              f"dense-equivalent {r['dense_gflops_per_s']:.0f} GFLOP/s")
        if args.layers:
            r["layers"] = layer_table(net, tf, tb, args.warmup)
        out["threads"][str(nt)] = r
    numba.set_num_threads(threads[-1])
    first, last = out["threads"][str(threads[0])], out["threads"][str(threads[-1])]
    out["median_ms"], out["firing_rates"] = last["median_ms"], last["firing_rates"]
    print("firing rates: " + ", ".join(f"{k} {v:.3f}" for k, v in last["firing_rates"].items()))
    if args.layers:
        head = "".join(f"  fwd@{t} bwd@{t}" for t in threads)
        print(f"{'layer':10s}{head}" + ("   speed-up fwd, bwd" if len(threads) > 1 else ""))
        for name in last["layers"]:
            cells = "".join(f" {out['threads'][str(t)]['layers'][name][0]:7.1f} {out['threads'][str(t)]['layers'][name][1]:7.1f}"
                            for t in threads)
            f1, b1 = first["layers"][name]
            f2, b2 = last["layers"][name]
            scale = (f"   {f1 / f2:5.2f} {b1 / b2:5.2f}" if len(threads) > 1 and min(f2, b2) > 0.5 else "")
            print(f"{name:10s}{cells}{scale}")
    if len(threads) > 1:
        print(f"thread scaling {threads[0]} -> {threads[-1]}: {first['median_ms'] / last['median_ms']:.2f}x")
    out["peak_rss_mib"] = peak_rss_mib()  # before the sparse runs, which list their active entries too
    print(f"peak RSS {out['peak_rss_mib']:.0f} MiB")
    ips = time_eval(net, data, T)
    out["eval_images_per_s"] = ips
    print(f"eval (T={T}): {ips:.0f} images/s")
    if args.sparse:
        out["sparse"] = {}
        for b in [float(v) for v in args.sparse.split(",")]:
            net = netk = None
            gc.collect()
            tk, rk, _, netk = time_steps(args.config, B, T, args.repeats, args.warmup, data, sparse_grad=b)
            lif = netk.layers[[l.name for l in netk.layers].index("lif1")]
            act = lif.active[2][:, -1].sum() / lif.cache[1].size if lif.active is not None else float("nan")
            out["sparse"][str(b)] = {"median_ms": float(np.median(tk) * 1e3), "lif1_active_fraction": float(act)}
            print(f"sparse backward B={b}: median {np.median(tk) * 1e3:.0f} ms "
                  f"(min {tk.min() * 1e3:.0f}, max {tk.max() * 1e3:.0f}); lif1 entries within B of threshold: "
                  f"{100 * act:.1f} %")
    if args.sweep:
        out["sweep"] = []
        for Tk in (25, 50, 100, 200):
            for Bk in (32, 128, 256):
                tk, _, _, _ = time_steps(args.config, Bk, Tk, 3, 1, data)
                ms = float(np.median(tk) * 1e3)
                out["sweep"].append({"T": Tk, "batch": Bk, "ms": ms})
                print(f"  T={Tk:3d} B={Bk:3d}: {ms:7.0f} ms/step  {ms / (Tk * Bk) * 1e3:6.1f} us per sample-step")
    if args.reference_python:
        ref = reference_step(args.reference_python, B, T, args.reference_repeats)
        if ref is not None:
            out["reference_median_ms"] = ref * 1e3
            out["speedup"] = ref / (out["median_ms"] / 1e3)
            print(f"reference (snnTorch + Brevitas, PyTorch CPU): median {ref * 1e3:.0f} ms/step; "
                  f"mininsnn is {out['speedup']:.1f}x faster in this run")
            for b, r in out.get("sparse", {}).items():
                r["speedup"] = ref / (r["median_ms"] / 1e3)
                print(f"  sparse backward B={b}: {r['speedup']:.1f}x")
    return out


class _Tee:
    """sys.stdout that also writes to a log file."""

    def __init__(self, path):
        self.file, self.out = open(path, "w"), sys.stdout

    def write(self, text):
        self.out.write(text)
        self.file.write(text)
        self.file.flush()  # the log stays complete if the run is stopped

    def flush(self):
        self.out.flush()
        self.file.flush()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="mnist-4bit")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--num-steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", help="Numba thread counts to time the step with, e.g. 1,2 (default: all)")
    ap.add_argument("--layers", action="store_true", help="per-layer forward/backward times")
    ap.add_argument("--sparse", metavar="B,...", help="also time the sparse backward (sparse_grad) at these B")
    ap.add_argument("--sweep", action="store_true", help="ms/step over T and batch size")
    ap.add_argument("--reference-python", metavar="PYTHON",
                    help="also time the snnTorch + Brevitas reference with this interpreter")
    ap.add_argument("--reference-repeats", type=int, default=3, help="reference steps to time (~2 s each)")
    ap.add_argument("--both-blas", action="store_true",
                    help="run everything twice: as is, then in a subprocess with OPENBLAS_CORETYPE=Haswell")
    ap.add_argument("--json", help="write the numbers to this file")
    ap.add_argument("--log", help="also write the output to this file")
    args = ap.parse_args(argv)
    if args.log:
        sys.stdout = _Tee(args.log)
    print("command: python benchmarks/bench_step.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    data = load_mnist("train")
    out = measure(args, data)
    if args.both_blas:
        import tempfile  # noqa: PLC0415
        with tempfile.TemporaryDirectory() as d:
            sub = [a for a in (argv if argv is not None else sys.argv[1:])
                   if a != "--both-blas"]
            for flag in ("--json", "--log"):  # the subprocess writes its own, into d
                if flag in sub:
                    k = sub.index(flag)
                    del sub[k:k + 2]
            print("\n--- the same, in a subprocess with OPENBLAS_CORETYPE=Haswell ---", flush=True)
            env = {**os.environ, "OPENBLAS_CORETYPE": "Haswell"}
            res = subprocess.run([sys.executable, __file__, *sub, "--json", f"{d}/haswell.json"], env=env,
                                 capture_output=True, text=True)
            print(res.stdout, end="")
            if res.returncode != 0:
                print(res.stderr)
                raise SystemExit("the OPENBLAS_CORETYPE=Haswell run failed")
            other = json.loads(Path(f"{d}/haswell.json").read_text())
        out = {"default": out, "haswell": other}
        a, b = out["default"], out["haswell"]
        print(f"\nBLAS settings side by side: default ({a['blas']['openblas_core']}) {a['median_ms']:.0f} ms, "
              f"OPENBLAS_CORETYPE=Haswell ({b['blas']['openblas_core']}) {b['median_ms']:.0f} ms "
              f"(differ by {100 * abs(a['median_ms'] - b['median_ms']) / min(a['median_ms'], b['median_ms']):.0f} %)")
        if "speedup" in a and "speedup" in b:
            print(f"ratio to the reference: {a['speedup']:.1f}x (default), {b['speedup']:.1f}x (Haswell)")
    if args.json:
        tmp = Path(args.json).with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=2))
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
