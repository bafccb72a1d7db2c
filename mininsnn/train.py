"""The training loop: a run configuration in, a trained network and a run folder out.

One batch k (0-based over the whole run) of the reference recipe (docs/semantics.md):

    lr   = schedule.lr(k)
    S    = net.forward(x, num_steps=T)                  # (T, B, classes) spikes, training mode
    L, dS = loss(S, y)                                  # mse_count by default
    grads = backward(dS)                                # hand-written BPTT, accumulated from zero
    if grad_clip:   clip_grad_norm(grads, 1.0)
    if weight_clip: clip_weights(params, -1, 1)         # BEFORE the Adam step
    adam.step(grads, lr)

After every epoch: evaluation on the validation set (with ``validation``: the last training samples,
held out, mininsnn.data.hold_out) and on the test set in eval mode, one metrics row, ``last.h5``
and (when the validation accuracy improves, or the test accuracy when there is no validation set)
``best.h5`` in the run folder (mininsnn.runs, whose docstring says what a crash can leave), then
the ``on_epoch`` callback of :meth:`Trainer.fit` (a tuning study reports there and may stop the
run). Everything random is seeded: the weights and the dropout masks from ``net.rng`` (seeded
with ``seed``), the batch order of epoch e from (seed, e).

Divergence: after every batch the trainer checks that the BatchNorm statistics (after the
forward), the gradients (before the step), the weights and the Adam moments (after it) hold no
NaN or inf, and stops the run with a one-line :class:`TrainingError` at the first that does, so
the last good checkpoint stays the run's last.h5 (~0.1 ms per batch for mnist-4bit's 36k
parameters; benchmarks/bench_checks.py). A state is also checked before it is saved: no
checkpoint that cannot be loaded is ever written. A write that fails (disk full, permissions)
is a TrainingError too, saying which epoch last.h5 still holds.

Configurations: mininsnn.config; data: mininsnn.data.load_data; progress: mininsnn.progress.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path

import numpy as np

from mininsnn import __version__
from mininsnn.checkpoint import load_checkpoint, save_checkpoint
from mininsnn.config import (BRANCHABLE_KEYS, ConfigError, check_same_config, test_steps,
                             validate_config)
from mininsnn.data import BatchIterator, data_files
from mininsnn.loss import LOSSES, accuracy
from mininsnn.models import build_from_config
from mininsnn.optim import Adam, clip_grad_norm, clip_weights, find_nonfinite
from mininsnn.progress import Progress
from mininsnn.quant import quantize_forward
from mininsnn.runs import (CHECKPOINT_KIND, RunFolder, WriteError, atomic_write_text,
                           check_training_tree, writing)
from mininsnn.schedule import make_schedule
from mininsnn.spec import as_input

__all__ = ["TrainingError", "Trainer", "build_net", "forward", "evaluate", "make_schedule_of",
           "loss_of", "replay_schedule", "zero_level_shares", "check_loadable"]


class TrainingError(RuntimeError):
    """Training cannot go on: the run diverged (NaN or inf in the loss, a gradient, a weight, an
    Adam moment or a BatchNorm statistic), or a file of the run folder could not be written.
    The message is one line and says which epoch the run folder's last.h5 holds."""


def make_schedule_of(cfg: dict):
    """The learning-rate schedule of run configuration ``cfg``."""
    name = cfg["schedule"]
    kw = {"cosine": {"T_max": cfg["T_max"], "eta_min": cfg["eta_min"]},
          "warm_restarts": {"T_0": cfg["T_max"], "T_mult": cfg["T_mult"],
                            "eta_min": cfg["eta_min"]}}.get(name, {})
    return make_schedule(name, cfg["lr"], **kw)


def loss_of(cfg: dict):
    """The loss function (spikes, targets) -> (loss, dL/dspikes) of run configuration ``cfg``."""
    if cfg["loss"] == "mse_count":
        return lambda spk, y: LOSSES["mse_count"](spk, y, correct_rate=cfg["correct_rate"],
                                                  incorrect_rate=cfg["incorrect_rate"])
    return LOSSES[cfg["loss"]]


def forward(net, x, num_steps: int):
    """Spikes (T, B, classes). Static images (B, C, H, W) are fed at each of ``num_steps`` steps;
    event frames (T, B, C, H, W) were binned to the configuration's steps and must have as many.
    The batch is converted to the network's dtype (data sets give float32)."""
    x = as_input(net, x.astype(net.dtype, copy=False), num_steps)  # a spec may read rows
    if x.ndim == 4:
        return net.forward(x, num_steps=num_steps)
    if x.shape[0] != num_steps:
        raise ConfigError(f"event frames have {x.shape[0]} time steps, the configuration "
                          f"{num_steps}; bin the data to the configuration's num_steps")
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
    return build_from_config(cfg)


