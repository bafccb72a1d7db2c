"""The short tables of the root RESULTS.md, each a summary over the seeds of a few settings read
from their run records (so no number is copied by hand).

    python -m experiments.headline settings [--first 10] experiments/runs/mnist-4bit-cosine-scalegrad ...
    python -m experiments.headline aims experiments/runs/mnist-4bit-cosine20-inc0-scalegrad:99.3 ...
    python -m experiments.headline schedules experiments/runs/mnist-4bit-cosine-scalegrad-seed0 ...
    python -m experiments.headline zeros experiments/runs/mnist-4bit-cosine-seed0 ...

A setting is a run folder without its ``-seedN`` suffix (as in ``experiments.seeds``): its mean
and standard deviation cover the seeds that trained as many epochs as the longest plan among them.
Every descriptive cell (data, weights, loss targets, schedule) is read from the runs' config.json.
"""
import sys
from pathlib import Path

from experiments.levels import LAYERS, recorded, shares
from experiments.seeds import seed_runs, spread
from experiments.table import best_epoch, run_config, schedule_name
from mininsnn.runs import read_metrics

DATA = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "dvsgesture": "DVS128 Gesture"}


def targets(cfg) -> str:
    """The loss and its targets, e.g. '80 / 20 spikes (the paper's)' for mse_count with rates 0.8
    and 0.2 over T = 100 steps."""
    from mininsnn.config import make_config
    default = make_config(cfg["config"])
    if cfg.get("loss", default["loss"]) != "mse_count":
        return cfg["loss"]
    steps = cfg["num_steps"]
    text = (f"{cfg.get('correct_rate', default['correct_rate']) * steps:g} / "
            f"{cfg.get('incorrect_rate', default['incorrect_rate']) * steps:g} spikes")
    if all(cfg.get(k, default[k]) == default[k] for k in ("correct_rate", "incorrect_rate")):
        text += " (the paper's)"
    return text


def weights(cfg) -> str:
    return "fp32" if cfg["bits"] is None else f"{cfg['bits']}-bit, {cfg['quant_grad']}"


def finished(prefix: Path):
    """(config of the first seed, [(seed, rows)] of the seeds that trained the longest plan)."""
    found = seed_runs(Path(prefix))
    if not found:
        raise ValueError(f"{prefix}-seedN: no such run with metrics")
    target = max(epochs for _, _, epochs in found)
    cfg = run_config(Path(f"{prefix}-seed{found[0][0]}"))
    return cfg, [(seed, rows) for seed, rows, _ in found if len(rows) >= target]


