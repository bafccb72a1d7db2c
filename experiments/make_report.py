"""Rebuild experiments/REPORT.md (the full report) and the root RESULTS.md (its short version)
from their templates and the run records in experiments/runs/.

    python -m experiments.make_report            # write both files
    python -m experiments.make_report --check    # exit 1 if either differs from what it would write

Each {PLACEHOLDER} in experiments/REPORT.template.md and experiments/RESULTS.template.md is
replaced by a table that a script in this package prints from the runs' metrics and the JSON
records kept beside them (levels.json, errors.json), so the tables are never typed by hand.
"""
import argparse
import contextlib
import io
import os
import statistics
import sys
from pathlib import Path

from experiments import HERE, ROOT, RUNS, errors, headline, levels, schedules, seeds, \
    side_by_side, table
from experiments.records import write_text
from mininsnn.runs import read_metrics

# REFERENCE.md, "Anchors measured on the reference": test accuracy after epoch 1
REFERENCE_EPOCH1 = {("mnist", 4): 98.64, ("fashion-mnist", 4): 86.58,
                    ("mnist", None): 98.40, ("fashion-mnist", None): 83.83}

# template -> the file it becomes
OUTPUTS = {HERE / "REPORT.template.md": HERE / "REPORT.md",
           HERE / "RESULTS.template.md": ROOT / "RESULTS.md"}


