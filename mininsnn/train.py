"""The training loop: a run configuration in, a run folder of metrics and checkpoints out.

One batch k (0-based over the whole run) of the reference recipe (REFERENCE.md):

    lr   = schedule.lr(k)
    S    = net.forward(x, num_steps=T)                  # (T, B, classes) spikes, training mode
    L, dS = loss(S, y)                                  # mse_count by default
    grads = backward(dS)                                # hand-written BPTT, accumulated from zero
    if grad_clip:   clip_grad_norm(grads, 1.0)
    if weight_clip: clip_weights(params, -1, 1)         # BEFORE the Adam step
    adam.step(grads, lr)

After every epoch: evaluation on the test set in eval mode, one metrics row, ``last.h5`` and (when
the test accuracy improves) ``best.h5``. Everything random is seeded: the weights and the dropout
masks from ``net.rng`` (seeded with ``seed``), the batch order of epoch e from (seed, e).

A run folder holds:

    config.json    the full run configuration
    command.txt    every command that trained this run (the first one and each resume)
    metrics.jsonl  one JSON object per epoch;   metrics.csv  the same rows as CSV
    steps.csv      step, epoch, lr, loss, train_acc of every batch
    last.h5        checkpoint after the last finished epoch;  best.h5  at the best test accuracy
    epochs/epochNNN.h5   with ``keep_epochs``: the checkpoint after every epoch (to branch from)

A checkpoint holds the weights and BatchNorm buffers, the Adam moments, the schedule state, the
dropout RNG state, epoch, step, the configuration and the metric history, so that resuming from
``last.h5`` reproduces the uninterrupted run bit for bit.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from mininsnn import __version__
from mininsnn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mininsnn.data import BatchIterator
from mininsnn.optim import Adam, clip_grad_norm, clip_weights
from mininsnn.quant import QUANT_GRADS, quantize_forward
from mininsnn.schedule import SCHEDULES, make_schedule

__all__ = ["TRAIN_DEFAULTS", "RESUMABLE_KEYS", "BRANCHABLE_KEYS", "ConfigError", "TrainingError",
           "make_config", "validate_config", "load_data", "build_net", "forward", "evaluate",
           "Trainer", "check_same_config", "check_new_run_dir", "load_run",
           "unstarted_run_config", "read_training_checkpoint", "load_checkpoint_source",
           "replay_schedule", "read_metrics"]

# Training options that sit beside a model config's hyperparameters in a run configuration
# (where a model config has the same key, e.g. "schedule", the model config's value wins).
TRAIN_DEFAULTS = {
    "epochs": 1,            # total number of epochs of the run
    "seed": 0,              # weights, dropout masks and batch order
    "schedule": "cosine",   # see mininsnn.schedule; T_max (model config) is its period parameter
    "T_mult": 1,            # warm_restarts only: cycle i lasts T_max * T_mult**i batches
    "eta_min": 0.0,         # floor of the cosine schedules
    "subset": None,         # train on the first N training samples (None: all)
    "test_subset": None,    # evaluate on the first N test samples (None: all)
}
# Keys added to the run configuration after runs were already recorded, with the value that
# reproduces what those runs did: an older checkpoint's config gets them when it is validated.
ADDED_KEYS = {"quant_grad": "ste"}
# The only keys a resumed run may change.
RESUMABLE_KEYS = ("epochs",)
# The keys a branch (a new run that continues another run's checkpoint) may change: the schedule,
# provided it gave exactly the same lr at every batch already trained (see replay_schedule).
BRANCHABLE_KEYS = ("epochs", "schedule", "T_max", "T_mult", "eta_min")
RUN_FILES = ("config.json", "command.txt", "metrics.jsonl", "metrics.csv", "steps.csv",
             "last.h5", "best.h5")
CHECKPOINT_KIND = "mininsnn-run"


class ConfigError(ValueError):
    """A run configuration or run folder that cannot be used (bad value, unknown key, mismatch)."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN)."""