def settings(prefixes, first=None) -> str:
    """One row per setting: what it is, the seeds, best and final test accuracy (mean ± sd), and
    with ``first`` the best test accuracy within epochs 1..first."""
    extra = f" | best within epochs 1-{first}, mean ± sd" if first else ""
    lines = ["| data | weights | loss targets | schedule | epochs | seeds | best test acc %, "
             f"mean ± sd | final test acc %, mean ± sd{extra} |",
             "|---|---|---|---|---|---|---|---|" + ("---|" if first else "")]
    for prefix in prefixes:
        cfg, done = finished(prefix)
        bests = [100 * best_epoch(rows)["test_acc"] for _, rows in done]
        finals = [100 * rows[-1]["test_acc"] for _, rows in done]
        cells = [DATA.get(cfg["dataset"], cfg["dataset"]), weights(cfg), targets(cfg),
                 schedule_name(cfg), str(len(done[0][1])), ", ".join(str(s) for s, _ in done),
                 spread(bests), spread(finals)]
        if first:
            cells.append(spread([100 * best_epoch(rows[:first])["test_acc"] for _, rows in done]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def aims(pairs) -> str:
    """One row per (setting, aim in %): best and final test accuracy over the seeds, and at how
    many seeds each reaches the aim."""
    lines = ["| data | aim, test acc % | weights | loss targets | schedule | epochs | seeds "
             "| best, mean ± sd | final, mean ± sd | seeds at or above the aim: best / final |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for prefix, aim in pairs:
        cfg, done = finished(prefix)
        bests = [100 * best_epoch(rows)["test_acc"] for _, rows in done]
        finals = [100 * rows[-1]["test_acc"] for _, rows in done]
        # a test accuracy in % of 10,000 images has two decimals: rounding drops the float error
        reach = [sum(round(v, 2) >= aim for v in vals) for vals in (bests, finals)]
        lines.append(f"| {DATA.get(cfg['dataset'], cfg['dataset'])} | {aim:g} | {weights(cfg)} | "
                     f"{targets(cfg)} | {schedule_name(cfg)} | {len(done[0][1])} | "
                     f"{', '.join(str(s) for s, _ in done)} | {spread(bests)} | {spread(finals)} | "
                     f"{reach[0]} of {len(done)} / {reach[1]} of {len(done)} |")
    return "\n".join(lines)


def schedules(runs) -> str:
    """The schedule comparison in one table: a row per schedule, for each data set the best (its
    epoch) and final test accuracy. A halve_on_rise run whose LR never changed is the constant-LR
    run too, and says so in the constant row when there is no constant run of that data set."""
    by = {}                                   # data set -> schedule name -> (cfg, rows)
    for run in runs:
        cfg = run_config(run)
        by.setdefault(DATA.get(cfg["dataset"], cfg["dataset"]), {})[schedule_name(cfg)] = \
            (cfg, read_metrics(run))
    names = ["cosine", "warm_restarts", "constant", "halve_on_rise"]     # the paper's four
    for found in by.values():
        names += sorted(n for n in found if n not in names)
    data = list(by)
    lines = ["| schedule | " + " | ".join(f"{d}: best (epoch) / final test acc %" for d in data)
             + " |", "|---|" + "---|" * len(data)]
    for name in names:
        cells = []
        for d in data:
            if name in by[d]:
                cfg, rows = by[d][name]
                best = best_epoch(rows)
                cell = (f"{100 * best['test_acc']:.2f} (ep {best['epoch']}) / "
                        f"{100 * rows[-1]['test_acc']:.2f}")
                if name == "halve_on_rise" and all(r["lr"] == cfg["lr"] for r in rows):
                    cell += ", never halved"
                cells.append(cell)
            elif name == "constant" and "halve_on_rise" in by[d] and all(
                    r["lr"] == by[d]["halve_on_rise"][0]["lr"] for r in by[d]["halve_on_rise"][1]):
                cells.append("= halve_on_rise (its loss never rose)")
            else:
                cells.append("")
        if any(cells):
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def zeros(runs) -> str:
    """The share of each quantized layer's weights at level 0, from the runs' levels.json."""
    lines = ["| run | weights | checkpoint | epoch | " + " | ".join(f"{name} weights at 0"
                                                              for name in LAYERS) + " |",
             "|---|---|---|---|" + "---|" * len(LAYERS)]
    for run in runs:
        cfg = run_config(run)
        for label, rec in recorded(run):
            cells = [f"{100 * shares(rec['layers'][n]['counts'])[0]:.0f} %" for n in LAYERS]
            lines.append(f"| {Path(run).name} | {weights(cfg)} | {label.split('/', 1)[1]} | "
                         f"{rec['epoch']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def deploy(record_path) -> str:
    """The integer engine against the float model, from the record benchmarks/deploy_agreement.py
    writes (--json): per model, the default representation and the coarsest one measured."""
    import json
    rec = json.loads(Path(record_path).read_text(encoding="utf-8"))
    lines = ["| model | test images | float model, test acc % | integer engine | F per layer | "
             "same class as the float model | integer engine, test acc % | C export: const / RAM |",
             "|---|---|---|---|---|---|---|---|"]
    for m in rec["models"]:
        for row in m["rows"]:
            if row["name"] not in ("F = max", "F = max, shift leak"):
                continue
            name = {"F = max": "default (F = max)", "F = max, shift leak": "shift-only leak"}[
                row["name"]]
            sizes = (f"{m['c_const_bytes'] / 1000:.1f} KB / {m['c_state_bytes'] / 1000:.1f} KB"
                     if row["name"] == "F = max" else "")
            lines.append(f"| `{m['model']}` (epoch {m['epoch']}) | {m['n']} | "
                         f"{100 * m['float_acc']:.2f} | {name} | {'/'.join(map(str, row['F']))} | "
                         f"{100 * row['same']:.2f} % | {100 * row['int_acc']:.2f} | {sizes} |")
    return "\n".join(lines) + f"\n\n`{rec['command']}`, T = {rec['num_steps']}."


def main(args):
    if len(args) < 2 or args[0] not in ("settings", "aims", "schedules", "zeros"):
        sys.exit(__doc__)
    what, paths = args[0], args[1:]
    try:
        if what == "aims":
            if not all(":" in p for p in paths):
                raise ValueError("aims: give each setting as PREFIX:AIM, e.g. "
                                 "experiments/runs/mnist-4bit-cosine20-inc0-scalegrad:99.3")
            print(aims([(p.rsplit(":", 1)[0], float(p.rsplit(":", 1)[1])) for p in paths]))
        elif what == "settings" and paths[0] == "--first":
            print(settings(paths[2:], first=int(paths[1])))
        else:
            print({"settings": settings, "schedules": schedules, "zeros": zeros}[what](paths))
    except ValueError as e:
        sys.exit(str(e))


if __name__ == "__main__":
    main(sys.argv[1:])
