"""Integer model files: one .npz of integer arrays plus JSON metadata, read with NumPy only.

    save_integer_model(model, "mnist4.npz")
    model = load_integer_model("mnist4.npz")

Entries: ``meta`` (UTF-8 JSON as uint8: format, version, leak, reset, input range, layers with their
shapes and F, the sha256 of every array) and per layer ``<name>.weight`` (int8/16 codes),
``<name>.sign`` (int8), ``<name>.bias`` and ``<name>.theta`` (int32). Loading checks the format,
every shape, dtype and range, the checksums, and proves the model again (the bounds depend only on
the integers), so a truncated, corrupted or edited file is a one-line :class:`ModelFileError`.
Writing is atomic (temporary file in the same folder, fsync, os.replace).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
import zlib

from typing import NamedTuple

import numpy as np

from mininsnn import rules
from mininsnn.atomic import write_bytes
from mininsnn.deploy import conversion as cv

__all__ = ["ModelFileError", "save_integer_model", "load_integer_model", 
           "read_npz", "npz_bytes", "FORMAT", "VERSION"]

FORMAT = "mininsnn-integer-model"
VERSION = 1


class ModelFileError(ValueError):
    """A model file that cannot be used: missing, truncated, corrupted, foreign or inconsistent."""


def _sha(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def npz_bytes(arrays: dict, meta: dict, compressed=False) -> bytes:
    meta = dict(meta, sha256={k: _sha(v) for k, v in arrays.items()})
    buf = io.BytesIO()
    save = np.savez_compressed if compressed else np.savez
    save(buf, meta=np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), np.uint8),
         **arrays)
    return buf.getvalue()


def read_npz(path, fmt):
    """(arrays, meta) of a file written by ``npz_bytes`` with meta["format"] == fmt; checks the
    checksums. ModelFileError naming the file for anything unreadable."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, zlib.error) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelFileError(f"{path}: not a readable .npz file (truncated or corrupted?): "
                             f"{msg}") from None
    if "meta" not in arrays or arrays["meta"].dtype != np.uint8 or arrays["meta"].ndim != 1:
        raise ModelFileError(f"{path}: no metadata; not a {fmt} file")
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ModelFileError(f"{path}: damaged metadata (not JSON)") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise ModelFileError(f"{path}: not a {fmt} file")
    if meta.get("version") != VERSION:
        raise ModelFileError(f"{path}: format version {meta.get('version')!r} is not supported "
                             f"(this mininsnn reads {VERSION})")
    sums = meta.get("sha256")
    if not isinstance(sums, dict) or set(sums) != set(arrays):
        raise ModelFileError(f"{path}: the array list does not match the metadata (damaged file)")
    for k, v in arrays.items():
        if _sha(v) != sums[k]:
            raise ModelFileError(f"{path}: array {k!r} fails its checksum (damaged file)")
    return arrays, meta


def model_arrays_meta(model: cv.IntegerModel):
    """The arrays and JSON metadata that describe ``model``."""
    arrays, layers = {}, []
    for L in model.layers:
        arrays[f"{L.name}.weight"] = L.weight
        arrays[f"{L.name}.sign"] = L.sign.astype(np.int8)
        arrays[f"{L.name}.bias"] = L.bias.astype(np.int32)
        arrays[f"{L.name}.theta"] = L.theta.astype(np.int32)
        if L.drive is not None:            # a synaptic layer
            arrays[f"{L.name}.drive"] = L.drive.astype(np.int32)
        if L.rec is not None:              # a recurrent layer's feedback W_r (O, O)
            arrays[f"{L.name}.rec"] = L.rec.astype(np.int32)
        layers.append({"name": L.name, "kind": L.kind, "stride": L.stride,
                       "in_shape": list(L.in_shape), "out_shape": list(L.out_shape),
                       "frac_bits": L.frac_bits, "in_max": L.in_max})
        if L.padding:                      # only when used: the paper's files stay as they were
            layers[-1]["padding"] = L.padding
        if L.leak is not None:             # its own beta
            layers[-1]["leak"] = list(L.leak)
    meta = {"format": FORMAT, "version": VERSION, "leak": list(model.leak), "reset": model.reset,
            "input_shape": list(model.input_shape), "input_max": model.input_max,
            "static": model.static, "num_steps": model.num_steps, "max_steps": model.max_steps,
            "layers": layers, "model": model.meta}
    if not model.delay:                    # only when used: the paper's files stay as they were
        meta["reset_delay"] = False
    if model.alpha_leak is not None:
        meta["alpha_leak"] = list(model.alpha_leak)
    return arrays, meta


