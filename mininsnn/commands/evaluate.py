"""``mininsnn eval``: test accuracy of a run's checkpoints (best.h5 and last.h5) or of one
checkpoint file."""
from __future__ import annotations

import time
from pathlib import Path

from mininsnn import data
from mininsnn.commands.args import UsageError, check_positive
from mininsnn.config import ConfigError, validate_config
from mininsnn.runs import RunFolder, read_training_checkpoint
from mininsnn.sources import run_checkpoints
from mininsnn.train import build_net, evaluate

__all__ = ["add_args", "run"]


def add_args(e) -> None:
    e.add_argument("path", metavar="RUN_DIR_OR_CHECKPOINT")
    e.add_argument("--data-dir", dest="data_dir")
    e.add_argument("--download", action="store_true")
    e.add_argument("--test-subset", type=int, dest="test_subset",
                   help="first N test samples (default: the whole test set)")
    e.add_argument("--batch-size", type=int, dest="batch_size")


def _files(path: Path) -> list[Path]:
    """The checkpoints to evaluate: a run folder's (best.h5, last.h5), or the file itself."""
    if path.is_dir():
        files = run_checkpoints(path)
        if not files:
            raise UsageError(f"{path} has no best.h5 or last.h5; pass a run folder or a "
                             "checkpoint file")
        return files
    if path.is_file():
        return [path]
    raise UsageError(f"{path} does not exist; pass a run folder or a checkpoint file")


def _checkpoints(path: Path, files: list[Path]) -> list:
    """[label, file, tree] of every checkpoint to evaluate, read before the slow part."""
    loaded = [[str(f), f, read_training_checkpoint(f)] for f in files]
    if path.is_dir() and (path / "last.h5").exists() and \
            RunFolder(path).best_is_behind(loaded[-1][2]):
        # a kill after last.h5's commit: last.h5 holds the best epoch until a resume repairs
        loaded = [[f"{path / 'best.h5'} (behind last.h5 after an interrupted run: evaluating "
                   "last.h5, which holds the best epoch)", *loaded[-1][1:]], loaded[-1]]
    return loaded


def run(a, argv) -> int:
    path = Path(a.path)
    files = _files(path)
    check_positive(a, ("test_subset", "batch_size"))
    loaded = _checkpoints(path, files)
    for item in loaded:
        f, tree = item[1], item[2]
        cfg = validate_config({**tree["config"], "test_subset": a.test_subset})
        net = build_net(cfg)
        try:
            net.load_state_dict(tree["model"])
        except ValueError as e:
            raise ConfigError(f"{f}: the checkpoint does not fit its configuration: {e}") \
                from None
        item.append((cfg, net))
    test_sets = {}
    for label, f, tree, (cfg, net) in loaded:
        key = (cfg["dataset"], cfg["test_subset"])
        if key not in test_sets:
            (test_sets[key],) = data.load_data(cfg, a.data_dir, a.download, splits=("test",))
        t0 = time.perf_counter()
        r = evaluate(net, test_sets[key], cfg, a.batch_size)
        print(f"{label}: epoch {tree['epoch']}, test accuracy {100 * r['acc']:.2f}% on {r['n']} "
              f"samples, test loss {r['loss']:.4f}  ({time.perf_counter() - t0:.1f} s)")
    return 0