# ---------------------------------------------------------------------------------------------
# configuration

def _model_api():
    from mininsnn.models import CONFIGS, build_model
    return CONFIGS, build_model


def make_config(name: str, **overrides) -> dict:
    """The run configuration: model config ``name`` (mininsnn.models.CONFIGS), then
    TRAIN_DEFAULTS, then ``overrides``; validated. Unknown keys -> ConfigError."""
    CONFIGS, _ = _model_api()
    if name not in CONFIGS:
        raise ConfigError(f"unknown config {name!r}; choose one of {', '.join(CONFIGS)}")
    cfg = {"config": name, **TRAIN_DEFAULTS, **CONFIGS[name]}
    unknown = [k for k in overrides if k not in cfg]
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]!r}; known keys: {', '.join(cfg)}")
    cfg.update(overrides)
    return validate_config(cfg)


def _int_at_least(cfg, key, lo, allow_none=False):
    v = cfg[key]
    if v is None and allow_none:
        return
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ConfigError(f"{key} must be an integer >= {lo}, got {v!r}")
    cfg[key] = int(v)


def validate_config(cfg: dict) -> dict:
    """Check every value of a run configuration; returns a normalised copy or raises ConfigError."""
    CONFIGS, _ = _model_api()
    cfg = dict(cfg)
    name = cfg.get("config")
    if name not in CONFIGS:
        raise ConfigError(f"unknown config {name!r}; choose one of {', '.join(CONFIGS)}")
    known = {"config", *CONFIGS[name], *TRAIN_DEFAULTS}
    for k, v in ADDED_KEYS.items():
        if k in known:
            cfg.setdefault(k, v)
    unknown = [k for k in cfg if k not in known]
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]!r}")
    missing = [k for k in known if k not in cfg]
    if missing:
        raise ConfigError(f"config is missing key {missing[0]!r}")
    _int_at_least(cfg, "epochs", 1)
    _int_at_least(cfg, "seed", 0)
    _int_at_least(cfg, "batch_size", 1)
    _int_at_least(cfg, "num_steps", 1)
    _int_at_least(cfg, "T_max", 1)
    _int_at_least(cfg, "T_mult", 1)
    _int_at_least(cfg, "subset", 1, allow_none=True)
    _int_at_least(cfg, "test_subset", 1, allow_none=True)
    lr = cfg["lr"]
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"lr must be a finite number > 0, got {lr!r}")
    cfg["lr"] = float(lr)
    betas = cfg.get("betas", (0.9, 0.999))
    if (not isinstance(betas, (list, tuple)) or len(betas) != 2
            or not all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in betas)):
        raise ConfigError(f"betas must be two numbers in [0, 1), got {betas!r}")
    if "betas" in cfg:
        cfg["betas"] = tuple(float(b) for b in betas)
    wd = cfg.get("weight_decay", 0.0)
    if isinstance(wd, bool) or not isinstance(wd, (int, float)) or not (math.isfinite(wd) and wd >= 0):
        raise ConfigError(f"weight_decay must be a finite number >= 0, got {wd!r}")
    if cfg["schedule"] not in SCHEDULES:
        raise ConfigError(f"unknown schedule {cfg['schedule']!r}; choose one of "
                          f"{', '.join(SCHEDULES)}")
    if cfg["quant_grad"] not in QUANT_GRADS:
        raise ConfigError(f"quant_grad must be one of {', '.join(QUANT_GRADS)}, got "
                          f"{cfg['quant_grad']!r}")
    bits = cfg["bits"]
    if bits is not None and (isinstance(bits, bool) or not isinstance(bits, (int, np.integer))
                             or not 2 <= bits <= 16):
        raise ConfigError(f"bits must be an integer in 2..16 or None (full precision), got {bits!r}")
    try:
        _make_schedule(cfg)                        # eta_min, T_max, ... as the schedule sees them
    except ValueError as e:
        raise ConfigError(str(e)) from None
    _loss_fn(cfg)
    for key in ("correct_rate", "incorrect_rate"):
        r = cfg[key]
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r <= 1:
            raise ConfigError(f"{key} must be a number in [0, 1], got {r!r}")
    if cfg["correct_rate"] <= cfg["incorrect_rate"]:
        raise ConfigError(f"correct_rate ({cfg['correct_rate']}) must exceed incorrect_rate "
                          f"({cfg['incorrect_rate']})")
    return cfg


