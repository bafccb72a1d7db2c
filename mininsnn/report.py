"""Mean +- sd of groups of run folders (seeds of one setting), as a table and a plot.

Used by ``mininsnn report STUDY_DIR`` (a sweep's or a study's trials) and meant for any script
that summarises runs (e.g. the seeds x settings tables of RESULTS.md):

    runs = [summarize_run(d) for d in find_runs("studies/seeds")]
    groups = group_runs(runs)                  # {"schedule=cosine": [run, run, run], ...}
    print(format_report(groups, markdown=True))
    plot_report(groups, "studies/seeds/report.png")

The best epoch of a run is the one with the best validation accuracy when the run has a
validation set (the test accuracy of that epoch is reported beside it), else the one with the
best test accuracy (then the table says so: an epoch chosen on the test set is an optimistic
estimate). Ties go to the earliest epoch. A run counts in the mean and sd only when it trained all
the epochs its configuration planned (a run still going, or a pruned trial, is listed but left
out). The sd is the sample standard deviation (n - 1); with one run only its value is shown.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mininsnn.atomic import atomic_file
from mininsnn.config import ConfigError
from mininsnn.plot import figure
from mininsnn.runs import read_metrics

__all__ = ["RunSummary", "find_runs", "best_row", "summarize_run", "group_runs", "spread",
           "report_rows", "format_report", "plot_report"]

# settings that say where or how a run was made, not what it is (never a group of their own)
IGNORED = ("seed",)


@dataclass
class RunSummary:
    """One run folder: its configuration, metrics rows, best and final rows."""

    path: Path
    config: dict
    rows: list
    best: dict            # the best epoch's row (by valid_acc, or test_acc without validation)
    final: dict           # the last finished epoch's row
    chosen_on: str        # "valid_acc" or "test_acc"

    @property
    def done(self) -> bool:
        """Trained every planned epoch."""
        return len(self.rows) >= self.config["epochs"]


def find_runs(folder) -> list[Path]:
    """The run folders in ``folder`` (itself, or its sub-folders holding config.json), by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder; pass a study folder or a folder of runs")
    if (folder / "config.json").is_file():
        return [folder]
    return sorted(d for d in folder.iterdir() if (d / "config.json").is_file())


def best_row(rows, key: str = "test_acc") -> dict:
    """The metrics row with the highest ``key`` (valid_acc or test_acc); the earliest epoch on a
    tie."""
    return max(rows, key=lambda r: (r[key], -r["epoch"]))


def summarize_run(run_dir) -> RunSummary | None:
    """The summary of a run folder, or None when it has no finished epoch yet."""
    run_dir = Path(run_dir)
    try:
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{run_dir / 'config.json'}: cannot read it ({e})") from None
    rows = read_metrics(run_dir)
    if not rows:
        return None
    key = "valid_acc" if all("valid_acc" in r for r in rows) else "test_acc"
    return RunSummary(run_dir, config, rows, best_row(rows, key), rows[-1], key)


def _label(config: dict, keys) -> str:
    show = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
    return " ".join(f"{k}={show(config.get(k))}" for k in keys) or "all runs"


def group_runs(runs, ignore=IGNORED) -> dict[str, list[RunSummary]]:
    """Runs grouped by their configuration except ``ignore`` (the seed): {label: runs}. The
    label names the settings that differ between the groups ('lr=0.001 schedule=cosine')."""
    runs = [r for r in runs if r is not None]
    groups: dict[str, list[RunSummary]] = {}
    for r in runs:
        groups.setdefault(json.dumps({k: v for k, v in r.config.items() if k not in ignore},
                                     sort_keys=True), []).append(r)
    configs = [json.loads(k) for k in groups]
    varying = [k for k in dict.fromkeys(k for c in configs for k in c)
               if len({json.dumps(c.get(k)) for c in configs}) > 1]
    return {_label(json.loads(k), varying): v for k, v in groups.items()}


