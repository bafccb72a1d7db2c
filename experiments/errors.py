"""Where a checkpoint's test errors are, as Markdown (for experiments/REPORT.md): accuracy per
class, the class each one is most often mistaken for, and how many errors are ties of the spike
count.

    python -m experiments.errors experiments/runs/fmnist-4bit-cosine20-scalegrad-seed0/last.h5 \\
        --data-dir ../shared/data/fashion-mnist --save      # evaluate, keep as RUN/errors.json
    python -m experiments.errors experiments/runs/fmnist-4bit-cosine20-scalegrad-seed0   # from it

A tie (two or more classes with the top spike count) goes to the lowest class index, as in the
reference's accuracy; the last line says how many errors a perfect tie-break could undo at most.
Checkpoints are not in git, so the report reads what ``--save`` kept in the run's record:
RUN/errors.json holds the checkpoint's name, epoch and sha256, the command and machine that
evaluated it, the confusion matrix (true class x predicted class) and the tie counts.
"""
import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np

from experiments.levels import sha256
from experiments.records import run_folder, write_json
from mininsnn.config import test_steps, validate_config
from mininsnn.data import BatchIterator, load_data
from mininsnn.runs import read_training_checkpoint
from mininsnn.train import build_net, forward

NAMES = {"fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                           "Shirt", "Sneaker", "Bag", "Ankle boot"]}


def counts(checkpoint, data_dir=None, batch_size=500):
    """Spike counts (N, classes) of the test set and the labels (N,), in eval mode."""
    tree = read_training_checkpoint(checkpoint)
    cfg = validate_config(tree["config"])
    (test,) = load_data(cfg, data_dir, splits=("test",))
    net = build_net(cfg)
    net.load_state_dict(tree["model"])
    net.eval()
    out, labels = [], []
    for x, y in BatchIterator(test, batch_size, shuffle=False).epoch(0):
        out.append(forward(net, x, test_steps(cfg)).sum(axis=0, dtype=np.float64))
        labels.append(y)
    return cfg, tree["epoch"], np.concatenate(out), np.concatenate(labels)


def measure(checkpoint, data_dir=None) -> dict:
    """The record of a checkpoint's test errors: {"dataset", "epoch", "sha256", "confusion"
    (true x predicted, a tie going to the lowest class index), "tied" (test samples with a tie
    for the top count), "tied_errors" (errors among them), "tied_true" (of those, the ones whose
    true class is among the tied)}."""
    cfg, epoch, C, y = counts(checkpoint, data_dir)
    n_cls = C.shape[1]
    pred = C.argmax(axis=1)
    confusion = np.zeros((n_cls, n_cls), np.int64)
    np.add.at(confusion, (y, pred), 1)
    top = C.max(axis=1)
    tied = (C == top[:, None]).sum(axis=1) > 1
    errors = pred != y
    tied_true = errors & tied & (C[np.arange(len(y)), y] == top)
    return {"dataset": cfg["dataset"], "epoch": int(epoch), "sha256": sha256(checkpoint),
            "confusion": confusion.tolist(), "tied": int(tied.sum()),
            "tied_errors": int((errors & tied).sum()), "tied_true": int(tied_true.sum())}


def save(checkpoint, record, command: str) -> Path:
    """Keep ``record`` (of ``checkpoint``) as errors.json of the checkpoint's run folder."""
    from mininsnn.runs import machine
    run = run_folder(checkpoint)
    name = Path(checkpoint).resolve().relative_to(run.resolve()).as_posix()
    path = run / "errors.json"
    write_json(path, {"checkpoint": name, **record, "command": command, "machine": machine(),
                      "measured": datetime.date.today().isoformat()})
    return path


def recorded(run) -> tuple[str, dict]:
    """(RUN/checkpoint name, record) of RUN/errors.json."""
    path = Path(run) / "errors.json"
    if not path.exists():
        raise ValueError(f"{path} does not exist: evaluate a checkpoint of this run with "
                         "`python -m experiments.errors RUN/CHECKPOINT.h5 --save`")
    rec = json.loads(path.read_text())
    return f"{Path(run).name}/{rec['checkpoint']}", rec


def markdown(label: str, rec: dict) -> str:
    """The per-class table and the summary line of one record."""
    confusion = np.asarray(rec["confusion"], np.int64)
    n_cls = len(confusion)
    names = NAMES.get(rec["dataset"], [str(k) for k in range(n_cls)])
    lines = ["| class | test accuracy % | most often taken for (share of its errors) |",
             "|---|---|---|"]
    for k in range(n_cls):
        wrong = confusion[k].copy()
        wrong[k] = 0                               # the errors of class k, by predicted class
        if wrong.sum():
            other = wrong.argmax()                 # the lowest such class on a tie
            taken = f"{names[other]} ({wrong[other] / wrong.sum():.0%})"
        else:
            taken = "-"
        n = confusion[k].sum()
        acc = f"{100 * confusion[k, k] / n:.1f}" if n else "- (no test sample)"
        lines.append(f"| {names[k]} | {acc} | {taken} |")
    total, correct = confusion.sum(), np.trace(confusion)
    lines.append(
        f"\n{label} (epoch {rec['epoch']}): test accuracy {100 * correct / total:.2f} %, "
        f"{total - correct} errors; {rec['tied']} test samples have a tie for the top count, "
        f"{rec['tied_errors']} of the errors are ties, and in {rec['tied_true']} of those the true "
        f"class is among the tied ones (at most {100 * rec['tied_true'] / total:.2f} points for a "
        "perfect tie-break).")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path", metavar="CHECKPOINT_OR_RUN",
                   help="a checkpoint (.h5) to evaluate, or a run folder whose errors.json to show")
    p.add_argument("--data-dir")
    p.add_argument("--save", action="store_true", help="keep the result as the run's errors.json")
    a = p.parse_args(argv)
    if a.path.endswith(".h5"):
        rec = measure(a.path, a.data_dir)
        label = a.path
        if a.save:
            command = f"python -m experiments.errors {a.path} --save"
            if a.data_dir:
                command += f" --data-dir {a.data_dir}"
            print(f"kept in {save(a.path, rec, command)}", file=sys.stderr)
    else:
        try:
            label, rec = recorded(a.path)
        except ValueError as e:
            sys.exit(str(e))
    print(markdown(label, rec))


if __name__ == "__main__":
    main()
