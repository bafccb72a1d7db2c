#!/usr/bin/env python
"""Rebuild RESULTS.md from results/RESULTS.template.md and the run folders.

    python results/make_results.py

Each {PLACEHOLDER} in the template is replaced by a table that a script in this folder prints
from the runs' metrics and checkpoints, so the tables are never typed by hand.
"""
import json
import statistics
import subprocess
import sys
from pathlib import Path

from mininsnn.train import read_metrics

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# REFERENCE.md, "Anchors measured on the reference": test accuracy after epoch 1
REFERENCE_EPOCH1 = {("mnist", 4): 98.64, ("fashion-mnist", 4): 86.58,
                    ("mnist", None): 98.40, ("fashion-mnist", None): 83.83}


def script(name, *args):
    out = subprocess.run([sys.executable, str(HERE / name), *args], cwd=ROOT, check=True,
                         capture_output=True, text=True)
    return out.stdout.strip()


def runs(folder=HERE):
    for m in sorted(Path(folder).glob("*/metrics.jsonl")):
        cfg = json.loads((m.parent / "config.json").read_text())
        rows = read_metrics(m.parent)
        if rows:
            yield m.parent, cfg, rows


def epoch1_table(folder=HERE):
    """Epoch-1 test accuracy by data set, weights and loss, one value per run that trained its
    own first epoch on the full training set: a branch copies its parent's epoch 1, a run on a
    training subset has not seen a whole epoch, and a run that repeats another's epoch 1 bit for
    bit (warm restarts trained from scratch repeat the periodic cosine's first epochs on the
    same machine) adds nothing, so these are left out."""
    from table import loss_name
    from mininsnn.train import make_config
    groups, seen = {}, {}
    for run, cfg, rows in runs(folder):
        key = (cfg["dataset"], cfg["bits"])
        if key not in REFERENCE_EPOCH1 or cfg.get("subset") is not None:
            continue
        if "branched from" in (run / "command.txt").read_text():
            continue
        qg = "fp32" if cfg["bits"] is None else f"4-bit, {cfg.get('quant_grad', 'ste')}"
        if loss_name(cfg):
            qg += f", loss {loss_name(cfg)}"
        if cfg["lr"] != make_config(cfg["config"])["lr"]:
            qg += f", lr {cfg['lr']:g}"
        group = (cfg["dataset"], qg, key)
        first = (cfg["seed"], rows[0]["train_loss"], rows[0]["test_acc"])
        if first in seen.setdefault(group, set()):
            continue
        seen[group].add(first)
        groups.setdefault(group, []).append((cfg["seed"], 100 * rows[0]["test_acc"]))
    lines = ["| data | weights | reference, epoch 1 | mininsnn, epoch 1, by seed | mean | min..max |",
             "|---|---|---|---|---|---|"]
    for (data, qg, key), vals in sorted(groups.items()):
        vals.sort()
        accs = [a for _, a in vals]
        seeds = ", ".join(f"{a:.2f} (seed {s})" for s, a in vals)
        mean = f"{statistics.mean(accs):.2f}" if len(accs) > 1 else ""
        span = f"{min(accs):.2f}..{max(accs):.2f}" if len(accs) > 1 else ""
        lines.append(f"| {data} | {qg} | {REFERENCE_EPOCH1[key]:.2f} | {seeds} | {mean} | {span} |")
    return "\n".join(lines)


def schedule_runs(config, tag=""):
    """The schedule-comparison runs of ``config`` (ste+scale, seed 0; ``tag`` as in
    schedule_comparison.py --tag) that have trained all their epochs (schedules.py cuts every run
    at the shortest one's epoch count, so a run still in progress would hide the later epochs of
    the finished ones; the main table shows it)."""
    tag = f"-{tag}" if tag else ""
    names = [f"{config}-{s}{tag}-scalegrad-seed0"
             for s in ("cosine", "warm_restarts", "constant", "halve_on_rise", "cosine20")]
    done = []
    for n in names:
        if not (HERE / n / "config.json").exists():
            continue
        epochs = json.loads((HERE / n / "config.json").read_text())["epochs"]
        if len(read_metrics(HERE / n)) >= epochs:
            done.append("results/" + n)
    return done


