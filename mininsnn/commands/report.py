"""``mininsnn report``: mean ± sd per setting of a sweep's (or any folder's) runs, as a table
and a plot (mininsnn.report)."""
from __future__ import annotations

from pathlib import Path

from mininsnn import report
from mininsnn.commands.args import UsageError
from mininsnn.config import ConfigError

__all__ = ["add_args", "run"]


def add_args(r) -> None:
    r.add_argument("folder", metavar="DIR", help="a study folder, or any folder of run folders")
    r.add_argument("--out", help="the plot (default DIR/report.png)")
    r.add_argument("--no-plot", action="store_true", dest="no_plot", help="print the table only")
    r.add_argument("--markdown", action="store_true", help="print the table as Markdown")


def run(a, argv) -> int:
    runs = [report.summarize_run(d) for d in report.find_runs(a.folder)]
    groups = report.group_runs(runs)
    if not groups:
        raise UsageError(f"{a.folder} has no run with a finished epoch yet")
    print(report.format_report(groups, markdown=a.markdown))
    if not a.no_plot:
        try:
            print(f"wrote {report.plot_report(groups, a.out or Path(a.folder) / 'report.png')}")
        except ConfigError as e:                 # matplotlib is optional
            print(f"no plot: {e}")
    return 0
