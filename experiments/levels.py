"""How the 4-bit weights of a checkpoint use their 15 levels (-7..7), per quantized layer, as a
Markdown table (for experiments/REPORT.md).

    python -m experiments.levels experiments/runs/RUN/best.h5 --save   # measure, keep as levels.json
    python -m experiments.levels experiments/runs/RUN [more runs]      # the table from levels.json

For each of conv1, conv2, fc1: max|W| / std(W) (how far the largest weight, which sets the
scale s = max|W| / 7, sits from the bulk), the share of weights that round to 0, and the share
at each level. Checkpoints are not in git, so the report reads what ``--save`` kept in the run's
record: RUN/levels.json, one entry per checkpoint of that run (its name inside the run folder,
epoch, sha256, the command that measured it, and for each layer max|W| / std(W) and how many
weights sit at each level, from the lowest, -7, to the highest, 7).
"""
import argparse
import datetime
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from experiments.records import run_folder, write_json
from mininsnn.checkpoint import load_checkpoint
from mininsnn.quant import quantize_forward

LAYERS = ("conv1", "conv2", "fc1")


def sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def measure(checkpoint) -> dict | None:
    """How a checkpoint's quantized layers use their levels (None for a full-precision one):
    {"epoch", "bits", "sha256", "layers": {layer: {"max_abs_over_std", "counts"}}}, ``counts``
    the number of weights at each level -(2^(bits-1) - 1) .. 2^(bits-1) - 1, in that order."""
    tree = load_checkpoint(checkpoint)
    bits = tree["config"]["bits"]
    if bits is None:
        return None
    top = 2 ** (bits - 1) - 1
    layers = {}
    for name in LAYERS:
        w = np.asarray(tree["model"][name + ".weight"], np.float64)
        wq, s = quantize_forward(w, bits)
        q = np.rint(wq / s).astype(int)
        layers[name] = {"max_abs_over_std": float(np.abs(w).max() / w.std()),
                        "counts": [int(np.sum(q == v)) for v in range(-top, top + 1)]}
    return {"epoch": int(tree["epoch"]), "bits": int(bits), "sha256": sha256(checkpoint),
            "layers": layers}


def save(checkpoint, record, command: str) -> Path:
    """Add ``record`` (of ``checkpoint``) to levels.json of the checkpoint's run folder."""
    run = run_folder(checkpoint)
    path = run / "levels.json"
    kept = json.loads(path.read_text()) if path.exists() else {"checkpoints": {}}
    name = Path(checkpoint).resolve().relative_to(run.resolve()).as_posix()
    kept["checkpoints"][name] = {**record, "command": command,
                                 "measured": datetime.date.today().isoformat()}
    write_json(path, kept)
    return path


def recorded(run) -> list[tuple[str, dict]]:
    """(RUN/checkpoint name, record) of every checkpoint in RUN/levels.json."""
    path = Path(run) / "levels.json"
    if not path.exists():
        raise ValueError(f"{path} does not exist: measure a checkpoint of this run with "
                         "`python -m experiments.levels RUN/CHECKPOINT.h5 --save`")
    kept = json.loads(path.read_text())["checkpoints"]
    return [(f"{Path(run).name}/{name}", rec) for name, rec in sorted(kept.items())]


def shares(counts) -> dict:
    """{level: share of the weights} of a layer's ``counts`` (levels -top..top, in order)."""
    top = len(counts) // 2
    return {v: c / sum(counts) for v, c in zip(range(-top, top + 1), counts)}


def markdown(entries) -> str:
    """The table of ``entries``, (checkpoint label, record) pairs."""
    lines = ["| checkpoint | epoch | layer | max abs W / std W | share at level 0 | "
             "shares at levels -3..3 |", "|---|---|---|---|---|---|"]
    for label, rec in entries:
        for name in LAYERS:
            layer = rec["layers"][name]
            share = shares(layer["counts"])
            middle = " ".join(f"{share[v]:.2f}" for v in range(-3, 4))
            lines.append(f"| {label} | {rec['epoch']} | {name} | {layer['max_abs_over_std']:.1f} | "
                         f"{share[0]:.2f} | {middle} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", metavar="CHECKPOINT_OR_RUN",
                   help="a checkpoint (.h5) to measure, or a run folder whose levels.json to show")
    p.add_argument("--save", action="store_true",
                   help="keep each measured checkpoint's levels in its run's levels.json")
    a = p.parse_args(argv)
    entries = []
    for path in a.paths:
        if path.endswith(".h5"):
            rec = measure(path)
            if rec is None:
                print(f"{path}: full precision, no levels", file=sys.stderr)
                continue
            if a.save:
                command = f"python -m experiments.levels {path} --save"
                print(f"kept in {save(path, rec, command)}", file=sys.stderr)
            entries.append((path, rec))
        else:
            try:
                entries += recorded(path)
            except ValueError as e:
                sys.exit(str(e))
    print(markdown(entries))


if __name__ == "__main__":
    main()
