"""Command line: ``mininsnn train | eval | plot | compare | export | infer``.

    mininsnn train --config mnist-4bit --epochs 1              # -> runs/mnist-4bit-seed0/
    mininsnn train --resume runs/mnist-4bit-seed0 --epochs 3   # continue the same run
    mininsnn train --schedule constant --keep-epochs ...        # + runs/.../epochs/epochNNN.h5
    mininsnn train --branch runs/mnist-4bit-seed0/best.h5 --schedule warm_restarts \
                   --epochs 20 --out runs/mnist-4bit-wr-seed0  # a new run from a checkpoint
    mininsnn eval runs/mnist-4bit-seed0                        # best.h5 and last.h5 on the test set
    mininsnn plot runs/mnist-4bit-seed0                        # curves, LR per step, spike raster
    mininsnn compare runs/a runs/b --out ab.png                # several runs on shared axes
    mininsnn export mnist-4bit --format c --out build/         # integer-only C99 (docs/deploy.md)
    mininsnn infer mnist-4bit --input t10k-images-idx3-ubyte.gz --engine int   # classify

Bad input (unknown flag, impossible value, missing data, a run folder that belongs to another
configuration) prints one line saying what to do and returns exit code 2 before anything is
written. ``main`` returns the exit code instead of calling sys.exit, so it can be called from
Python (the examples and the tests do).
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

# mininsnn parallelises with Numba threads; the per-sample matrix products inside them must not
# start BLAS threads of their own (2 x 2 threads on 2 cores thrash). Before NumPy/SciPy load BLAS:
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__all__ = ["main", "build_parser", "UsageError", "machine"]

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad command-line input; the message is printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are a one-line UsageError instead of usage text + sys.exit."""

    def error(self, message):
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def _bits(text: str):
    """--bits: an integer 2..16, or none/fp/32 for full precision."""
    if text.lower() in ("none", "fp", "float", "32"):
        return None
    try:
        b = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer 2..16 or 'none', got {text!r}")
    if not 2 <= b <= 16:
        raise argparse.ArgumentTypeError(f"expected an integer 2..16 or 'none', got {text!r}")
    return b


def build_parser() -> argparse.ArgumentParser:
    from mininsnn.loss import LOSSES
    from mininsnn.quant import QUANT_GRADS
    from mininsnn.schedule import SCHEDULES

    p = _Parser(prog="mininsnn", allow_abbrev=False,
                description="Train and evaluate quantized spiking neural networks (NumPy + Numba).")
    sub = p.add_subparsers(dest="command", metavar="{train,eval,plot,compare,export,infer}")
    sub.required = True
    S = argparse.SUPPRESS          # flags not given stay absent, so a resume can tell them apart

    t = sub.add_parser("train", help="train a run (or continue one with --resume)",
                       allow_abbrev=False, argument_default=S,
                       description="Train a reference config. Flags not given take the config's "
                                   "value (or, with --resume, the resumed run's).")
    t.add_argument("--config", help="model config name (default mnist-4bit), see mininsnn.models")
    t.add_argument("--epochs", type=int, help="total number of epochs (default 1)")
    t.add_argument("--bits", type=_bits, help="weight bits 2..16, or 'none' for full precision")
    t.add_argument("--schedule", choices=list(SCHEDULES), help="learning-rate schedule")
    t.add_argument("--lr", type=float, help="initial learning rate")
    t.add_argument("--batch-size", type=int, dest="batch_size")
    t.add_argument("--num-steps", type=int, dest="num_steps", help="time steps T")
    t.add_argument("--seed", type=int, help="seed of weights, dropout and batch order (default 0)")
    t.add_argument("--t-max", type=int, dest="T_max",
                   help="cosine T_max / warm-restart T_0 in batches (default from the config)")
    t.add_argument("--t-mult", type=int, dest="T_mult", help="warm-restart cycle growth (default 1)")
    t.add_argument("--quant-grad", dest="quant_grad", choices=list(QUANT_GRADS),
                   help="quantizer backward: plain straight-through (default, REFERENCE.md) or "
                        "also through the scale max|W|/L, as Brevitas computes it")
    t.add_argument("--loss", choices=list(LOSSES),
                   help="loss on the output spikes (default mse_count, the paper's; see "
                        "mininsnn.loss)")
    t.add_argument("--correct-rate", type=float, dest="correct_rate",
                   help="mse_count: target firing rate of the true class (default 0.8)")
    t.add_argument("--incorrect-rate", type=float, dest="incorrect_rate",
                   help="mse_count: target firing rate of the other classes (default 0.2)")
    t.add_argument("--subset", type=int, help="train on the first N training samples")
    t.add_argument("--test-subset", type=int, dest="test_subset",
                   help="evaluate on the first N test samples")
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

    e = sub.add_parser("eval", help="test accuracy of a run's checkpoints", allow_abbrev=False)
    e.add_argument("path", metavar="RUN_DIR_OR_CHECKPOINT")
    e.add_argument("--data-dir", dest="data_dir")
    e.add_argument("--download", action="store_true")
    e.add_argument("--test-subset", type=int, dest="test_subset",
                   help="first N test samples (default: the whole test set)")
    e.add_argument("--batch-size", type=int, dest="batch_size")

    g = sub.add_parser("plot", help="training curves, LR per step and a spike raster",
                       allow_abbrev=False)
    g.add_argument("run_dir", metavar="RUN_DIR")
    g.add_argument("--out", help="folder for the PNG files (default: RUN_DIR)")
    g.add_argument("--sample", type=int, default=0, help="test sample of the raster (default 0)")
    g.add_argument("--data-dir", dest="data_dir")
    g.add_argument("--no-raster", action="store_true", help="skip the spike raster")

    c = sub.add_parser("compare", allow_abbrev=False,
                       help="test accuracy, training loss and LR of several runs in one PNG")
    c.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    c.add_argument("--out", required=True, help="the PNG file to write")
    c.add_argument("--labels", help="comma-separated legend labels (default: folder names)")
    c.add_argument("--title", help="figure title")
    _add_deploy_parsers(sub)
    return p


