"""Model sources: what a user may name as "the model", turned into one record.

    found = resolve("mnist-4bit")                   # a pretrained model's name
    found = resolve("runs/mnist-4bit-seed0")        # a run folder: run_checkpoint(), below
    found = resolve("runs/x/last.h5")               # a training checkpoint
    found = resolve("model.npz")                    # a pretrained file or an integer model file
    found = resolve("model.nir", read_nir=mininsnn.nir.read_nir, dt=1e-4)   # a NIR graph

``found.kind`` says what ``found.model`` is: "float" (a training state dict; ``found.config``
is its run configuration), "int" (a mininsnn.deploy.IntegerModel) or "network" (a float
mininsnn.network.Network read from a NIR file). NumPy only: nothing here imports Numba (a NIR
file is read by the function passed as ``read_nir``, which the commands and mininsnn.nir pass:
the resolver sits below the NIR floor, which uses it).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mininsnn import pretrained
from mininsnn.config import ConfigError, validate_config
from mininsnn.deploy.modelfile import FORMAT as INTEGER_FORMAT
from mininsnn.deploy.modelfile import load_integer_model, read_npz
from mininsnn.runfiles import read_training_checkpoint

__all__ = ["ModelSource", "SourceError", "RUN_CHECKPOINTS", "run_checkpoints", "run_checkpoint",
           "resolve"]

#: the checkpoints of a run folder, the one to use first
RUN_CHECKPOINTS = ("best.h5", "last.h5")


class SourceError(ConfigError):
    """A model source that is none of the kinds above, or a run folder without a checkpoint."""


class ModelSource(NamedTuple):
    kind: str                 # "float", "int" or "network"
    model: Any                # state dict, IntegerModel or Network
    config: dict | None       # the run configuration of a float state dict (None for "int")
    label: str                # a short name: the pretrained name, the file's stem, the folder
    path: Path | None         # the file read


def run_checkpoints(run_dir) -> list[Path]:
    """The checkpoints a run folder holds, best.h5 first, then last.h5."""
    return [Path(run_dir) / f for f in RUN_CHECKPOINTS if (Path(run_dir) / f).is_file()]


def run_checkpoint(run_dir) -> Path | None:
    """The checkpoint that stands for a run: best.h5, else last.h5 (None if it has neither)."""
    found = run_checkpoints(run_dir)
    return found[0] if found else None


def _is_integer_model(path: Path) -> bool:
    """Whether the .npz file says it is an integer model file (its "meta" names the format)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return "meta" in f.files and f'"format": "{INTEGER_FORMAT}"' in \
                f["meta"].tobytes().decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 -- the reader named below says what is wrong
        return False


def _npz_source(src: str, path: Path) -> ModelSource:
    """A pretrained name or a pretrained / integer model .npz file."""
    if src not in pretrained.NAMES and _is_integer_model(path):
        read_npz(path, INTEGER_FORMAT)
        return ModelSource("int", load_integer_model(path), None, path.stem, path)
    file = pretrained.path_of(src)
    state, config, _ = pretrained.read_file(file)
    return ModelSource("float", state, config, src if src in pretrained.NAMES else path.stem,
                       file)


def resolve(src, *, dt: float | None = None, read_nir=None, hint: str | None = None
            ) -> ModelSource:
    """The model that ``src`` names: a pretrained name, a run folder (its run_checkpoint), a
    training checkpoint (.h5), a pretrained or integer model file (.npz) or, with ``read_nir``
    (mininsnn.nir.read_nir), a NIR file read with time step ``dt``. A source that is none of
    them is a one-line SourceError; ``hint`` is what it tells the user to pass instead (default:
    every kind above)."""
    text = os.fspath(src)
    path = Path(text)
    if text in pretrained.NAMES or (path.suffix == ".npz" and path.is_file()):
        return _npz_source(text, path)
    if path.suffix == ".nir" and path.is_file() and read_nir is not None:
        net = read_nir(path, dt=dt)
        return ModelSource("network", net, getattr(net, "config", None), path.stem, path)
    if path.is_dir():
        ckpt = run_checkpoint(path)
        if ckpt is None:
            hint = hint or "a run folder, a checkpoint file or a pretrained model name"
            raise SourceError(f"{path} has no best.h5 or last.h5; pass {hint}")
    elif path.is_file():
        ckpt = path
    elif hint is not None:
        raise SourceError(f"{path} does not exist; pass {hint}")
    else:
        raise SourceError(f"{text} is not a run folder, a checkpoint file or a pretrained model "
                          f"({', '.join(pretrained.NAMES)})")
    tree = read_training_checkpoint(ckpt)
    return ModelSource("float", tree["model"], validate_config(tree["config"]), path.name, ckpt)
