"""The schedule comparison at equal epochs, as a Markdown table (for experiments/REPORT.md).

    python -m experiments.schedules experiments/runs/mnist-4bit-cosine-scalegrad-seed0 \
        experiments/runs/mnist-4bit-warm_restarts-scalegrad-seed0 ...

One row per run, read from its metrics.jsonl, cut at the epoch count that every run has reached
(so the runs are compared at equal epochs even while one is still training): best and final test
accuracy, the mean test accuracy over the second half of those epochs (less noisy than either),
and the final and lowest mean training loss. A halve_on_rise run that never halved its LR is
labelled as what it then is, the constant-LR run too.
"""
import statistics
import sys
from pathlib import Path

from experiments.table import best_epoch, run_config, schedule_name
from mininsnn.runs import read_metrics


def main(runs):
    runs = [Path(r) for r in runs]
    table = []
    for r in runs:
        cfg = run_config(r)
        rows = read_metrics(r)
        if not rows:
            sys.exit(f"{r} has not finished an epoch yet")
        table.append((r, cfg, rows))
    n = min(len(rows) for _, _, rows in table)
    half = n // 2 + 1
    print(f"| schedule | run | epochs | best test acc % | final test acc % | mean test acc %, epochs {half}-{n} "
          "| final train loss | lowest train loss | lr at the end |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r, cfg, rows in table:
        rows = rows[:n]
        best = best_epoch(rows)
        low = min(rows, key=lambda x: x["train_loss"])
        mean = statistics.mean(100 * x["test_acc"] for x in rows[half - 1:])
        name = schedule_name(cfg)
        if name == "halve_on_rise" and all(x["lr"] == cfg["lr"] for x in rows):
            name += " = constant (the loss never rose)"
        print(f"| {name} | {r.name} | {n} | {100 * best['test_acc']:.2f} (ep {best['epoch']}) | "
              f"{100 * rows[-1]['test_acc']:.2f} | {mean:.2f} | {rows[-1]['train_loss']:.4f} | "
              f"{low['train_loss']:.4f} (ep {low['epoch']}) | {rows[-1]['lr']:.2e} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