def save_integer_model(model: cv.IntegerModel, path) -> None:
    """Write ``model`` to ``path`` (.npz), atomically."""
    arrays, meta = model_arrays_meta(model)
    write_bytes(path, npz_bytes(arrays, meta))


def _int(v, lo, hi, what, path):
    """``v`` if an integer in lo..hi (mininsnn.rules.integer), else ModelFileError naming the file."""
    try:
        return rules.integer(lo, hi)(v)
    except rules.RuleError as e:
        raise ModelFileError(f"{path}: {what} {e}") from None


def _leak(leak, path, what):
    """("multiply", Q, beta_q) or ("shift", k, 0) from a file's list, checked."""
    if not (isinstance(leak, list) and len(leak) == 3 and leak[0] in ("multiply", "shift")):
        raise ModelFileError(f"{path}: bad {what} {leak!r}")
    _int(leak[1], 1, 30, f"{what} shift", path)
    _int(leak[2], 0, 2 ** leak[1] if leak[0] == "multiply" else 0, f"{what} beta_q", path)
    return tuple(leak)


class _Header(NamedTuple):
    """The model-wide fields of a file's metadata, checked."""

    leak: tuple
    reset: str
    input_max: int
    num_steps: int
    max_steps: int | None
    shape: tuple
    static: bool
    specs: list
    delay: bool
    alpha_leak: tuple | None


def _header(meta, path):
    """The checked model-wide fields of ``meta`` (ModelFileError naming ``path`` otherwise)."""
    try:
        leak = meta["leak"]
        if not (isinstance(leak, list) and len(leak) == 3 and leak[0] in ("multiply", "shift")):
            raise ModelFileError(f"{path}: bad leak {leak!r}")
        _int(leak[1], 1, 30, "the leak shift", path)
        _int(leak[2], 0, 2 ** leak[1] if leak[0] == "multiply" else 0, "beta_q", path)
        if meta["reset"] not in rules.RESETS:
            raise ModelFileError(f"{path}: bad reset {meta['reset']!r}")
        input_max = _int(meta["input_max"], 1, 255, "input_max", path)
        num_steps = _int(meta["num_steps"], 1, 2 ** 31 - 1, "num_steps", path)
        max_steps = meta["max_steps"]
        if max_steps is not None:
            _int(max_steps, 1, 2 ** 31 - 1, "max_steps", path)
        shape = tuple(_int(d, 1, 4096, "input_shape", path) for d in meta["input_shape"])
        if not 1 <= len(shape) <= 3:
            raise ModelFileError(f"{path}: input_shape must be (C, H, W), (H, W) or (F,), got "
                                 f"{shape}")
        static = bool(meta["static"])
        specs = meta["layers"]
        if not specs or any(s["kind"] not in ("conv", "linear") for s in specs):
            raise ModelFileError(f"{path}: expected a list of conv and linear layers")
    except (KeyError, TypeError) as e:
        raise ModelFileError(f"{path}: incomplete metadata ({e})") from None
    delay = meta.get("reset_delay", True)
    if delay not in (True, False):
        raise ModelFileError(f"{path}: bad reset_delay {delay!r}")
    alpha_leak = meta.get("alpha_leak")
    if alpha_leak is not None:
        alpha_leak = _leak(alpha_leak, path, "alpha_leak")
    return _Header(tuple(leak), meta["reset"], input_max, num_steps, max_steps, shape, static,
                   specs, bool(delay), alpha_leak)


def _layer_arrays(arrays, name, path):
    """(W, sign, bias, theta) of layer ``name``, dtypes and shapes checked."""
    keys = [f"{name}.{k}" for k in ("weight", "sign", "bias", "theta")]
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise ModelFileError(f"{path}: missing array {missing[0]!r}")
    W, sign, bias, theta = (arrays[k] for k in keys)
    if W.dtype not in (np.int8, np.int16, np.int32) or sign.dtype != np.int8 or \
            bias.dtype != np.int32 or theta.dtype != np.int32:
        raise ModelFileError(f"{path}: {name}: wrong dtypes")
    O = W.shape[0]
    if sign.shape != (O,) or bias.shape != (O,) or theta.shape != (O,) or \
            not np.isin(sign, (-1, 0, 1)).all() or (theta < 0).any():
        raise ModelFileError(f"{path}: {name}: sign/bias/theta inconsistent with the weights")
    return W, sign, bias, theta


