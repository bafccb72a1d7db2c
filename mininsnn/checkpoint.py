"""Checkpoints: a nested tree of Python values saved to one HDF5 file, atomically.

A tree is a dict (str keys) whose values are trees or leaves. Leaves and how they are stored:

    dict            -> group, kind "dict", insertion order kept (keys: non-empty str, not ".",
                       without "/" or NUL)
    list / tuple    -> group, kind "list" / "tuple", members named "0", "1", ...
    np.ndarray      -> dataset, kind "ndarray" (numeric or bool dtype; shape and dtype kept)
    NumPy scalar    -> 0-d dataset, kind "npscalar" (dtype kept, e.g. np.float32)
    bool            -> kind "bool";  int -> kind "int" (int64, or a decimal string if larger,
                       as in the 128-bit state of np.random.PCG64);  float -> kind "float" (float64)
    str             -> kind "str" (UTF-8; kind "strbytes", a uint8 array, if it holds NUL)
    None            -> kind "none"

The root group carries ``format = "mininsnn-checkpoint"`` and ``format_version``; loading checks
both, so a foreign HDF5 file, a truncated file or a file from a newer mininsnn gives a
:class:`CheckpointError` (a ValueError) naming the file.

Writing is atomic: the tree goes to a temporary file in the destination folder, which is flushed,
fsync'ed and then renamed over the destination with ``os.replace``. An exception while writing
(including KeyboardInterrupt, and OSError for a full disk or an I/O error, whatever HDF5 raised)
removes the temporary file and leaves any previous checkpoint at ``path`` untouched; a kill -9
leaves the temporary file ``.NAME.XXXXXXXX.tmp`` behind (mininsnn.runs removes those).
"""
from __future__ import annotations

import errno
import io
import os

import h5py
import numpy as np

from mininsnn.atomic import atomic_file

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "FORMAT", "FORMAT_VERSION"]

FORMAT = "mininsnn-checkpoint"
FORMAT_VERSION = 1

