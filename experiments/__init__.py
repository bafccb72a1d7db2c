"""The lab beside the library: the research runs of mininsnn and the scripts that turn them into
experiments/REPORT.md and the root RESULTS.md (see experiments/README.md).

Run the scripts from the repository's root as modules, e.g. ``python -m experiments.make_report``;
they import each other as ``experiments.<script>``. Nothing in the ``mininsnn`` package imports
this one.
"""
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RUNS = HERE / "runs"            # one record per run: experiments/runs/<run>/
