"""Command line: ``mininsnn train | eval | plot | compare | tune | sweep | report | export | infer``.

    mininsnn train --config mnist-4bit --epochs 1              # -> runs/mnist-4bit-seed0/
    mininsnn train --resume runs/mnist-4bit-seed0 --epochs 3   # continue the same run
    mininsnn train --schedule constant --keep-epochs ...        # + runs/.../epochs/epochNNN.h5
    mininsnn train --branch runs/mnist-4bit-seed0/best.h5 --schedule warm_restarts \\
                   --epochs 20 --out runs/mnist-4bit-wr-seed0  # a new run from a checkpoint
    mininsnn eval runs/mnist-4bit-seed0                        # best.h5 and last.h5 on the test set
    mininsnn plot runs/mnist-4bit-seed0                        # curves, LR per step, spike raster
    mininsnn compare runs/a runs/b --out ab.png                # several runs on shared axes
    mininsnn tune studies/a --validation 10000 --epochs 3 --trials 20 --workers 2
    mininsnn sweep studies/s --grid seed=0,1,2 --grid schedule=cosine,constant --epochs 20
    mininsnn report studies/s                                  # mean ± sd per setting + plot
    mininsnn export mnist-4bit --format c --out build/         # integer-only C99 (docs/deploy.md)
    mininsnn infer mnist-4bit --input t10k-images-idx3-ubyte.gz --engine int   # classify

This module only builds the parser and dispatches: each verb lives in mininsnn.commands (one
module per verb or family), and each command is one entry of :data:`COMMANDS`: a function adding
its arguments and a function running it. ``mininsnn train``'s setting flags (--lr, --beta,
--num-steps, ...) are made from mininsnn.config.SETTINGS, so every setting has a flag with the
same name and the same check. (Importing mininsnn.commands first keeps BLAS single-threaded:
mininsnn/commands/__init__.py.)

Bad input (unknown flag, impossible value, missing data, a run folder that belongs to another
configuration, an --out where files cannot be created) prints one line saying what to do and
returns exit code 2 before anything is written. A training that diverges (NaN or inf in its
state) or a write that fails later (disk full, permissions) prints one line saying which epoch
the run folder keeps and returns exit code 1 (mininsnn.train.TrainingError). ``main`` returns
the exit code instead of calling sys.exit, so it can be called from Python (the examples and
the tests do).
"""
from __future__ import annotations

import argparse
import shlex
import sys

from mininsnn.commands import deploy, evaluate, plots, report, study, train
from mininsnn.commands.args import EXIT_USAGE, Parser, UsageError
from mininsnn.config import ConfigError
from mininsnn.runs import WriteError
from mininsnn.train import TrainingError

__all__ = ["main", "build_parser", "UsageError", "COMMANDS"]


def _train_flags(argv: list[str]) -> dict:
    """{dest: value} of the flags a ``mininsnn train`` command line gives (a trial's command,
    parsed back by mininsnn.tune.train_argv with the real parser)."""
    return vars(build_parser().parse_args(argv))


def _tune(a, argv) -> int:
    return study.run(a, argv, "tune", parse=_train_flags)


def _sweep(a, argv) -> int:
    return study.run(a, argv, "sweep", parse=_train_flags)


#: name -> (help, add its arguments, run it, parser keywords)
COMMANDS = {
    "train": ("train a run (or continue one with --resume)", train.add_args, train.run,
              dict(argument_default=argparse.SUPPRESS,   # absent flags stay absent (resume)
                   description="Train a configuration. Flags not given take the "
                               "configuration's value (or, with --resume, the resumed run's).")),
    "eval": ("test accuracy of a run's checkpoints", evaluate.add_args, evaluate.run, {}),
    "plot": ("training curves, LR per step and a spike raster", plots.plot_args, plots.plot_run,
             {}),
    "compare": ("test accuracy, training loss and LR of several runs in one PNG",
                plots.compare_args, plots.compare, {}),
    "tune": ("an Optuna study: trials over a search space, scored on a validation split",
             lambda p: study.add_args(p, "tune"), _tune,
             dict(argument_default=argparse.SUPPRESS,
                  description="Search hyperparameters with Optuna. Every trial is a run folder "
                              "STUDY_DIR/trial-NNNN whose command.txt reruns it.")),
    "sweep": ("a grid of runs (seeds x schedules x settings) as an Optuna study",
              lambda p: study.add_args(p, "sweep"), _sweep,
              dict(argument_default=argparse.SUPPRESS,
                   description="Train every point of a grid once, on any number of workers.")),
    "report": ("mean ± sd per setting of a sweep's (or any folder's) runs, and a plot",
               report.add_args, report.run, {}),
    "export": ("write a trained model as integers: C99 source or an integer .npz",
               deploy.export_args, deploy.export,
               dict(description="Convert a trained model to integers (docs/deploy.md) and write "
                                "it.")),
    "infer": ("classify an IDX file or .npy array with the float or an integer engine",
              deploy.infer_args, deploy.infer,
              dict(description="Classify images or event frames; print accuracy (with --labels) "
                               "and samples/s.")),
}


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="mininsnn", allow_abbrev=False,
               description="Train, evaluate and deploy quantized spiking neural networks "
                           "(NumPy + Numba).")
    sub = p.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    sub.required = True
    for name, (help_, add_args, _, kw) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_, allow_abbrev=False, **kw))
    return p


def main(argv=None) -> int:
    """Run the command line ``argv`` (default sys.argv[1:]); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        a, extra = build_parser().parse_known_args(argv)
        if extra:
            raise UsageError(f"mininsnn {a.command}: unrecognized arguments: {shlex.join(extra)}"
                             f" (see `mininsnn {a.command} --help`)")
        return COMMANDS[a.command][2](a, argv)
    except SystemExit as e:                    # --help / --version
        return e.code if isinstance(e.code, int) else 0
    except (UsageError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (TrainingError, WriteError) as e:       # diverged, or a write failed: exit 1
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
