#!/usr/bin/env python
"""Print the RESULTS.md table rows from the run folders in results/ (so no number is copied by hand).

    python results/table.py
"""
import json
import statistics
from pathlib import Path

from mininsnn.train import read_metrics

HERE = Path(__file__).resolve().parent


def schedule_name(cfg):
    """The run's schedule, with T_max / T_mult where they differ from the model config's."""
    from mininsnn.models import CONFIGS
    name = cfg["schedule"]
    if name in ("cosine", "warm_restarts") and cfg["T_max"] != CONFIGS[cfg["config"]]["T_max"]:
        name += f", T_max {cfg['T_max']}"
    if name.startswith("warm_restarts") and cfg.get("T_mult", 1) != 1:
        name += f", T_mult {cfg['T_mult']}"
    return name


def straight_command(cfg, name):
    """The from-scratch command of a run's configuration (config, quantizer, schedule, epochs, seed)."""
    cmd = f"mininsnn train --config {cfg['config']}"
    if cfg["bits"] is not None and cfg.get("quant_grad", "ste") != "ste":
        cmd += f" --quant-grad {cfg['quant_grad']}"
    cmd += f" --schedule {cfg['schedule']}"
    if schedule_name(cfg) != cfg["schedule"]:
        cmd += f" --t-max {cfg['T_max']}"
        if cfg.get("T_mult", 1) != 1:
            cmd += f" --t-mult {cfg['T_mult']}"
    cmd += f" --epochs {cfg['epochs']} --seed {cfg['seed']}"
    if cfg["dataset"] == "fashion-mnist":
        cmd += " --data-dir ../shared/data/fashion-mnist"
    return cmd + f" --out results/{name}"


def row(run):
    cfg = json.loads((run / "config.json").read_text())
    rows = read_metrics(run)
    if not rows:
        return None
    best = max(rows, key=lambda r: (r["test_acc"], -r["epoch"]))
    last = rows[-1]
    # the command that started the run (later lines are resumes of it); an example script's own
    # command line when the run came from one (its mininsnn line may name a temporary folder)
    lines = (run / "command.txt").read_text().splitlines()
    stamp = next((line for line in lines if "  cwd " in line), "")   # "# date  cwd D  invoked as: ..."
    cwd = stamp.split("  cwd ", 1)[1].split("  invoked as: ", 1)[0] if stamp else None

    def relative(line):                         # paths as seen from the repository's root
        return line.replace(cwd.rstrip("/") + "/", "") if cwd else line

    cmd = relative(next(line for line in lines if line and not line.startswith("#")))
    head = stamp.split("invoked as: ", 1)
    if len(head) == 2 and head[1].startswith("examples/"):
        cmd = "python " + head[1]
    bits = "fp32" if cfg["bits"] is None else f"{cfg['bits']}-bit"
    if cfg["bits"] is not None:
        bits += f", {cfg.get('quant_grad', 'ste')}"
    branch = next((line for line in lines if line.startswith("# branched from ")), None)
    note = ""
    # a resume with more --epochs extends the run; a resume is exact (tests/test_train.py), so
    # the row gives the resume commands after the first
    resumes = [relative(line) for line in lines if line.startswith("mininsnn train --resume ")]
    if resumes:
        note += ", then " + ", then ".join(f"`{line}`" for line in resumes)
    if branch is not None:
        # a branch is bit-identical to the straight run of its schedule (tests/test_train.py), and
        # its source may since have trained on, so the row shows the straight command
        after = branch.split(" after ", 1)[1].split(" (", 1)[0]
        note = f" (run as a branch after {after}: `{cmd}`{note})"
        cmd = straight_command(cfg, run.name)
    sec = statistics.median(r["seconds"] for r in rows)
    return (f"| {run.name} | {cfg['dataset']} | {bits} | {schedule_name(cfg)} | {cfg['seed']} | "
            f"{last['epoch']}/{cfg['epochs']} | {100 * best['test_acc']:.2f} (ep {best['epoch']}) | "
            f"{100 * last['test_acc']:.2f} | {100 * rows[0]['test_acc']:.2f} | {sec:.3g} | `{cmd}`{note} |")


if __name__ == "__main__":
    print("| run | data | weights | schedule | seed | epochs done | best test acc % | final test acc % "
          "| epoch-1 test acc % | s/epoch | command |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for run in sorted(p.parent for p in HERE.glob("**/metrics.jsonl")):
        r = row(run)
        if r:
            print(r)
