"""``mininsnn export`` and ``mininsnn infer``: a trained model as integers (docs/deploy.md).

    mininsnn export mnist-4bit --format c --out build/         # integer-only C99
    mininsnn infer mnist-4bit --input t10k-images-idx3-ubyte.gz --labels t10k-labels-idx1-ubyte.gz

Registered in mininsnn.cli.COMMANDS; bad input is a one-line UsageError before anything is written.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from mininsnn.cli import UsageError, _bits

__all__ = ["export_args", "export", "infer_args", "infer"]


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


_SRC = ("a run folder (its best.h5), a training checkpoint, a pretrained model name "
        "(mnist-4bit, fmnist-4bit) or a .npz (pretrained or integer model) file")


def _representation_args(q) -> None:
    q.add_argument("--bits", type=_bits, help="weight bits for a full-precision model "
                   "(post-training quantization)")
    q.add_argument("--frac-bits", type=_frac_bits, default="max", dest="frac_bits",
                   help="fractional bits F of the membranes: 'max' (default: per layer the "
                        "largest the overflow proof admits), an integer, or F1,F2,F3")
    q.add_argument("--leak", choices=("multiply", "shift"), default="multiply",
                   help="leak as a fixed-point multiply (default) or v - (v >> k)")


def export_args(x) -> None:
    x.add_argument("src", metavar="SRC", help=_SRC)
    x.add_argument("--format", choices=("c", "npz", "nir"), default="c",
                   help="c: <name>.h + <name>.c (C99); npz: an integer model file; nir: the "
                        "float network as a NIR graph, <name>.nir (docs/nir.md; extra 'nir')")
    x.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
    x.add_argument("--name", help="file and C prefix (default from the model, e.g. mnist_4bit)")
    _representation_args(x)


def infer_args(i) -> None:
    i.add_argument("src", metavar="SRC", help=_SRC)
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
    _representation_args(i)


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
    from mininsnn.config import validate_config
    from mininsnn.runs import read_training_checkpoint
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
    tree = read_training_checkpoint(ckpt)
    return "float", tree["model"], validate_config(tree["config"]), path.name


def _integer_model(kind, obj, config, a):
    from mininsnn.deploy.conversion import convert
    if kind == "int":
        if a.bits is not None or a.frac_bits != "max" or a.leak != "multiply":
            raise UsageError(f"{a.src} is already an integer model; drop --bits, --frac-bits "
                             "and --leak")
        return obj
    return convert(obj, config, bits=a.bits, frac_bits=a.frac_bits, leak=a.leak,
                   num_steps=getattr(a, "num_steps", None))


def export(a, argv) -> int:
    import re

    from mininsnn.deploy.cexport import export_c
    from mininsnn.deploy.modelfile import save_integer_model

    try:
        kind, obj, config, label = _deploy_source(a.src)
        if a.format == "nir":
            return _export_nir(a, kind, obj, config, label)
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


def _export_nir(a, kind, obj, config, label) -> int:
    """The float network of SRC as OUT/<name>.nir (mininsnn.nir.write_nir, atomic)."""
    from mininsnn.nir import write_nir
    if kind == "int":
        raise UsageError(f"{a.src} is an integer model; NIR holds the float network: export its "
                         "run folder, checkpoint or pretrained name")
    if a.bits is not None or a.frac_bits != "max" or a.leak != "multiply":
        raise UsageError("--bits, --frac-bits and --leak choose an integer representation; "
                         "--format nir writes the float network and takes none")
    out = Path(a.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    print(f"wrote {write_nir(out / f'{a.name or label}.nir', obj, config)}")
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


def infer(a, argv) -> int:
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
        from mininsnn.config import validate_config
        from mininsnn.train import build_net
        net = build_net(validate_config(config))
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