# ---------------------------------------------------------------------------------------------

_TRAIN_KEYS = ("epochs", "bits", "schedule", "lr", "batch_size", "num_steps", "seed", "T_max",
               "T_mult", "subset", "test_subset", "quant_grad", "loss", "correct_rate",
               "incorrect_rate")


def machine() -> str:
    """The CPU's model name and the versions that decide a run's bits and speed, e.g.
    'AMD EPYC, numpy 2.4.6, numba 0.68.1' (+ OPENBLAS_CORETYPE when set): the same command on
    another CPU can round differently (BENCHMARKS.md), so each command.txt line names it."""
    import numba
    import numpy
    cpu = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), None)
    except OSError:
        pass
    text = f"{cpu or platform.processor() or platform.machine()}, numpy {numpy.__version__}, " \
           f"numba {numba.__version__}"
    if os.environ.get("OPENBLAS_CORETYPE"):
        text += f", OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']}"
    return text


def _command_text(argv) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return (f"# {stamp}  cwd {os.getcwd()}  on {machine()}  invoked as: {shlex.join(sys.argv)}\n"
            f"mininsnn {shlex.join(argv)}")


def _train(a, argv) -> int:
    from mininsnn import train as T

    given = vars(a)
    overrides = {k: given[k] for k in _TRAIN_KEYS if k in given}
    data_dir, download = given.get("data_dir"), given.get("download", False)
    tree = branch = None
    if "resume" in given and "branch" in given:
        raise UsageError("--resume continues a run, --branch starts a new one: pass one of them")
    if "branch" in given:
        if "out" not in given:
            raise UsageError("--branch starts a new run: pass its folder with --out")
        branch, tree = T.load_checkpoint_source(a.branch)
        saved = T.validate_config(tree["config"])
        if "config" in given and a.config != saved["config"]:
            raise T.ConfigError(f"{branch} is a {saved['config']} run, not {a.config}; drop "
                                "--config")
        cfg = T.validate_config({**saved, **overrides})
        T.check_same_config(saved, cfg, str(branch), allowed=T.BRANCHABLE_KEYS)
        if cfg["epochs"] <= tree["epoch"]:
            raise T.ConfigError(f"{branch} holds {tree['epoch']} trained epoch(s); pass "
                                f"--epochs N with N > {tree['epoch']}")
        T.replay_schedule(tree, cfg)                    # refuse before anything is written
        run_dir = Path(a.out)
        T.check_new_run_dir(run_dir)
    elif "resume" in given:
        run_dir = Path(a.resume)
        if "out" in given and Path(a.out).resolve() != run_dir.resolve():
            raise UsageError("--resume continues the run in its own folder; drop --out")
        unstarted = T.unstarted_run_config(run_dir)     # stopped before its first epoch ended
        tree = None if unstarted is not None else T.load_run(run_dir)
        saved = T.validate_config(unstarted if tree is None else tree["config"])
        if "config" in given and a.config != saved["config"]:
            raise T.ConfigError(f"{run_dir} is a {saved['config']} run, not {a.config}; "
                                "drop --config or start a new run with another --out")
        cfg = T.validate_config({**saved, **overrides})
        T.check_same_config(saved, cfg, str(run_dir))
        done = 0 if tree is None else tree["epoch"]
        if cfg["epochs"] <= done:
            raise T.ConfigError(f"{run_dir} has already trained {done} epoch(s); pass "
                                f"--epochs N with N > {done} to continue it")
    else:
        cfg = T.make_config(given.get("config", "mnist-4bit"), **overrides)
        run_dir = Path(given["out"]) if "out" in given else \
            Path("runs") / f"{cfg['config']}-seed{cfg['seed']}"
        T.check_new_run_dir(run_dir)
    rates = [f"--{k.replace('_', '-')}" for k in ("correct_rate", "incorrect_rate") if k in given]
    if rates and cfg["loss"] != "mse_count":
        raise UsageError(f"{' and '.join(rates)} set the targets of the mse_count loss; this run "
                         f"uses {cfg['loss']}")
    train_set, test_set = T.load_data(cfg, data_dir, download)
    trainer = T.Trainer(cfg, train_set, test_set, run_dir=run_dir,
                        keep_epochs=given.get("keep_epochs", False))
    if branch is not None:
        trainer.load_branch(tree)
    elif tree is not None:
        trainer.load_state(tree)
    bits = "full precision" if cfg["bits"] is None else f"{cfg['bits']}-bit"
    print(f"mininsnn train: {cfg['config']} ({bits}), {len(train_set)} train / {len(test_set)} "
          f"test samples, {len(trainer.batches)} batch(es) of {cfg['batch_size']} per epoch, "
          f"T={cfg['num_steps']}, schedule {cfg['schedule']}, lr {cfg['lr']:g}, seed {cfg['seed']}"
          + ("" if cfg["loss"] == "mse_count" else f", loss {cfg['loss']}")
          + ("" if cfg["quant_grad"] == "ste" or cfg["bits"] is None
             else f", quantizer backward {cfg['quant_grad']}")
          + (f", branching from {branch} after epoch {trainer.epoch}" if branch is not None
             else f", resuming after epoch {trainer.epoch}" if "resume" in given else "")
          + f" -> {run_dir}", flush=True)
    # every check has passed: from here on files are written
    if branch is not None:
        trainer.prepare_branch_dir(_command_text(argv), branch)
    else:
        trainer.prepare_run_dir(_command_text(argv))
    try:
        history = trainer.fit()
    except KeyboardInterrupt:
        print(f"\ninterrupted; the last finished epoch is in {run_dir / 'last.h5'}; continue "
              f"with --resume {run_dir}", file=sys.stderr)
        return 130
    best = max(history, key=lambda r: r["test_acc"])
    print(f"done: final test accuracy {100 * history[-1]['test_acc']:.2f}% (epoch "
          f"{history[-1]['epoch']}); best {100 * best['test_acc']:.2f}% (epoch {best['epoch']}); "
          f"files in {run_dir}")
    return 0