def fills():
    """{placeholder: function printing its table}, one per {PLACEHOLDER} of the template."""
    r = "results/"
    return {
        "TABLE": lambda: script("table.py"),
        "SIDE_MNIST": lambda: script("side_by_side.py", r + "mnist-4bit-cosine-seed0",
                                     r + "mnist-4bit-cosine-scalegrad-seed0"),
        "SIDE_FMNIST": lambda: script("side_by_side.py", r + "fmnist-4bit-cosine-seed0",
                                      r + "fmnist-4bit-cosine-scalegrad-seed0"),
        "LEVELS": lambda: script("levels.py", r + "mnist-4bit-cosine-seed0/best.h5",
                                 r + "mnist-4bit-cosine-scalegrad-seed0/epochs/epoch010.h5",
                                 r + "fmnist-4bit-cosine-seed0/best.h5",
                                 r + "fmnist-4bit-cosine-scalegrad-seed0/epochs/epoch010.h5"),
        "SIDE_FP": lambda: script("side_by_side.py", r + "mnist-fp-cosine-seed0",
                                  r + "fmnist-fp-cosine-seed0"),
        "EPOCH1": epoch1_table,
        "SCHED_MNIST": lambda: script("schedules.py", *schedule_runs("mnist-4bit")),
        "SIDE_SCHED_MNIST": lambda: script("side_by_side.py", *schedule_runs("mnist-4bit")),
        "SCHED_FMNIST": lambda: script("schedules.py", *schedule_runs("fmnist-4bit")),
        "SIDE_SCHED_FMNIST": lambda: script("side_by_side.py", *schedule_runs("fmnist-4bit")),
        "SCHED_FMNIST_INC0": lambda: script("schedules.py", *schedule_runs("fmnist-4bit", "inc0")),
        "SIDE_SCHED_FMNIST_INC0": lambda: script("side_by_side.py",
                                                 *schedule_runs("fmnist-4bit", "inc0")),
        "ROUNDING_FMNIST_INC0": lambda: script("side_by_side.py",
                                               r + "fmnist-4bit-cosine-inc0-scalegrad-seed0",
                                               r + "fmnist-4bit-warm_restarts-inc0-scalegrad-seed0"),
        "ERRORS_FMNIST": lambda: script("errors.py", r + "fmnist-4bit-cosine20-scalegrad-seed0/last.h5",
                                        "--data-dir", "../shared/data/fashion-mnist"),
        "LEVERS_MNIST": lambda: script("side_by_side.py", "--train-acc",
                                       r + "mnist-4bit-cosine20-scalegrad-seed0",
                                       r + "mnist-4bit-cosine20-inc0-scalegrad-seed0"),
        "SEEDS": lambda: script("seeds.py", *(r + f"{d}-4bit-{s}-scalegrad"
                                             for s in ("cosine20-inc0", "cosine20", "warm_restarts", "cosine")
                                             for d in ("mnist", "fmnist"))),
        "LEVERS_FMNIST": lambda: script("side_by_side.py", "--train-acc",
                                        r + "fmnist-4bit-cosine20-scalegrad-seed0",
                                        r + "fmnist-4bit-cosine20-inc0-scalegrad-seed0",
                                        r + "fmnist-4bit-cosine20-lr2x-scalegrad-seed0"),
    }


def placeholders(text):
    """The {NAME} placeholders of a template text, in order."""
    import re
    return re.findall(r"\{([A-Z][A-Z0-9_]*)\}", text)


def main():
    text = (HERE / "RESULTS.template.md").read_text()
    fill = fills()
    unknown = [k for k in placeholders(text) if k not in fill]
    if unknown:
        sys.exit(f"RESULTS.template.md: no table for placeholder(s) {unknown}")
    for key, make in fill.items():
        if "{" + key + "}" in text:
            text = text.replace("{" + key + "}", make())
    (ROOT / "RESULTS.md").write_text(text)
    print(f"wrote {ROOT / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
