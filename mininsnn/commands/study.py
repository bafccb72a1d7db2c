"""``mininsnn tune`` and ``mininsnn sweep``: the command-line side of Optuna studies (the library
is mininsnn.tune). Every check that can fail runs in :func:`study_spec`, before any output."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mininsnn import tune
from mininsnn.commands.args import UsageError, add_setting_flags
from mininsnn.config import SETTINGS, ConfigError, make_config
from mininsnn.spec import check_fits

__all__ = ["add_args", "study_spec", "run"]


def add_args(p, kind: str) -> None:
    p.add_argument("folder", metavar="STUDY_DIR",
                   help="the study folder: trial-NNNN run folders, study.json, and the default "
                        "storage study.db")
    p.add_argument("--config", help="configuration of every trial (default mnist-4bit); the "
                                    "setting flags below fix its other settings")
    add_setting_flags(p)
    p.add_argument("--data-dir", dest="data_dir", help="folder holding the data set's files")
    p.add_argument("--study", help="the study's name in the storage (default: STUDY_DIR's name)")
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///STUDY_DIR/study.db); "
                                     "postgresql://USER@HOST:PORT/DB lets workers on several "
                                     "machines share one study")
    p.add_argument("--workers", type=int, default=1,
                   help="local worker processes (default 1); a worker on another machine joins "
                        "with the same command and --storage")
    p.add_argument("--worker-index", type=int, default=0, dest="worker_index",
                   help=argparse.SUPPRESS)
    p.add_argument("--heartbeat", type=int, default=60,
                   help="seconds between a worker's heartbeats (default 60); a trial silent for "
                        "twice that is marked failed and run again")
    p.add_argument("--sampler-seed", type=int, dest="sampler_seed",
                   help="seed of the sampler (worker i uses SEED + i; default: random)")
    (_tune_args if kind == "tune" else _sweep_args)(p)


def _tune_args(p) -> None:
    p.add_argument("--space", help="search space: a JSON file {setting: {\"low\": L, "
                                   "\"high\": H[, \"log\": true]} or [choices]}, or "
                                   "'paper' (default when no --param is given: beta, "
                                   "threshold, slope, lr, dropout and the mse_count targets)")
    p.add_argument("--param", action="append", metavar="KEY=SPEC",
                   help="a searched setting: lr=1e-4:1e-2:log, beta=0.9:0.999, "
                        "num_steps=10:50:10, loss=mse_count,ce_rate (repeatable)")
    p.add_argument("--trials", type=int, default=20,
                   help="trials the study finishes, complete or pruned (default 20)")
    p.add_argument("--sampler", choices=["tpe", "random"], default="tpe")
    p.add_argument("--pruner", choices=["median", "none"], default="median",
                   help="stop a trial whose validation accuracy after an epoch is below the "
                        "median of earlier trials' at that epoch (default median)")


def _sweep_args(p) -> None:
    p.add_argument("--grid", action="append", metavar="KEY=A,B,...",
                   help="a grid axis: seed=0,1,2 (or seed=0:2), schedule=cosine,constant, "
                        "incorrect_rate=0,0.2 (repeatable)")
    p.add_argument("--space", help="the grid as a JSON file {setting: [values]}")


def _space(given: dict, kind: str, base: dict, fixed: dict) -> dict:
    """The checked search space of the command: --space, then each --param / --grid."""
    # the paper's space, less the settings fixed by a flag and the targets of another loss
    paper = {k: v for k, v in tune.PAPER_SPACE.items() if k not in fixed and (
        base["loss"] == "mse_count" or k not in ("correct_rate", "incorrect_rate"))}
    space, where = {}, []
    if given.get("space") == "paper" and kind == "tune":
        space = dict(paper)
        where.append("--space paper")
    elif given.get("space") is not None:
        space = tune.read_space_file(given["space"])
        where.append(f"search space {given['space']}")
    flag = "--param" if kind == "tune" else "--grid"
    for text in given.get("param" if kind == "tune" else "grid") or []:
        key, spec = tune.parse_param(text, flag)
        if key in space:
            raise UsageError(f"{flag} {key}: {key} is already in the search space")
        space[key] = spec
        where.append(flag)
    if not space:
        if kind == "sweep":
            raise UsageError("mininsnn sweep: declare the grid with --grid KEY=A,B,... or "
                             "--space FILE")
        space = paper
        where.append("--space paper")
    both = [k for k in space if k in fixed]
    if both:
        flag_of = {s.key: s.flag for s in SETTINGS}
        raise UsageError(f"{flag_of[both[0]]} fixes {both[0]}, which the search space varies; "
                         "drop one of them")
    return tune.check_space(space, base, " and ".join(dict.fromkeys(where)),
                            grid=kind == "sweep")


def study_spec(a, kind: str, parse=None):
    """The StudySpec of a tune or sweep command; every check that can fail runs here.
    ``parse``: the command line's parser of a trial's train arguments (StudySpec.parse_train)."""
    tune.import_optuna()                                # one line if the extra is missing
    given = vars(a)
    fixed = {k: v for k, v in given.items() if k in {s.key for s in SETTINGS}}
    base = make_config(given.get("config", "mnist-4bit"), **fixed)
    if base["model"] is not None:                   # a spec that fits the dataset, or one line
        check_fits(base["model"], base, getattr(given["model"], "where", "spec"))
    space = _space(given, kind, base, fixed)
    if kind == "tune" and base["validation"] is None:
        raise UsageError("mininsnn tune scores trials on held-out training samples, never on "
                         "the test set: pass --validation N (the last N training samples; e.g. "
                         "10000 of MNIST's 60000)")
    for name in ("workers", "heartbeat") + (("trials",) if kind == "tune" else ()):
        if given[name] < 1:
            raise UsageError(f"--{name} must be >= 1, got {given[name]}")
    if given.get("data_dir") is not None and not Path(given["data_dir"]).is_dir():
        raise ConfigError(f"data dir {given['data_dir']} does not exist; pass --data-dir with "
                          "the folder holding the data set's files")
    folder = Path(a.folder)
    trials = given["trials"] if kind == "tune" else len(tune.grid_points(space))
    return tune.StudySpec(kind=kind, folder=folder,
                          name=given.get("study") or folder.resolve().name,
                          storage=given.get("storage") or tune.default_storage(folder),
                          base=base, space=space, trials=trials, data_dir=given.get("data_dir"),
                          sampler=given.get("sampler", "tpe"),
                          sampler_seed=given.get("sampler_seed"),
                          pruner=given.get("pruner", "none"), heartbeat=given["heartbeat"],
                          worker_index=given["worker_index"],
                          log=lambda m: print(m, flush=True), parse_train=parse)


def _print_start(spec, kind: str) -> None:
    cfg = spec.base
    what = (f"{spec.trials} trials over {tune.describe_space(spec.space)}" if kind == "tune"
            else f"{spec.trials} grid points of {tune.describe_space(spec.space)}")
    print(f"mininsnn {kind}: study {spec.name!r} in {tune.shown_url(spec.storage)}: {what}; "
          f"{cfg['config']}, {cfg['epochs']} epoch(s)"
          + ("" if cfg["validation"] is None else f", validation {cfg['validation']}")
          + ("" if cfg["subset"] is None else f", subset {cfg['subset']}")
          + f" -> {spec.folder}", flush=True)


def _print_end(spec, kind: str, t0: float) -> None:
    study = tune.open_study(spec, create=False)
    counts = tune.study_counts(study)
    finished = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
    print(f"{kind} {spec.name!r}: {finished} of {spec.trials} trials finished ("
          + ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items()))
          + f") in {time.perf_counter() - t0:.0f} s", flush=True)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if kind == "tune" and complete:
        best = study.best_trial
        u = best.user_attrs
        print(f"best: {tune.describe_trial(best)}\n  run folder {u.get('run_dir')}\n  rerun: "
              f"{u.get('command')}")
    elif kind == "sweep":
        print(f"table and plot: mininsnn report {spec.folder}")


def run(a, argv, kind: str, parse=None) -> int:
    """Run ``mininsnn tune`` or ``mininsnn sweep`` (``kind``); ``parse`` as in study_spec."""
    spec = study_spec(a, kind, parse)
    tune.open_study(spec)               # storage, study and folder checked before any output
    _print_start(spec, kind)
    t0 = time.perf_counter()
    try:
        if a.workers > 1:
            code = tune.run_workers(spec, argv, a.workers)
        else:
            tune.run_worker(spec)
            code = 0
    except KeyboardInterrupt:
        print("\ninterrupted; the trials that were running are marked failed; run the same "
              "command again to continue the study", file=sys.stderr)
        return 130
    _print_end(spec, kind, t0)
    return code