def _model_overrides(cfg: dict) -> dict:
    """The model hyperparameters of ``cfg`` that differ from its named config."""
    CONFIGS, _ = _model_api()
    base = CONFIGS[cfg["config"]]
    return {k: cfg[k] for k in base if cfg[k] != base[k]}


def _make_schedule(cfg: dict):
    name = cfg["schedule"]
    kw = {"cosine": {"T_max": cfg["T_max"], "eta_min": cfg["eta_min"]},
          "warm_restarts": {"T_0": cfg["T_max"], "T_mult": cfg["T_mult"],
                            "eta_min": cfg["eta_min"]}}.get(name, {})
    return make_schedule(name, cfg["lr"], **kw)


def _loss_fn(cfg: dict):
    from mininsnn import loss as L
    name = cfg["loss"]
    if name == "mse_count":
        return lambda spk, y: L.mse_count_loss(spk, y, correct_rate=cfg["correct_rate"],
                                               incorrect_rate=cfg["incorrect_rate"])
    if name == "ce_rate":
        return L.ce_rate_loss
    if name == "ce_count":
        return L.ce_count_loss
    raise ConfigError(f"unknown loss {name!r}; choose mse_count, ce_rate or ce_count")


# ---------------------------------------------------------------------------------------------
# data

_DATASET_ALIASES = {"mnist": "mnist", "fmnist": "fmnist", "fashion_mnist": "fmnist",
                    "fashion-mnist": "fmnist", "dvs": "dvs", "dvsgesture": "dvs",
                    "dvs_gesture": "dvs", "dvs128": "dvs"}


def _default_dvs_dir() -> Path:
    """$MININSNN_DATA/dvsgesture if the variable is set, else <repo>/datasets/dvsgesture (the
    convention of mininsnn.data)."""
    env = os.environ.get("MININSNN_DATA")
    return Path(env) / "dvsgesture" if env else \
        Path(__file__).resolve().parents[1] / "datasets" / "dvsgesture"


