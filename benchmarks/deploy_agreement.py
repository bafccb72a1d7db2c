#!/usr/bin/env python
"""How closely the integer engine reproduces the float model, on whole test sets.

    python benchmarks/deploy_agreement.py                       # both models, full test sets, T = 100
    python benchmarks/deploy_agreement.py --limit 512           # a quick look
    python benchmarks/deploy_agreement.py --out benchmarks/deploy_agreement.md \
        --json benchmarks/deploy_agreement.json --fmnist-dir ../shared/data/fashion-mnist

The JSON record (headline numbers and the C export's sizes of each model) is what RESULTS.md's
deployment table is made from (python -m experiments.make_report).

For each trained 4-bit model (the pretrained models that ship in mininsnn/pretrained by default, or
a training checkpoint given with --mnist / --fmnist) and each number representation (fractional bits F, leak), on the test set at T = 100:
- the share of images whose predicted class equals the float model's, both accuracies;
- per LIF layer, the share of neurons (image, neuron) whose spike count over T equals the float
  model's, and the share of (step, image, neuron) spikes that differ;
- where the differences come from: for layer 1 (its input is exact in both engines, so every
  difference there is rounding), the float membrane's distance to the threshold |U - theta| / theta
  at the first step where a neuron's spikes differ.
The float model is mininsnn's training engine in eval mode (float32), the integer one the Numba
engine; the NumPy engine is checked against it on the first batch (identical spikes).
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mininsnn import pretrained  # noqa: E402
from mininsnn.checkpoint import load_checkpoint  # noqa: E402
from mininsnn.deploy import engine as npe  # noqa: E402
from mininsnn.deploy import numba_engine as nbe  # noqa: E402
from mininsnn.deploy.conversion import convert  # noqa: E402
from mininsnn.config import validate_config  # noqa: E402
from mininsnn.data import load_data  # noqa: E402
from mininsnn.train import build_net  # noqa: E402

MODELS = {"MNIST": "mnist-4bit", "Fashion-MNIST": "fmnist-4bit"}   # pretrained names
LAYERS = (("conv1", "lif1"), ("conv2", "lif2"), ("fc1", "lif3"))
# (label, convert() keyword arguments)
SETTINGS = [("F = 0", dict(frac_bits=0)),
            ("F = 4", dict(frac_bits=4)),
            ("F = 7", dict(frac_bits=7)),
            ("F = max", dict(frac_bits="max")),
            ("F = max, leak Q = 16", dict(frac_bits="max", leak_bits=16)),
            ("F = max, shift leak", dict(frac_bits="max", leak="shift"))]


def float_run(net, x, T):
    """Float spikes of every LIF layer and the layer-1 membranes (float32), eval mode."""
    net.forward((x / np.float32(255)).astype(np.float32), num_steps=T,
                record=("spikes", "membrane"))
    U1 = net.recorded["membrane"]["lif1"].reshape(T, -1)   # (T, N)
    return {k: v.reshape(v.shape[0], v.shape[1], -1)
            for k, v in net.recorded["spikes"].items()}, U1


def read_model(spec):
    """(state dict, config, epoch) of a pretrained model name or a training checkpoint file."""
    if spec in pretrained.NAMES:
        state, config, info = pretrained.read(spec)
        return state, config, info["epoch"]
    tree = load_checkpoint(spec)
    return tree["model"], tree["config"], tree["epoch"]


def run(label, ckpt, T, limit, batch, data_dir):
    model_state, config, epoch = read_model(ckpt)
    cfg = validate_config({**config, "test_subset": limit})
    (test,) = load_data(cfg, data_dir, splits=("test",))
    net = build_net(cfg)
    net.load_state_dict(model_state)
    net.eval()
    theta = cfg["threshold"]
    models = []
    for name, kw in SETTINGS:
        try:
            models.append((name, convert(model_state, cfg, **kw)))
        except ValueError as e:
            models.append((name, str(e)))
    n = len(test)
    stats = {name: {"same": 0, "correct": 0, "count_eq": np.zeros(3), "spike_diff": np.zeros(3),
                    "margins": []} for name, _ in models}
    float_correct = 0
    totals = np.zeros(3)
    t0 = time.perf_counter()
    for lo in range(0, n, batch):
        x = test.images[lo:lo + batch][:, None]
        y = test.labels[lo:lo + batch]
        fspk, U1 = float_run(net, x, T)
        fcount = fspk["lif3"].sum(axis=0)
        fpred = fcount.argmax(axis=1)
        float_correct += int((fpred == y).sum())
        for i, (_, lif) in enumerate(LAYERS):
            totals[i] += fspk[lif].shape[1] * fspk[lif].shape[2]
        for name, m in models:
            if isinstance(m, str):
                continue
            counts, rec = nbe.forward(m, x, T, record=True)
            if lo == 0:   # the NumPy engine gives the same spikes
                _, rec_np = npe.forward(m, x[:32], T, record=True)
                for k in rec_np:
                    assert np.array_equal(rec_np[k], rec[k][:, :32]), (name, k)
            pred = counts.argmax(axis=1)
            st = stats[name]
            st["same"] += int((pred == fpred).sum())
            st["correct"] += int((pred == y).sum())
            for i, (conv, lif) in enumerate(LAYERS):
                a = rec[conv].reshape(T, len(y), -1)
                b = fspk[lif]
                st["count_eq"][i] += int((a.sum(axis=0) == b.sum(axis=0)).sum())
                st["spike_diff"][i] += int((a != b).sum())
            d = rec["conv1"].reshape(T, -1) != fspk["lif1"].reshape(T, -1)
            first = d.argmax(axis=0)
            cols = np.flatnonzero(d.any(axis=0))
            st["margins"].extend((np.abs(U1[first[cols], cols] - theta) / theta).tolist())
        print(f"  {label}: {min(n, lo + batch)}/{n} images, {time.perf_counter() - t0:.0f} s",
              file=sys.stderr, flush=True)
    rows = []
    for name, m in models:
        if isinstance(m, str):
            rows.append((name, None, m))
            continue
        st = stats[name]
        tols = [float((L.tol / theta).max()) for L in m.layers]
        rows.append((name, m, {"same": st["same"] / n, "int_acc": st["correct"] / n,
                               "count_eq": st["count_eq"] / totals,
                               "spike_diff": st["spike_diff"] / (totals * T),
                               "margins": np.array(st["margins"]), "tol": tols,
                               "F": [L.frac_bits for L in m.layers]}))
    return {"label": label, "n": n, "float_acc": float_correct / n, "rows": rows, "ckpt": ckpt,
            "epoch": epoch}


def float64_check(ckpt, n, T, batch, data_dir):
    """Spikes differing per layer between the float64 model (same weights) and, each, the float32
    model and the integer model (F = max): which of the two is nearer the exact model."""
    from mininsnn.models import build_from_config
    model_state, config, _ = read_model(ckpt)
    cfg = validate_config({**config, "test_subset": n})
    (test,) = load_data(cfg, data_dir, splits=("test",))
    nets = {}
    for dt in (np.float32, np.float64):
        net = build_from_config({**cfg, "dtype": np.dtype(dt).name})
        net.load_state_dict({k: v.astype(dt) if v.dtype.kind == "f" else v
                             for k, v in model_state.items()})
        nets[dt] = net.eval()
    m = convert(model_state, cfg)
    diff = {"float32": np.zeros(3), "int": np.zeros(3)}
    for lo in range(0, len(test), batch):
        x = test.images[lo:lo + batch][:, None]
        rec = {}
        for dt, net in nets.items():
            net.forward((x / dt(255)).astype(dt), num_steps=T, record=True)
            rec[dt] = [net.recorded["spikes"][lif].reshape(T, len(x), -1) for _, lif in LAYERS]
        _, ri = nbe.forward(m, x, T, record=True)
        ri = [ri[conv].reshape(T, len(x), -1) for conv, _ in LAYERS]
        for i in range(3):
            diff["float32"][i] += int((rec[np.float32][i] != rec[np.float64][i]).sum())
            diff["int"][i] += int((ri[i] != rec[np.float64][i]).sum())
    return len(test), diff


def table(results, command, T):
    out = [f"Integer engine vs float model (eval mode, float32), T = {T}. Command: `{command}`",
           f"(host: {platform.processor() or platform.machine()}, numpy {np.__version__}).", ""]
    for r in results:
        out += [f"**{r['label']}** ({r['n']} test images; model `{r['ckpt']}`, epoch {r['epoch']}): "
                f"float accuracy {100 * r['float_acc']:.2f} %", "",
                "| representation | F per layer | same class as float | int accuracy | "
                "spike counts equal (lif1 / lif2 / lif3) | spikes differing (lif1 / lif2 / lif3) | "
                "worst-case tolerance / theta (lif1 / lif2 / lif3) | lif1 first-difference "
                "margin / theta (median, max) |",
                "|---|---|---|---|---|---|---|---|"]
        for name, m, st in r["rows"]:
            if m is None:
                out.append(f"| {name} | refused: {st} | | | | | | |")
                continue
            mg = st["margins"]
            marg = f"{np.median(mg):.1e}, {mg.max():.1e} ({len(mg)} neurons)" if len(mg) else \
                "no difference"
            out.append(
                f"| {name} | {'/'.join(map(str, st['F']))} | {100 * st['same']:.2f} % | "
                f"{100 * st['int_acc']:.2f} % | "
                + " / ".join(f"{100 * v:.4f} %" for v in st["count_eq"]) + " | "
                + " / ".join(f"{v:.1e}" for v in st["spike_diff"]) + " | "
                + " / ".join(f"{v:.1e}" for v in st["tol"]) + f" | {marg} |")
        out.append("")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=None, help="first N test images (default all)")
    p.add_argument("--num-steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--mnist", default=MODELS["MNIST"], help="pretrained name or checkpoint")
    p.add_argument("--fmnist", default=MODELS["Fashion-MNIST"], help="pretrained name or checkpoint")
    p.add_argument("--fmnist-dir", default=None, help="folder of the Fashion-MNIST files "
                   "(default: where mininsnn.data looks)")
    p.add_argument("--out", default=None, help="write the markdown table here")
    p.add_argument("--json", default=None, help="write the headline numbers here (for RESULTS.md)")
    p.add_argument("--float64", type=int, default=0, metavar="N",
                   help="only compare float32 and integer spikes with a float64 model on N "
                        "images of each test set")
    a = p.parse_args()
    if a.float64:
        for label, ck, dd in (("MNIST", a.mnist, None), ("Fashion-MNIST", a.fmnist, a.fmnist_dir)):
            n, d = float64_check(ck, a.float64, a.num_steps, a.batch, dd)
            print(f"{label}, {n} images, spikes differing from the float64 model (lif1 / lif2 / "
                  f"lif3): float32 model " + " / ".join(str(int(v)) for v in d["float32"])
                  + "; integer model (F = max) " + " / ".join(str(int(v)) for v in d["int"]))
        return
    command = "python benchmarks/deploy_agreement.py " + shlex.join(sys.argv[1:])
    results = [run("MNIST", a.mnist, a.num_steps, a.limit, a.batch, None),
               run("Fashion-MNIST", a.fmnist, a.num_steps, a.limit, a.batch, a.fmnist_dir)]
    text = table(results, command.strip(), a.num_steps)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n", encoding="utf-8")
    if a.json:
        write_record(a.json, results, command.strip(), a.num_steps, (a.mnist, a.fmnist))


def write_record(path, results, command, T, specs):
    """The headline numbers (per model: float accuracy; per representation: F, same class, int
    accuracy) and the C export's sizes of each model's default representation, as JSON."""
    import json
    import tempfile

    from mininsnn.deploy.cexport import export_c
    models = []
    for r, spec in zip(results, specs):
        state, config, _ = read_model(spec)
        with tempfile.TemporaryDirectory() as d:
            _, const, ram = export_c(convert(state, validate_config(config)), d, "m")
        models.append({"label": r["label"], "model": str(r["ckpt"]), "epoch": r["epoch"],
                       "n": r["n"], "float_acc": r["float_acc"], "c_const_bytes": const,
                       "c_state_bytes": ram,
                       "rows": [{"name": name, "F": st["F"], "same": st["same"],
                                 "int_acc": st["int_acc"]}
                                for name, m, st in r["rows"] if m is not None]})
    record = {"command": command, "num_steps": T, "machine": platform.machine(),
              "made": time.strftime("%Y-%m-%d"), "models": models}
    Path(path).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