def spread(values) -> str:
    """'mean +- sd' (percent, 2 decimals) of several values, the value of one, '' of none."""
    values = [100 * v for v in values]
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def report_rows(groups: dict) -> list[dict]:
    """One dict per group: label, runs, runs counted, seeds, and the spreads of the best and
    final validation and test accuracies over the counted runs."""
    out = []
    for label, runs in groups.items():
        done = [r for r in runs if r.done]
        valid = [r for r in done if r.chosen_on == "valid_acc"]
        out.append({
            "label": label, "runs": len(runs), "counted": len(done),
            "seeds": sorted(r.config.get("seed") for r in done),
            "chosen_on": "valid_acc" if valid and len(valid) == len(done) else "test_acc",
            "best_valid": spread([r.best["valid_acc"] for r in valid]),
            "test_at_best": spread([r.best["test_acc"] for r in done]),
            "final_valid": spread([r.final["valid_acc"] for r in valid]),
            "final_test": spread([r.final["test_acc"] for r in done]),
            "left_out": [f"{r.path.name} ({len(r.rows)} of {r.config['epochs']} epochs)"
                         for r in runs if not r.done],
        })
    return out


def format_report(groups: dict, markdown: bool = False) -> str:
    """The report table: one row per group; accuracies in %, mean ± sd over its finished runs."""
    rows = report_rows(groups)
    valid = any(r["chosen_on"] == "valid_acc" for r in rows)
    head = ["setting", "runs (seeds)"]
    if valid:
        head += ["best valid", "test at best valid", "final valid", "final test"]
    else:
        head += ["best test (epoch chosen on test)", "final test"]
    lines = []
    for r in rows:
        cells = [r["label"], f"{r['counted']} ({', '.join(str(s) for s in r['seeds'])})"]
        cells += ([r["best_valid"], r["test_at_best"], r["final_valid"], r["final_test"]]
                  if valid else [r["test_at_best"], r["final_test"]])
        if r["left_out"]:
            cells[1] += f"; not counted: {', '.join(r['left_out'])}"
        lines.append(cells)
    if markdown:
        return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                         + ["| " + " | ".join(c) + " |" for c in lines])
    widths = [max(len(x) for x in col) for col in zip(head, *lines)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(c) for c in lines])


def plot_report(groups: dict, path) -> Path:
    """Validation (when there is one) and test accuracy per epoch: the mean of each group's
    finished runs, with a band of ± one sd; written atomically to ``path`` (PNG)."""
    rows = report_rows(groups)
    panels = (["valid_acc"] if any(r["chosen_on"] == "valid_acc" for r in rows) else []) + \
        ["test_acc"]
    fig, ax = figure(1, len(panels), (6.5 * len(panels), 4.5))   # ConfigError without matplotlib
    for j, key in enumerate(panels):
        a = ax[0, j]
        for label, runs in groups.items():
            runs = [r for r in runs if r.done and all(key in x for x in r.rows)]
            if not runs:
                continue
            n = min(len(r.rows) for r in runs)
            acc = 100 * np.array([[x[key] for x in r.rows[:n]] for r in runs])  # (runs, epochs)
            ep = np.arange(1, n + 1)
            mean = acc.mean(axis=0)
            line, = a.plot(ep, mean, "o-", label=f"{label} ({len(runs)})")
            if len(runs) > 1:
                sd = acc.std(axis=0, ddof=1)
                a.fill_between(ep, mean - sd, mean + sd, color=line.get_color(), alpha=0.2)
        a.set(xlabel="epoch", ylabel="accuracy (%)",
              title=("validation" if key == "valid_acc" else "test") + " accuracy, mean ± sd")
        a.grid(alpha=0.3)
        from matplotlib.ticker import MaxNLocator  # an optional extra (figure() checked it)
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize="small")
    path = Path(path)
    with atomic_file(path, suffix=".png") as tmp:      # savefig takes the format from the name
        fig.savefig(tmp, dpi=120)
    return path
