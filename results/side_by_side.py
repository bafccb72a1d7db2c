#!/usr/bin/env python
"""Per-epoch metrics of runs side by side, as a Markdown table (for RESULTS.md).

    python results/side_by_side.py results/mnist-4bit-cosine-seed0 results/mnist-4bit-cosine-scalegrad-seed0

One row per epoch; for each run its mean training loss and its test accuracy (%). Runs that
stopped earlier leave their cells empty.
"""
import json
import sys
from pathlib import Path


def main(runs):
    runs = [Path(r) for r in runs]
    metrics = [{row["epoch"]: row for row in map(json.loads, (r / "metrics.jsonl").read_text().splitlines())}
               for r in runs]
    print("| epoch | " + " | ".join(f"{r.name}: train loss | test acc %" for r in runs) + " |")
    print("|---|" + "---|---|" * len(runs))
    for e in range(1, max(max(m) for m in metrics) + 1):
        cells = []
        for m in metrics:
            row = m.get(e)
            cells += ["", ""] if row is None else [f"{row['train_loss']:.4f}", f"{100 * row['test_acc']:.2f}"]
        print(f"| {e} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
