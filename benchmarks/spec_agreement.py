#!/usr/bin/env python
"""A trained run of any network (a spec run, or the paper's) as integers: float vs integer on a test set.

    python benchmarks/spec_agreement.py RUN [RUN ...] --data-dir DIR [--test 10000] [--json OUT]

For each run folder: its network rebuilt from the run's own record (best.h5, else last.h5), the
integer model (mininsnn.deploy.chain.convert_network, default representation), on the first
``--test`` test images at the run's test time steps: float and integer accuracy, the share of
images whose output spike counts and whose predicted class are identical, and the C export
compiled with -std=c99 -Wall -Wextra -Werror -pedantic and checked count for count against the
integer engine on 64 images; const and RAM bytes.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from deploy_any import c_check  # noqa: E402
from mininsnn.config import test_steps, validate_config  # noqa: E402
from mininsnn.data import load_data  # noqa: E402
from mininsnn.deploy import engine as npe  # noqa: E402
from mininsnn.deploy.chain import agreement, convert_network, quantized_w_rec  # noqa: E402
from mininsnn.runfiles import read_training_checkpoint  # noqa: E402
from mininsnn.sources import run_checkpoint  # noqa: E402
from mininsnn.train import build_net  # noqa: E402


def _rows_agreement(net, model, frames, T):
    """agreement() for a network that reads an image row by row: the float network takes the
    rows as frames of pixels / 255 (with the integer model's quantised W_rec), the integer model
    the pixel frames themselves."""
    kept = {L.name: L.params["W_rec"].copy() for L in net.layers if "W_rec" in L.params}
    try:
        for L in net.layers:
            if L.name in model.meta.get("rec_bits", {}):
                L.params["W_rec"][...] = quantized_w_rec(L, model.meta["rec_bits"][L.name])
        fc = net.forward((frames / np.float32(255)).astype(net.dtype)).sum(axis=0)
    finally:
        for L in net.layers:
            if L.name in kept:
                L.params["W_rec"][...] = kept[L.name]
    ic = npe.predict(model, frames, T)
    return float((fc == ic).all(axis=1).mean()), float((fc.argmax(1) == ic.argmax(1)).mean()), fc, ic


def measure(run, data_dir, n_test):
    tree = read_training_checkpoint(run_checkpoint(Path(run)))
    cfg = validate_config(tree["config"])
    net = build_net(cfg)
    net.load_state_dict(tree["model"])
    net.eval()
    rows = (cfg.get("model") or {}).get("input") == "rows"
    model = convert_network(net, static=False, frame_scale=1.0 / 255) if rows else convert_network(net)
    (test,) = load_data(cfg, data_dir, splits=("test",))
    T = test_steps(cfg)
    x, y = test.images[:n_test][:, None], test.labels[:n_test]
    if rows:                              # (N, 1, H, W) -> H frames (H, N, W) of pixels
        x = np.ascontiguousarray(x[:, 0].transpose(1, 0, 2))
    same = cls = acc_f = acc_i = 0
    for lo in range(0, len(y), 500):
        yb = y[lo:lo + 500]
        if rows:
            s, c, fc, ic = _rows_agreement(net, model, x[:, lo:lo + 500], T)
        else:
            xb = x[lo:lo + 500]
            s, c = agreement(net, model, xb, T)
            ic = npe.predict(model, xb, T)
            fc = net.forward(xb / np.float32(255), num_steps=T).sum(axis=0)
        same, cls = same + s * len(yb), cls + c * len(yb)
        acc_i += int((ic.argmax(1) == yb).sum())
        acc_f += int((fc.argmax(1) == yb).sum())
    # the C check here feeds static images; a rows model's C (frames) is checked by
    # tests/test_deploy_recurrent.py
    ok, const, state = (None, None, None) if rows else c_check(model, x[:64], T)
    n = len(y)
    spec = cfg.get("model") or {}
    return {"run": str(run), "network": spec.get("name", cfg["config"]), "test_images": n, "T": T,
            "float_acc": acc_f / n, "int_acc": acc_i / n, "identical_counts": same / n,
            "identical_class": cls / n, "c_matches_engine_on_64": ok, "c_const_bytes": const,
            "c_ram_bytes": state}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--data-dir", help="the data set's folder (default: the run's own lookup)")
    p.add_argument("--test", type=int, default=10000, help="first N test images")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args()
    results = []
    for run in a.runs:
        results.append(measure(run, a.data_dir, a.test))
        print(json.dumps(results[-1]), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
