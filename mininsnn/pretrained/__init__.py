"""Pretrained 4-bit models shipped with mininsnn.

    from mininsnn import pretrained
    net = pretrained.load("mnist-4bit")               # float Network, eval mode (needs Numba)
    model = pretrained.load_integer("mnist-4bit")     # IntegerModel (NumPy only)
    state, config, info = pretrained.read("mnist-4bit")   # NumPy only; info = provenance

Each file (``<name>.npz``, NumPy-readable, no pickle) holds the integer weight codes (int8), each
quantized tensor's scale s and latent maximum m = max|W| (float32), the BatchNorm parameters and
running statistics, the run configuration and the provenance: the command that trained it, seed,
epoch, the test accuracy of the float engine and of the integer engine computed from this file.

The training engine recomputes s = max|W| / L from the latent weights at every forward, so the
latent weights rebuilt here must give back exactly s and the codes q: W = float32(q * s) for every
element except those with |q| = L, which are set to sign(q) * m (mininsnn.quant.latent_from_codes).
Then max|W| = m, so float32(m / L) = s bit for bit, and round(float32(q s) / s) = q (the relative
error of q s is 2^-24, far from a rounding tie), so the forward equals the original checkpoint's
bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mininsnn.atomic import write_bytes
from mininsnn.config import validate_config
from mininsnn.deploy.conversion import convert, quant_codes
from mininsnn.deploy.modelfile import ModelFileError, npz_bytes, read_npz
from mininsnn.quant import latent_from_codes

__all__ = ["NAMES", "ModelFileError", "path_of", "read", "read_file", "load", "load_integer",
           "save_pretrained", "latent_weights"]

FORMAT = "mininsnn-pretrained"
HERE = Path(__file__).resolve().parent
NAMES = ("mnist-4bit", "fmnist-4bit")
QUANTIZED = ("conv1.weight", "conv2.weight", "fc1.weight")


def path_of(name):
    """The file of pretrained model ``name`` (one of NAMES), or ``name`` itself if it is a path."""
    if name in NAMES:
        return HERE / f"{name}.npz"
    p = Path(name)
    if p.suffix == ".npz" and p.is_file():
        return p
    raise ModelFileError(f"unknown pretrained model {name!r}; choose one of {', '.join(NAMES)} "
                         "or pass a .npz file")


def latent_weights(q, scale, maxabs):
    """Float32 latent weights whose quantization gives back exactly (scale, q):
    mininsnn.quant.latent_from_codes."""
    return latent_from_codes(q, scale, maxabs, np.float32)


def save_pretrained(path, state, config, provenance):
    """Write a pretrained file from a training state dict (float32 latent weights) and its config."""
    bits = config["bits"]
    if bits is None:
        raise ValueError("save_pretrained: expects a quantized model (config bits 2..16)")
    arrays = {}
    for k, v in state.items():
        v = np.asarray(v)
        if k in QUANTIZED:
            q, s = quant_codes(v, bits)
            arrays[k + ".codes"] = q.astype(np.int8 if bits <= 8 else np.int16)
            arrays[k + ".scale"] = np.float32(s).reshape(())
            arrays[k + ".maxabs"] = np.abs(v).max().astype(np.float32).reshape(())
        else:
            arrays[k] = v
    meta = {"format": FORMAT, "version": 1, "config": config, "provenance": provenance}
    write_bytes(path, npz_bytes(arrays, meta, compressed=True))


def read_file(path):
    """(state dict, config, provenance) of a pretrained file, NumPy only; ModelFileError if it is
    missing, truncated, corrupted, or its scales do not match its codes."""
    arrays, meta = read_npz(path, FORMAT)
    config = meta.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("bits"), int):
        raise ModelFileError(f"{path}: missing or damaged config")
    bits = config["bits"]
    L = 2 ** (bits - 1) - 1
    state = {}
    for k, v in arrays.items():
        if k.endswith((".scale", ".maxabs")):
            continue
        if k.endswith(".codes"):
            name = k[: -len(".codes")]
            try:
                s, m = arrays[name + ".scale"], arrays[name + ".maxabs"]
            except KeyError:
                raise ModelFileError(f"{path}: {name} has codes but no scale") from None
            if v.dtype.kind != "i" or np.abs(v).max() > L or s.dtype != np.float32 or \
                    m.dtype != np.float32 or not (np.float32(m) / np.float32(L)) == s or \
                    (np.abs(v).max() != L and m != 0):
                raise ModelFileError(f"{path}: {name}: codes, scale and max|W| disagree")
            state[name] = latent_weights(v, s, m)
        else:
            state[k] = v
    return state, config, meta.get("provenance", {})


def read(name):
    """(state dict, config, provenance) of pretrained model ``name`` (NumPy only)."""
    return read_file(path_of(name))


def load(name):
    """The float Network of pretrained model ``name``, in eval mode (imports the training
    engine, hence Numba)."""
    from mininsnn.train import build_net    # here: reading pretrained files needs no Numba

    state, config, _ = read(name)
    net = build_net(validate_config(config))
    net.load_state_dict(state)
    return net.eval()


def load_integer(name, **convert_kwargs):
    """The IntegerModel of pretrained model ``name`` (NumPy only); keyword arguments go to
    mininsnn.deploy.conversion (default: F = "max", multiply leak with Q = 30)."""
    state, config, _ = read(name)
    return convert(state, config, **convert_kwargs)
