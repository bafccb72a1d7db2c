"""A Network written back as a spec (mininsnn.spec): what ``mininsnn train --init model.nir``
needs to make a graph another tool trained the network of a run.

    spec = spec_of(read_nir("model.nir"), where="model.nir")
    net = build_network(spec, settings)             # same layers, same names, same shapes
    net.load_state_dict(read_nir("model.nir").state_dict())

The spec keeps the layers' names (so the state dicts match) and every neuron field a spec can
hold (beta, threshold, reset, reset_delay, alpha, what learns). Training choices are left to the
run's settings: weight bits, the quantizer's backward, the surrogate and its slope. A layer a spec
cannot describe (a per-neuron beta or threshold that differs between neurons, an input gain,
drive or reset potential other than 1, 0, 0, a layer type without a spec row) is a one-line
SpecError naming the file, the layer and the field.
"""
from __future__ import annotations

import numpy as np

from mininsnn.layers import (AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d,
                             SumPool2d)
from mininsnn.neurons import Neuron
from mininsnn.spec import FORMAT, LAYER_TYPES, SpecError, check_spec

__all__ = ["spec_of"]

_NEUTRAL = {"gain": 1.0, "drive": 0.0, "v_reset": 0.0, "syn_gain": 1.0}


def _scalar(where, layer, field, value) -> float:
    """A neuron parameter as one number: a scalar, or an array whose entries are all equal."""
    a = np.asarray(value, dtype=np.float64)
    if a.size == 0 or not np.all(a == a.flat[0]):
        raise SpecError(f"{where}: layer {layer.name} ({type(layer).__name__}): field {field!r}: "
                        "differs between neurons; a spec holds one value per layer")
    return float(a.flat[0])


def _neuron_fields(where, layer) -> dict:
    kind = type(layer).__name__
    fields = {}
    for key, neutral in _NEUTRAL.items():
        if key in layer._values or key in layer.params:
            if _scalar(where, layer, key, layer.value(key)) != neutral:
                raise SpecError(f"{where}: layer {layer.name} ({kind}): field {key!r}: must be "
                                f"{neutral:g} in a spec (mininsnn's neurons in a spec add their "
                                "input unscaled and reset to 0)")
    keys = ("alpha", "beta", "threshold") if kind in ("Synaptic", "RSynaptic") \
        else ("beta", "threshold")
    for key in keys:
        fields[key] = _scalar(where, layer, key, layer.value(key))
        if key in layer.params:
            fields[f"learn_{key}"] = True
    fields.update(reset=layer.reset, reset_delay=bool(layer.reset_delay))
    if kind in ("RLeaky", "RSynaptic"):
        fields["bias"] = "b_rec" in layer.params
    if kind == "Leaky" and np.isfinite(getattr(layer, "bound", np.inf)):
        fields["sparse_grad"] = float(layer.bound)
    return fields


def _layer_fields(where, layer) -> dict:
    """The spec fields of one layer (sizes that follow from shapes are left out)."""
    if isinstance(layer, Neuron):
        return _neuron_fields(where, layer)
    if isinstance(layer, Conv2d):
        return dict(out_channels=layer.out_channels, kernel_size=layer.kernel_size,
                    stride=layer.stride, padding=layer.padding, bias="bias" in layer.params)
    if isinstance(layer, Linear):
        return dict(out_features=layer.out_features, bias="bias" in layer.params)
    if isinstance(layer, SumPool2d):
        return dict(kernel_size=layer.k, stride=layer.stride, padding=layer.padding)
    if isinstance(layer, (AvgPool2d, MaxPool2d)):
        return dict(kernel_size=layer.k, stride=layer.stride)
    if isinstance(layer, BatchNorm2d):
        return dict(eps=layer.eps, momentum=layer.momentum)
    if isinstance(layer, Dropout):
        return dict(p=layer.p)
    if isinstance(layer, Flatten):
        return {}
    raise SpecError(f"{where}: layer {layer.name} ({type(layer).__name__}): field 'type': a "
                    f"spec has no {type(layer).__name__} layer (it has {', '.join(LAYER_TYPES)})")


def spec_of(net, where: str = "network", name: str | None = None) -> dict:
    """The checked spec of Network ``net``: its layers, in order, under their own names."""
    layers = []
    for layer in net.layers:
        kind = type(layer).__name__
        if kind not in LAYER_TYPES:
            raise SpecError(f"{where}: layer {layer.name} ({kind}): field 'type': a spec has no "
                            f"{kind} layer (it has {', '.join(LAYER_TYPES)})")
        layers.append({"type": kind, "name": layer.name, **_layer_fields(where, layer)})
    spec = {"format": FORMAT, "name": name or "network", "input_shape": list(net.input_shape),
            "layers": layers}
    return check_spec(spec, where)