def load_data(cfg: dict, data_dir=None, download: bool = False, splits=("train", "test")):
    """The datasets of ``cfg["dataset"]`` for ``splits`` (a tuple, same order), the training set
    cut to ``subset`` and the test set to ``test_subset``.

    ``data_dir`` is the folder that holds the data set's files (default: the loader's own).
    A missing or incomplete folder raises ConfigError saying what to do.
    """
    kind = _DATASET_ALIASES.get(str(cfg["dataset"]).lower())
    if data_dir is not None and not Path(data_dir).is_dir():
        raise ConfigError(f"data dir {data_dir} does not exist; pass --data-dir with the folder "
                          "holding the data set's files")
    if kind is None:
        raise ConfigError(f"unknown dataset {cfg['dataset']!r}")
    out = []
    for split in splits:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        try:
            if kind == "mnist":
                from mininsnn.data import load_mnist
                ds = load_mnist(split, root=data_dir)
            elif kind == "fmnist":
                from mininsnn.data import load_fashion_mnist
                ds = load_fashion_mnist(split, root=data_dir, download=download)
            else:
                from mininsnn.dvs import DVSGesture
                root = data_dir if data_dir is not None else _default_dvs_dir()
                ds = DVSGesture(root, split)
        except (FileNotFoundError, ValueError, OSError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(f"cannot load the {kind} {split} data: {msg}") from None
        n = cfg["subset"] if split == "train" else cfg["test_subset"]
        out.append(ds if n is None else ds.subset(n))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# progress display

class Progress:
    """Progress over ``total`` samples: loss, samples/s and ETA. On a terminal, a bar (tqdm's
    when installed, else a one-line bar of its own). Off one (a log file), a plain line every
    ``every`` seconds, so that a long epoch in a log shows how far it is, and a short one
    prints nothing."""

    def __init__(self, total: int, desc: str, file=None, every: float = 60.0):
        self.file = file if file is not None else sys.stdout
        self.total, self.desc, self.done = total, desc, 0
        self.t0 = time.perf_counter()
        self.every, self.next_line = every, self.t0 + every
        self.enabled = bool(getattr(self.file, "isatty", lambda: False)())
        self._bar = None
        if self.enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, desc=desc, unit="sample", file=self.file,
                                 leave=False, dynamic_ncols=True)

    def status(self, loss: float, now: float) -> str:
        """'done/total  loss  samples/s  ETA m:ss' at time ``now``."""
        rate = self.done / max(now - self.t0, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        return (f"{self.done}/{self.total}  loss {loss:.4f}  {rate:.0f} samples/s  "
                f"ETA {int(eta) // 60:d}:{int(eta) % 60:02d}")

    def update(self, n: int, loss: float) -> None:
        self.done += n
        now = time.perf_counter()
        if not self.enabled:                        # a log file: a line now and then
            if now >= self.next_line and self.done < self.total:
                self.file.write(f"  {self.desc}: {self.status(loss, now)}\n")
                self.file.flush()
                self.next_line = now + self.every
            return
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            self._bar.update(n)
            return
        width = 24
        fill = int(width * self.done / max(self.total, 1))
        self.file.write(f"\r{self.desc} [{'#' * fill}{'.' * (width - fill)}] "
                        f"{self.status(loss, now)} ")
        self.file.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            self.file.write("\r" + " " * 100 + "\r")
            self.file.flush()


# ---------------------------------------------------------------------------------------------
# the trainer

def forward(net, x, num_steps: int):
    """Spikes (T, B, classes). Static images (B, C, H, W) are fed at each of ``num_steps`` steps;
    event frames (T, B, C, H, W) carry their own number of steps."""
    if x.ndim == 4:
        return net.forward(x, num_steps=num_steps)
    return net.forward(x)


def zero_level_shares(net) -> dict[str, float]:
    """Share of each quantized layer's weights that round to level 0 (a metrics column per
    layer: when it climbs towards 1 the layer is losing its resolution; see RESULTS.md)."""
    shares = {}
    for layer in net.layers:
        bits = getattr(layer, "bits", None)
        if bits is not None:
            Wq, _ = quantize_forward(layer.params["weight"], bits)
            shares[layer.name] = float(np.mean(Wq == 0))
    return shares


def build_net(cfg: dict):
    """The network of run configuration ``cfg``, freshly initialised from ``cfg["seed"]``."""
    _, build_model = _model_api()
    return build_model(cfg["config"], seed=cfg["seed"], dtype=np.float32, **_model_overrides(cfg))


def evaluate(net, dataset, cfg: dict, batch_size: int | None = None, progress_file=None,
             desc: str = "test") -> dict:
    """Loss, accuracy and mean firing rate of every spiking layer over ``dataset``, in eval mode,
    in batches (weighted by batch size). The network's training mode is restored afterwards.
    A progress bar goes to ``progress_file`` (default stdout) if that is a terminal."""
    from mininsnn.loss import accuracy
    loss_fn = _loss_fn(cfg)
    batch_size = batch_size or cfg["batch_size"]
    was_training = getattr(net, "training", True)
    net.eval()
    loss_sum = correct = 0.0
    rates: dict[str, float] = {}
    n = 0
    bar = Progress(len(dataset), desc, progress_file)
    try:
        for x, y in BatchIterator(dataset, batch_size, shuffle=False).epoch(0):
            B = len(y)
            spk = forward(net, x, cfg["num_steps"])          # (T, B, classes)
            loss, _ = loss_fn(spk, y)
            loss_sum += float(loss) * B
            correct += float(accuracy(spk, y)) * B
            for k, r in net.firing_rates().items():
                rates[k] = rates.get(k, 0.0) + float(r) * B
            n += B
            bar.update(B, float(loss))
    finally:
        bar.close()
        net.train(was_training)
    return {"loss": loss_sum / n, "acc": correct / n, "n": n,
            "rates": {k: v / n for k, v in rates.items()}}


class Trainer:
    """Trains one run. ``run_dir=None`` keeps everything in memory (no files)."""

    def __init__(self, config: dict, train_set, test_set, run_dir=None, log=None,
                 progress_file=None, keep_epochs: bool = False):
        self.config = cfg = validate_config(config)
        self.net = build_net(cfg)
        self.opt = Adam(self.net.params, lr=cfg["lr"], betas=cfg.get("betas", (0.9, 0.999)),
                        weight_decay=cfg.get("weight_decay", 0.0))
        self.schedule = _make_schedule(cfg)
        self.loss_fn = _loss_fn(cfg)
        self.train_set, self.test_set = train_set, test_set
        self.batches = BatchIterator(train_set, cfg["batch_size"], shuffle=True, seed=cfg["seed"])
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.log = log if log is not None else (lambda msg: print(msg, flush=True))
        self.progress_file = progress_file
        self.keep_epochs = bool(keep_epochs)   # also save epochs/epochNNN.h5 after every epoch
        self.epoch = 0              # finished epochs
        self.step = 0               # finished batches (the next batch index k)
        self.history: list[dict] = []
        self.best: dict | None = None   # {"epoch", "test_acc"} of best.h5

    # -- one batch, one epoch, evaluation ------------------------------------------------------
    def train_step(self, x, y) -> tuple[float, float, float]:
        """One optimisation step on batch (x, y). Returns (loss, accuracy, lr)."""
        from mininsnn.loss import accuracy
        cfg, net = self.config, self.net
        lr = self.schedule.lr(self.step)
        spk = forward(net, x, cfg["num_steps"])              # (T, B, classes)
        loss, dspk = self.loss_fn(spk, y)
        loss = float(loss)
        if not math.isfinite(loss):
            raise TrainingError(f"the loss became {loss} at step {self.step} (epoch "
                                f"{self.epoch + 1}); try a smaller --lr")
        acc = float(accuracy(spk, y))
        net.zero_grad()
        net.backward(dspk)
        grads = net.grads
        if cfg["grad_clip"]:
            clip_grad_norm(grads, 1.0)
        if cfg["weight_clip"]:
            clip_weights(net.params, -1.0, 1.0)
        self.opt.step(grads, lr=lr)
        self.step += 1
        return loss, acc, lr

    def train_epoch(self) -> dict:
        """Train over one epoch of seeded batches; returns its training metrics."""
        self.net.train()
        n = len(self.train_set)
        bar = Progress(n, f"epoch {self.epoch + 1}/{self.config['epochs']}", self.progress_file)
        loss_sum = correct = 0.0
        seen = 0
        lr = self.schedule.lr(self.step)
        t0 = time.perf_counter()
        steps_file = self._open_steps()
        try:
            for x, y in self.batches.epoch(self.epoch):
                B = len(y)
                loss, acc, lr = self.train_step(x, y)
                loss_sum += loss * B
                correct += acc * B
                seen += B
                if steps_file is not None:
                    steps_file.write(f"{self.step - 1},{self.epoch + 1},{lr!r},{loss!r},{acc!r}\n")
                    steps_file.flush()
                bar.update(B, loss)
        finally:
            bar.close()
            if steps_file is not None:
                steps_file.close()
        seconds = time.perf_counter() - t0
        return {"train_loss": loss_sum / seen, "train_acc": correct / seen, "lr": lr,
                "seconds": seconds, "samples_per_s": seen / seconds if seconds > 0 else 0.0}

    def evaluate(self, dataset=None, batch_size=None) -> dict:
        """:func:`evaluate` on ``dataset`` (default: the test set)."""
        dataset = self.test_set if dataset is None else dataset
        return evaluate(self.net, dataset, self.config, batch_size, self.progress_file)

    # -- checkpoints -----------------------------------------------------------------------------
    def state(self) -> dict:
        """Everything needed to continue this run exactly (a checkpoint tree)."""
        return {
            "kind": CHECKPOINT_KIND,
            "mininsnn_version": __version__,
            "config": dict(self.config),
            "epoch": self.epoch,
            "step": self.step,
            "model": self.net.state_dict(),
            "optimizer": self.opt.state_dict(),
            "schedule": self.schedule.state_dict(),
            "rng": {"dropout": self.net.rng.bit_generator.state},
            "history": [dict(r) for r in self.history],
            "best": None if self.best is None else dict(self.best),
        }

    def load_branch(self, tree: dict) -> None:
        """Continue the checkpoint ``tree`` of another run as this (new) run, whose configuration
        may differ from the checkpoint's in BRANCHABLE_KEYS only. The schedule must have given
        the same lr at every batch trained so far; it is replayed over the checkpoint's history
        to get its state (e.g. halve_on_rise's current lr), so the branch is exactly the run this
        configuration would have trained from the start."""
        check_same_config(validate_config(tree["config"]), self.config, "the checkpoint",
                          allowed=BRANCHABLE_KEYS)
        schedule = replay_schedule(tree, self.config)
        self.load_state({**tree, "config": dict(self.config), "schedule": schedule.state_dict()})

    def load_state(self, tree: dict) -> None:
        """Restore a tree from :meth:`state` (same configuration except ``epochs``)."""
        check_same_config(validate_config(tree["config"]), self.config, "the checkpoint")
        self.net.load_state_dict(tree["model"])
        self.opt.load_state_dict(tree["optimizer"])
        self.schedule.load_state_dict(tree["schedule"])
        self.net.rng.bit_generator.state = tree["rng"]["dropout"]
        self.epoch, self.step = int(tree["epoch"]), int(tree["step"])
        self.history = [dict(r) for r in tree["history"]]
        self.best = None if tree.get("best") is None else dict(tree["best"])

    # -- run-folder files ------------------------------------------------------------------------
    def _open_steps(self):
        if self.run_dir is None:
            return None
        path = self.run_dir / "steps.csv"
        new = not path.exists() or path.stat().st_size == 0
        f = open(path, "a", encoding="utf-8")
        if new:
            f.write("step,epoch,lr,loss,train_acc\n")
        return f

    def _write_metrics(self) -> None:
        """Rewrite metrics.jsonl / metrics.csv from the history (atomically; the same rows an
        append would give, and consistent with last.h5 after a crash)."""
        if self.run_dir is None:
            return
        lines = "".join(json.dumps(r) + "\n" for r in self.history)
        _atomic_write_text(self.run_dir / "metrics.jsonl", lines)
        buf = io.StringIO()
        if self.history:
            # every key of every row, in first-seen order (rows resumed from an older version
            # may lack columns that later rows have)
            fields = list(dict.fromkeys(k for r in self.history for k in r))
            w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
            w.writeheader()
            w.writerows(self.history)
        _atomic_write_text(self.run_dir / "metrics.csv", buf.getvalue())

    def prepare_run_dir(self, command: str) -> None:
        """Create the run folder (or bring a resumed one in line with the restored state):
        config.json, command.txt appended, metrics from the history, steps cut to ``step``."""
        if self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(self.run_dir / "config.json", json.dumps(self.config, indent=2) + "\n")
        with open(self.run_dir / "command.txt", "a", encoding="utf-8") as f:
            f.write(command.rstrip("\n") + "\n")
        self._write_metrics()
        steps = self.run_dir / "steps.csv"
        if steps.exists():                 # drop batches trained after the checkpoint
            with open(steps, encoding="utf-8") as f:
                rows = f.read().splitlines()
            keep = rows[:1] + [r for r in rows[1:] if r and int(r.split(",", 1)[0]) < self.step]
            _atomic_write_text(steps, "".join(r + "\n" for r in keep))

    def prepare_branch_dir(self, command: str, source) -> None:
        """:meth:`prepare_run_dir` for a run made by :meth:`load_branch` from the checkpoint file
        ``source``: the source run's steps.csv up to the branch point comes along, and the branch
        point is saved as last.h5 (and as best.h5 when it holds the best epoch so far; otherwise
        the source's best.h5 is copied when it is that epoch) so the new run resumes at once."""
        if self.run_dir is None:
            return
        source = Path(source)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        src_steps = source.parent / "steps.csv"
        if src_steps.exists():
            _atomic_write_text(self.run_dir / "steps.csv", src_steps.read_text(encoding="utf-8"))
        self.prepare_run_dir(f"# branched from {source} after epoch {self.epoch} (step "
                             f"{self.step}); lr agreed at every earlier batch\n{command}")
        tree = self.state()
        save_checkpoint(self.run_dir / "last.h5", tree)
        if self.best is not None and self.best["epoch"] == self.epoch:
            save_checkpoint(self.run_dir / "best.h5", tree)
        elif self.best is not None and (source.parent / "best.h5").exists():
            best = load_checkpoint(source.parent / "best.h5")
            if int(best["epoch"]) == self.best["epoch"]:
                save_checkpoint(self.run_dir / "best.h5", best)

    # -- the loop ----------------------------------------------------------------------------------
    def epoch_checkpoint(self, epoch: int) -> Path:
        """Where ``keep_epochs`` saves the checkpoint after ``epoch``: run_dir/epochs/epochNNN.h5."""
        return self.run_dir / "epochs" / f"epoch{epoch:03d}.h5"

    def fit(self, epochs: int | None = None) -> list[dict]:
        """Train until ``epochs`` (default: config) epochs are done; returns the metric history."""
        epochs = self.config["epochs"] if epochs is None else int(epochs)
        while self.epoch < epochs:
            tr = self.train_epoch()
            te = self.evaluate()
            self.epoch += 1
            self.schedule.end_epoch(tr["train_loss"])
            row = {"epoch": self.epoch, "step": self.step, "lr": tr["lr"],
                   "train_loss": tr["train_loss"], "train_acc": tr["train_acc"],
                   "test_loss": te["loss"], "test_acc": te["acc"],
                   "seconds": tr["seconds"], "samples_per_s": tr["samples_per_s"]}
            row.update({f"rate_{k}": v for k, v in te["rates"].items()})
            row.update({f"zero_{k}": v for k, v in zero_level_shares(self.net).items()})
            self.history.append(row)
            improved = self.best is None or te["acc"] > self.best["test_acc"]
            if improved:
                self.best = {"epoch": self.epoch, "test_acc": te["acc"]}
            if self.run_dir is not None:
                tree = self.state()
                save_checkpoint(self.run_dir / "last.h5", tree)
                if improved:
                    save_checkpoint(self.run_dir / "best.h5", tree)
                if self.keep_epochs:
                    kept = self.epoch_checkpoint(self.epoch)
                    kept.parent.mkdir(exist_ok=True)
                    save_checkpoint(kept, tree)
                self._write_metrics()
            self.log(f"epoch {self.epoch}/{epochs}  train loss {tr['train_loss']:.4f}  "
                     f"train acc {100 * tr['train_acc']:.2f}%  test acc {100 * te['acc']:.2f}%  "
                     f"lr {tr['lr']:.3e}  {tr['seconds']:.1f} s ({tr['samples_per_s']:.0f} "
                     f"samples/s)" + ("  *best*" if improved else ""))
        return self.history


# ---------------------------------------------------------------------------------------------
# run folders

def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise


def check_same_config(saved: dict, wanted: dict, where: str,
                      allowed: tuple = RESUMABLE_KEYS) -> None:
    """ConfigError naming the first key (other than ``allowed``) whose value differs."""
    keys = [k for k in {**saved, **wanted} if k not in allowed]
    for k in keys:
        if saved.get(k, "<absent>") != wanted.get(k, "<absent>"):
            raise ConfigError(f"{where} was trained with {k}={saved.get(k, '<absent>')!r}, not "
                              f"{wanted.get(k, '<absent>')!r}; drop that option to resume it, or "
                              "start a new run with another --out")


def check_new_run_dir(run_dir) -> None:
    """ConfigError if ``run_dir`` already holds a run (never overwrite one)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} exists and is not a folder; choose another --out")
    found = [f for f in RUN_FILES if (run_dir / f).exists()]
    if found:
        raise ConfigError(f"{run_dir} already holds a run ({found[0]}); continue it with "
                          f"--resume {run_dir} or choose another --out")


def read_training_checkpoint(path) -> dict:
    """The tree of the training checkpoint file ``path``; ConfigError if it is damaged or is not
    a mininsnn training checkpoint."""
    try:
        tree = load_checkpoint(path)
    except CheckpointError as e:
        raise ConfigError(f"{e}; restore it or start a new run") from None
    if tree.get("kind") != CHECKPOINT_KIND or "config" not in tree:
        raise ConfigError(f"{path} is not a mininsnn training checkpoint")
    return tree


def load_run(run_dir) -> dict:
    """The checkpoint tree of ``run_dir/last.h5``; ConfigError if the folder or file is unusable."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run dir {run_dir} does not exist; pass the folder of an earlier run")
    path = run_dir / "last.h5"
    if not path.exists():
        raise ConfigError(f"{run_dir} has no last.h5 checkpoint to resume from; start it afresh "
                          "without --resume")
    return read_training_checkpoint(path)


