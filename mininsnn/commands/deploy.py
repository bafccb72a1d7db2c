"""``mininsnn export`` and ``mininsnn infer``: a trained model as integers (docs/deploy.md).

    mininsnn export mnist-4bit --format c --out build/         # integer-only C99
    mininsnn infer mnist-4bit --input t10k-images-idx3-ubyte.gz --labels t10k-labels-idx1-ubyte.gz
    mininsnn infer model.nir --input x.npy --engine float --dt 1e-4   # a NIR graph

The model is any source of mininsnn.sources.resolve; bad input is a one-line UsageError before
anything is written.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from mininsnn import nir
from mininsnn.commands.args import UsageError, bits, check_positive, frac_bits
from mininsnn.config import validate_config
from mininsnn.data import read_idx
from mininsnn.deploy import engine as npe
from mininsnn.deploy import numba_engine as nbe
from mininsnn.deploy.cexport import export_c
from mininsnn.deploy.chain import agreement, convert_network, random_inputs
from mininsnn.deploy.conversion import INPUT_SHAPES, STATIC_DATASETS, convert
from mininsnn.deploy.modelfile import save_integer_model
from mininsnn.sources import resolve
from mininsnn.spec import output_size
from mininsnn.train import build_net, forward

__all__ = ["export_args", "export", "infer_args", "infer"]

_SRC = ("a run folder (its best.h5), a training checkpoint, a pretrained model name "
        "(mnist-4bit, fmnist-4bit), a .npz (pretrained or integer model) or a .nir file")


def _source_args(q) -> None:
    q.add_argument("src", metavar="SRC", help=_SRC)
    q.add_argument("--dt", type=float, default=nir.DEFAULT_DT,
                   help=f"time step in seconds of a .nir SRC (default {nir.DEFAULT_DT:g})")


def _representation_args(q) -> None:
    q.add_argument("--bits", type=bits, help="weight bits for a full-precision model "
                   "(post-training quantization)")
    q.add_argument("--frac-bits", type=frac_bits, default="max", dest="frac_bits",
                   help="fractional bits F of the membranes: 'max' (default: per layer the "
                        "largest the overflow proof admits), an integer, or F1,F2,F3")
    q.add_argument("--leak", choices=("multiply", "shift"), default="multiply",
                   help="leak as a fixed-point multiply (default) or v - (v >> k)")
    q.add_argument("--input-max", type=int, default=255, dest="input_max", help="a float "
                   "network's inputs are integers 0..this (default 255: pixels or event counts; "
                   "1: 0/1 spikes)")


def export_args(x) -> None:
    _source_args(x)
    x.add_argument("--format", choices=("c", "npz", "nir"), default="c",
                   help="c: <name>.h + <name>.c (C99); npz: an integer model file; nir: the "
                        "float network as a NIR graph, <name>.nir (docs/nir.md; extra 'nir')")
    x.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
    x.add_argument("--name", help="file and C prefix (default from the model, e.g. mnist_4bit)")
    x.add_argument("--num-steps", type=int, dest="num_steps", help="time steps T the overflow "
                   "proof covers when beta = 1 (IF neurons), and of the agreement check of a "
                   "float network (default: the model's, 100)")
    x.add_argument("--samples", type=int, default=64, help="random inputs on which a float "
                   "network (a .nir SRC) and its integer model are compared (default 64)")
    _representation_args(x)


def infer_args(i) -> None:
    _source_args(i)
    i.add_argument("--input", required=True, metavar="FILE",
                   help="IDX file (.gz or raw) or .npy: uint8 images (N, H, W) or (N, C, H, W), "
                        "or event counts (N, T, C, H, W); for a .nir SRC any numbers (N, ...) "
                        "or (N, T, ...)")
    i.add_argument("--labels", metavar="FILE", help="IDX or .npy labels (N,) to print accuracy")
    i.add_argument("--engine", choices=("float", "int", "int-numpy"), default="int",
                   help="float: the training engine (eval mode); int: integer engine (Numba); "
                        "int-numpy: integer engine in pure NumPy")
    i.add_argument("--num-steps", type=int, dest="num_steps", help="time steps T (default: the "
                   "model's, 100)")
    i.add_argument("--batch-size", type=int, default=256, dest="batch_size")
    i.add_argument("--limit", type=int, help="first N samples only")
    _representation_args(i)


def _resolve(a):
    return resolve(a.src, dt=a.dt, read_nir=nir.read_nir)


def _integer_model(found, a):
    """The IntegerModel of a resolved source, converted with the representation flags."""
    if found.kind == "int":
        if a.bits is not None or a.frac_bits != "max" or a.leak != "multiply":
            raise UsageError(f"{a.src} is already an integer model; drop --bits, --frac-bits "
                             "and --leak")
        return found.model
    kw = dict(bits=a.bits, frac_bits=a.frac_bits, leak=a.leak,
              num_steps=getattr(a, "num_steps", None), input_max=getattr(a, "input_max", 255))
    if found.kind == "network":     # a graph without a data set takes frames of event counts
        static = None if (getattr(found.model, "config", None) or {}).get("dataset") else False
        return convert_network(found.model, static=static, **kw)
    spec = found.config.get("model")
    if spec is None:                 # the paper's network as a state dict
        return convert(found.model, found.config, **kw)
    net = build_net(validate_config(found.config))      # a run of a spec: its layer list
    net.load_state_dict(found.model)
    if spec.get("input") == "rows":     # an image read row by row: H frames of C * W pixels
        return convert_network(net.eval(), static=False, frame_scale=1.0 / 255, **kw)
    return convert_network(net.eval(), **kw)


def _out_folder(a) -> Path:
    out = Path(a.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    return out


def export(a, argv) -> int:
    check_positive(a, ("num_steps", "samples"))
    try:
        found = _resolve(a)
        if a.format == "nir":
            return _export_nir(a, found)
        model = _integer_model(found, a)
    except ValueError as e:
        raise UsageError(str(e)) from None
    name = a.name if a.name is not None else re.sub(r"[^a-z0-9_]", "_", found.label.lower())
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise UsageError(f"--name must be a C identifier (lowercase letters, digits, _), got "
                         f"{name!r}")
    out = _out_folder(a)
    out.mkdir(parents=True, exist_ok=True)            # every check has passed
    print(model.describe())
    if found.kind == "network":                       # post-training quantization: how close
        T = a.num_steps or model.num_steps
        same, cls = agreement(found.model, model, random_inputs(model, a.samples, T), T)
        print(f"agreement float vs integer on {a.samples} random inputs, T={T}: identical output "
              f"spike counts {100 * same:.1f}%, identical predicted class {100 * cls:.1f}%")
    if a.format == "npz":
        save_integer_model(model, out / f"{name}.npz")
        print(f"wrote {out / (name + '.npz')}")
        return 0
    paths, const, state = export_c(model, out, name)
    print(f"wrote {', '.join(paths)}: weights and parameters {const} bytes (const), state "
          f"{state} bytes (RAM)")
    return 0


def _export_nir(a, found) -> int:
    """The float network of SRC as OUT/<name>.nir (mininsnn.nir.write_nir, atomic)."""
    if found.kind == "int":
        raise UsageError(f"{a.src} is an integer model; NIR holds the float network: export its "
                         "run folder, checkpoint or pretrained name")
    if a.bits is not None or a.frac_bits != "max" or a.leak != "multiply":
        raise UsageError("--bits, --frac-bits and --leak choose an integer representation; "
                         "--format nir writes the float network and takes none")
    out = _out_folder(a)
    print(f"wrote {nir.write_nir(out / f'{a.name or found.label}.nir', found.model, found.config)}")
    return 0


def _read_array(path_text: str, what: str):
    """An IDX (.gz or raw) or .npy file as an array; UsageError naming the file otherwise."""
    path = Path(path_text)
    if not path.is_file():
        raise UsageError(f"--{what} {path}: no such file")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        return read_idx(path)
    except (ValueError, OSError, EOFError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        kind = ".npy" if path.suffix == ".npy" else "IDX"
        raise UsageError(f"--{what} {path}: cannot read it as {kind} ({msg})") from None


def _float_io(found):
    """What the input checks need to know of a float model: per-sample input shape, the largest
    input (None: any numbers, fed as they are), static (images at every step) or not (None:
    decided by the input's rank), classes, T."""
    config = found.config or {}
    if found.kind == "float" and config.get("model") is not None:      # a run of a spec
        classes = output_size(config["model"])
    elif found.kind == "float":
        classes = int(found.model["fc1.weight"].shape[0])
    else:                               # a Network (read from NIR): its output size
        net = found.model.eval()
        probe = net.forward(np.zeros((1, *net.input_shape), net.dtype), num_steps=1)
        classes = int(np.prod(probe.shape[2:]))
        if config.get("dataset") not in INPUT_SHAPES:        # not a mininsnn model
            return SimpleNamespace(input_shape=net.input_shape, input_max=None, static=None,
                                   num_classes=classes, num_steps=100)
    return SimpleNamespace(input_shape=INPUT_SHAPES[config["dataset"]], input_max=255,
                           static=config["dataset"] in STATIC_DATASETS,
                           num_classes=classes, num_steps=int(config["num_steps"]))


def _model_io(found, a):
    """What the input checks need to know of the model the engine runs (an IntegerModel for
    the integer engines)."""
    if a.engine != "float":
        return _integer_model(found, a)
    if found.kind == "int":
        raise UsageError(f"{a.src} is an integer model; use --engine int or int-numpy")
    if a.bits is not None or a.frac_bits != "max" or a.leak != "multiply":
        raise UsageError("--bits, --frac-bits and --leak choose an integer "
                         "representation; the float engine takes none")
    return _float_io(found)


def _checked_input(a, io):
    """(samples, static): --input as (N, ...) static or (N, T, ...) per step, checked."""
    x = _read_array(a.input, "input")
    per = tuple(io.input_shape)
    if a.limit is not None:
        x = x[:a.limit]
    if io.input_max is None:                          # a NIR graph: any numbers
        shape = ", ".join(map(str, per))
        if (x.shape[1:] != per and x.shape[2:] != per) or x.dtype.kind not in "uif" or \
                x.size == 0:
            raise UsageError(f"--input {a.input}: expected numbers (N, {shape}) or (N, T, "
                             f"{shape}), got {x.shape} dtype {x.dtype}")
        return x, x.shape[1:] == per
    if io.static:
        if x.ndim == 3 and len(per) == 3 and per[0] == 1:
            x = x[:, None]
        if x.ndim != len(per) + 1 or x.shape[1:] != per:
            raise UsageError(f"--input {a.input}: expected images "
                             + (f"(N, {per[1]}, {per[2]}) or " if len(per) == 3 else "")
                             + f"(N, {', '.join(map(str, per))}), got {x.shape}")
    elif x.ndim != len(per) + 2 or x.shape[2:] != per:
        raise UsageError(f"--input {a.input}: expected event counts (N, T, "
                         f"{', '.join(map(str, per))}), got {x.shape}")
    if x.dtype.kind not in "ui" or x.size == 0:
        raise UsageError(f"--input {a.input}: expected integers 0..{io.input_max} "
                         f"(uint8 pixels or event counts), got dtype {x.dtype}"
                         + (" (empty)" if x.size == 0 else ""))
    lo, hi = int(x.min()), int(x.max())
    if lo < 0 or hi > io.input_max:
        raise UsageError(f"--input {a.input}: values must lie in 0..{io.input_max}, "
                         f"got {lo}..{hi}")
    return x, io.static


def _checked_labels(a, io, n: int):
    """The --labels (N,) integers in 0..classes-1, or None without --labels."""
    if a.labels is None:
        return None
    y = _read_array(a.labels, "labels")
    if a.limit is not None:
        y = y[:a.limit]
    if y.ndim != 1 or y.shape[0] != n or y.dtype.kind not in "ui" or \
            (y.size and (y.min() < 0 or y.max() >= io.num_classes)):
        raise UsageError(f"--labels {a.labels}: expected {n} integer labels in "
                         f"0..{io.num_classes - 1}, got shape {y.shape} dtype {y.dtype}")
    return y


def _engine(a, found, io, static: bool, T: int):
    """run(batch) -> (B, classes) counts of the chosen engine (the integer one compiled)."""
    if a.engine == "int":
        return lambda xb: nbe.predict(io, xb, T)
    if a.engine == "int-numpy":
        return lambda xb: npe.predict(io, xb, T)
    if found.kind == "network":
        net = found.model
    else:
        net = build_net(validate_config(found.config))
        net.load_state_dict(found.model)
    net.eval()
    scale = static and io.input_max is not None                  # pixels -> [0, 1]

    def run(xb):
        xf = (xb / np.float32(255)).astype(net.dtype) if scale else xb.astype(net.dtype)
        out = (forward(net, xf, T) if scale                 # images (a spec may read rows)
               else net.forward(xf, num_steps=T if static else None)).sum(axis=0)
        return out.reshape(out.shape[0], -1)
    return run


def infer(a, argv) -> int:
    check_positive(a, ("num_steps", "batch_size", "limit"))
    try:
        found = _resolve(a)
        io = _model_io(found, a)
    except ValueError as e:
        raise UsageError(str(e)) from None
    x, static = _checked_input(a, io)
    y = _checked_labels(a, io, x.shape[0])
    T = a.num_steps if a.num_steps is not None else io.num_steps
    if not static:
        x = np.ascontiguousarray(np.moveaxis(x, 1, 0))           # (T, N, ...)
        T = x.shape[0]
    N = x.shape[0] if static else x.shape[1]
    run = _engine(a, found, io, static, T)
    if a.engine == "int":
        run(x[:1] if static else x[:, :1])                       # compile before timing
    preds = []
    t0 = time.perf_counter()
    try:
        for lo in range(0, N, a.batch_size):
            xb = x[lo:lo + a.batch_size] if static else x[:, lo:lo + a.batch_size]
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
