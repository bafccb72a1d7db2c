"""Per-epoch metrics of runs side by side, as a Markdown table (for experiments/REPORT.md).

    python -m experiments.side_by_side experiments/runs/mnist-4bit-cosine-seed0 \
        experiments/runs/mnist-4bit-cosine-scalegrad-seed0
    python -m experiments.side_by_side --train-acc RUN...    # training accuracy instead of loss

One row per epoch; for each run its mean training loss (or, with --train-acc, its training
accuracy %, which stays comparable between runs with different losses) and its test accuracy
(%). Runs that stopped earlier leave their cells empty.
"""
import sys
from pathlib import Path

from mininsnn.runs import read_metrics


def main(args):
    train_acc = "--train-acc" in args
    runs = [Path(r) for r in args if r != "--train-acc"]
    metrics = [{row["epoch"]: row for row in read_metrics(r)} for r in runs]
    what = "train acc %" if train_acc else "train loss"
    print("| epoch | " + " | ".join(f"{r.name}: {what} | test acc %" for r in runs) + " |")
    print("|---|" + "---|---|" * len(runs))
    for e in range(1, max(max(m, default=0) for m in metrics) + 1):
        cells = []
        for m in metrics:
            row = m.get(e)
            if row is None:
                cells += ["", ""]
                continue
            first = f"{100 * row['train_acc']:.2f}" if train_acc else f"{row['train_loss']:.4f}"
            cells += [first, f"{100 * row['test_acc']:.2f}"]
        print(f"| {e} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