_INT64_MIN, _INT64_MAX = -(2 ** 63), 2 ** 63 - 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: truncated, foreign, or from a newer format."""


# ---------------------------------------------------------------------------------------------
# writing

def _write_node(parent: h5py.Group, key: str, value, where: str) -> None:
    """Store ``value`` under ``parent[key]``; ``where`` is its path in the tree, for errors."""
    if isinstance(value, dict):
        grp = parent.create_group(key, track_order=True)
        grp.attrs["kind"] = "dict"
        _write_items(grp, value, where)
    elif isinstance(value, (list, tuple)):
        grp = parent.create_group(key, track_order=True)
        grp.attrs["kind"] = "tuple" if isinstance(value, tuple) else "list"
        for i, item in enumerate(value):
            _write_node(grp, str(i), item, f"{where}[{i}]")
    elif isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufc":
            raise ValueError(f"checkpoint value {where}: arrays of dtype {value.dtype} "
                             "cannot be stored (numeric or bool only)")
        ds = parent.create_dataset(key, data=value)
        ds.attrs["kind"] = "ndarray"
    elif isinstance(value, np.generic):
        if value.dtype.kind not in "biufc":
            raise ValueError(f"checkpoint value {where}: NumPy scalar of dtype {value.dtype} "
                             "cannot be stored")
        ds = parent.create_dataset(key, data=value)
        ds.attrs["kind"] = "npscalar"
    elif isinstance(value, bool):                       # before int: bool is an int subclass
        ds = parent.create_dataset(key, data=np.bool_(value))
        ds.attrs["kind"] = "bool"
    elif isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            ds = parent.create_dataset(key, data=np.int64(value))
            ds.attrs["kind"] = "int"
        else:
            ds = parent.create_dataset(key, data=str(value), dtype=h5py.string_dtype())
            ds.attrs["kind"] = "bigint"
    elif isinstance(value, float):
        ds = parent.create_dataset(key, data=np.float64(value))
        ds.attrs["kind"] = "float"
    elif isinstance(value, str):
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"checkpoint value {where}: string is not valid Unicode") from None
        if "\x00" in value:                             # HDF5 strings end at NUL: keep bytes
            ds = parent.create_dataset(key, data=np.frombuffer(raw, dtype=np.uint8))
            ds.attrs["kind"] = "strbytes"
        else:
            ds = parent.create_dataset(key, data=value, dtype=h5py.string_dtype())
            ds.attrs["kind"] = "str"
    elif value is None:
        ds = parent.create_dataset(key, data=np.int8(0))
        ds.attrs["kind"] = "none"
    else:
        raise ValueError(f"checkpoint value {where}: cannot store an object of type "
                         f"{type(value).__name__}")


def _write_items(grp: h5py.Group, tree: dict, where: str) -> None:
    for key, value in tree.items():
        if not isinstance(key, str) or not key or "/" in key or "\x00" in key or key == ".":
            raise ValueError(f"checkpoint key {key!r} in {where or 'the root'} must be a "
                             "non-empty string without '/' or NUL, other than '.'")
        _write_node(grp, key, value, f"{where}/{key}")


def _write_file(tmp: str, tree: dict) -> None:
    """The HDF5 file ``tmp`` holding ``tree``. The file is built in memory and written to disk with
    one plain write, so a full disk or an I/O error is the OSError of that write, with its errno.
    (Written by HDF5 itself, a failed write surfaced as RuntimeError at flush or close, and on a
    full tmpfs HDF5 could crash the process with a segmentation fault while closing the file.)"""
    image = io.BytesIO()
    with h5py.File(image, "w", track_order=True) as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        _write_items(f, tree, "")
    _write_bytes(tmp, image.getbuffer())


def _write_bytes(path: str, data) -> None:
    with open(path, "wb") as out:
        out.write(data)


def save_checkpoint(path, tree: dict) -> None:
    """Write ``tree`` (a dict) to the HDF5 file ``path`` atomically (see the module docstring)."""
    if not isinstance(tree, dict):
        raise ValueError("a checkpoint tree must be a dict")
    with atomic_file(path) as tmp:
        _write_file(tmp, tree)


# ---------------------------------------------------------------------------------------------
# reading

def _read_node(node, path: str):
    kind = node.attrs.get("kind")
    if isinstance(kind, bytes):
        kind = kind.decode()
    if isinstance(node, h5py.Group):
        if kind == "dict":
            return {k: _read_node(node[k], path) for k in node.keys()}
        if kind in ("list", "tuple"):
            items = [_read_node(node[str(i)], path) for i in range(len(node))]
            return tuple(items) if kind == "tuple" else items
    else:
        if kind == "ndarray":
            return np.array(node[()])
        if kind == "npscalar":
            return node[()]
        if kind == "bool":
            return bool(node[()])
        if kind == "int":
            return int(node[()])
        if kind == "bigint":
            return int(node.asstr()[()])
        if kind == "float":
            return float(node[()])
        if kind == "str":
            return node.asstr()[()]
        if kind == "strbytes":
            return np.asarray(node[()], dtype=np.uint8).tobytes().decode("utf-8")
        if kind == "none":
            return None
    raise CheckpointError(f"{path}: unrecognised entry {node.name!r} (kind {kind!r}); "
                          "the file is damaged or not a mininsnn checkpoint")


def load_checkpoint(path) -> dict:
    """Read a tree written by :func:`save_checkpoint`. Raises CheckpointError naming the file
    when it is missing, truncated, not HDF5, not a mininsnn checkpoint or of a newer format."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            raise CheckpointError(f"{path}: cannot read it: {os.strerror(e.errno)}") from None
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: not a readable HDF5 file (truncated or foreign?): "
                              f"{reason}") from None
    try:
        _check_header(f, path)
        try:
            return {k: _read_node(f[k], path) for k in f.keys()}
        except CheckpointError:
            raise
        except (OSError, KeyError, ValueError, TypeError, RuntimeError, OverflowError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(f"{path}: damaged checkpoint: {reason}") from None
    finally:
        f.close()


def _check_header(f: h5py.File, path: str) -> None:
    """CheckpointError naming ``path`` unless the root attributes say format FORMAT, version
    1..FORMAT_VERSION (an integer scalar; any other type or size is refused, not converted)."""
    try:
        fmt = f.attrs.get("format")
        version = f.attrs.get("format_version")
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:   # unreadable attributes
        raise CheckpointError(f"{path}: damaged checkpoint header: {e}") from None
    if isinstance(fmt, bytes):
        fmt = fmt.decode("utf-8", "replace")
    if not isinstance(fmt, str) or fmt != FORMAT:
        raise CheckpointError(f"{path}: not a mininsnn checkpoint (no format={FORMAT!r} "
                              "attribute)")
    if isinstance(version, np.ndarray) and version.shape == ():
        version = version[()]
    if isinstance(version, (bool, np.bool_)) or not isinstance(version, (int, np.integer)):
        raise CheckpointError(f"{path}: checkpoint format version {version!r} is not an integer "
                              "(a damaged or foreign file)")
    if not 1 <= int(version) <= FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {int(version)} is not "
                              f"supported (this mininsnn reads 1..{FORMAT_VERSION})")