def printed(main, *args) -> str:
    """What a script's ``main`` prints for ``args``, without its last newline."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(*args)
    return out.getvalue().strip()


def runs(folder=RUNS):
    for m in sorted(Path(folder).glob("*/metrics.jsonl")):
        rows = read_metrics(m.parent)
        if rows:
            yield m.parent, table.run_config(m.parent), rows


def epoch1_table(folder=RUNS):
    """Epoch-1 test accuracy by data set, weights and loss, one value per run that trained its
    own first epoch on the full training set: a branch copies its parent's epoch 1, a run on a
    training subset has not seen a whole epoch, and a run that repeats another's epoch 1 bit for
    bit (warm restarts trained from scratch repeat the periodic cosine's first epochs on the
    same machine) adds nothing, so these are left out."""
    from mininsnn.config import make_config
    groups, seen = {}, {}
    for run, cfg, rows in runs(folder):
        key = (cfg["dataset"], cfg["bits"])
        if key not in REFERENCE_EPOCH1 or cfg.get("subset") is not None:
            continue
        if "branched from" in (run / "command.txt").read_text():
            continue
        qg = "fp32" if cfg["bits"] is None else f"4-bit, {cfg['quant_grad']}"
        if table.loss_name(cfg):
            qg += f", loss {table.loss_name(cfg)}"
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
        seeds_ = ", ".join(f"{a:.2f} (seed {s})" for s, a in vals)
        mean = f"{statistics.mean(accs):.2f}" if len(accs) > 1 else ""
        span = f"{min(accs):.2f}..{max(accs):.2f}" if len(accs) > 1 else ""
        lines.append(f"| {data} | {qg} | {REFERENCE_EPOCH1[key]:.2f} | {seeds_} | {mean} | {span} |")
    return "\n".join(lines)


def schedule_runs(config, tag="", folder=RUNS):
    """The schedule-comparison runs of ``config`` (ste+scale, seed 0; ``tag`` as in
    schedule_comparison.py --tag) that have trained all their epochs (schedules.py cuts every run
    at the shortest one's epoch count, so a run still in progress would hide the later epochs of
    the finished ones; the main table shows it)."""
    tag = f"-{tag}" if tag else ""
    names = [f"{config}-{s}{tag}-scalegrad-seed0"
             for s in ("cosine", "warm_restarts", "constant", "halve_on_rise", "cosine20")]
    done = []
    for n in names:
        run = Path(folder) / n
        if (run / "config.json").exists() and \
                len(read_metrics(run)) >= table.run_config(run)["epochs"]:
            done.append(run)
    return done


def fills(r=RUNS):
    """{placeholder: function returning its table}, one per {PLACEHOLDER} of the templates."""
    def side(*names, train_acc=False):
        return lambda: printed(side_by_side.main,
                               [*(["--train-acc"] if train_acc else []), *(str(r / n) for n in names)])

    def prefixes(*names):
        return [r / n for n in names]

    return {
        # experiments/REPORT.md
        "TABLE": lambda: printed(table.main, r),
        "SIDE_MNIST": side("mnist-4bit-cosine-seed0", "mnist-4bit-cosine-scalegrad-seed0"),
        "SIDE_FMNIST": side("fmnist-4bit-cosine-seed0", "fmnist-4bit-cosine-scalegrad-seed0"),
        "LEVELS": lambda: levels.markdown(
            [e for n in ("mnist-4bit-cosine-seed0", "mnist-4bit-cosine-scalegrad-seed0",
                         "fmnist-4bit-cosine-seed0", "fmnist-4bit-cosine-scalegrad-seed0")
             for e in levels.recorded(r / n)]),
        "SIDE_FP": side("mnist-fp-cosine-seed0", "fmnist-fp-cosine-seed0"),
        "EPOCH1": lambda: epoch1_table(r),
        "SCHED_MNIST": lambda: printed(schedules.main, schedule_runs("mnist-4bit", folder=r)),
        "SIDE_SCHED_MNIST": lambda: printed(side_by_side.main,
                                            schedule_runs("mnist-4bit", folder=r)),
        "SCHED_FMNIST": lambda: printed(schedules.main, schedule_runs("fmnist-4bit", folder=r)),
        "SIDE_SCHED_FMNIST": lambda: printed(side_by_side.main,
                                             schedule_runs("fmnist-4bit", folder=r)),
        "SCHED_FMNIST_INC0": lambda: printed(schedules.main,
                                             schedule_runs("fmnist-4bit", "inc0", folder=r)),
        "SIDE_SCHED_FMNIST_INC0": lambda: printed(side_by_side.main,
                                                  schedule_runs("fmnist-4bit", "inc0", folder=r)),
        "ROUNDING_FMNIST_INC0": side("fmnist-4bit-cosine-inc0-scalegrad-seed0",
                                     "fmnist-4bit-warm_restarts-inc0-scalegrad-seed0"),
        "ERRORS_FMNIST": lambda: errors.markdown(
            *errors.recorded(r / "fmnist-4bit-cosine20-scalegrad-seed0")),
        "LEVERS_MNIST": side("mnist-4bit-cosine20-scalegrad-seed0",
                             "mnist-4bit-cosine20-inc0-scalegrad-seed0", train_acc=True),
        "SEEDS": lambda: printed(seeds.main, [str(r / f"{d}-4bit-{s}-scalegrad")
                                              for s in ("cosine20-inc0", "cosine20", "warm_restarts",
                                                        "cosine")
                                              for d in ("mnist", "fmnist")]),
        "LEVERS_FMNIST": side("fmnist-4bit-cosine20-scalegrad-seed0",
                              "fmnist-4bit-cosine20-inc0-scalegrad-seed0",
                              "fmnist-4bit-cosine20-lr2x-scalegrad-seed0", train_acc=True),
        # RESULTS.md
        "AIMS": lambda: headline.aims([(r / "mnist-4bit-cosine20-inc0-scalegrad", 99.3),
                                       (r / "fmnist-4bit-cosine20-inc0-scalegrad", 91)]),
        "TARGETS": lambda: headline.settings(prefixes(
            "mnist-4bit-cosine20-scalegrad", "mnist-4bit-cosine20-inc0-scalegrad",
            "fmnist-4bit-cosine20-scalegrad", "fmnist-4bit-cosine20-inc0-scalegrad")),
        "QUANT_GRAD": lambda: headline.settings(prefixes(
            "mnist-4bit-cosine", "mnist-4bit-cosine-scalegrad",
            "fmnist-4bit-cosine", "fmnist-4bit-cosine-scalegrad"), first=10),
        "ZEROS": lambda: headline.zeros(prefixes(
            "mnist-4bit-cosine-seed0", "mnist-4bit-cosine-scalegrad-seed0",
            "fmnist-4bit-cosine-seed0", "fmnist-4bit-cosine-scalegrad-seed0")),
        "SCHEDULES": lambda: headline.schedules(schedule_runs("mnist-4bit", folder=r)
                                                + schedule_runs("fmnist-4bit", folder=r)),
        "FULL_PRECISION": lambda: headline.settings(prefixes(
            "mnist-fp-cosine", "mnist-4bit-cosine-scalegrad",
            "fmnist-fp-cosine", "fmnist-4bit-cosine-scalegrad"), first=10),
        "DEPLOY": lambda: headline.deploy(ROOT / "benchmarks" / "deploy_agreement.json"),
    }


def placeholders(text):
    """The {NAME} placeholders of a template text, in order."""
    import re
    return re.findall(r"\{([A-Z][A-Z0-9_]*)\}", text)


def render(template: Path, fill=None) -> str:
    """The text of ``template`` with every placeholder replaced by its table."""
    fill = fills() if fill is None else fill
    text = template.read_text(encoding="utf-8")
    unknown = [k for k in placeholders(text) if k not in fill]
    if unknown:
        raise ValueError(f"{template}: no table for placeholder(s) {unknown}; add them to "
                         "experiments/make_report.py fills()")
    for key in dict.fromkeys(placeholders(text)):
        text = text.replace("{" + key + "}", fill[key]())
    return text


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if a file is not what the records give")
    a = p.parse_args(argv)
    try:
        texts = {out: render(template) for template, out in OUTPUTS.items()}
    except ValueError as e:
        sys.exit(str(e))
    stale = []
    for out, text in texts.items():
        if a.check:
            if not out.exists() or out.read_text(encoding="utf-8") != text:
                stale.append(out)
        else:
            write_text(out, text)
            print(f"wrote {os.path.relpath(out)} ({text.count(chr(10))} lines)")
    if stale:
        sys.exit("out of date (run python -m experiments.make_report): "
                 + ", ".join(os.path.relpath(s) for s in stale))


if __name__ == "__main__":
    main()
