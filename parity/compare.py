#!/usr/bin/env python
"""One forward + backward of mininsnn and of the paper's stack (snnTorch + Brevitas) on the same
weights and the same batch, in float64: do they compute the same thing?

    python parity/compare.py --reference-python /tmp/refenv/bin/python
    python parity/compare.py --reference-python PY --config fmnist-4bit --batch 32

The reference interpreter needs torch, snntorch and brevitas (see benchmarks/reference_torch.py); they are
never dependencies of mininsnn. Dropout is off (p = 0) so both sides see the same network.
Reported:

- output spikes in training mode (batch statistics) and in an eval-mode forward that follows
  it (running statistics after the T updates): how many of the T*B*classes entries differ;
- the mse_count loss;
- each weight's gradient: max |difference| / max |reference gradient|, and for quantized
  weights separately at the argmax-|W| element, where Brevitas's gradient through the scale
  s = max|W| / (2^(b-1) - 1) lands (mininsnn's --quant-grad ste+scale computes it, plain ste
  does not; see mininsnn/quant.py);
- BatchNorm running mean and variance after the forward.

Each against two builds of the reference: snnTorch's fast_sigmoid kept in float64 (--tol), and
snnTorch's stock one, whose float32 spikes round dL/dS to float32 (--stock-tol).
Exit code 1 if anything differs by more than its tolerance (relative) or any spike differs.
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mininsnn.checkpoint import load_checkpoint  # noqa: E402
from mininsnn.loss import mse_count_loss  # noqa: E402
from mininsnn.config import CONFIGS, make_config  # noqa: E402
from mininsnn.data import load_data  # noqa: E402
from mininsnn.models import build_model  # noqa: E402
from mininsnn.quant import QUANT_GRADS  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference-python", required=True, metavar="PYTHON")
    ap.add_argument("--config", default="mnist-4bit", choices=[c for c in CONFIGS if "dvs" not in c])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--num-steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0, help="initial weights")
    ap.add_argument("--checkpoint", help="take the weights and BatchNorm buffers from this "
                                         "training checkpoint (its config must be --config)")
    ap.add_argument("--data-dir", help="folder of the data set (Fashion-MNIST needs it)")
    ap.add_argument("--quant-grad", default="ste+scale", choices=list(QUANT_GRADS),
                    help="mininsnn's quantizer backward (Brevitas computes ste+scale)")
    ap.add_argument("--tol", type=float, default=1e-9, help="against the float64 reference")
    ap.add_argument("--stock-tol", type=float, default=1e-4,
                    help="against snnTorch's own surrogate, whose spikes are float32")
    a = ap.parse_args()

    cfg = make_config(a.config, dropout=0.0, num_steps=a.num_steps, quant_grad=a.quant_grad)
    (train,) = load_data(cfg, a.data_dir, splits=("train",))
    x, y = train.get_batch(np.arange(a.batch))
    x = x.astype(np.float64)
    net = build_model(a.config, seed=a.seed, dtype=np.float64, dropout=0.0, quant_grad=a.quant_grad)
    if a.checkpoint:
        tree = load_checkpoint(a.checkpoint)
        if tree["config"]["config"] != a.config:
            raise SystemExit(f"{a.checkpoint} is a {tree['config']['config']} run; pass --config "
                             f"{tree['config']['config']}")
        net.load_state_dict({k: np.asarray(v, np.float64) for k, v in tree["model"].items()})
    state = {k: np.array(v) for k, v in net.state_dict().items()}

    net.train()
    spk = net.forward(x, num_steps=a.num_steps)
    loss, dspk = mse_count_loss(spk, y, dtype=np.float64)
    net.zero_grad()
    net.backward(dspk)
    grads = {k: np.array(g) for k, g in net.grads.items()}
    after = {k: np.array(v) for k, v in net.state_dict().items() if "running" in k}
    net.eval()
    eval_spk = net.forward(x, num_steps=a.num_steps)

    c = net.config
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, x=x, y=y, num_steps=a.num_steps, bits=cfg["bits"] or 0, beta=c["beta"],
                 threshold=c["threshold"], slope=c["slope"], batchnorm=c["batchnorm"], **state)
        subprocess.run([a.reference_python, str(Path(__file__).with_name("snntorch_side.py")),
                        str(src), str(dst)], check=True)
        ref = dict(np.load(dst))

    print(f"parity: {a.config}, batch {a.batch}, T={a.num_steps}, "
          f"{'weights of ' + a.checkpoint if a.checkpoint else f'seed {a.seed}'}, float64, "
          f"mininsnn quant_grad {a.quant_grad}; reference: {ref['versions']}")
    bad = []

    def report(name, ok, text):
        print(f"  {'ok  ' if ok else 'DIFF'} {name:34s} {text}")
        if not ok:
            bad.append(name)

    for kind, tol, title in (
            ("f64", a.tol, "snnTorch + Brevitas with the fast_sigmoid surrogate kept in float64"),
            ("stock", a.stock_tol, "snnTorch's own fast_sigmoid (float32 spikes: dL/dS rounded "
                                   "to float32 in its backward)")):
        print(f" against {title}, tolerance {tol:g}:")
        R = {k.split(".", 1)[1]: v for k, v in ref.items() if k.startswith(kind + ".")}
        for name, mine, theirs in (("output spikes (train mode)", spk, R["spikes"]),
                                   ("output spikes (eval mode, after)", eval_spk, R["eval_spikes"])):
            n = int(np.sum(mine != theirs))
            report(name, n == 0, f"{n} of {mine.size} differ; {int(mine.sum())} spikes")
        rel = abs(loss - float(R["loss"])) / abs(float(R["loss"]))
        report("mse_count loss", rel <= tol, f"{loss:.12g} vs {float(R['loss']):.12g} (rel {rel:.1e})")
        for k, g in grads.items():
            r = R["grad." + k]
            scale = np.abs(r).max()
            e = np.abs(g - r).max() / scale
            if cfg["bits"] is not None and k in ("conv1.weight", "conv2.weight", "fc1.weight"):
                # Brevitas's gradient through the scale sits on the argmax-|W| element only
                w = state[k]
                m = np.unravel_index(np.argmax(np.abs(w)), w.shape)
                others = np.ones(g.shape, bool)
                others[m] = False
                e_others = np.abs(g - r)[others].max() / scale
                report(f"d/d {k}", e <= tol, f"{e:.1e} (all but argmax|W|: {e_others:.1e}; "
                       f"at argmax|W|: {abs(g[m] - r[m]) / scale:.1e})")
            else:
                report(f"d/d {k}", e <= tol, f"{e:.1e}")
        for k, v in after.items():
            r = R["buffer." + k]
            e = np.abs(v - r).max() / max(np.abs(r).max(), 1e-300)
            report(k, e <= tol, f"{e:.1e}")
    print("parity: " + ("all equal within tolerance" if not bad else f"{len(bad)} differ: {bad}"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
