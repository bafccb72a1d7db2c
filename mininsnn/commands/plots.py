"""``mininsnn plot`` (a run's curves, LR per step and a spike raster) and ``mininsnn compare``
(several runs on shared axes), drawn by mininsnn.plot."""
from __future__ import annotations

from mininsnn import plot

__all__ = ["plot_args", "plot_run", "compare_args", "compare"]


def plot_args(g) -> None:
    g.add_argument("run_dir", metavar="RUN_DIR")
    g.add_argument("--out", help="folder for the PNG files (default: RUN_DIR)")
    g.add_argument("--sample", type=int, default=0, help="test sample of the raster (default 0)")
    g.add_argument("--data-dir", dest="data_dir")
    g.add_argument("--no-raster", action="store_true", help="skip the spike raster")


def plot_run(a, argv) -> int:
    written = plot.plot_run(a.run_dir, out_dir=a.out, sample=a.sample, data_dir=a.data_dir,
                            raster=not a.no_raster, log=print)
    for f in written:
        print(f"wrote {f}")
    return 0


def compare_args(c) -> None:
    c.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    c.add_argument("--out", required=True, help="the PNG file to write")
    c.add_argument("--labels", help="comma-separated legend labels (default: folder names)")
    c.add_argument("--title", help="figure title")


def compare(a, argv) -> int:
    labels = None if a.labels is None else a.labels.split(",")
    print(f"wrote {plot.plot_compare(a.run_dirs, a.out, labels, a.title)}")
    return 0
