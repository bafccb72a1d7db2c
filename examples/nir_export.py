#!/usr/bin/env python
"""Export a trained run to NIR, read it back, and measure what another simulator computes from it.

    python examples/nir_export.py runs/mnist-4bit-seed0/best.h5 --out mnist.nir
    python examples/nir_export.py RUN --out m.nir --data-dir ../shared/data/fashion-mnist
    python examples/nir_export.py RUN --out m.nir --snntorch-python /path/to/python   # + snnTorch

1. ``write_nir`` the checkpoint; ``read_nir`` it back and check the round trip: effective weights
   and buffers bit for bit, identical spikes in every layer on the first 256 test images.
2. Evaluate on the test set (``--test-subset`` images, default all) at the run's test time steps:
   the network as trained; the file as any NIR tool reads it (``read_nir(..., use_metadata=False)``:
   reset to zero in the same step, the leak beta = 1 - dt/tau); and, to tell the two differences
   apart, the trained weights with only the reset kind or only its timing changed.
   Printed as a Markdown table (docs/nir.md holds the one measured on the runs of RESULTS.md).
3. With ``--snntorch-python``, an interpreter that has torch, snnTorch and nirtorch: snnTorch's
   own ``import_from_nir`` runs the file (parity/nir_snntorch_side.py) on the first
   ``--snntorch-samples`` test images, and its output spike counts are compared with step 2's reading.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a clone without installing
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from mininsnn.config import test_steps, validate_config  # noqa: E402
from mininsnn.data import load_data  # noqa: E402
from mininsnn.models import build_from_config  # noqa: E402
from mininsnn.nir import read_nir, write_nir  # noqa: E402
from mininsnn.quant import quantize_forward  # noqa: E402
from mininsnn.runs import read_training_checkpoint  # noqa: E402


def counts_of(net, data, T, batch=250):
    """Output spike counts (N, classes) and mean firing rate of every spiking layer."""
    counts, rates = [], {}
    for i in range(0, len(data), batch):
        x, _ = data.get_batch(np.arange(i, min(i + batch, len(data))))
        counts.append(net.forward(x.astype(net.dtype), num_steps=T).sum(axis=0, dtype=np.int64))
        for k, r in net.firing_rates().items():
            rates[k] = rates.get(k, 0.0) + r * len(x)
    return np.concatenate(counts), {k: v / len(data) for k, v in rates.items()}


def check_round_trip(net, back, x, T):
    """Effective weights and buffers bit for bit, the same spikes in every layer."""
    ours, theirs = net.state_dict(), back.state_dict()
    for layer in net.layers:
        if hasattr(layer, "bits"):
            k = f"{layer.name}.weight"
            a = quantize_forward(ours[k], layer.bits)[0]
            b = quantize_forward(theirs[k], layer.bits)[0]
            assert a.tobytes() == b.tobytes(), k
    for k in ours:
        if not (k.endswith(".weight") and ours[k].ndim > 1):
            assert ours[k].tobytes() == theirs[k].tobytes(), k
    net.forward(x, num_steps=T, record=True)
    back.forward(x, num_steps=T, record=True)
    for k, s in net.recorded["spikes"].items():
        assert np.array_equal(s, back.recorded["spikes"][k]), k
    return sum(int(s.sum()) for s in net.recorded["spikes"].values())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="a training checkpoint (.h5) or a run folder (its best.h5)")
    p.add_argument("--out", required=True, help="the NIR file to write")
    p.add_argument("--data-dir", help="folder of the data set (default: mininsnn's)")
    p.add_argument("--test-subset", type=int, help="first N test images (default: all)")
    p.add_argument("--snntorch-python", help="interpreter with torch, snntorch and nirtorch")
    p.add_argument("--snntorch-samples", type=int, default=500)
    a = p.parse_args(argv)

    src = Path(a.checkpoint)
    src = src / "best.h5" if src.is_dir() else src
    tree = read_training_checkpoint(src)
    cfg = validate_config({**tree["config"], "test_subset": a.test_subset})
    net = build_from_config(cfg)
    net.load_state_dict(tree["model"])
    net.eval()
    T = test_steps(cfg)
    (test,) = load_data(cfg, a.data_dir, splits=("test",))
    y = test.labels

    out = write_nir(a.out, tree)
    back = read_nir(out)
    x0, _ = test.get_batch(np.arange(min(256, len(test))))
    n_spikes = check_round_trip(net, back, x0, T)
    print(f"wrote {out} ({out.stat().st_size} bytes); read back: the same network "
          f"(effective weights and buffers bit for bit, the same {n_spikes} spikes in every layer "
          f"on {len(x0)} test images at T = {T})\n")

    state = tree["model"]
    readings = [("as trained (mininsnn, read back from the file)",
                 f"{cfg['reset']}, {'one step late' if cfg['reset_delay'] else 'same step'}", back),
                ("the NIR file as other tools read it", "zero, same step (NIR LIF)",
                 read_nir(out, use_metadata=False))]
    for reset, delay in (("zero", True), ("subtract", False)):
        if (reset, delay) != (cfg["reset"], cfg["reset_delay"]):
            other = build_from_config(validate_config({**cfg, "reset": reset, "reset_delay": delay}))
            other.load_state_dict(state)
            readings.append(("trained weights, only the reset changed" if delay == cfg["reset_delay"]
                             else "trained weights, only the timing changed",
                             f"{reset}, {'one step late' if delay else 'same step'}", other.eval()))
    rows, results = [], {}
    for label, neuron, model in readings:
        t0 = time.perf_counter()
        counts, rates = counts_of(model, test, T)
        pred = counts.argmax(axis=1)
        results[label] = counts
        ref = results[readings[0][0]].argmax(axis=1)
        rows.append(f"| {label} | {neuron} | {100 * (pred == y).mean():.2f} % | "
                    f"{100 * (pred == ref).mean():.2f} % | "
                    + " / ".join(f"{rates[k]:.4f}" for k in sorted(rates))
                    + f" | {time.perf_counter() - t0:.0f} s |")
    print(f"{cfg['config']}, {src}, {len(test)} test images, T = {T}\n")
    print("| reading | neuron (reset, timing) | test accuracy | same prediction as trained | "
          "firing rate " + " / ".join(sorted(rates)) + " | time |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))

    if a.snntorch_python:
        n = min(a.snntorch_samples, len(test))
        with tempfile.TemporaryDirectory() as tmp:
            xs, _ = test.get_batch(np.arange(n))
            np.save(Path(tmp) / "x.npy", xs)
            side = Path(__file__).parents[1] / "parity" / "nir_snntorch_side.py"
            subprocess.run([a.snntorch_python, str(side), str(out), str(Path(tmp) / "x.npy"), str(T),
                            str(Path(tmp) / "counts.npy")], check=True)
            snn = np.load(Path(tmp) / "counts.npy")
        ours = results[readings[1][0]][:n]
        same = (snn == ours).all(axis=1)
        print(f"\nsnnTorch import_from_nir on the first {n} test images: accuracy "
              f"{100 * (snn.argmax(1) == y[:n]).mean():.2f} % (mininsnn's NIR reading "
              f"{100 * (ours.argmax(1) == y[:n]).mean():.2f} %, as trained "
              f"{100 * (results[readings[0][0]][:n].argmax(1) == y[:n]).mean():.2f} %); "
              f"identical output spike counts for {same.sum()} of {n} images, same prediction "
              f"for {(snn.argmax(1) == ours.argmax(1)).sum()}; largest count difference "
              f"{np.abs(snn - ours).max()}")


if __name__ == "__main__":
    main()