def _eval(a) -> int:
    from mininsnn import train as T

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
    loaded = []
    for f in files:                                    # check every file before the slow part
        loaded.append((f, T.read_training_checkpoint(f)))
    test_sets = {}
    for f, tree in loaded:
        cfg = T.validate_config({**tree["config"], "test_subset": a.test_subset})
        key = (cfg["dataset"], cfg["test_subset"])
        if key not in test_sets:
            (test_sets[key],) = T.load_data(cfg, a.data_dir, a.download, splits=("test",))
        net = T.build_net(cfg)
        net.load_state_dict(tree["model"])
        t0 = time.perf_counter()
        r = T.evaluate(net, test_sets[key], cfg, a.batch_size)
        print(f"{f}: epoch {tree['epoch']}, test accuracy {100 * r['acc']:.2f}% on {r['n']} "
              f"samples, test loss {r['loss']:.4f}  ({time.perf_counter() - t0:.1f} s)")
    return 0


def _plot(a) -> int:
    from mininsnn import plot as P

    written = P.plot_run(a.run_dir, out_dir=a.out, sample=a.sample, data_dir=a.data_dir,
                         raster=not a.no_raster, log=print)
    for f in written:
        print(f"wrote {f}")
    return 0


def _compare(a) -> int:
    from mininsnn import plot as P

    labels = None if a.labels is None else a.labels.split(",")
    print(f"wrote {P.plot_compare(a.run_dirs, a.out, labels, a.title)}")
    return 0


