#!/usr/bin/env python
"""Train the paper's 4-bit QSNN on Fashion-MNIST (reference config "fmnist-4bit").

Fashion-MNIST is not shipped: it is found in datasets/fashion-mnist/, $MININSNN_DATA/fashion-mnist
or /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist), or fetched with --download.

    python examples/train_fmnist.py --download          # 1 epoch, -> runs/fmnist-4bit-seed0/
    python examples/train_fmnist.py --data-dir ~/data/fashion-mnist --epochs 3

Every flag of `mininsnn train` works here (see --help); this script only fixes --config.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a clone without installing

from mininsnn.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", "--config", "fmnist-4bit", *sys.argv[1:]]))
