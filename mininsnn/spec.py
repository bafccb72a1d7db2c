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

As the network of a run (``mininsnn train --model SPEC``): :func:`resolve_spec` reads a file, a
built-in name (:data:`BUILTIN`) or JSON text; the run configuration's ``model`` setting records
the checked spec itself; :func:`check_fits` refuses a spec that does not take the dataset's
samples or classes; :func:`as_input` feeds an image row by row when the spec says
``"input": "rows"``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from mininsnn import rules
from mininsnn import surrogate as sg
from mininsnn.config import ARCHITECTURES, DEFAULTS, SETTINGS, ConfigError, test_steps
from mininsnn.layers import (AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d,
                             SumPool2d)
from mininsnn.network import Network
from mininsnn.neurons import Leaky, Synaptic
from mininsnn.recurrent import RLeaky, RSynaptic

__all__ = ["SpecError", "LAYER_TYPES", "BUILTIN", "read_spec", "check_spec", "build_network",
           "paper_spec", "output_size", "resolve_spec", "check_fits", "as_input", "net_shape"]

FORMAT = "mininsnn-spec"


class SpecError(ConfigError):
    """A spec that does not describe a network mininsnn can build (one line: file, layer, field)."""


# type -> (name prefix, fields it takes, fields it requires, fields filled from the run settings)
_WEIGHT_SETTINGS = ("bits", "quant_grad")
_NEURON_SETTINGS = ("beta", "threshold", "reset", "reset_delay", "surrogate", "slope")
_LEARN = ("learn_beta", "learn_threshold")
_SYN = ("alpha", "learn_alpha")
LAYER_TYPES = {
    "Conv2d": ("conv", ("out_channels", "kernel_size", "stride", "padding", "bias")
               + _WEIGHT_SETTINGS, ("out_channels", "kernel_size"), _WEIGHT_SETTINGS),
    "AvgPool2d": ("pool", ("kernel_size", "stride"), ("kernel_size",), ()),
    "MaxPool2d": ("pool", ("kernel_size", "stride"), ("kernel_size",), ()),
    "SumPool2d": ("pool", ("kernel_size", "stride", "padding"), ("kernel_size",), ()),
    "BatchNorm2d": ("bn", ("eps", "momentum"), (), ()),
    "Linear": ("fc", ("out_features", "bias") + _WEIGHT_SETTINGS, ("out_features",),
               _WEIGHT_SETTINGS),
    "Flatten": ("flatten", (), (), ()),
    "Dropout": ("dropout", ("p",), (), ()),
    "Leaky": ("lif", _NEURON_SETTINGS + ("sparse_grad",) + _LEARN,
              (), _NEURON_SETTINGS + ("sparse_grad",)),
    "Synaptic": ("syn", _SYN + _NEURON_SETTINGS + _LEARN, ("alpha",), _NEURON_SETTINGS),
    "RLeaky": ("rlif", _NEURON_SETTINGS + _LEARN + ("bias",), (), _NEURON_SETTINGS),
    "RSynaptic": ("rsyn", _SYN + _NEURON_SETTINGS + _LEARN + ("bias",), ("alpha",),
                  _NEURON_SETTINGS),
}
_FLAT_IN = ("Linear", "RLeaky", "RSynaptic")
_IMAGE_IN = ("Conv2d", "AvgPool2d", "MaxPool2d", "SumPool2d", "BatchNorm2d")
_NEURONS = ("Leaky", "Synaptic", "RLeaky", "RSynaptic")
_TOP = ("format", "name", "input_shape", "input", "layers", "description")
#: how a sample enters the network: "image" (fed whole at every step, or event frames one per
#: step), "rows" (a (C, H, W) image read row by row: H steps of C * W values)
INPUTS = ("image", "rows")