def evaluate(net, dataset, cfg: dict, batch_size: int | None = None, progress_file=None,
             desc: str = "test") -> dict:
    """Loss, accuracy and mean firing rate of every spiking layer over ``dataset``, in eval mode,
    in batches (weighted by batch size), at the configuration's test time steps. The network's
    training mode is restored afterwards. A progress bar goes to ``progress_file`` (default
    stdout) if that is a terminal."""
    loss_fn = loss_of(cfg)
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
            spk = forward(net, x, test_steps(cfg))           # (T, B, classes)
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
    """Trains one run. ``run_dir=None`` keeps everything in memory (no files). ``valid_set`` is
    the held-out validation set, given exactly when the configuration has ``validation`` (as
    ``load_data(cfg, splits=("train", "valid", "test"))`` returns it). Without data sets
    (``train_set=None``) a trainer can still build the network and load a checkpoint's state."""

    def __init__(self, config: dict, train_set, test_set, run_dir=None, log=None,
                 progress_file=None, keep_epochs: bool = False, valid_set=None):
        self.config = cfg = validate_config(config)
        if train_set is not None and ((valid_set is None) != (cfg["validation"] is None) or
                                      (valid_set is not None
                                       and len(valid_set) != cfg["validation"])):
            raise ConfigError(f"the configuration holds out validation={cfg['validation']} "
                              f"samples but the trainer got "
                              f"{'no' if valid_set is None else len(valid_set)} validation "
                              "samples; load them with load_data(cfg, splits=('train', 'valid', "
                              "'test'))")
        self.net = build_net(cfg)
        # the trainer checks the gradients itself (train_step), naming the batch and the run
        self.opt = Adam(self.net.params, lr=cfg["lr"], betas=cfg["betas"],
                        weight_decay=cfg["weight_decay"], check_finite=False)
        self.schedule = make_schedule_of(cfg)
        self.loss_fn = loss_of(cfg)
        self.train_set, self.test_set, self.valid_set = train_set, test_set, valid_set
        self.batches = BatchIterator(train_set, cfg["batch_size"], shuffle=True, seed=cfg["seed"])
        self.run = None if run_dir is None else RunFolder(run_dir)
        self.log = log if log is not None else (lambda msg: print(msg, flush=True))
        self.progress_file = progress_file
        self.keep_epochs = bool(keep_epochs)   # also save epochs/epochNNN.h5 after every epoch
        self.epoch = 0              # finished epochs
        self.step = 0               # finished batches (the next batch index k)
        self.history: list[dict] = []
        # {"epoch", "test_acc"[, "valid_acc"]} of best.h5: the best epoch by validation
        # accuracy, or by test accuracy when there is no validation set
        self.best: dict | None = None

    @property
    def run_dir(self) -> Path | None:
        return None if self.run is None else self.run.path

    # -- one batch, one epoch, evaluation ------------------------------------------------------
    def train_step(self, x, y) -> tuple[float, float, float]:
        """One optimisation step on batch (x, y). Returns (loss, accuracy, lr)."""
        cfg, net = self.config, self.net
        # a diverging run overflows here; the checks below stop it at the first NaN or inf
        # with one line naming it, which NumPy's RuntimeWarnings would only precede
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            lr = self.schedule.lr(self.step)
            spk = forward(net, x, cfg["num_steps"])              # (T, B, classes)
            self._check_finite("BatchNorm statistic", net.buffers)
            loss, dspk = self.loss_fn(spk, y)
            loss = float(loss)
            if not math.isfinite(loss) or not np.isfinite(dspk).all():
                raise TrainingError(self._diverged(f"the loss became {loss}"))
            acc = float(accuracy(spk, y))
            net.zero_grad()
            net.backward(dspk)
            grads = net.grads
            self._check_finite("the gradient of", grads)
            if cfg["grad_clip"]:
                clip_grad_norm(grads, 1.0)
            if cfg["weight_clip"]:
                clip_weights(net.params, -1.0, 1.0)
            self.opt.step(grads, lr=lr)
            self._check_finite("weight", net.params)
            self._check_finite("Adam's first moment of", self.opt.exp_avg)
            self._check_finite("Adam's second moment of", self.opt.exp_avg_sq)
        self.step += 1
        return loss, acc, lr

    def _check_finite(self, what: str, arrays: dict) -> None:
        """TrainingError (the run diverged) if an array of ``arrays`` holds NaN or inf."""
        bad = find_nonfinite(arrays)
        if bad is not None:
            raise TrainingError(self._diverged(f"{what} {bad} holds NaN or inf"))

    def _diverged(self, problem: str, when: str | None = None) -> str:
        """The one-line message of a run that diverged ``when`` (default: at the current batch)."""
        when = when or f"at batch {self.step} (epoch {self.epoch + 1})"
        kept = "" if self.run is None else f"; {self.run.kept_message()}"
        return (f"the run diverged {when}: {problem}{kept}; start a new run with a smaller --lr "
                f"than {self.config['lr']:g}")

    def _write_failed(self, e: WriteError) -> TrainingError:
        """The one-line TrainingError of a failed write: what failed, what the folder keeps."""
        resume = (f"; once the problem is fixed, continue with `mininsnn train --resume "
                  f"{self.run.path} --epochs {self.config['epochs']}`"
                  if (self.run.path / "last.h5").exists() else "")
        return TrainingError(f"{e}; {self.run.kept_message()}{resume}")

    def train_epoch(self) -> dict:
        """Train over one epoch of seeded batches; returns its training metrics."""
        self.net.train()
        n = len(self.train_set)
        bar = Progress(n, f"epoch {self.epoch + 1}/{self.config['epochs']}", self.progress_file)
        loss_sum = correct = 0.0
        seen = 0
        lr = self.schedule.lr(self.step)
        t0 = time.perf_counter()
        steps_file = None if self.run is None else self.run.open_steps()
        try:
            for x, y in self.batches.epoch(self.epoch):
                B = len(y)
                loss, acc, lr = self.train_step(x, y)
                loss_sum += loss * B
                correct += acc * B
                seen += B
                if steps_file is not None:
                    with writing(self.run.path / "steps.csv"):
                        steps_file.write(f"{self.step - 1},{self.epoch + 1},{lr!r},{loss!r},"
                                         f"{acc!r}\n")
                        steps_file.flush()
                bar.update(B, loss)
        finally:
            bar.close()
            if steps_file is not None:
                try:
                    steps_file.close()
                except OSError:          # the failed write has been reported already
                    pass
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
    def prepare_run_dir(self, command: str) -> None:
        """Create the run folder, or bring a resumed one in line with the restored state and
        repair what a kill left (mininsnn.runs: stale temporary files, best.h5, the kept epoch,
        metrics and steps.csv re-derived from last.h5). A resumed run that kept its epochs
        (an epochs/ folder) goes on keeping them. TrainingError if a write fails."""
        if self.run is None:
            return
        try:
            with self.run.locked():
                self.run.prepare(self.config, self.history, self.step, command)
                if self.epoch > 0:
                    self.keep_epochs = self.keep_epochs or \
                        self.run.epoch_checkpoint(1).parent.is_dir()
                    self.run.repair(self.state(), self.keep_epochs)
        except WriteError as e:
            raise self._write_failed(e) from None

    def record_data(self) -> None:
        """Write data.json in the run folder: the files this command's data sets were read from
        (mininsnn.data.data_files: path, size, sha256), by split. Each command that trains the
        run rewrites it; a kill mid-write leaves ``.data.json.tmp``, which the next write
        renames into place. TrainingError if the write fails."""
        if self.run is None:
            return
        sets = {"train": self.train_set, "valid": self.valid_set, "test": self.test_set}
        record = {"data_files": {k: data_files(ds) for k, ds in sets.items() if ds is not None}}
        path = self.run.path / "data.json"
        try:
            with self.run.locked(), writing(path):
                atomic_write_text(path, json.dumps(record, indent=1) + "\n")
        except WriteError as e:
            raise self._write_failed(e) from None

    def prepare_branch_dir(self, command: str, source) -> None:
        """:meth:`prepare_run_dir` for a run made by :meth:`load_branch` from the checkpoint file
        ``source``: the source run's steps.csv up to the branch point comes along, and the branch
        point is saved as last.h5 (and as best.h5 when it holds the best epoch so far; otherwise
        the source's best.h5 is copied when it is that epoch) so the new run resumes at once.

        last.h5 is written after everything a resume could not re-derive from it (steps.csv,
        command.txt, best.h5) and before config.json: a kill before it leaves a folder that is
        no run (delete it and branch again), a kill after it a run that resumes."""
        if self.run is None:
            return
        source = Path(source)
        run = self.run
        tree = self.state()
        best = None
        if self.best is not None and self.best["epoch"] == self.epoch:
            best = tree
        elif self.best is not None and (source.parent / "best.h5").exists():
            src_best = load_checkpoint(source.parent / "best.h5")
            if int(src_best["epoch"]) == self.best["epoch"]:
                best = src_best
        try:
            with run.locked():
                run.remove_stale_temps()
                run.copy_steps_from(source.parent)
                run.cut_steps(self.step)
                with writing(run.path / "command.txt"):
                    with open(run.path / "command.txt", "a", encoding="utf-8") as f:
                        f.write(f"# branched from {source} after epoch {self.epoch} (step "
                                f"{self.step}); lr agreed at every earlier batch\n{command}\n")
                if best is not None:
                    with writing(run.path / "best.h5"):
                        save_checkpoint(run.path / "best.h5", best)
                with writing(run.path / "last.h5"):
                    save_checkpoint(run.path / "last.h5", tree)      # the commit point
                run.prepare(self.config, self.history, self.step, command=None)
        except WriteError as e:
            raise self._write_failed(e) from None

    # -- the loop ----------------------------------------------------------------------------------
    def fit(self, epochs: int | None = None, on_epoch=None) -> list[dict]:
        """Train until ``epochs`` (default: config) epochs are done; returns the metric history.
        The run folder is locked meanwhile (mininsnn.runs.RunFolder.locked). TrainingError (one
        line, naming the epoch last.h5 keeps) if the run diverges or a write fails.

        ``on_epoch(row)``, if given, is called with each epoch's metrics row once its files are
        written; an exception it raises (e.g. optuna.TrialPruned) stops the run there, which is
        then an ordinary run folder that can be resumed."""
        epochs = self.config["epochs"] if epochs is None else int(epochs)
        with contextlib.nullcontext() if self.run is None else self.run.locked():
            try:
                self._fit(epochs, on_epoch)
            except WriteError as e:
                raise self._write_failed(e) from None
        return self.history

    def _fit(self, epochs: int, on_epoch) -> None:
        while self.epoch < epochs:
            tr = self.train_epoch()
            va = None if self.valid_set is None else \
                evaluate(self.net, self.valid_set, self.config, None, self.progress_file, "valid")
            te = self.evaluate()
            self.epoch += 1
            self.schedule.end_epoch(tr["train_loss"])
            row = {"epoch": self.epoch, "step": self.step, "lr": tr["lr"],
                   "train_loss": tr["train_loss"], "train_acc": tr["train_acc"]}
            if va is not None:
                row.update(valid_loss=va["loss"], valid_acc=va["acc"])
            row.update(test_loss=te["loss"], test_acc=te["acc"], seconds=tr["seconds"],
                       samples_per_s=tr["samples_per_s"])
            row.update({f"rate_{k}": v for k, v in te["rates"].items()})
            row.update({f"zero_{k}": v for k, v in zero_level_shares(self.net).items()})
            self.history.append(row)
            score = "test_acc" if va is None else "valid_acc"    # never the test set if possible
            improved = self.best is None or row[score] > self.best[score]
            if improved:
                self.best = {"epoch": self.epoch, "test_acc": te["acc"]}
                if va is not None:
                    self.best["valid_acc"] = va["acc"]
            if self.run is not None:
                tree = self.state()
                try:                    # never write a checkpoint that cannot be loaded
                    check_training_tree(tree, "its state")
                except ConfigError as e:
                    raise TrainingError(self._diverged(str(e), f"in epoch {self.epoch}")) from None
                self.run.save_epoch(tree, improved, self.keep_epochs)
            valid = "" if va is None else f"valid acc {100 * va['acc']:.2f}%  "
            self.log(f"epoch {self.epoch}/{epochs}  train loss {tr['train_loss']:.4f}  "
                     f"train acc {100 * tr['train_acc']:.2f}%  {valid}test acc "
                     f"{100 * te['acc']:.2f}%  lr {tr['lr']:.3e}  {tr['seconds']:.1f} s "
                     f"({tr['samples_per_s']:.0f} samples/s)" + ("  *best*" if improved else ""))
            if on_epoch is not None:
                on_epoch(row)


def check_loadable(tree: dict, where) -> None:
    """ConfigError naming ``where`` unless :meth:`Trainer.load_state` takes the training
    checkpoint ``tree``: its entries, types and finite values (mininsnn.runs.check_training_tree),
    its configuration, and arrays, Adam state, schedule state and RNG state that fit that
    configuration's network. Cheap (no data is loaded), so commands run it before the slow part."""
    check_training_tree(tree, where)
    try:
        cfg = validate_config(tree["config"])
    except ConfigError as e:
        raise ConfigError(f"{where}: the checkpoint's configuration: {e}") from None
    try:
        Trainer(cfg, None, None, log=lambda msg: None).load_state(tree)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{where}: the checkpoint does not fit its configuration: {msg}") \
            from None


def replay_schedule(tree: dict, cfg: dict):
    """The schedule of ``cfg`` in the state it would be in after the epochs of checkpoint ``tree``
    had it driven them. Both schedules are replayed batch by batch over the checkpoint's history
    (end_epoch gets each epoch's recorded mean training loss); ConfigError at the first batch
    where their lr differ, since a branch there would not be the run it claims to be."""
    saved = validate_config(tree["config"])
    old, new = make_schedule_of(saved), make_schedule_of(cfg)
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
