"""Hyperparameter studies and sweeps on Optuna: ``mininsnn tune`` and ``mininsnn sweep``.

A *study* is an Optuna study in a storage (a SQLite file in the study folder by default, or any
Optuna storage URL such as ``postgresql://user@host/db`` shared by workers on many machines), plus
a study folder in which every trial is an ordinary run folder (mininsnn.runs):

    STUDY_DIR/study.json        the study's name, kind and storage (password hidden)
    STUDY_DIR/study.db          the default storage (SQLite)
    STUDY_DIR/trial-0003/       trial 3: config.json, command.txt (the exact ``mininsnn train``
                                command that reproduces it), metrics, steps, last.h5, best.h5
    STUDY_DIR/workers/          logs of the local worker processes of --workers N

``tune``: each trial draws the settings of a search space (:func:`check_space`) with the sampler
(TPE by default) on top of a fixed base configuration, trains, reports its validation accuracy
after every epoch (so that the pruner can stop unpromising trials) and scores the best of them.
The objective is the accuracy on the validation set (``--validation N``: the last N training
samples, mininsnn.data.hold_out), never on the test set; the test accuracy of the same epoch is
recorded in the trial's attributes, and is never used to choose.

``sweep``: a grid (seeds x schedules x settings) run through the same machinery: every grid
point is enqueued once as a waiting trial, which exactly one worker claims (Optuna changes a
trial from WAITING to RUNNING atomically in the storage).

Exactly N trials under concurrency. A worker runs one trial at a time while the study needs more,
then waits for the other workers' trials and returns when the study is done. A trial is *needed*
when fewer than N trials numbered before it have not failed (tune), or when no trial numbered
before it holds its grid point and has not failed (sweep); a trial that is not needed (two workers
asked for the last one at the same moment) is marked FAIL with the user attribute ``surplus`` and
never trains. Heartbeats (Optuna's RDB heartbeat): a worker killed mid-trial stops beating; after
the grace period the other workers mark its trial FAIL and run a replacement (tune) or the same
grid point again (sweep). So a finished study has exactly N trials COMPLETE or PRUNED.

Workers on other machines. Give the study a storage that every machine reaches, e.g. a
PostgreSQL database (``pip install -e ".[postgres]"`` on each machine), and run the same command
on each, with the same settings and search space (checked: a worker with another space or base
configuration is refused) and the same --study name; each machine writes its trials' run folders
into its own STUDY_DIR (or a shared one), reads its data from its own --data-dir, and may use
--workers for its cores:

    # machine A
    mininsnn tune studies/mnist --study mnist --storage postgresql://me@db.lab:5432/optuna \
        --validation 10000 --epochs 3 --trials 60 --workers 2
    # machine B, C, ...: the same command (joins the study, takes the next trials)

Keep the password out of the command (it would show in process lists): libpq reads it from
~/.pgpass or PGPASSWORD. Trial folders record the URL with any password hidden. `mininsnn tune`
returns when the study has its trials; `mininsnn report` reads the trial folders of one machine.

Optuna is an optional extra (``pip install -e ".[tune]"``): mininsnn.studystore imports it inside
the functions that need it; the search spaces (mininsnn.searchspace) and :func:`train_argv` work
without it. The command line (mininsnn.commands.study) passes its parser in
(StudySpec.parse_train): nothing here imports a command.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

from mininsnn import data
from mininsnn.config import SETTINGS, ConfigError, make_config, validate_config
from mininsnn.runs import check_new_run_dir, command_line
from mininsnn.searchspace import (BY_NAME, PAPER_SPACE, RATES, check_space, describe_space,
                                  grid_points, parse_param, read_space_file, setting_kind)
from mininsnn.studystore import (INSTALL_HINT, StudySpec, default_storage, describe_trial,
                                 enqueue_grid, import_optuna, open_storage, open_study,
                                 shown_url, study_counts)
from mininsnn.train import Trainer, TrainingError

# the search spaces (mininsnn.searchspace) and the storage (mininsnn.studystore) are re-exported:
# mininsnn.tune is the one module a user of studies imports
__all__ = ["PAPER_SPACE", "import_optuna", "parse_param", "read_space_file", "check_space",
           "grid_points", "describe_space", "train_argv", "StudySpec", "default_storage",
           "shown_url", "open_storage", "open_study", "run_worker", "run_workers",
           "study_counts", "describe_trial", "INSTALL_HINT"]


# ---------------------------------------------------------------------------------------------
# the command of a trial

def _flag(s, v) -> list[str]:
    if isinstance(s.default, bool):
        return [s.flag if v else "--no-" + s.flag[2:]]
    if isinstance(v, dict):                             # --model: the spec itself, as JSON
        return [s.flag, json.dumps(v, separators=(",", ":"))]
    if v is None:
        if s.key == "bits":
            return [s.flag, "none"]
        raise ConfigError(f"{s.key}=None cannot be written as a {s.flag} flag")
    return [s.flag, repr(float(v)) if isinstance(v, float) else str(v)]


def train_argv(cfg: dict, out, data_dir=None, parse=None) -> list[str]:
    """The ``mininsnn train`` arguments (without 'mininsnn') that train configuration ``cfg``
    from scratch into ``out``: --config, then a flag for every setting that differs from that
    configuration's default (floats written with repr, so they parse back to the same bits).
    With ``parse`` (the command line's parser: argv -> {dest: value} of the flags given), the
    arguments are parsed back and must give ``cfg`` again."""
    cfg = validate_config(cfg)
    default = make_config(cfg["config"])
    argv = ["train", "--config", cfg["config"]]
    for s in SETTINGS:
        if cfg[s.key] == default[s.key]:
            continue
        if s.help is None:
            raise ConfigError(f"{s.key} has no command-line flag, so it cannot differ from the "
                              f"{cfg['config']} configuration in a trial")
        argv += _flag(s, cfg[s.key])
    argv += ["--out", str(out)]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    if parse is None:
        return argv
    a = parse(argv)
    again = make_config(a["config"], **{s.key: a[s.key] for s in SETTINGS if s.key in a})
    if again != cfg:                                   # a bug here, never the user's input
        diff = next(k for k in cfg if again.get(k) != cfg[k])
        raise RuntimeError(f"train_argv: {shlex.join(argv)} gives {diff}={again.get(diff)!r}, "
                           f"not {cfg[diff]!r}")
    return argv


# ---------------------------------------------------------------------------------------------
# the worker

class _Surplus(Exception):
    """A trial the study does not need (see the module docstring); it is marked FAIL unrun."""


class _Worker:
    def __init__(self, spec: StudySpec, study):
        self.spec, self.study = spec, study
        self.optuna = import_optuna()
        self.loaded = {}                       # data sets by the settings that choose them
        self.log = spec.log
        self.tag = f"{socket.gethostname()}:{os.getpid()}"

    # -- bookkeeping ---------------------------------------------------------------------------
    def alive(self):
        S = self.optuna.trial.TrialState
        return [t for t in self.study.get_trials(deepcopy=False) if t.state != S.FAIL]

    def needed(self, trial) -> bool:
        """Whether the study needs this trial (judged from the trials numbered before it)."""
        before = [t for t in self.alive() if t.number < trial.number]
        if self.spec.kind == "tune":
            return len(before) < self.spec.trials
        point = trial.user_attrs.get("grid_point")      # set when it was enqueued
        return point is not None and all(t.user_attrs.get("grid_point") != point for t in before)

    def enqueue_missing(self) -> None:
        """Sweep: enqueue again every grid point that no trial holds any more (its trial failed:
        a killed worker). The whole grid was enqueued when the study was created."""
        enqueue_grid(self.study, self.spec.space,
                 held={t.user_attrs.get("grid_point") for t in self.alive()})

    def work_left(self) -> bool:
        S = self.optuna.trial.TrialState
        trials = self.study.get_trials(deepcopy=False)
        if any(t.state == S.WAITING for t in trials):     # enqueued: grid points, or by hand
            return True
        return self.spec.kind == "tune" and \
            len([t for t in trials if t.state != S.FAIL]) < self.spec.trials

    def _trial(self, number: int):
        return next(t for t in self.study.get_trials(deepcopy=False) if t.number == number)

    def running(self) -> bool:
        S = self.optuna.trial.TrialState
        return any(t.state == S.RUNNING for t in self.study.get_trials(deepcopy=False))

    # -- one trial -----------------------------------------------------------------------------
    def datasets(self, cfg: dict):
        key = tuple(cfg[k] for k in ("dataset", "subset", "validation", "test_subset",
                                     "num_steps", "test_num_steps"))
        if key not in self.loaded:
            splits = ("train", "test") if cfg["validation"] is None else ("train", "valid",
                                                                          "test")
            sets = data.load_data(cfg, self.spec.data_dir, splits=splits)
            self.loaded[key] = (sets[0], sets[1] if len(sets) == 3 else None, sets[-1])
        return self.loaded[key]

    def suggest(self, trial) -> dict:
        params = {}
        for key, spec in self.spec.space.items():
            if key in RATES and params.get("loss", self.spec.base["loss"]) != "mse_count":
                continue                      # the targets of mse_count only (see check_space)
            if "choices" in spec:
                params[key] = trial.suggest_categorical(key, spec["choices"])
            elif setting_kind(BY_NAME[key]) == "int":
                params[key] = trial.suggest_int(key, spec["low"], spec["high"],
                                                step=spec["step"] or 1, log=spec["log"])
            else:
                params[key] = trial.suggest_float(key, spec["low"], spec["high"],
                                                  step=spec["step"], log=spec["log"])
        return params

    def objective(self, trial) -> float:
        """:meth:`train_trial`, noting how it ended: 'done' (it returned a value or pruned
        itself) or 'taken' (another worker marked the trial failed while it ran)."""
        self.ended = None
        try:
            value = self.train_trial(trial)
        except self.optuna.TrialPruned:
            self.ended = "done"
            raise
        except self.optuna.exceptions.UpdateFinishedTrialError:
            self.ended = "taken"
            raise
        self.ended = "done"
        return value

    def train_trial(self, trial) -> float:
        if not self.needed(trial):
            trial.set_user_attr("surplus", "not run: " + (
                f"the study had its {self.spec.trials} trials when it started"
                if self.spec.kind == "tune" else "its grid point was taken"))
            raise _Surplus()
        n = self.last = trial.number
        params = self.suggest(trial)
        cfg = validate_config({**self.spec.base, **params})
        run_dir = Path(self.spec.folder) / f"trial-{trial.number:04d}"
        check_new_run_dir(run_dir)            # never overwrite a run (another study's?)
        argv = train_argv(cfg, run_dir, self.spec.data_dir, parse=self.spec.parse_train)
        train_set, valid_set, test_set = self.datasets(cfg)
        for k, v in (("run_dir", str(run_dir.resolve())), ("worker", self.tag),
                     ("command", shlex.join(["mininsnn", *argv]))):
            trial.set_user_attr(k, v)
        trainer = Trainer(cfg, train_set, test_set, run_dir=run_dir, valid_set=valid_set,
                          log=lambda m: self.log(f"trial {n}: {m}"))
        self.log(f"trial {n}: {', '.join(f'{k}={v!r}' for k, v in params.items())} -> {run_dir}")
        shown = shown_url(self.spec.storage)
        trainer.prepare_run_dir(f"# trial {n} of {self.spec.kind} {self.spec.name!r} in {shown}, "
                                f"worker {self.tag}\n"       # no password in the 'invoked as'
                                + command_line(argv).replace(self.spec.storage, shown))
        score = "valid_acc" if cfg["validation"] is not None else None

        def on_epoch(row):
            best = next(r for r in trainer.history if r["epoch"] == trainer.best["epoch"])
            trial.set_user_attr("epochs_done", row["epoch"])
            trial.set_user_attr("best_epoch", best["epoch"])
            trial.set_user_attr("test_acc", best["test_acc"])       # recorded, never chosen on
            if score is not None:
                trial.set_user_attr("valid_acc", best["valid_acc"])
            if self.spec.kind == "tune":
                trial.report(row["valid_acc"], row["epoch"])
                if row["epoch"] < cfg["epochs"] and trial.should_prune():
                    raise self.optuna.TrialPruned(f"pruned after epoch {row['epoch']} (valid "
                                                  f"acc {100 * row['valid_acc']:.2f}%)")

        try:
            trainer.fit(on_epoch=on_epoch)
        except TrainingError as e:        # diverged: a result for the sampler, not a crash
            trial.set_user_attr("stopped", str(e))
            raise self.optuna.TrialPruned(f"stopped: {e}") from None
        if score is not None:
            return trainer.best["valid_acc"]
        # a sweep without a validation set: a value Optuna can store, not a choice
        trial.set_user_attr("value_is", "final training accuracy (no validation set)")
        return trainer.history[-1]["train_acc"]

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> int:
        """Run trials while the study needs them, then wait for the others; returns the number
        of trials this worker ran (not counting surplus ones)."""
        optuna = self.optuna
        ran = 0
        while True:
            with warnings.catch_warnings():                      # 'experimental'
                warnings.simplefilter("ignore")
                optuna.storages.fail_stale_trials(self.study)  # killed workers' trials -> FAIL
            if self.spec.kind == "sweep":
                self.enqueue_missing()
            if self.work_left():
                self.last = self.ended = None
                try:
                    self.study.optimize(self.objective, n_trials=1, catch=(_Surplus,))
                except Exception:
                    # another worker marked this trial failed while it ran (its heartbeat was
                    # late: a busy machine), so Optuna could not record it: the trial is lost,
                    # this worker goes on. Any other error stops the worker.
                    t = None if self.last is None else self._trial(self.last)
                    if t is None or t.state.name != "FAIL" or self.ended is None:
                        raise
                    self.log(f"trial {t.number} was marked failed by another worker while it "
                             f"ran (heartbeat late by over {2 * self.spec.heartbeat} s; raise "
                             "--heartbeat on a busy machine); going on")
                    continue
                if self.last is not None:                       # not a surplus trial
                    ran += 1
                    self.log(describe_trial(self._trial(self.last)))
                continue
            if not self.running():
                return ran
            time.sleep(min(self.spec.heartbeat, 5))


def run_worker(spec: StudySpec) -> int:
    """One worker on the study of ``spec`` (created if absent); returns when the study is done."""
    study = open_study(spec)
    optuna = import_optuna()
    seed = None if spec.sampler_seed is None else spec.sampler_seed + spec.worker_index
    if spec.kind == "sweep":
        study.sampler = optuna.samplers.RandomSampler(seed=seed)   # never asked: all enqueued
        study.pruner = optuna.pruners.NopPruner()
    else:
        study.sampler = optuna.samplers.TPESampler(seed=seed) if spec.sampler == "tpe" else \
            optuna.samplers.RandomSampler(seed=seed)
        study.pruner = optuna.pruners.MedianPruner() if spec.pruner == "median" else \
            optuna.pruners.NopPruner()
    worker = _Worker(spec, study)
    worker.datasets(spec.base)                # a missing data set: one line, before any trial
    return worker.run()


def run_workers(spec: StudySpec, argv: list[str], n: int, poll: float = 2.0) -> int:
    """Start ``n`` local worker processes running ``mininsnn`` + ``argv`` (each as a worker
    with --workers 1 and its own index) on the study of ``spec``, which is created first; print
    each trial as it ends; returns 0 when all workers succeed, else 1. Numba threads are shared
    out: each worker gets NUMBA_NUM_THREADS = cores // n unless the variable is set."""
    study = open_study(spec)
    logs = Path(spec.folder) / "workers"
    logs.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.setdefault("NUMBA_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    procs = []
    for i in range(n):
        log = logs / f"worker-{i}.log"
        with open(log, "a", encoding="utf-8") as f:
            procs.append((subprocess.Popen(
                [sys.executable, "-m", "mininsnn.cli", *argv, "--workers", "1",
                 "--worker-index", str(i)], stdout=f, stderr=subprocess.STDOUT, env=env,
                start_new_session=True), log))     # Ctrl-C reaches them once, through here
    spec.log(f"started {n} workers (NUMBA_NUM_THREADS={env['NUMBA_NUM_THREADS']}); their logs: "
             f"{logs}/worker-*.log")
    shown = set()
    try:
        while True:
            done = all(p.poll() is not None for p, _ in procs)
            for t in study.get_trials(deepcopy=False):
                if t.state.is_finished() and t.number not in shown:
                    shown.add(t.number)
                    spec.log(describe_trial(t))
            if done:
                break
            time.sleep(poll)
    except KeyboardInterrupt:
        for p, _ in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)  # each marks its trial failed and stops
        for p, _ in procs:
            p.wait()
        raise
    bad = [(i, p.returncode, log) for i, (p, log) in enumerate(procs) if p.returncode != 0]
    for i, code, log in bad:
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        spec.log(f"worker {i} exited with code {code}: {lines[-1] if lines else '(no output)'}")
    return 1 if bad else 0
