"""A network described as data: a spec (a JSON file or a dict) -> a :class:`~mininsnn.network.Network`.

A spec names the per-sample input shape and lists the layers in order; each layer is its type and
the fields of its constructor. Sizes that follow from the shapes (``in_channels``,
``in_features``, ``num_features``) are inferred, never written. The network-wide settings of a
run (``bits``, ``beta``, ``threshold``, ``reset``, ``surrogate``, ... : mininsnn.config.SETTINGS)
fill every field a layer leaves out, so one spec trains at any setting, and a field written in a
layer overrides the setting for that layer only::

    {"name": "mlp-mnist",
     "input_shape": [1, 28, 28],
     "layers": [{"type": "Flatten"},
                {"type": "Linear", "out_features": 256},
                {"type": "Leaky"},
                {"type": "Linear", "out_features": 10},
                {"type": "Leaky", "beta": 0.95}]}

Layers are named ``conv1, pool1, bn1, lif1, fc1, flatten1, dropout1, ...`` by type and order
unless a layer gives its own ``"name"``. The last layer must be a neuron with a flat output: its
size is the number of classes. docs/spec.md lists every type and field.

:func:`paper_spec` is the paper's conv network written as a spec; built with the same seed it is
the network of :func:`mininsnn.models.reference_network`, weight for weight.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from mininsnn import surrogate as sg
from mininsnn.config import SETTINGS, ConfigError
from mininsnn.layers import (AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Leaky, Linear,
                             MaxPool2d)
from mininsnn.network import Network

__all__ = ["SpecError", "LAYER_TYPES", "read_spec", "check_spec", "build_network", "paper_spec",
           "output_size"]

FORMAT = "mininsnn-spec"


class SpecError(ConfigError):
    """A spec that does not describe a network mininsnn can build (one line: file, layer, field)."""


# type -> (name prefix, fields it takes, fields it requires, fields filled from the run settings)
_WEIGHT_SETTINGS = ("bits", "quant_grad")
_NEURON_SETTINGS = ("beta", "threshold", "reset", "reset_delay", "surrogate", "slope",
                    "sparse_grad")
LAYER_TYPES = {
    "Conv2d": ("conv", ("out_channels", "kernel_size", "stride", "padding", "bias")
               + _WEIGHT_SETTINGS, ("out_channels", "kernel_size"), _WEIGHT_SETTINGS),
    "AvgPool2d": ("pool", ("kernel_size", "stride"), ("kernel_size",), ()),
    "MaxPool2d": ("pool", ("kernel_size", "stride"), ("kernel_size",), ()),
    "BatchNorm2d": ("bn", ("eps", "momentum"), (), ()),
    "Linear": ("fc", ("out_features", "bias") + _WEIGHT_SETTINGS, ("out_features",),
               _WEIGHT_SETTINGS),
    "Flatten": ("flatten", (), (), ()),
    "Dropout": ("dropout", ("p",), (), ()),
    "Leaky": ("lif", _NEURON_SETTINGS, (), _NEURON_SETTINGS),
}
_FLAT_IN = ("Linear",)
_IMAGE_IN = ("Conv2d", "AvgPool2d", "MaxPool2d", "BatchNorm2d")
_NEURONS = ("Leaky",)


# ---------------------------------------------------------------------------------------------
# reading and checking

def read_spec(path) -> dict:
    """The spec in the JSON file ``path``, checked (:func:`check_spec`); one-line SpecError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError(f"{path}: cannot read the spec: {e.strerror or e}") from None
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(f"{path}: not JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    return check_spec(spec, where=str(path))


def _field_error(where, i, layer, field, what):
    kind = layer.get("type", "?") if isinstance(layer, dict) else "?"
    return SpecError(f"{where}: layer {i} ({kind}): field {field!r}: {what}")


def check_spec(spec, where: str = "spec") -> dict:
    """``spec`` with its shapes chained: a copy whose layers each carry their ``name`` and the
    per-sample ``shape`` they output. Raises a one-line SpecError naming ``where``, the layer
    and the field for an unknown type or field, a missing field, or shapes that do not chain."""
    if not isinstance(spec, dict):
        raise SpecError(f"{where}: expected a JSON object with 'input_shape' and 'layers', "
                        f"got {type(spec).__name__}")
    unknown = sorted(set(spec) - {"format", "name", "input_shape", "layers", "description"})
    if unknown:
        raise SpecError(f"{where}: unknown top-level field {unknown[0]!r} (known: format, name, "
                        "input_shape, layers, description)")
    shape = spec.get("input_shape")
    if not (isinstance(shape, (list, tuple)) and len(shape) in (1, 3)
            and all(_is_int(d) and d >= 1 for d in shape)):
        raise SpecError(f"{where}: field 'input_shape': expected [C, H, W] or [N] of positive "
                        f"integers, got {shape!r}")
    layers = spec.get("layers")
    if not isinstance(layers, list) or not layers:
        raise SpecError(f"{where}: field 'layers': expected a non-empty list, got {layers!r}")
    shape, out, names = tuple(int(d) for d in shape), [], set()
    counters: dict[str, int] = {}
    for i, layer in enumerate(layers, 1):
        layer = _check_layer(where, i, layer)
        prefix = LAYER_TYPES[layer["type"]][0]
        counters[prefix] = counters.get(prefix, 0) + 1
        name = layer.get("name", f"{prefix}{counters[prefix]}")
        if not isinstance(name, str) or not name or "." in name or name in names:
            raise _field_error(where, i, layer, "name", f"expected a unique name without '.', "
                               f"got {name!r}")
        names.add(name)
        shape = _out_shape(where, i, layer, shape)
        out.append({**layer, "name": name, "shape": shape})
    if out[-1]["type"] not in _NEURONS or len(out[-1]["shape"]) != 1:
        raise SpecError(f"{where}: the last layer must be a neuron layer with a flat output "
                        f"(one neuron per class), got {out[-1]['type']} of shape {out[-1]['shape']}")
    return {**spec, "input_shape": list(spec["input_shape"]), "layers": out}


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_layer(where, i, layer) -> dict:
    if not isinstance(layer, dict) or "type" not in layer:
        raise SpecError(f"{where}: layer {i}: expected an object with a 'type', got {layer!r}")
    kind = layer["type"]
    if kind not in LAYER_TYPES:
        raise _field_error(where, i, layer, "type", f"unknown layer type {kind!r} (known: "
                           f"{', '.join(LAYER_TYPES)})")
    _, fields, required, _ = LAYER_TYPES[kind]
    for field in layer:
        if field not in fields and field not in ("type", "name", "shape"):
            raise _field_error(where, i, layer, field, f"not a field of {kind} (its fields: "
                               f"{', '.join(fields) or 'none'})")
    for field in required:
        if field not in layer:
            raise _field_error(where, i, layer, field, "required")
    for field in ("out_channels", "kernel_size", "out_features"):
        if field in layer and not (_is_int(layer[field]) and layer[field] >= 1):
            raise _field_error(where, i, layer, field, f"must be an integer >= 1, got "
                               f"{layer[field]!r}")
    for field, lo in (("stride", 1), ("padding", 0)):
        v = layer.get(field)
        if v is not None and not (_is_int(v) and v >= lo):
            raise _field_error(where, i, layer, field, f"must be an integer >= {lo}, got {v!r}")
    return {k: v for k, v in layer.items() if k != "shape"}  # "shape": computed, not read


def _out_shape(where, i, layer, shape) -> tuple:
    """The per-sample shape ``layer`` outputs for input ``shape``."""
    kind = layer["type"]
    if kind in _FLAT_IN and len(shape) != 1:
        raise _field_error(where, i, layer, "type", f"expects a flat input (put a Flatten "
                           f"before it), got shape {shape}")
    if kind in _IMAGE_IN and len(shape) != 3:
        raise _field_error(where, i, layer, "type", f"expects a (C, H, W) input, got shape "
                           f"{shape}")
    if kind == "Flatten":
        return (int(math.prod(shape)),)
    if kind == "Linear":
        return (int(layer["out_features"]),)
    if kind in ("Conv2d", "AvgPool2d", "MaxPool2d"):
        k = int(layer["kernel_size"])
        stride = layer.get("stride") or (1 if kind == "Conv2d" else k)
        pad = int(layer.get("padding", 0))
        h, w = ((d + 2 * pad - k) // stride + 1 for d in shape[1:])
        if h < 1 or w < 1:
            raise _field_error(where, i, layer, "kernel_size", f"{k} does not fit the input "
                               f"{shape}" + (f" with padding {pad}" if pad else ""))
        c = int(layer["out_channels"]) if kind == "Conv2d" else shape[0]
        return (c, h, w)
    return shape                         # BatchNorm2d, Dropout, neurons: shape kept


def output_size(spec: dict) -> int:
    """Number of output neurons (classes) of a checked spec."""
    return int(spec["layers"][-1]["shape"][0])


# ---------------------------------------------------------------------------------------------
# building

def _setting(layer, key, settings, where):
    if key in layer:
        return layer[key]
    if key not in settings:
        raise SpecError(f"{where}: layer {layer['name']} ({layer['type']}): field {key!r} is "
                        "neither given nor a run setting")
    return settings[key]


def _make_layer(layer, in_shape, settings, rng, dtype, where):
    kind, get = layer["type"], (lambda k: _setting(layer, k, settings, where))
    if kind == "Conv2d":
        return Conv2d(in_shape[0], layer["out_channels"], layer["kernel_size"],
                      stride=layer.get("stride", 1), padding=layer.get("padding", 0),
                      bias=layer.get("bias", False), bits=get("bits"), dtype=dtype, rng=rng,
                      quant_grad=get("quant_grad"))
    if kind == "Linear":
        bits = get("bits")
        bias = layer.get("bias", bits is None)        # the paper's rule: a bias in full precision
        return Linear(in_shape[0], layer["out_features"], bias=bias, bits=bits, dtype=dtype,
                      rng=rng, quant_grad=get("quant_grad"))
    if kind in ("AvgPool2d", "MaxPool2d"):
        cls = AvgPool2d if kind == "AvgPool2d" else MaxPool2d
        return cls(layer["kernel_size"], layer.get("stride"))
    if kind == "BatchNorm2d":
        extra = {k: layer[k] for k in ("eps", "momentum") if k in layer}
        return BatchNorm2d(in_shape[0], dtype=dtype, **extra)
    if kind == "Flatten":
        return Flatten()
    if kind == "Dropout":
        return Dropout(layer["p"] if "p" in layer else get("dropout"))
    return Leaky(get("beta"), get("threshold"), sg.make_surrogate(get("surrogate"), get("slope")),
                 reset=get("reset"), reset_delay=get("reset_delay"),
                 sparse_grad=get("sparse_grad"))


def build_network(spec, settings: dict | None = None, *, seed: int = 0, fuse: bool = True,
                  where: str = "spec") -> Network:
    """The Network ``spec`` describes, with the run ``settings`` (a run configuration, or any
    of its model settings; the rest from mininsnn.config.SETTINGS) filling the fields the layers
    leave out. ``seed`` fixes the initial weights (drawn layer by layer in order) and the Dropout
    masks, as reference_network does."""
    spec = check_spec(spec, where)
    settings = {**{s.key: s.default for s in SETTINGS if s.model}, **(settings or {})}
    dtype = np.dtype(settings["dtype"])
    init_seq, drop_seq = np.random.SeedSequence(seed).spawn(2)
    rng = np.random.default_rng(init_seq)
    shape, layers = tuple(spec["input_shape"]), []
    for layer in spec["layers"]:
        try:
            built = _make_layer(layer, shape, settings, rng, dtype, where)
        except SpecError:
            raise
        except ValueError as e:
            raise SpecError(f"{where}: layer {layer['name']} ({layer['type']}): "
                            f"{str(e).splitlines()[0]}") from None
        layers.append((layer["name"], built))
        shape = tuple(layer["shape"])
    net = Network(layers, spec["input_shape"], dtype=dtype, seed=drop_seq, fuse=fuse)
    net.spec = spec
    return net


def paper_spec(input_shape, channels, num_classes, *, batchnorm: bool = True) -> dict:
    """The paper's network as a spec: conv 5x5 -> avgpool 2 -> (bn) -> lif, twice, then flatten
    -> fc -> dropout -> lif, with the layer names of mininsnn.models.reference_network."""
    c1, c2 = channels

    def stage(n, c):
        return ([{"type": "Conv2d", "name": f"conv{n}", "out_channels": c, "kernel_size": 5},
                 {"type": "AvgPool2d", "name": f"pool{n}", "kernel_size": 2}]
                + ([{"type": "BatchNorm2d", "name": f"bn{n}"}] if batchnorm else [])
                + [{"type": "Leaky", "name": f"lif{n}"}])
    return {"format": FORMAT, "name": "qsnn-conv", "input_shape": list(input_shape),
            "layers": stage(1, c1) + stage(2, c2)
            + [{"type": "Flatten", "name": "flatten"},
               {"type": "Linear", "name": "fc1", "out_features": num_classes},
               {"type": "Dropout", "name": "dropout"},
               {"type": "Leaky", "name": "lif3"}]}