def unstarted_run_config(run_dir) -> dict | None:
    """The saved config of a run folder that never finished an epoch (config.json, no last.h5):
    resuming it starts it from epoch 0. None for any other folder."""
    run_dir = Path(run_dir)
    if (run_dir / "last.h5").exists() or not (run_dir / "config.json").is_file():
        return None
    try:
        return json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except ValueError:
        raise ConfigError(f"{run_dir / 'config.json'} is not valid JSON and the run has no "
                          "finished epoch; delete the folder and start it again") from None


def load_checkpoint_source(path) -> tuple[Path, dict]:
    """(file, tree) of a training checkpoint given as a file or as a run folder (its last.h5)."""
    path = Path(path)
    if path.is_dir():
        return path / "last.h5", load_run(path)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; pass a run folder or a checkpoint file")
    return path, read_training_checkpoint(path)


def replay_schedule(tree: dict, cfg: dict):
    """The schedule of ``cfg`` in the state it would be in after the epochs of checkpoint ``tree``
    had it driven them. Both schedules are replayed batch by batch over the checkpoint's history
    (end_epoch gets each epoch's recorded mean training loss); ConfigError at the first batch
    where their lr differ, since a branch there would not be the run it claims to be."""
    saved = validate_config(tree["config"])
    old, new = _make_schedule(saved), _make_schedule(cfg)
    start = 0
    for row in tree["history"]:
        end, epoch = int(row["step"]), int(row["epoch"])
        for k in range(start, end):
            if old.lr(k) != new.lr(k):
                raise ConfigError(
                    f"{cfg['schedule']} gives lr {new.lr(k):.6g} at batch {k} (epoch {epoch}), "
                    f"where the checkpoint's run trained with {saved['schedule']} at lr "
                    f"{old.lr(k):.6g}; branch from a checkpoint of epoch {epoch - 1} or earlier")
        old.end_epoch(row["train_loss"])
        new.end_epoch(row["train_loss"])
        start = end
    if start != int(tree["step"]) or old.state_dict() != dict(tree["schedule"]):
        raise ConfigError("the checkpoint's history does not replay to its own schedule state "
                          "(a damaged or hand-edited checkpoint?); it cannot be branched")
    return new


def read_metrics(run_dir) -> list[dict]:
    """The rows of ``run_dir/metrics.jsonl`` (empty list if there are none yet)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
