"""``mininsnn train``: train a run, continue it (--resume) or branch a new one from it (--branch).

Every check that can fail runs in :func:`train_config`, before anything is loaded or written.
"""
from __future__ import annotations

import sys
from pathlib import Path

from mininsnn import config as C
from mininsnn import data
from mininsnn import nir
from mininsnn import runs as R
from mininsnn.commands.args import UsageError, add_setting_flags
from mininsnn.spec import check_fits
from mininsnn.specwriter import spec_of
from mininsnn.train import Trainer, check_loadable, replay_schedule

__all__ = ["add_args", "train_config", "describe", "run"]


def add_args(t) -> None:
    t.add_argument("--config", help="configuration name (default mnist-4bit), see "
                                    "mininsnn.config.CONFIGS")
    add_setting_flags(t)
    t.add_argument("--data-dir", dest="data_dir", help="folder holding the data set's files")
    t.add_argument("--download", action="store_true", help="download Fashion-MNIST if missing")
    t.add_argument("--out", help="run folder (default runs/<config>-seed<seed>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    t.add_argument("--branch", metavar="RUN_DIR_OR_CHECKPOINT",
                   help="start a new run (--out) from another run's checkpoint with another "
                        "schedule; allowed only if that schedule gave the same lr at every "
                        "batch trained so far (e.g. warm_restarts with T_0 = T_max branched "
                        "from a cosine run at or before T_max batches)")
    t.add_argument("--init", metavar="MODEL.nir",
                   help="start from the network and weights of a NIR graph (fine-tune a graph "
                        "another tool trained); the run records it as its spec (docs/spec.md)")
    t.add_argument("--keep-epochs", action="store_true", dest="keep_epochs",
                   help="also keep the checkpoint of every epoch, as OUT/epochs/epochNNN.h5 "
                        "(0.5 MB each for mnist-4bit), e.g. to --branch halve_on_rise from a "
                        "constant run at its first rising loss")


def _branch_config(given: dict, overrides: dict):
    """(config, run folder, tree, branch source) of ``--branch SOURCE --out NEW``."""
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
    return cfg, run_dir, tree, branch


def _already_trained(run_dir: Path, tree, done: int):
    """The error of a --resume that asks for no more epochs, after repairing what a kill after
    the last epoch's commit left (it must not leave the run wrong for good)."""
    fixed = [] if tree is None else \
        R.RunFolder(run_dir).repair(tree, keep=(run_dir / "epochs").is_dir())
    temps = [f for f in fixed if Path(f).name.startswith(".")]
    parts = [f"repaired {', '.join(f for f in fixed if f not in temps)} from last.h5"] \
        if len(temps) < len(fixed) else []
    parts += [f"removed {len(temps)} temporary file(s) a kill left"] if temps else []
    note = f" ({'; '.join(parts)})" if parts else ""
    return C.ConfigError(f"{run_dir} has already trained {done} epoch(s){note}; pass "
                         f"--epochs N with N > {done} to continue it")


def _resume_config(given: dict, overrides: dict):
    """(config, run folder, tree or None, None) of ``--resume RUN_DIR``."""
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
        raise _already_trained(run_dir, tree, done)
    return cfg, run_dir, tree, None


def train_config(given: dict):
    """(config, run folder, checkpoint tree or None, branch source or None) of a train command;
    every check that can fail runs here, before anything is loaded or written (except that a
    resume answering "already trained" first repairs what a kill left: mininsnn.runs)."""
    settings = {s.key for s in C.SETTINGS}
    overrides = {k: v for k, v in given.items() if k in settings}
    if "resume" in given and "branch" in given:
        raise UsageError("--resume continues a run, --branch starts a new one: pass one of them")
    for flag in ("model", "init"):
        if flag in given and ("resume" in given or "branch" in given):
            raise UsageError("--resume and --branch continue the network their checkpoint "
                             f"records; drop --{flag}")
    if "init" in given:
        if "model" in given:
            raise UsageError("--init's graph is the run's network; drop --model")
        overrides["model"] = spec_of(_init_network(given["init"]), given["init"],
                                     name=Path(given["init"]).stem)
    if "branch" in given:
        cfg, run_dir, tree, branch = _branch_config(given, overrides)
    elif "resume" in given:
        cfg, run_dir, tree, branch = _resume_config(given, overrides)
    else:
        cfg = C.make_config(given.get("config", "mnist-4bit"), **overrides)
        if cfg["model"] is not None:                # a spec that fits the dataset, or one line
            check_fits(cfg["model"], cfg, given["init"] if "init" in given
                       else getattr(given["model"], "where", "spec"))
        run_dir = Path(given["out"]) if "out" in given else \
            Path("runs") / f"{_run_name(cfg)}-seed{cfg['seed']}"
        R.check_new_run_dir(run_dir)
        tree = branch = None
    rates = [s.flag for s in C.SETTINGS if s.key in ("correct_rate", "incorrect_rate")
             and s.key in given]
    if rates and cfg["loss"] != "mse_count":
        raise UsageError(f"{' and '.join(rates)} set the targets of the mse_count loss; this run "
                         f"uses {cfg['loss']}")
    R.check_writable(run_dir)                           # before minutes of loading and training
    return cfg, run_dir, tree, branch


