"""Plots of a run folder (optional extra: ``pip install mininsnn[plot]`` for matplotlib).

    curves.png   train/test loss and train/test accuracy per epoch   (metrics.jsonl)
    lr.png       learning rate and training loss per step            (steps.csv)
    raster.png   spikes of one test sample through the three spiking layers (best.h5 or last.h5)

and, for several runs on shared axes (``mininsnn compare RUN_DIR... --out FILE``), test accuracy
and training loss per epoch and the learning rate per step: :func:`plot_compare`.

Figures are drawn with matplotlib's object API (no pyplot), so no display is ever needed.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from mininsnn import data
from mininsnn.checkpoint import CheckpointError, load_checkpoint
from mininsnn.config import ConfigError, test_steps, validate_config
from mininsnn.loss import predict
from mininsnn.runs import read_metrics
from mininsnn.sources import run_checkpoint
from mininsnn.spec import as_input
from mininsnn.train import build_net

__all__ = ["figure", "plot_run", "plot_curves", "plot_steps", "plot_raster", "plot_compare"]


def figure(nrows: int, ncols: int, size):
    """(Figure, axes[nrows, ncols]) of matplotlib, or a one-line ConfigError without it."""
    try:
        from matplotlib.figure import Figure        # an optional extra
    except ImportError:
        raise ConfigError("plotting needs matplotlib: pip install 'mininsnn[plot]'") from None
    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def plot_curves(rows: list[dict], path) -> None:
    """Loss and accuracy per epoch, and for quantized runs the share of weights at level 0."""
    zero_keys = list(dict.fromkeys(k for r in rows for k in r if k.startswith("zero_")))
    fig, ax = figure(1, 3 if zero_keys else 2, (15 if zero_keys else 10, 4))
    ep = [r["epoch"] for r in rows]
    ax[0, 0].plot(ep, [r["train_loss"] for r in rows], "o-", label="train")
    ax[0, 0].plot(ep, [r["test_loss"] for r in rows], "s-", label="test")
    ax[0, 0].set(xlabel="epoch", ylabel="loss", title="loss")
    ax[0, 1].plot(ep, [100 * r["train_acc"] for r in rows], "o-", label="train (training mode)")
    ax[0, 1].plot(ep, [100 * r["test_acc"] for r in rows], "s-", label="test")
    ax[0, 1].set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for k in zero_keys:
        pts = [(r["epoch"], 100 * r[k]) for r in rows if k in r]
        ax[0, 2].plot([e for e, _ in pts], [v for _, v in pts], "o-", label=k[len("zero_"):])
    if zero_keys:
        ax[0, 2].set(xlabel="epoch", ylabel="% of weights", title="quantized weights at level 0")
    from matplotlib.ticker import MaxNLocator      # an optional extra (figure() checked it)
    for a in ax[0]:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.legend()
        a.grid(alpha=0.3)
    fig.savefig(path, dpi=120)


def _read_steps(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) for r in rows]) for k in ("step", "lr", "loss")}


def plot_steps(steps: dict, path) -> None:
    """Learning rate and training loss per step (batch)."""
    fig, ax = figure(2, 1, (9, 6))
    ax[0, 0].plot(steps["step"], steps["lr"])
    ax[0, 0].set(ylabel="learning rate", title="learning rate per step")
    ax[0, 0].ticklabel_format(axis="y", useOffset=False)
    ax[1, 0].plot(steps["step"], steps["loss"], lw=0.8)
    ax[1, 0].set(xlabel="step (batch)", ylabel="training loss", title="training loss per step")
    for a in ax[:, 0]:
        a.grid(alpha=0.3)
    fig.savefig(path, dpi=120)


def plot_raster(recorded: dict, title: str, path) -> None:
    """``recorded``: layer name -> spikes (T, B, ...) of one forward; sample 0 is drawn."""
    names = list(recorded)
    fig, ax = figure(len(names), 1, (9, 2.2 * len(names) + 0.6))
    for a, name in zip(ax[:, 0], names):
        s = np.asarray(recorded[name])
        s = s.reshape(s.shape[0], s.shape[1], -1)[:, 0]            # (T, neurons) of sample 0
        t, i = np.nonzero(s > 0)
        a.scatter(t, i, s=4, marker="|", color="k", linewidths=0.8)
        a.set(xlim=(-0.5, s.shape[0] - 0.5), ylim=(-0.5, s.shape[1] - 0.5), ylabel="neuron",
              title=f"{name}: {s.shape[1]} neurons, rate {s.mean():.3f}")
    ax[-1, 0].set_xlabel("time step")
    fig.suptitle(title)
    fig.savefig(path, dpi=120)


def _raster(run_dir: Path, out: Path, sample: int, data_dir, log) -> Path | None:
    ck = run_checkpoint(run_dir)
    if ck is None:
        log("no best.h5 or last.h5 in the run folder: spike raster skipped")
        return None
    try:
        tree = load_checkpoint(ck)
    except CheckpointError as e:
        raise ConfigError(str(e)) from None
    cfg = validate_config({**tree["config"], "test_subset": None})
    (test,) = data.load_data(cfg, data_dir, splits=("test",))
    if not 0 <= sample < len(test):
        raise ConfigError(f"--sample must lie in 0..{len(test) - 1}, got {sample}")
    net = build_net(cfg)
    net.load_state_dict(tree["model"])
    net.eval()
    x, y = test.get_batch([sample])
    x = as_input(net, x, test_steps(cfg))               # a spec may read the image row by row
    try:
        if x.ndim == 4:
            spk = net.forward(x, num_steps=test_steps(cfg), record=True)
        else:
            spk = net.forward(x, record=True)
    except TypeError:
        log("this network cannot record per-layer spikes: spike raster skipped")
        return None
    recorded = getattr(net, "recorded", {}).get("spikes")
    if not recorded:
        log("the network recorded no per-layer spikes: spike raster skipped")
        return None
    path = out / "raster.png"
    plot_raster(recorded, f"{ck.name} (epoch {tree['epoch']}), test sample {sample}: label "
                f"{int(y[0])}, predicted {int(predict(spk)[0])}", path)
    return path


def plot_run(run_dir, out_dir=None, sample: int = 0, data_dir=None, raster: bool = True,
             log=print) -> list[Path]:
    """Draw the plots of ``run_dir`` into ``out_dir`` (default: the run folder); returns paths."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run dir {run_dir} does not exist; pass the folder of a training run")
    rows = read_metrics(run_dir)
    steps_path = run_dir / "steps.csv"
    if not rows and not steps_path.exists():
        raise ConfigError(f"{run_dir} has no metrics.jsonl or steps.csv; is it a run folder?")
    figure(1, 1, (1, 1))                          # fail early (nothing written) without matplotlib
    out = run_dir if out_dir is None else Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if rows:
        plot_curves(rows, out / "curves.png")
        written.append(out / "curves.png")
    if steps_path.exists():
        steps = _read_steps(steps_path)
        if len(steps["step"]):
            plot_steps(steps, out / "lr.png")
            written.append(out / "lr.png")
    if raster:
        p = _raster(run_dir, out, sample, data_dir, log)
        if p is not None:
            written.append(p)
    return written