#: field -> its check (ValueError "must be ..."); the run settings' fields use their own check
_FIELD_CHECKS = {
    **{s.key: s.check for s in SETTINGS if s.model},
    "alpha": rules.number(0, 1), "p": rules.DROPOUT,
    "eps": rules.number(0, lo_open=True), "momentum": rules.number(0, 1),
    "bias": rules.boolean, "learn_alpha": rules.boolean, "learn_beta": rules.boolean,
    "learn_threshold": rules.boolean,
}


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
    unknown = sorted(set(spec) - set(_TOP))
    if unknown:
        raise SpecError(f"{where}: unknown top-level field {unknown[0]!r} (known: "
                        f"{', '.join(_TOP)})")
    if spec.get("input", "image") not in INPUTS:
        raise SpecError(f"{where}: field 'input': expected one of {', '.join(INPUTS)}, got "
                        f"{spec['input']!r}")
    shape = spec.get("input_shape")
    if not (isinstance(shape, (list, tuple)) and len(shape) in (1, 3)
            and all(_is_int(d) and d >= 1 for d in shape)):
        raise SpecError(f"{where}: field 'input_shape': expected [C, H, W] or [N] of positive "
                        f"integers, got {shape!r}")
    layers = spec.get("layers")
    if not isinstance(layers, list) or not layers:
        raise SpecError(f"{where}: field 'layers': expected a non-empty list, got {layers!r}")
    if spec.get("input") == "rows" and len(shape) != 3:
        raise SpecError(f"{where}: field 'input': 'rows' reads a [C, H, W] image row by row, "
                        f"got input_shape {shape!r}")
    shape, out, names = net_shape(spec), [], set()
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


def net_shape(spec: dict) -> tuple:
    """The per-sample, per-step shape the network's first layer takes: ``input_shape``, or
    (C * W,) for an image read row by row (``"input": "rows"``)."""
    shape = tuple(int(d) for d in spec["input_shape"])
    return (shape[0] * shape[2],) if spec.get("input") == "rows" else shape


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
    for field in (f for f in layer if f in _FIELD_CHECKS):
        try:
            _FIELD_CHECKS[field](layer[field])
        except ValueError as e:
            raise _field_error(where, i, layer, field, str(e).splitlines()[0]) from None
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
    if kind in ("Conv2d", "AvgPool2d", "MaxPool2d", "SumPool2d"):
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
    if kind == "SumPool2d":
        return SumPool2d(layer["kernel_size"], layer.get("stride"), layer.get("padding", 0))
    if kind == "BatchNorm2d":
        extra = {k: layer[k] for k in ("eps", "momentum") if k in layer}
        return BatchNorm2d(in_shape[0], dtype=dtype, **extra)
    if kind == "Flatten":
        return Flatten()
    if kind == "Dropout":
        return Dropout(layer["p"] if "p" in layer else get("dropout"))
    return _make_neuron(layer, in_shape, get, rng, dtype)


def _make_neuron(layer, in_shape, get, rng, dtype):
    kind = layer["type"]
    common = dict(surrogate=sg.make_surrogate(get("surrogate"), get("slope")), reset=get("reset"),
                  reset_delay=get("reset_delay"), dtype=dtype)    # dtype: of learned parameters
    learn = {k: layer[k] for k in _LEARN + ("learn_alpha",) if k in layer}
    if kind == "Leaky":      # the reference neuron's kernels unless a parameter learns
        return Leaky(get("beta"), get("threshold"), sparse_grad=get("sparse_grad"), **common,
                     **learn)
    if kind == "Synaptic":
        return Synaptic(layer["alpha"], get("beta"), get("threshold"), **common, **learn)
    extra = dict(bias=layer.get("bias", True), rng=rng)
    if kind == "RLeaky":
        return RLeaky(in_shape[0], get("beta"), get("threshold"), **common, **learn, **extra)
    return RSynaptic(in_shape[0], layer["alpha"], get("beta"), get("threshold"), **common,
                     **learn, **extra)


def build_network(spec, settings: dict | None = None, *, seed: int = 0, fuse: bool = True,
                  where: str = "spec") -> Network:
    """The Network ``spec`` describes, with the run ``settings`` (a run configuration, or any
    of its model settings; the rest from mininsnn.config.SETTINGS) filling the fields the layers
    leave out. ``seed`` fixes the initial weights (drawn layer by layer in order) and the Dropout
    masks, as reference_network does."""
    spec = check_spec(spec, where)
    settings = {**DEFAULTS, **(settings or {})}
    dtype = np.dtype(settings["dtype"])
    init_seq, drop_seq = np.random.SeedSequence(seed).spawn(2)
    rng = np.random.default_rng(init_seq)
    shape, layers = net_shape(spec), []
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
    net = Network(layers, net_shape(spec), dtype=dtype, seed=drop_seq, fuse=fuse)
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