# ---------------------------------------------------------------------------------------------
# deploy: export and infer (mininsnn.deploy, docs/deploy.md)

def _frac_bits(text: str):
    """--frac-bits: 'max', one integer, or three comma-separated integers (one per LIF layer)."""
    if text == "max":
        return "max"
    try:
        vals = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'max', an integer or three integers, got "
                                         f"{text!r}") from None
    if len(vals) not in (1, 3):
        raise argparse.ArgumentTypeError(f"expected 'max', an integer or three integers, got "
                                         f"{text!r}")
    return vals[0] if len(vals) == 1 else vals


def _add_deploy_parsers(sub) -> None:
    src = ("a run folder (its best.h5), a training checkpoint, a pretrained model name "
           "(mnist-4bit, fmnist-4bit) or a .npz (pretrained or integer model) file")

    def representation(q):
        q.add_argument("--bits", type=_bits, help="weight bits for a full-precision model "
                       "(post-training quantization)")
        q.add_argument("--frac-bits", type=_frac_bits, default="max", dest="frac_bits",
                       help="fractional bits F of the membranes: 'max' (default: per layer the "
                            "largest the overflow proof admits), an integer, or F1,F2,F3")
        q.add_argument("--leak", choices=("multiply", "shift"), default="multiply",
                       help="leak as a fixed-point multiply (default) or v - (v >> k)")

    x = sub.add_parser("export", allow_abbrev=False, help="write an integer-only model (C99 or .npz)",
                       description="Convert a trained model to integers (docs/deploy.md) and write it. "
                                   "SRC is " + src + ".")
    x.add_argument("src", metavar="SRC", help=src)
    x.add_argument("--format", choices=("c", "npz"), default="c",
                   help="c: <name>.h + <name>.c (C99); npz: an integer model file")
    x.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
    x.add_argument("--name", help="file and C prefix (default from the model, e.g. mnist_4bit)")
    representation(x)

    i = sub.add_parser("infer", allow_abbrev=False, help="classify an IDX file or .npy array",
                       description="Classify images or event frames with the float or an integer "
                                   "engine; print accuracy (with --labels) and samples/s. SRC is "
                                   + src + ".")
    i.add_argument("src", metavar="SRC", help=src)
    i.add_argument("--input", required=True, metavar="FILE",
                   help="IDX file (.gz or raw) or .npy: uint8 images (N, H, W) or (N, C, H, W), "
                        "or event counts (N, T, C, H, W)")
    i.add_argument("--labels", metavar="FILE", help="IDX or .npy labels (N,) to print accuracy")
    i.add_argument("--engine", choices=("float", "int", "int-numpy"), default="int",
                   help="float: the training engine (eval mode); int: integer engine (Numba); "
                        "int-numpy: integer engine in pure NumPy")
    i.add_argument("--num-steps", type=int, dest="num_steps", help="time steps T (default: the "
                   "model's, 100)")
    i.add_argument("--batch-size", type=int, default=256, dest="batch_size")
    i.add_argument("--limit", type=int, help="first N samples only")
    representation(i)