def plot_compare(run_dirs, path, labels=None, title: str | None = None) -> Path:
    """Test accuracy and mean training loss per epoch, and LR per step, of several runs."""
    run_dirs = [Path(d) for d in run_dirs]
    if labels is None:
        labels = [d.name for d in run_dirs]
    if len(labels) != len(run_dirs):
        raise ConfigError(f"{len(labels)} label(s) for {len(run_dirs)} run(s)")
    runs = []
    for d in run_dirs:                               # read everything before drawing anything
        rows = read_metrics(d) if d.is_dir() else []
        if not rows:
            raise ConfigError(f"{d} has no metrics.jsonl rows; pass folders of training runs")
        steps = _read_steps(d / "steps.csv") if (d / "steps.csv").exists() else None
        runs.append((rows, steps))
    fig, ax = figure(1, 3, (15, 4.2))
    for label, (rows, steps) in zip(labels, runs):
        ep = [r["epoch"] for r in rows]
        line, = ax[0, 0].plot(ep, [100 * r["test_acc"] for r in rows], "o-", ms=3, label=label)
        ax[0, 1].plot(ep, [r["train_loss"] for r in rows], "o-", ms=3, color=line.get_color(),
                      label=label)
        if steps is not None and len(steps["step"]):
            ax[0, 2].plot(steps["step"], steps["lr"], color=line.get_color(), label=label)
    from matplotlib.ticker import MaxNLocator      # an optional extra (figure() checked it)
    for a in ax[0, :2]:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax[0, 0].set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy")
    ax[0, 1].set(xlabel="epoch", ylabel="mean training loss", title="training loss")
    ax[0, 2].set(xlabel="step (batch)", ylabel="learning rate", title="learning rate per step")
    for a in ax[0]:
        a.legend(fontsize=8)
        a.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