def _out_shape(spec, W, prev, path):
    """(stride, out_shape) of a layer with weight W and input shape ``prev``, checked."""
    name, O = spec["name"], W.shape[0]
    if spec["kind"] == "conv":
        stride = _int(spec["stride"], 1, 64, "stride", path)
        p = _int(spec.get("padding", 0), 0, 64, "padding", path)     # absent in older files: 0
        if W.ndim != 4 or len(prev) != 3 or W.shape[1] != prev[0]:
            raise ModelFileError(f"{path}: {name}.weight has shape {W.shape}, input {prev}")
        out = (O, (prev[1] + 2 * p - W.shape[2]) // stride + 1,
               (prev[2] + 2 * p - W.shape[3]) // stride + 1)
        if min(out) < 1:
            raise ModelFileError(f"{path}: {name}: kernel larger than its input")
    else:
        stride = 1
        if W.ndim != 2 or W.shape[1] != int(np.prod(prev)):
            raise ModelFileError(f"{path}: {name}.weight has shape {W.shape}, input {prev}")
        out = (O,)
    if list(out) != list(spec["out_shape"]) or list(prev) != list(spec["in_shape"]):
        raise ModelFileError(f"{path}: {name}: shapes in the metadata do not match the arrays")
    return stride, out


def _file_layer(arrays, spec, prev, in_max, head: _Header, path):
    """The IntLayer of ``spec`` (input shape ``prev``), its overflow proof redone."""
    name = spec["name"]
    W, sign, bias, theta = _layer_arrays(arrays, name, path)
    F = _int(spec["frac_bits"], cv.FRAC_BITS_RANGE[0], 30, "frac_bits", path)
    stride, out = _out_shape(spec, W, prev, path)
    drive = arrays.get(f"{name}.drive")
    if drive is not None and (drive.dtype != np.int32 or drive.shape != sign.shape or
                              head.alpha_leak is None):
        raise ModelFileError(f"{path}: {name}.drive inconsistent with the layer or the metadata")
    rec = arrays.get(f"{name}.rec")
    if rec is not None and (rec.dtype != np.int32 or rec.shape != sign.shape * 2 or len(out) != 1):
        raise ModelFileError(f"{path}: {name}.rec inconsistent with the layer")
    alpha = None if head.alpha_leak is None else (
        float(cv.beta_eff_of(head.alpha_leak)), 0.5 if head.alpha_leak[0] == "multiply" else 1.0)
    own = None if spec.get("leak") is None else _leak(spec["leak"], path, f"{name}: leak")
    leak = own or head.leak
    terms = cv.ProofTerms(float(cv.beta_eff_of(leak)), 0.5 if leak[0] == "multiply" else 1.0,
                          head.reset, head.max_steps, alpha)
    ints = ([int(v) for v in sign], [int(v) for v in bias], [int(v) for v in theta])
    bounds = cv.prove_layer(W.astype(np.int64), in_max, ints, F, terms,
                            None if drive is None else [int(v) for v in drive],
                            None if rec is None else rec.astype(np.int64))
    try:
        cv.check_bounds(name, bounds, leak, F)
    except cv.OverflowProofError as err:
        raise ModelFileError(f"{path}: {err}") from None
    return cv.IntLayer(name=name, kind=spec["kind"], weight=W, stride=stride,
                       in_shape=tuple(prev), out_shape=out, sign=sign, bias=bias, theta=theta,
                       frac_bits=F, in_max=in_max,
                       acc_bits=16 if bounds["acc"] <= 2 ** 15 - 1 else 32, bounds=bounds,
                       padding=int(spec.get("padding", 0)), drive=drive, leak=own, rec=rec)


def model_from_arrays(arrays, meta, path="model"):
    """An IntegerModel from file contents, every field checked and the overflow proof redone."""
    head = _header(meta, path)
    layers, prev, expected = [], head.shape, set()
    for i, spec in enumerate(head.specs):
        try:
            name = spec["name"]
            expected.update(f"{name}.{k}" for k in ("weight", "sign", "bias", "theta", "drive", "rec")
                            if f"{name}.{k}" in arrays or k not in ("drive", "rec"))
            layers.append(_file_layer(arrays, spec, prev, head.input_max if i == 0 else 1, head,
                                      path))
        except (KeyError, TypeError) as e:
            raise ModelFileError(f"{path}: incomplete metadata ({e})") from None
        prev = layers[-1].out_shape
    extra = sorted(set(arrays) - expected)
    if extra:
        raise ModelFileError(f"{path}: unexpected array {extra[0]!r}")
    return cv.IntegerModel(layers=layers, leak=head.leak, reset=head.reset,
                           input_shape=head.shape, input_max=head.input_max, static=head.static,
                           num_steps=head.num_steps, max_steps=head.max_steps,
                           meta=meta.get("model", {}), delay=head.delay,
                           alpha_leak=head.alpha_leak)


def load_integer_model(path) -> cv.IntegerModel:
    """Read a file written by :func:`save_integer_model` (see the module docstring)."""
    arrays, meta = read_npz(path, FORMAT)
    return model_from_arrays(arrays, meta, os.fspath(path))