def _init_network(path: str):
    """The float network of the NIR file ``path`` (a one-line NIRError otherwise)."""
    if Path(path).suffix != ".nir":
        raise UsageError(f"--init {path}: expected a NIR graph (.nir)")
    return nir.read_nir(path)


def _run_name(cfg: dict) -> str:
    """The configuration's name, after the spec's when the run has one."""
    spec = cfg["model"]
    return cfg["config"] if spec is None else f"{spec.get('name', 'spec')}-{cfg['config']}"


def describe(cfg: dict, trainer, train_set, test_set) -> str:
    """One line about a training run: configuration, data, batches, steps, schedule."""
    bits = "full precision" if cfg["bits"] is None else f"{cfg['bits']}-bit"
    steps = f"T={cfg['num_steps']}" + ("" if C.test_steps(cfg) == cfg["num_steps"]
                                       else f" (test {C.test_steps(cfg)})")
    valid = "" if trainer.valid_set is None else f"{len(trainer.valid_set)} validation / "
    return (f"{_run_name(cfg)} ({bits}), {len(train_set)} train / {valid}{len(test_set)} test "
            "samples, "
            f"{len(trainer.batches)} batch(es) of {cfg['batch_size']} per epoch, {steps}, "
            f"schedule {cfg['schedule']}, lr {cfg['lr']:g}, seed {cfg['seed']}"
            + ("" if cfg["loss"] == "mse_count" else f", loss {cfg['loss']}")
            + ("" if cfg["bits"] is None else f", quantizer backward {cfg['quant_grad']}"))


def _load_train_data(cfg: dict, data_dir, download: bool):
    """(train, valid or None, test) data sets of a run configuration."""
    if cfg["validation"] is None:
        train_set, test_set = data.load_data(cfg, data_dir, download)
        return train_set, None, test_set
    return data.load_data(cfg, data_dir, download, splits=("train", "valid", "test"))


def _print_done(cfg: dict, trainer, history, run_dir) -> None:
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


def run(a, argv) -> int:
    given = vars(a)
    cfg, run_dir, tree, branch = train_config(given)
    train_set, valid_set, test_set = _load_train_data(cfg, given.get("data_dir"),
                                                      given.get("download", False))
    trainer = Trainer(cfg, train_set, test_set, run_dir=run_dir, valid_set=valid_set,
                      keep_epochs=given.get("keep_epochs", False))
    if branch is not None:
        trainer.load_branch(tree)
    elif tree is not None:
        trainer.load_state(tree)
    elif "init" in given:                              # the graph's weights, not the seed's
        trainer.net.load_state_dict(_init_network(given["init"]).state_dict(), strict=True)
    where = (f", branching from {branch} after epoch {trainer.epoch}" if branch is not None
             else f", resuming after epoch {trainer.epoch}" if "resume" in given else "")
    print(f"mininsnn train: {describe(cfg, trainer, train_set, test_set)}{where} -> {run_dir}",
          flush=True)
    # every check has passed: from here on files are written
    if branch is not None:
        trainer.prepare_branch_dir(R.command_line(argv), branch)
    else:
        trainer.prepare_run_dir(R.command_line(argv))
    trainer.record_data()  # data.json: the files the data sets were read from
    try:
        history = trainer.fit()
    except KeyboardInterrupt:
        print(f"\ninterrupted; {trainer.run.kept_message()}; continue with --resume {run_dir}",
              file=sys.stderr)
        return 130
    _print_done(cfg, trainer, history, run_dir)
    return 0
