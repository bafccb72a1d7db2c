#!/usr/bin/env python
"""Where a checkpoint's test errors are, as Markdown (for RESULTS.md): accuracy per class, the
class each one is most often mistaken for, and how many errors are ties of the spike count.

    python results/errors.py results/fmnist-4bit-cosine20-scalegrad-seed0/last.h5 \\
        --data-dir ../shared/data/fashion-mnist

A tie (two or more classes with the top spike count) goes to the lowest class index, as in the
reference's accuracy; the last line says how many errors a perfect tie-break could undo at most.
"""
import argparse

import numpy as np

from mininsnn import train as T
from mininsnn.data import BatchIterator

NAMES = {"fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                           "Shirt", "Sneaker", "Bag", "Ankle boot"]}


def counts(checkpoint, data_dir=None, batch_size=500):
    """Spike counts (N, classes) of the test set and the labels (N,), in eval mode."""
    tree = T.read_training_checkpoint(checkpoint)
    cfg = T.validate_config(tree["config"])
    (test,) = T.load_data(cfg, data_dir, splits=("test",))
    net = T.build_net(cfg)
    net.load_state_dict(tree["model"])
    net.eval()
    out, labels = [], []
    for x, y in BatchIterator(test, batch_size, shuffle=False).epoch(0):
        out.append(T.forward(net, x, cfg["num_steps"]).sum(axis=0, dtype=np.float64))
        labels.append(y)
    return cfg, tree["epoch"], np.concatenate(out), np.concatenate(labels)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--data-dir")
    a = p.parse_args(argv)
    cfg, epoch, C, y = counts(a.checkpoint, a.data_dir)
    pred = C.argmax(axis=1)
    n_cls = C.shape[1]
    names = NAMES.get(cfg["dataset"], [str(k) for k in range(n_cls)])
    print("| class | test accuracy % | most often taken for (share of its errors) |")
    print("|---|---|---|")
    for k in range(n_cls):
        mine = y == k
        wrong = pred[mine & (pred != k)]
        if len(wrong):
            other = np.bincount(wrong, minlength=n_cls).argmax()
            taken = f"{names[other]} ({np.mean(wrong == other):.0%})"
        else:
            taken = "-"
        acc = f"{100 * np.mean(pred[mine] == k):.1f}" if mine.any() else "- (no test sample)"
        print(f"| {names[k]} | {acc} | {taken} |")
    top = C.max(axis=1)
    tied = (C == top[:, None]).sum(axis=1) > 1
    errors = pred != y
    undo = errors & tied & (C[np.arange(len(y)), y] == top)
    print(f"\n{a.checkpoint} (epoch {epoch}): test accuracy {100 * np.mean(~errors):.2f} %, "
          f"{errors.sum()} errors; {tied.sum()} test samples have a tie for the top count, "
          f"{(errors & tied).sum()} of the errors are ties, and in {undo.sum()} of those the true "
          f"class is among the tied ones (at most {100 * undo.mean():.2f} points for a perfect "
          "tie-break).")


if __name__ == "__main__":
    main()
