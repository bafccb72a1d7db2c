"""Best and final test accuracy of one setting over its seeds, as a Markdown table (for
experiments/REPORT.md).

    python -m experiments.seeds experiments/runs/mnist-4bit-cosine20-inc0-scalegrad \
        experiments/runs/fmnist-4bit-cosine20-inc0-scalegrad

Each argument is a run folder without its ``-seedN`` suffix; every ``PREFIX-seedN`` folder with
metrics is one seed. One row per setting: each seed's best test accuracy (and its epoch) and
final test accuracy, then the mean and sample standard deviation over the seeds that trained as
many epochs as the longest plan among them (a run still in progress, or one planned shorter, is
listed with its epochs done and left out of the mean).
"""
import re
import sys
from pathlib import Path

from experiments.table import best_epoch
from mininsnn import report


def seed_runs(prefix: Path):
    """(seed, rows, epochs planned) of every ``PREFIX-seedN`` folder that has metrics, by seed
    (read with mininsnn.report, the summaries behind ``mininsnn report``)."""
    found = []
    for run in prefix.parent.glob(prefix.name + "-seed*"):
        m = re.fullmatch(re.escape(prefix.name) + r"-seed(\d+)", run.name)
        summary = report.summarize_run(run) if m else None
        if summary is not None:
            found.append((int(m.group(1)), summary.rows, summary.config["epochs"]))
    return sorted(found, key=lambda f: f[0])


def spread(values):
    """'mean' of one value, 'mean ± sd' of several, '' of none (values in %, as
    mininsnn.report.spread prints fractions)."""
    return report.spread([v / 100 for v in values])


def row(prefix: Path) -> str:
    cells, bests, finals = [], [], []
    found = seed_runs(prefix)
    target = max((epochs for _, _, epochs in found), default=0)
    for seed, rows, _ in found:
        best = best_epoch(rows)
        b, f = 100 * best["test_acc"], 100 * rows[-1]["test_acc"]
        done = len(rows) >= target
        cell = f"seed {seed}: {b:.2f} (ep {best['epoch']}) / {f:.2f}"
        if done:
            bests.append(b)
            finals.append(f)
        else:
            cell += f" (after {len(rows)} of {target} epochs, not in the mean)"
        cells.append(cell)
    return (f"| {prefix.name} | {'<br>'.join(cells)} | {len(bests)} | {spread(bests)} | "
            f"{spread(finals)} |")


def main(args):
    if not args:
        sys.exit(__doc__)
    print("| setting | by seed: best test acc % (epoch) / final | seeds finished | "
          "best, mean ± sd | final, mean ± sd |")
    print("|---|---|---|---|---|")
    for prefix in args:
        print(row(Path(prefix)))


if __name__ == "__main__":
    main(sys.argv[1:])
