#!/usr/bin/env python
"""Train the paper's 4-bit QSNN on MNIST (reference config "mnist-4bit", data shipped in datasets/).

    python examples/train_mnist.py                      # 1 epoch, -> runs/mnist-4bit-seed0/
    python examples/train_mnist.py --epochs 3 --bits none --schedule constant --lr 1e-3
    python examples/train_mnist.py --subset 2048 --num-steps 25 --epochs 2   # a quick look
    python examples/train_mnist.py --resume runs/mnist-4bit-seed0 --epochs 2

Every flag of `mininsnn train` works here (see --help); this script only fixes --config.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a clone without installing

from mininsnn.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", "--config", "mnist-4bit", *sys.argv[1:]]))