# ---------------------------------------------------------------------------------------------
# a spec as the network of a run

#: the paper's networks as built-in specs (mininsnn.config.ARCHITECTURES): the MNIST /
#: Fashion-MNIST network with BatchNorm, and the DVS128 Gesture one without (dvs-4bit's)
BUILTIN = {"qsnn-mnist": ("mnist", True), "qsnn-dvs": ("dvsgesture", False)}


def builtin_spec(name: str) -> dict:
    """The built-in spec ``name`` (:data:`BUILTIN`), checked."""
    dataset, batchnorm = BUILTIN[name]
    shape, c1, c2, classes = ARCHITECTURES[dataset]
    spec = paper_spec(shape, (c1, c2), classes, batchnorm=batchnorm)
    return check_spec({**spec, "name": name}, where=f"built-in spec {name}")


def resolve_spec(text: str) -> tuple[dict, str]:
    """(checked spec as plain JSON data, where it came from) of a ``--model`` value: a built-in
    spec's name, a spec JSON file, or the JSON text of a spec itself (what a run records)."""
    text = str(text)
    if text in BUILTIN:
        spec, where = builtin_spec(text), f"built-in spec {text}"
    elif text.lstrip().startswith("{"):
        where = "the spec given as JSON"
        try:
            spec = check_spec(json.loads(text), where)
        except json.JSONDecodeError as e:
            raise SpecError(f"{where}: not JSON: {e.msg} at column {e.colno}") from None
    elif not Path(text).is_file():
        raise SpecError(f"{text}: no such spec file, and not a built-in spec "
                        f"({', '.join(BUILTIN)})")
    else:
        spec, where = read_spec(text), text
    return json.loads(json.dumps(spec)), where


def _size_layer(spec: dict) -> dict:
    """The layer that sets the number of outputs: the last one with out_features or
    out_channels, else the last layer."""
    sized = [layer for layer in spec["layers"] if "out_features" in layer
             or "out_channels" in layer]
    return sized[-1] if sized else spec["layers"][-1]


def check_fits(spec: dict, cfg: dict, where: str = "spec") -> None:
    """One-line SpecError unless the checked ``spec`` takes the samples of run configuration
    ``cfg``'s dataset, has one output per class, and (read row by row) as many steps as rows."""
    dataset = cfg["dataset"]
    shape, _, _, classes = ARCHITECTURES[dataset]
    if [int(d) for d in spec["input_shape"]] != list(shape):
        raise SpecError(f"{where}: field 'input_shape': {list(spec['input_shape'])} does not "
                        f"match the {dataset} samples {list(shape)} (config {cfg['config']})")
    if output_size(spec) != classes:
        layer = _size_layer(spec)
        field = "out_features" if "out_features" in layer else \
            "out_channels" if "out_channels" in layer else "shape"
        raise SpecError(f"{where}: layer {layer['name']} ({layer['type']}): field {field!r}: "
                        f"the network has {output_size(spec)} outputs, {dataset} "
                        f"{classes} classes")
    if spec.get("input") == "rows":
        if dataset == "dvsgesture":
            raise SpecError(f"{where}: field 'input': 'rows' reads static images; {dataset} "
                            "gives event frames")
        rows = int(shape[1])
        for key, steps in (("num_steps", cfg["num_steps"]), ("test_num_steps", test_steps(cfg))):
            if steps != rows:
                raise SpecError(f"{where}: field 'input': 'rows' feeds the {rows} rows of an "
                                f"image as {rows} time steps; {key} must be {rows}, got {steps}")


def as_input(net, x, num_steps: int):
    """The batch ``x`` as ``net`` takes it: unchanged, or (for a network whose spec reads
    images row by row) the images (B, C, H, W) as the sequence (H, B, C * W), with
    ``num_steps`` = H."""
    spec = getattr(net, "spec", None)
    if spec is None or spec.get("input") != "rows":
        return x
    if x.ndim != 4:
        raise ConfigError(f"a network that reads images row by row takes (B, C, H, W) images, "
                          f"got an input of shape {x.shape}")
    B, C, H, W = x.shape
    if num_steps != H:
        raise ConfigError(f"a network that reads images row by row runs {H} steps (one per "
                          f"row), not num_steps={num_steps}")
    return np.ascontiguousarray(x.transpose(2, 0, 1, 3).reshape(H, B, C * W))
