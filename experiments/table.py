"""The runs table of experiments/REPORT.md, one row per run record in experiments/runs/ (so no
number is copied by hand), and the helpers the other scripts share.

    python -m experiments.table
"""
import json
import statistics
from pathlib import Path

from experiments import RUNS
from mininsnn.report import best_row
from mininsnn.runs import read_metrics


def run_config(run) -> dict:
    """A run's config.json. Quantized runs recorded before --quant-grad existed have no
    ``quant_grad``: they trained with plain ``ste``, the default of that time, and say so here
    whatever today's default is."""
    cfg = json.loads((Path(run) / "config.json").read_text())
    if cfg.get("bits") is not None and "quant_grad" not in cfg:
        cfg["quant_grad"] = "ste"
    return cfg


def best_epoch(rows):
    """The metrics row with the highest test accuracy (the earliest such epoch on a tie): the
    paper's code reports this; mininsnn.report picks the same way."""
    return best_row(rows, "test_acc")


def schedule_name(cfg):
    """The run's schedule, with T_max / T_mult where they differ from the model config's."""
    from mininsnn.config import make_config
    name = cfg["schedule"]
    if name in ("cosine", "warm_restarts") and cfg["T_max"] != make_config(cfg["config"])["T_max"]:
        name += f", T_max {cfg['T_max']}"
    if name.startswith("warm_restarts") and cfg.get("T_mult", 1) != 1:
        name += f", T_mult {cfg['T_mult']}"
    return name


def loss_name(cfg):
    """'' for the config's own loss and targets (the paper's), else the loss and its targets."""
    from mininsnn.config import make_config
    keys = ("loss", "correct_rate", "incorrect_rate")
    default = make_config(cfg["config"])
    loss, correct, incorrect = (cfg.get(k, default[k]) for k in keys)
    if (loss, correct, incorrect) == tuple(default[k] for k in keys):
        return ""
    return loss if loss != "mse_count" else f"mse_count {correct:g}/{incorrect:g}"


def straight_command(cfg, name, out_dir="experiments/runs"):
    """The from-scratch command of a run's configuration: --config, then a flag for every
    setting the command line has that differs from that config's default (and --quant-grad of
    every quantized run, so the command keeps its meaning when the default changes), --epochs,
    --seed."""
    from mininsnn.config import SETTINGS, make_config, validate_config
    cfg = validate_config(cfg)
    default = make_config(cfg["config"])
    cmd = f"mininsnn train --config {cfg['config']}"
    for s in SETTINGS:
        key = s.key
        if s.help is None or key in ("epochs", "seed"):
            continue                            # not a flag; or given last
        if key == "quant_grad":
            if cfg["bits"] is None:
                continue                        # no quantizer in full precision
        elif cfg[key] == default[key]:
            continue
        if isinstance(cfg[key], bool):
            cmd += f" {s.flag if cfg[key] else '--no-' + s.flag[2:]}"
            continue
        value = "none" if key == "bits" and cfg[key] is None else cfg[key]
        cmd += f" {s.flag} {value}"
    cmd += f" --epochs {cfg['epochs']} --seed {cfg['seed']}"
    if cfg["dataset"] == "fashion-mnist":
        cmd += " --data-dir ../shared/data/fashion-mnist"
    return cmd + f" --out {out_dir}/{name}"


def row(run):
    cfg = run_config(run)
    rows = read_metrics(run)
    if not rows:
        return None
    best = best_epoch(rows)
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
        bits += f", {cfg['quant_grad']}"
    loss = loss_name(cfg)
    if loss:
        bits += f", loss {loss}"
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


def main(folder=RUNS):
    print("| run | data | weights | schedule | seed | epochs done | best test acc % | final test acc % "
          "| epoch-1 test acc % | s/epoch | command |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for run in sorted(p.parent for p in Path(folder).glob("*/metrics.jsonl")):
        r = row(run)
        if r:
            print(r)


if __name__ == "__main__":
    main()