def _deploy_source(src: str):
    """('float', state, config, label) or ('int', IntegerModel, None, label) of SRC."""
    from mininsnn import pretrained
    from mininsnn.deploy.modelfile import FORMAT, load_integer_model, read_npz

    path = Path(src)
    if src in pretrained.NAMES or (path.suffix == ".npz" and path.is_file()):
        if path.suffix == ".npz":
            try:
                import numpy as np
                with np.load(path, allow_pickle=False) as f:
                    is_int = "meta" in f.files and f'"format": "{FORMAT}"' in \
                        f["meta"].tobytes().decode("utf-8", "replace")
            except Exception:  # noqa: BLE001 -- read_npz below names what is wrong
                is_int = False
            if is_int:
                read_npz(path, FORMAT)
                return "int", load_integer_model(path), None, path.stem
        state, config, _ = pretrained.read_file(pretrained.path_of(src))
        return "float", state, config, src if src in pretrained.NAMES else path.stem
    from mininsnn import train as T
    if path.is_dir():
        ckpt = path / "best.h5" if (path / "best.h5").exists() else path / "last.h5"
        if not ckpt.exists():
            raise UsageError(f"{path} has no best.h5 or last.h5; pass a run folder, a checkpoint "
                             "file or a pretrained model name")
    elif path.is_file():
        ckpt = path
    else:
        raise UsageError(f"{src} is not a run folder, a checkpoint file or a pretrained model "
                         f"({', '.join(pretrained.NAMES)})")
    tree = T.read_training_checkpoint(ckpt)
    return "float", tree["model"], T.validate_config(tree["config"]), path.name


def _integer_model(kind, obj, config, a):
    from mininsnn.deploy.conversion import convert
    if kind == "int":
        if a.bits is not None or a.frac_bits != "max" or a.leak != "multiply":
            raise UsageError(f"{a.src} is already an integer model; drop --bits, --frac-bits "
                             "and --leak")
        return obj
    return convert(obj, config, bits=a.bits, frac_bits=a.frac_bits, leak=a.leak,
                   num_steps=getattr(a, "num_steps", None))


def _export(a) -> int:
    import re

    from mininsnn.deploy.cexport import export_c
    from mininsnn.deploy.modelfile import save_integer_model

    try:
        kind, obj, config, label = _deploy_source(a.src)
        model = _integer_model(kind, obj, config, a)
    except ValueError as e:
        raise UsageError(str(e)) from None
    name = a.name if a.name is not None else re.sub(r"[^a-z0-9_]", "_", label.lower())
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise UsageError(f"--name must be a C identifier (lowercase letters, digits, _), got "
                         f"{name!r}")
    out = Path(a.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)            # every check has passed
    print(model.describe())
    if a.format == "npz":
        save_integer_model(model, out / f"{name}.npz")
        print(f"wrote {out / (name + '.npz')}")
        return 0
    paths, const, state = export_c(model, out, name)
    print(f"wrote {', '.join(paths)}: weights and parameters {const} bytes (const), state "
          f"{state} bytes (RAM)")
    return 0


def _read_array(path_text: str, what: str):
    """An IDX (.gz or raw) or .npy file as an array; UsageError naming the file otherwise."""
    import numpy as np

    from mininsnn.data import read_idx
    path = Path(path_text)
    if not path.is_file():
        raise UsageError(f"--{what} {path}: no such file")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        return read_idx(path)
    except (ValueError, OSError, EOFError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"--{what} {path}: cannot read it as {'.npy' if path.suffix == '.npy' else 'IDX'}"
                         f" ({msg})") from None


def _float_io(state, config):
    """What the input checks need to know of a float model: input shape and range, classes, T."""
    from types import SimpleNamespace

    from mininsnn.deploy.conversion import INPUT_SHAPES, STATIC_DATASETS
    return SimpleNamespace(input_shape=INPUT_SHAPES[config["dataset"]], input_max=255,
                           static=config["dataset"] in STATIC_DATASETS,
                           num_classes=int(state["fc1.weight"].shape[0]),
                           num_steps=int(config["num_steps"]))


