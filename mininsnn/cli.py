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

``mininsnn train``'s setting flags (--lr, --beta, --num-steps, ...) are made from
mininsnn.config.SETTINGS, so every setting has a flag with the same name and the same check.
Each command is one entry of :data:`COMMANDS`: a function adding its arguments and a function
running it.

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
import os
import shlex
import sys
import time
from pathlib import Path

# mininsnn parallelises with Numba threads; the per-sample matrix products inside them must not
# start BLAS threads of their own (2 x 2 threads on 2 cores thrash). Before NumPy loads BLAS:
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__all__ = ["main", "build_parser", "UsageError", "COMMANDS"]

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad command-line input; the message is printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are a one-line UsageError instead of usage text + sys.exit."""

    def error(self, message):
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def _bits(text: str):
    """--bits: an integer (checked with the other settings), or none/fp/32 for full precision."""
    if text.lower() in ("none", "fp", "float", "32"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer 2..16 or 'none', got {text!r}")


def _add_setting_flags(p) -> None:
    """One flag per setting of mininsnn.config.SETTINGS that has a help line."""
    from mininsnn.config import SETTINGS

    for s in SETTINGS:
        if s.help is None:
            continue
        kw = {"dest": s.key, "help": s.help}
        choices = getattr(s.check, "choices", None)
        if s.key == "bits":
            kw["type"] = _bits
        elif isinstance(s.default, bool):
            kw["action"] = argparse.BooleanOptionalAction
        elif choices is not None:
            kw["choices"] = list(choices())
        else:                                   # numbers: the type their check parses
            kw["type"] = s.check.type
        p.add_argument(s.flag, **kw)


# ---------------------------------------------------------------------------------------------
# train

def _train_args(t) -> None:
    t.add_argument("--config", help="configuration name (default mnist-4bit), see "
                                    "mininsnn.config.CONFIGS")
    _add_setting_flags(t)
    t.add_argument("--data-dir", dest="data_dir", help="folder holding the data set's files")
    t.add_argument("--download", action="store_true", help="download Fashion-MNIST if missing")
    t.add_argument("--out", help="run folder (default runs/<config>-seed<seed>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    t.add_argument("--branch", metavar="RUN_DIR_OR_CHECKPOINT",
                   help="start a new run (--out) from another run's checkpoint with another "
                        "schedule; allowed only if that schedule gave the same lr at every "
                        "batch trained so far (e.g. warm_restarts with T_0 = T_max branched "
                        "from a cosine run at or before T_max batches)")
    t.add_argument("--keep-epochs", action="store_true", dest="keep_epochs",
                   help="also keep the checkpoint of every epoch, as OUT/epochs/epochNNN.h5 "
                        "(0.5 MB each for mnist-4bit), e.g. to --branch halve_on_rise from a "
                        "constant run at its first rising loss")


def _train_config(given: dict):
    """(config, run folder, checkpoint tree or None, branch source or None) of a train command;
    every check that can fail runs here, before anything is loaded or written (except that a
    resume answering "already trained" first repairs what a kill left: mininsnn.runs)."""
    from mininsnn import config as C
    from mininsnn import runs as R
    from mininsnn.train import check_loadable, replay_schedule

    settings = {s.key for s in C.SETTINGS}
    overrides = {k: v for k, v in given.items() if k in settings}
    if "resume" in given and "branch" in given:
        raise UsageError("--resume continues a run, --branch starts a new one: pass one of them")
    tree = branch = None
    if "branch" in given:
        if "out" not in given:
            raise UsageError("--branch starts a new run: pass its folder with --out")
        branch, tree = R.load_checkpoint_source(given["branch"])
        check_loadable(tree, branch)
        saved = C.validate_config(tree["config"])
        if "config" in given and given["config"] != saved["config"]:
            raise C.ConfigError(f"{branch} is a {saved['config']} run, not {given['config']}; "
                                "drop --config")
        cfg = C.validate_config({**saved, **overrides})
        C.check_same_config(saved, cfg, str(branch), allowed=C.BRANCHABLE_KEYS)
        if cfg["epochs"] <= tree["epoch"]:
            raise C.ConfigError(f"{branch} holds {tree['epoch']} trained epoch(s); pass "
                                f"--epochs N with N > {tree['epoch']}")
        replay_schedule(tree, cfg)                      # refuse before anything is written
        run_dir = Path(given["out"])
        R.check_new_run_dir(run_dir)
    elif "resume" in given:
        run_dir = Path(given["resume"])
        if "out" in given and Path(given["out"]).resolve() != run_dir.resolve():
            raise UsageError("--resume continues the run in its own folder; drop --out")
        unstarted = R.unstarted_run_config(run_dir)     # stopped before its first epoch ended
        tree = None if unstarted is not None else R.load_run(run_dir)
        if tree is not None:
            check_loadable(tree, run_dir / "last.h5")
        saved = C.validate_config(unstarted if tree is None else tree["config"])
        if "config" in given and given["config"] != saved["config"]:
            raise C.ConfigError(f"{run_dir} is a {saved['config']} run, not {given['config']}; "
                                "drop --config or start a new run with another --out")
        cfg = C.validate_config({**saved, **overrides})
        C.check_same_config(saved, cfg, str(run_dir))
        done = 0 if tree is None else tree["epoch"]
        if cfg["epochs"] <= done:
            # a kill after the last epoch's commit must not leave the run wrong for good
            fixed = [] if tree is None else \
                R.RunFolder(run_dir).repair(tree, keep=(run_dir / "epochs").is_dir())
            temps = [f for f in fixed if Path(f).name.startswith(".")]
            parts = [f"repaired {', '.join(f for f in fixed if f not in temps)} from last.h5"] \
                if len(temps) < len(fixed) else []
            parts += [f"removed {len(temps)} temporary file(s) a kill left"] if temps else []
            note = f" ({'; '.join(parts)})" if parts else ""
            raise C.ConfigError(f"{run_dir} has already trained {done} epoch(s){note}; pass "
                                f"--epochs N with N > {done} to continue it")
    else:
        cfg = C.make_config(given.get("config", "mnist-4bit"), **overrides)
        run_dir = Path(given["out"]) if "out" in given else \
            Path("runs") / f"{cfg['config']}-seed{cfg['seed']}"
        R.check_new_run_dir(run_dir)
    rates = [s.flag for s in C.SETTINGS if s.key in ("correct_rate", "incorrect_rate")
             and s.key in given]
    if rates and cfg["loss"] != "mse_count":
        raise UsageError(f"{' and '.join(rates)} set the targets of the mse_count loss; this run "
                         f"uses {cfg['loss']}")
    R.check_writable(run_dir)                           # before minutes of loading and training
    return cfg, run_dir, tree, branch


def _describe(cfg: dict, trainer, train_set, test_set) -> str:
    from mininsnn.config import test_steps

    bits = "full precision" if cfg["bits"] is None else f"{cfg['bits']}-bit"
    steps = f"T={cfg['num_steps']}" + ("" if test_steps(cfg) == cfg["num_steps"]
                                       else f" (test {test_steps(cfg)})")
    valid = "" if trainer.valid_set is None else f"{len(trainer.valid_set)} validation / "
    return (f"{cfg['config']} ({bits}), {len(train_set)} train / {valid}{len(test_set)} test "
            "samples, "
            f"{len(trainer.batches)} batch(es) of {cfg['batch_size']} per epoch, {steps}, "
            f"schedule {cfg['schedule']}, lr {cfg['lr']:g}, seed {cfg['seed']}"
            + ("" if cfg["loss"] == "mse_count" else f", loss {cfg['loss']}")
            + ("" if cfg["bits"] is None else f", quantizer backward {cfg['quant_grad']}"))


def _load_train_data(cfg: dict, data_dir, download: bool):
    """(train, valid or None, test) data sets of a run configuration."""
    from mininsnn.data import load_data

    if cfg["validation"] is None:
        train_set, test_set = load_data(cfg, data_dir, download)
        return train_set, None, test_set
    return load_data(cfg, data_dir, download, splits=("train", "valid", "test"))


def _train(a, argv) -> int:
    from mininsnn.runs import command_line
    from mininsnn.train import Trainer

    given = vars(a)
    cfg, run_dir, tree, branch = _train_config(given)
    train_set, valid_set, test_set = _load_train_data(cfg, given.get("data_dir"),
                                                      given.get("download", False))
    trainer = Trainer(cfg, train_set, test_set, run_dir=run_dir, valid_set=valid_set,
                      keep_epochs=given.get("keep_epochs", False))
    if branch is not None:
        trainer.load_branch(tree)
    elif tree is not None:
        trainer.load_state(tree)
    where = (f", branching from {branch} after epoch {trainer.epoch}" if branch is not None
             else f", resuming after epoch {trainer.epoch}" if "resume" in given else "")
    print(f"mininsnn train: {_describe(cfg, trainer, train_set, test_set)}{where} -> {run_dir}",
          flush=True)
    # every check has passed: from here on files are written
    if branch is not None:
        trainer.prepare_branch_dir(command_line(argv), branch)
    else:
        trainer.prepare_run_dir(command_line(argv))
    trainer.record_data()                   # data.json: the files the data sets were read from
    try:
        history = trainer.fit()
    except KeyboardInterrupt:
        print(f"\ninterrupted; {trainer.run.kept_message()}; continue with --resume {run_dir}",
              file=sys.stderr)
        return 130
    if cfg["validation"] is None:
        best = max(history, key=lambda r: r["test_acc"])
        print(f"done: final test accuracy {100 * history[-1]['test_acc']:.2f}% (epoch "
              f"{history[-1]['epoch']}); best {100 * best['test_acc']:.2f}% (epoch "
              f"{best['epoch']}); files in {run_dir}")
    else:
        best = next(r for r in history if r["epoch"] == trainer.best["epoch"])
        print(f"done: final validation accuracy {100 * history[-1]['valid_acc']:.2f}%, test "
              f"{100 * history[-1]['test_acc']:.2f}% (epoch {history[-1]['epoch']}); best "
              f"validation {100 * best['valid_acc']:.2f}% (epoch {best['epoch']}, test "
              f"{100 * best['test_acc']:.2f}%); files in {run_dir}")
    return 0


# ---------------------------------------------------------------------------------------------
# eval, plot, compare

def _eval_args(e) -> None:
    e.add_argument("path", metavar="RUN_DIR_OR_CHECKPOINT")
    e.add_argument("--data-dir", dest="data_dir")
    e.add_argument("--download", action="store_true")
    e.add_argument("--test-subset", type=int, dest="test_subset",
                   help="first N test samples (default: the whole test set)")
    e.add_argument("--batch-size", type=int, dest="batch_size")


def _eval(a, argv) -> int:
    from mininsnn.config import ConfigError, validate_config
    from mininsnn.data import load_data
    from mininsnn.runs import RunFolder, read_training_checkpoint
    from mininsnn.train import build_net, evaluate

    path = Path(a.path)
    if path.is_dir():
        files = [path / f for f in ("best.h5", "last.h5") if (path / f).exists()]
        if not files:
            raise UsageError(f"{path} has no best.h5 or last.h5; pass a run folder or a "
                             "checkpoint file")
    elif path.is_file():
        files = [path]
    else:
        raise UsageError(f"{path} does not exist; pass a run folder or a checkpoint file")
    for name in ("test_subset", "batch_size"):
        v = getattr(a, name)
        if v is not None and v < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    # every file before the slow part: (label, file, tree, network)
    loaded = [[str(f), f, read_training_checkpoint(f)] for f in files]
    if path.is_dir() and (path / "last.h5").exists() and \
            RunFolder(path).best_is_behind(loaded[-1][2]):
        # a kill after last.h5's commit: last.h5 holds the best epoch until a resume repairs
        loaded = [[f"{path / 'best.h5'} (behind last.h5 after an interrupted run: evaluating "
                   "last.h5, which holds the best epoch)", *loaded[-1][1:]], loaded[-1]]
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
            (test_sets[key],) = load_data(cfg, a.data_dir, a.download, splits=("test",))
        t0 = time.perf_counter()
        r = evaluate(net, test_sets[key], cfg, a.batch_size)
        print(f"{label}: epoch {tree['epoch']}, test accuracy {100 * r['acc']:.2f}% on {r['n']} "
              f"samples, test loss {r['loss']:.4f}  ({time.perf_counter() - t0:.1f} s)")
    return 0


def _plot_args(g) -> None:
    g.add_argument("run_dir", metavar="RUN_DIR")
    g.add_argument("--out", help="folder for the PNG files (default: RUN_DIR)")
    g.add_argument("--sample", type=int, default=0, help="test sample of the raster (default 0)")
    g.add_argument("--data-dir", dest="data_dir")
    g.add_argument("--no-raster", action="store_true", help="skip the spike raster")


def _plot(a, argv) -> int:
    from mininsnn import plot as P

    written = P.plot_run(a.run_dir, out_dir=a.out, sample=a.sample, data_dir=a.data_dir,
                         raster=not a.no_raster, log=print)
    for f in written:
        print(f"wrote {f}")
    return 0


def _compare_args(c) -> None:
    c.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    c.add_argument("--out", required=True, help="the PNG file to write")
    c.add_argument("--labels", help="comma-separated legend labels (default: folder names)")
    c.add_argument("--title", help="figure title")


def _compare(a, argv) -> int:
    from mininsnn import plot as P

    labels = None if a.labels is None else a.labels.split(",")
    print(f"wrote {P.plot_compare(a.run_dirs, a.out, labels, a.title)}")
    return 0


# ---------------------------------------------------------------------------------------------
# tune, sweep (Optuna studies, mininsnn.tune) and report (mininsnn.report)

def _study_args(p, kind: str) -> None:
    p.add_argument("folder", metavar="STUDY_DIR",
                   help="the study folder: trial-NNNN run folders, study.json, and the default "
                        "storage study.db")
    p.add_argument("--config", help="configuration of every trial (default mnist-4bit); the "
                                    "setting flags below fix its other settings")
    _add_setting_flags(p)
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
    if kind == "tune":
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
    else:
        p.add_argument("--grid", action="append", metavar="KEY=A,B,...",
                       help="a grid axis: seed=0,1,2 (or seed=0:2), schedule=cosine,constant, "
                            "incorrect_rate=0,0.2 (repeatable)")
        p.add_argument("--space", help="the grid as a JSON file {setting: [values]}")


def _study_spec(a, kind: str):
    """The StudySpec of a tune or sweep command; every check that can fail runs here."""
    from mininsnn import config as C
    from mininsnn import tune as T

    T.import_optuna()                                   # one line if the extra is missing
    given = vars(a)
    fixed = {k: v for k, v in given.items() if k in {s.key for s in C.SETTINGS}}
    base = C.make_config(given.get("config", "mnist-4bit"), **fixed)
    # the paper's space, less the settings fixed by a flag and the targets of another loss
    paper = {k: v for k, v in T.PAPER_SPACE.items() if k not in fixed and (
        base["loss"] == "mse_count" or k not in ("correct_rate", "incorrect_rate"))}
    space, where = {}, []
    if given.get("space") == "paper" and kind == "tune":
        space = dict(paper)
        where.append("--space paper")
    elif given.get("space") is not None:
        space = T.read_space_file(given["space"])
        where.append(f"search space {given['space']}")
    flag = "--param" if kind == "tune" else "--grid"
    for text in given.get("param" if kind == "tune" else "grid") or []:
        key, spec = T.parse_param(text, flag)
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
        flag_of = {s.key: s.flag for s in C.SETTINGS}
        raise UsageError(f"{flag_of[both[0]]} fixes {both[0]}, which the search space varies; "
                         "drop one of them")
    space = T.check_space(space, base, " and ".join(dict.fromkeys(where)), grid=kind == "sweep")
    if kind == "tune" and base["validation"] is None:
        raise UsageError("mininsnn tune scores trials on held-out training samples, never on "
                         "the test set: pass --validation N (the last N training samples; e.g. "
                         "10000 of MNIST's 60000)")
    for name in ("workers", "heartbeat") + (("trials",) if kind == "tune" else ()):
        if given[name] < 1:
            raise UsageError(f"--{name} must be >= 1, got {given[name]}")
    if given.get("data_dir") is not None and not Path(given["data_dir"]).is_dir():
        raise C.ConfigError(f"data dir {given['data_dir']} does not exist; pass --data-dir with "
                            "the folder holding the data set's files")
    folder = Path(a.folder)
    trials = given["trials"] if kind == "tune" else len(T.grid_points(space))
    return T.StudySpec(kind=kind, folder=folder,
                       name=given.get("study") or folder.resolve().name,
                       storage=given.get("storage") or T.default_storage(folder),
                       base=base, space=space, trials=trials, data_dir=given.get("data_dir"),
                       sampler=given.get("sampler", "tpe"),
                       sampler_seed=given.get("sampler_seed"),
                       pruner=given.get("pruner", "none"), heartbeat=given["heartbeat"],
                       worker_index=given["worker_index"],
                       log=lambda m: print(m, flush=True))


def _run_study(a, argv, kind: str) -> int:
    from mininsnn import tune as T

    spec = _study_spec(a, kind)
    T.open_study(spec)                  # storage, study and folder checked before any output
    cfg = spec.base
    what = (f"{spec.trials} trials over {T.describe_space(spec.space)}" if kind == "tune" else
            f"{spec.trials} grid points of {T.describe_space(spec.space)}")
    print(f"mininsnn {kind}: study {spec.name!r} in {T.shown_url(spec.storage)}: {what}; "
          f"{cfg['config']}, {cfg['epochs']} epoch(s)"
          + ("" if cfg["validation"] is None else f", validation {cfg['validation']}")
          + ("" if cfg["subset"] is None else f", subset {cfg['subset']}")
          + f" -> {spec.folder}", flush=True)
    t0 = time.perf_counter()
    try:
        if a.workers > 1:
            code = T.run_workers(spec, argv, a.workers)
        else:
            T.run_worker(spec)
            code = 0
    except KeyboardInterrupt:
        print("\ninterrupted; the trials that were running are marked failed; run the same "
              "command again to continue the study", file=sys.stderr)
        return 130
    study = T.open_study(spec, create=False)
    counts = T.study_counts(study)
    finished = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
    print(f"{kind} {spec.name!r}: {finished} of {spec.trials} trials finished ("
          + ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items()))
          + f") in {time.perf_counter() - t0:.0f} s", flush=True)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if kind == "tune" and complete:
        best = study.best_trial
        u = best.user_attrs
        print(f"best: {T.describe_trial(best)}\n  run folder {u.get('run_dir')}\n  rerun: "
              f"{u.get('command')}")
    elif kind == "sweep":
        print(f"table and plot: mininsnn report {spec.folder}")
    return code


def _tune(a, argv) -> int:
    return _run_study(a, argv, "tune")


def _sweep(a, argv) -> int:
    return _run_study(a, argv, "sweep")


def _report_args(r) -> None:
    r.add_argument("folder", metavar="DIR", help="a study folder, or any folder of run folders")
    r.add_argument("--out", help="the plot (default DIR/report.png)")
    r.add_argument("--no-plot", action="store_true", dest="no_plot", help="print the table only")
    r.add_argument("--markdown", action="store_true", help="print the table as Markdown")


def _report(a, argv) -> int:
    from mininsnn import report as R
    from mininsnn.config import ConfigError

    runs = [R.summarize_run(d) for d in R.find_runs(a.folder)]
    groups = R.group_runs(runs)
    if not groups:
        raise UsageError(f"{a.folder} has no run with a finished epoch yet")
    print(R.format_report(groups, markdown=a.markdown))
    if not a.no_plot:
        try:
            print(f"wrote {R.plot_report(groups, a.out or Path(a.folder) / 'report.png')}")
        except ConfigError as e:                 # matplotlib is optional
            print(f"no plot: {e}")
    return 0


# ---------------------------------------------------------------------------------------------

#: name -> (help, add its arguments, run it, parser keywords)
COMMANDS = {
    "train": ("train a run (or continue one with --resume)", _train_args, _train,
              dict(argument_default=argparse.SUPPRESS,   # absent flags stay absent (resume)
                   description="Train a configuration. Flags not given take the "
                               "configuration's value (or, with --resume, the resumed run's).")),
    "eval": ("test accuracy of a run's checkpoints", _eval_args, _eval, {}),
    "plot": ("training curves, LR per step and a spike raster", _plot_args, _plot, {}),
    "compare": ("test accuracy, training loss and LR of several runs in one PNG", _compare_args,
                _compare, {}),
    "tune": ("an Optuna study: trials over a search space, scored on a validation split",
             lambda p: _study_args(p, "tune"), _tune,
             dict(argument_default=argparse.SUPPRESS,
                  description="Search hyperparameters with Optuna. Every trial is a run folder "
                              "STUDY_DIR/trial-NNNN whose command.txt reruns it.")),
    "sweep": ("a grid of runs (seeds x schedules x settings) as an Optuna study",
              lambda p: _study_args(p, "sweep"), _sweep,
              dict(argument_default=argparse.SUPPRESS,
                   description="Train every point of a grid once, on any number of workers.")),
    "report": ("mean ± sd per setting of a sweep's (or any folder's) runs, and a plot",
               _report_args, _report, {}),
    "export": ("write a trained model as integers: C99 source or an integer .npz",
               lambda p: _deploy_commands().export_args(p),
               lambda a, argv: _deploy_commands().export(a, argv),
               dict(description="Convert a trained model to integers (docs/deploy.md) and write "
                                "it.")),
    "infer": ("classify an IDX file or .npy array with the float or an integer engine",
              lambda p: _deploy_commands().infer_args(p),
              lambda a, argv: _deploy_commands().infer(a, argv),
              dict(description="Classify images or event frames; print accuracy (with --labels) "
                               "and samples/s.")),
}


def _deploy_commands():
    from mininsnn.deploy import commands
    return commands


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mininsnn", allow_abbrev=False,
                description="Train, evaluate and deploy quantized spiking neural networks "
                            "(NumPy + Numba).")
    sub = p.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    sub.required = True
    for name, (help_, add_args, _, kw) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_, allow_abbrev=False, **kw))
    return p


def main(argv=None) -> int:
    """Run the command line ``argv`` (default sys.argv[1:]); returns the exit code."""
    from mininsnn.config import ConfigError
    from mininsnn.runs import WriteError
    from mininsnn.train import TrainingError

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
    # run the module's importable copy, so that mininsnn.cli.UsageError raised by the commands'
    # own modules (mininsnn.deploy.commands) is the class main() catches
    from mininsnn.cli import main as _main
    sys.exit(_main())
