#!/usr/bin/env python
"""How the 4-bit weights of a checkpoint use their 15 levels (-7..7), per quantized layer.

    python results/levels.py results/mnist-4bit-cosine-seed0/last.h5 [more checkpoints]

For each of conv1, conv2, fc1: max|W| / std(W) (how far the largest weight, which sets the
scale s = max|W| / 7, sits from the bulk), the share of weights that round to 0, and the share
at each level. Printed as Markdown rows, for RESULTS.md.
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mininsnn.checkpoint import load_checkpoint  # noqa: E402
from mininsnn.quant import quantize_forward  # noqa: E402


def main(paths):
    print("| checkpoint | epoch | layer | max abs W / std W | share at level 0 | shares at levels -3..3 |")
    print("|---|---|---|---|---|---|")
    for p in paths:
        tree = load_checkpoint(p)
        bits = tree["config"]["bits"]
        if bits is None:
            continue
        for k in ("conv1.weight", "conv2.weight", "fc1.weight"):
            w = np.asarray(tree["model"][k], np.float64)
            wq, s = quantize_forward(w, bits)
            q = np.rint(wq / s).astype(int)
            shares = " ".join(f"{np.mean(q == v):.2f}" for v in range(-3, 4))
            print(f"| {p} | {tree['epoch']} | {k.split('.')[0]} | {np.abs(w).max() / w.std():.1f} | "
                  f"{np.mean(q == 0):.2f} | {shares} |")


if __name__ == "__main__":
    main(sys.argv[1:])