def _infer(a) -> int:
    import numpy as np

    from mininsnn.deploy import engine as npe

    for key in ("num_steps", "batch_size", "limit"):
        v = getattr(a, key)
        if v is not None and v < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be >= 1, got {v}")
    try:
        kind, obj, config, _ = _deploy_source(a.src)
        if a.engine == "float":
            if kind == "int":
                raise UsageError(f"{a.src} is an integer model; use --engine int or int-numpy")
            if a.bits is not None or a.frac_bits != "max" or a.leak != "multiply":
                raise UsageError("--bits, --frac-bits and --leak choose an integer "
                                 "representation; the float engine takes none")
            shape_model = _float_io(obj, config)
        else:
            shape_model = _integer_model(kind, obj, config, a)
    except ValueError as e:
        raise UsageError(str(e)) from None
    x = _read_array(a.input, "input")
    per = tuple(shape_model.input_shape)
    if a.limit is not None:
        x = x[:a.limit]
    if shape_model.static:
        if x.ndim == 3 and per[0] == 1:
            x = x[:, None]
        if x.ndim != 4 or x.shape[1:] != per:
            raise UsageError(f"--input {a.input}: expected images (N, {per[1]}, {per[2]}) or "
                             f"(N, {', '.join(map(str, per))}), got {x.shape}")
    else:
        if x.ndim != 5 or x.shape[2:] != per:
            raise UsageError(f"--input {a.input}: expected event counts (N, T, "
                             f"{', '.join(map(str, per))}), got {x.shape}")
    if x.dtype.kind not in "ui" or x.size == 0:
        raise UsageError(f"--input {a.input}: expected integers 0..{shape_model.input_max} "
                         f"(uint8 pixels or event counts), got dtype {x.dtype}"
                         + (" (empty)" if x.size == 0 else ""))
    lo, hi = int(x.min()), int(x.max())
    if lo < 0 or hi > shape_model.input_max:
        raise UsageError(f"--input {a.input}: values must lie in 0..{shape_model.input_max}, "
                         f"got {lo}..{hi}")
    y = None
    if a.labels is not None:
        y = _read_array(a.labels, "labels")
        if a.limit is not None:
            y = y[:a.limit]
        if y.ndim != 1 or y.shape[0] != x.shape[0] or y.dtype.kind not in "ui" or \
                (y.size and (y.min() < 0 or y.max() >= shape_model.num_classes)):
            raise UsageError(f"--labels {a.labels}: expected {x.shape[0]} integer labels in "
                             f"0..{shape_model.num_classes - 1}, got shape {y.shape} dtype "
                             f"{y.dtype}")
    T = a.num_steps if a.num_steps is not None else shape_model.num_steps
    if not shape_model.static:
        x = np.ascontiguousarray(x.transpose(1, 0, 2, 3, 4))     # (T, N, C, H, W)
        T = x.shape[0]
    N = x.shape[0] if shape_model.static else x.shape[1]
    if a.engine == "float":
        from mininsnn import train as Tr
        net = Tr.build_net(config)
        net.load_state_dict(obj)
        net.eval()

        def run(xb):
            xf = (xb / np.float32(255)).astype(np.float32) if shape_model.static else \
                xb.astype(np.float32)
            return net.forward(xf, num_steps=T if shape_model.static else None).sum(axis=0)
    elif a.engine == "int":
        from mininsnn.deploy import numba_engine as nbe

        def run(xb):
            return nbe.predict(shape_model, xb, T)
        run(x[:1] if shape_model.static else x[:, :1])          # compile before timing
    else:
        def run(xb):
            return npe.predict(shape_model, xb, T)
    preds = []
    t0 = time.perf_counter()
    try:
        for lo_ in range(0, N, a.batch_size):
            xb = x[lo_:lo_ + a.batch_size] if shape_model.static else x[:, lo_:lo_ + a.batch_size]
            preds.append(np.asarray(run(xb)).argmax(axis=1))
    except ValueError as e:
        raise UsageError(str(e).splitlines()[0]) from None
    dt = time.perf_counter() - t0
    pred = np.concatenate(preds)
    text = f"{N} samples, T={T}, engine {a.engine}: {N / dt:.1f} samples/s"
    if y is not None:
        text += f", accuracy {100 * float((pred == y).mean()):.2f}%"
    print(text)
    return 0


def main(argv=None) -> int:
    """Run the command line ``argv`` (default sys.argv[1:]); returns the exit code."""
    from mininsnn.train import ConfigError, TrainingError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        a, extra = build_parser().parse_known_args(argv)
        if extra:
            raise UsageError(f"mininsnn {a.command}: unrecognized arguments: {shlex.join(extra)}"
                             f" (see `mininsnn {a.command} --help`)")
        if a.command == "train":
            return _train(a, argv)
        if a.command == "eval":
            return _eval(a)
        if a.command == "compare":
            return _compare(a)
        if a.command == "export":
            return _export(a)
        if a.command == "infer":
            return _infer(a)
        return _plot(a)
    except SystemExit as e:                    # --help / --version
        return e.code if isinstance(e.code, int) else 0
    except (UsageError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
