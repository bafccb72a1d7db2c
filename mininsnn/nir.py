"""NIR export and import: a mininsnn network as a Neuromorphic Intermediate Representation graph.

NIR (https://nnir.readthedocs.io, the ``nir`` package) is how a trained spiking network moves to other
simulators (snnTorch, Norse, Sinabs, Spyx, ...) and to neuromorphic hardware. ``nir`` is an
optional dependency (``pip install 'mininsnn[nir]'``), imported when first needed.

    >>> from mininsnn.nir import write_nir, read_nir
    >>> write_nir("model.nir", net)          # a Network, checkpoint tree, run folder or "mnist-4bit"
    >>> net2 = read_nir("model.nir")                # a Network in eval mode; same spikes as net
    >>> other = read_nir("norse.nir", dt=1e-4)      # another tool's graph, NIR's dynamics at dt

This module writes; mininsnn/nir_read.py reads. Layer -> node (docs/nir.md derives each line;
``dt`` is the length of one time step, default 1e-4 s, the step snnTorch assumes):

    Conv2d       Conv2d, weight Wq = s * q (the quantized float weights), bias 0 if none
    AvgPool2d    AvgPool2d (kernel, stride, padding 0);  SumPool2d  SumPool2d (kernel, stride, padding)
    BatchNorm2d  (eval) Conv2d 1x1, weight diag(a), bias b:  a = gamma / sqrt(running_var + eps),
                 b = beta - running_mean * a, so that y = a x + b per channel
    Leaky        beta < 1: LIF, tau = dt / (1 - beta), r = gain / (1 - beta), v_leak = drive / (1 - beta),
                 v_threshold = theta, v_reset;  beta = 1: IF, r = gain (v += r I per step), v_reset
    Synaptic     CubaLIF, tau_syn = dt / (1 - alpha), w_in = syn_gain / (1 - alpha), tau_mem, r, v_leak
                 as Leaky's
    RLeaky, RSynaptic   a subgraph {input, lif, w_rec, output}: lif -> w_rec (Affine W_rec, b_rec)
                 -> lif, the loop snnTorch writes and Norse reads
    Flatten      Flatten (start_dim 0 of the per-sample shape: everything)
    Linear       Affine (with bias) or Linear, weight Wq
    Dropout      omitted (eval); recorded in the graph metadata

Every parameter is written per neuron (arrays of the layer's shape). Euler-stepped by dt, the LIF
is v[t] = (1 - dt/tau) v + (dt/tau) v_leak + (r dt/tau) I[t] = beta v + drive + gain I[t], then a
spike where v > v_threshold and v = v_reset there: the neuron of ``reset="zero",
reset_delay=False``. Other neurons (the paper's subtract reset, one step late) have no NIR form:
they export as the same node, and its metadata says ``reset``, ``reset_delay`` and
``nir_exact=False``. Every node carries its mininsnn facts in metadata (``producer="mininsnn"``,
``layer``, ``dt``; weights: ``bits`` (0 = full precision), ``scale``, ``max_abs_weight``,
``quant_grad``; neurons: ``reset``, ``reset_delay``, the exact ``beta``, ``threshold``, ``alpha``,
``gain``, ``drive``, ``syn_gain``, ``v_reset``, ``surrogate``, ``slope``; BatchNorm: its parameters
and running statistics), and the graph the run configuration, so that ``read_nir(write_nir(net))``
is the same network: the same weights bit for bit and the same spikes.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from mininsnn import __version__
from mininsnn.atomic import atomic_file
from mininsnn.config import validate_config
from mininsnn.layers import AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, SumPool2d
from mininsnn.models import build_from_config
from mininsnn.network import Network
from mininsnn.neurons import Neuron
from mininsnn.nir_graph import (DEFAULT_DT, FORMAT, FORMAT_VERSION, PRODUCER, NIRError,
                                nir_package, one_line)
from mininsnn.nir_read import from_nir, read_nir, reconstruct_latent_weight
from mininsnn.quant import quantize_forward
from mininsnn.sources import SourceError, resolve

__all__ = ["NIRError", "DEFAULT_DT", "FORMAT", "FORMAT_VERSION", "to_nir", "write_nir",
           "from_nir", "read_nir", "reconstruct_latent_weight"]


# =============================================================================================
# export

def _network_of(source, config=None):
    """The Network to export: a Network; a state dict with ``config``; a checkpoint tree (dict
    with "model" and "config"); or any model source of mininsnn.sources.resolve given as a path
    or name: a run folder (its best.h5, else its last.h5), a checkpoint file, a pretrained
    model's name or .npz file, a .nir file."""

    if isinstance(source, Network):
        if config is not None:
            raise NIRError("to_nir: pass config only with a state dict, not with a Network")
        return source
    if isinstance(source, (str, os.PathLike)) and config is None:
        try:
            found = resolve(source, read_nir=read_nir, hint="a run folder or a checkpoint file")
        except SourceError as e:
            raise NIRError(str(e)) from None
        if found.kind == "network":
            return found.model
        if found.kind == "int":
            raise NIRError(f"{found.path} is an integer model; NIR holds the float network: "
                           "pass its run folder, checkpoint or pretrained name")
        source, config = found.model, found.config
    if isinstance(source, dict) and config is None and "model" in source and "config" in source:
        source, config = source["model"], source["config"]
    if not isinstance(source, dict) or config is None:
        raise NIRError("to_nir: expected a Network, a state dict with its config, a checkpoint "
                       f"tree or a checkpoint path, got {type(source).__name__}")
    net = build_from_config(validate_config(config))
    net.load_state_dict(source)
    return net


def _meta(layer: str, dt: float, **facts) -> dict:
    """Node metadata: who wrote it, which mininsnn layer, the time step, and the layer's facts."""
    return {"producer": PRODUCER, "layer": layer, "dt": float(dt), **facts}


def _weight_meta(layer, latent_weights: bool) -> tuple[np.ndarray, dict]:
    """(Wq, metadata) of a Conv2d or Linear: Wq = s * q, the weights the forward uses."""

    W = layer.params["weight"]
    Wq, s = quantize_forward(W, layer.bits)
    facts = {"bits": 0 if layer.bits is None else layer.bits, "quant_grad": layer.quant_grad,
             "has_bias": "bias" in layer.params}
    if layer.bits is not None:
        # s = max|W| / (2^(bits-1) - 1); max|W| lets the reader rebuild latent weights that
        # quantize to Wq bit for bit (reconstruct_latent_weight)
        facts.update(scale=W.dtype.type(s), max_abs_weight=np.abs(W).max())
        if latent_weights:
            facts["latent_weight"] = W.copy()
    return np.array(Wq, copy=True), facts


def _conv_node(nir, layer, shape, dt, latent):
    Wq, facts = _weight_meta(layer, latent)
    s, p, K = layer.stride, layer.padding, layer.kernel_size
    bias = layer.params["bias"].copy() if "bias" in layer.params else \
        np.zeros(layer.out_channels, Wq.dtype)
    node = nir.Conv2d(input_shape=shape[1:], weight=Wq, stride=(s, s), padding=(p, p),
                      dilation=(1, 1), groups=1, bias=bias, metadata=_meta("Conv2d", dt, **facts))
    return node, (layer.out_channels, (shape[1] + 2 * p - K) // s + 1,
                  (shape[2] + 2 * p - K) // s + 1)


def _pool_node(nir, layer, shape, dt, latent):
    """AvgPool2d or SumPool2d: kernel, stride and padding (AvgPool2d has none)."""
    k, s, p = layer.k, layer.stride, getattr(layer, "padding", 0)
    kind = type(layer).__name__
    node = getattr(nir, kind)(kernel_size=np.array([k, k]), stride=np.array([s, s]),
                              padding=np.array([p, p]), metadata=_meta(kind, dt))
    return node, (shape[0], (shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1)


def _flatten_node(nir, layer, shape, dt, latent):
    node = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1,
                       metadata=_meta("Flatten", dt))
    return node, (int(np.prod(shape)),)


def _linear_node(nir, layer, shape, dt, latent):
    Wq, facts = _weight_meta(layer, latent)
    meta = _meta("Linear", dt, **facts)
    node = (nir.Affine(weight=Wq, bias=layer.params["bias"].copy(), metadata=meta)
            if "bias" in layer.params else nir.Linear(weight=Wq, metadata=meta))
    return node, (layer.out_features,)


def _batchnorm_node(nir, layer, shape, dt, latent):
    """Eval BatchNorm as a 1x1 Conv2d with weight diag(a) and bias b (per channel y = a x + b).

    NIR has no per-channel affine node for (C, H, W) signals (Affine is a matrix on vectors, Scale
    has no bias), and its type check mis-sizes grouped convolutions, so the diagonal 1x1 conv it
    is: C^2 weights, C of them nonzero. a and b are computed as kernels/norm.py:batchnorm_eval does
    (float64), then stored in the network's dtype."""
    C = layer.num_features
    p, buf = layer.params, layer.buffers
    a = p["weight"].astype(np.float64) / np.sqrt(buf["running_var"].astype(np.float64) + layer.eps)
    b = p["bias"].astype(np.float64) - buf["running_mean"].astype(np.float64) * a
    dtype = p["weight"].dtype
    W = np.zeros((C, C, 1, 1), dtype)
    W[np.arange(C), np.arange(C), 0, 0] = a
    facts = dict(eps=layer.eps, momentum=layer.momentum, bn_weight=p["weight"].copy(),
                 bn_bias=p["bias"].copy(), running_mean=buf["running_mean"].copy(),
                 running_var=buf["running_var"].copy(),
                 num_batches_tracked=np.int64(buf["num_batches_tracked"]))
    node = nir.Conv2d(input_shape=shape[1:], weight=W, stride=(1, 1), padding=(0, 0),
                      dilation=(1, 1), groups=1, bias=b.astype(dtype),
                      metadata=_meta("BatchNorm2d", dt, **facts))
    return node, shape


def _neuron_facts(layer) -> dict:
    """The neuron's exact constructor facts (scalars or per-neuron arrays), for the metadata;
    ``learned`` names the learnable ones (they are in the state dict as ``<layer>.beta`` ...)."""
    facts = dict(reset=layer.reset, reset_delay=layer.reset_delay,
                 surrogate=layer.surrogate.name, slope=float(layer.surrogate.k),
                 nir_exact=layer.reset == "zero" and not layer.reset_delay,
                 learned=",".join(k for k in layer.params if k not in ("W_rec", "b_rec")))
    cuba = ("alpha", "syn_gain") if "Synaptic" in type(layer).__name__ else ()
    for key in cuba + ("beta", "threshold", "gain", "drive", "v_reset"):
        v = layer.value(key)
        facts[key] = np.array(v, copy=True) if np.ndim(v) else float(v)
    return facts


def _decay_tau(name, field, decay, dt):
    """tau of forward Euler's decay 1 - dt/tau: tau = dt / (1 - decay); refused at decay = 1."""
    if (decay >= 1).any():
        raise NIRError(f"to_nir: layer {name!r}: {field} = 1 (no decay) has no finite NIR time "
                       "constant" + ("; only a Leaky with beta = 1 everywhere exports (as IF)"
                                     if field == "beta" else ""))
    return dt / (1.0 - decay)


def _neuron_node(nir, layer, shape, dt, latent):
    """LIF / IF (Leaky) or CubaLIF (Synaptic), every parameter an array of the layer's shape,
    equal, Euler-stepped by dt, to the neuron with the same-step zero reset."""
    ones = np.ones(shape, np.float64)
    f = _neuron_facts(layer)
    g = {k: ones * f.get(k, d) for k, d in (("beta", 1.0), ("alpha", None), ("threshold", 1.0),
                                            ("gain", 1.0), ("drive", 0.0), ("v_reset", 0.0),
                                            ("syn_gain", 1.0)) if f.get(k, d) is not None}
    kind = type(layer).__name__.removeprefix("R")
    meta = _meta(type(layer).__name__, dt, **f)
    common = dict(v_threshold=g["threshold"], v_reset=g["v_reset"], metadata=meta)
    if kind == "Leaky" and (g["beta"] == 1).all():
        if (g["drive"] != 0).any():
            raise NIRError(f"to_nir: layer {layer.name!r}: drive != 0 with beta = 1 has no NIR "
                           "form (IF has no constant input)")
        return nir.IF(r=g["gain"], **common)          # IF: v[t] = v + r I[t] per step
    tau = _decay_tau(layer.name, "beta", g["beta"], dt)
    # beta = 1 - dt/tau;  gain = r dt/tau  =>  r = gain tau/dt;  drive = dt v_leak/tau
    mem = dict(r=g["gain"] * tau / dt, v_leak=g["drive"] * tau / dt, **common)
    if kind == "Leaky":
        return nir.LIF(tau=tau, **mem)
    tau_syn = _decay_tau(layer.name, "alpha", g["alpha"], dt)
    # alpha = 1 - dt/tau_syn;  syn_gain = dt w_in / tau_syn  =>  w_in = syn_gain tau_syn / dt
    return nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau, w_in=g["syn_gain"] * tau_syn / dt, **mem)


def _neuron_or_loop(nir, layer, shape, dt, latent):
    """A neuron node; a recurrent layer as the subgraph lif -> w_rec -> lif (snnTorch's layout)."""
    node = _neuron_node(nir, layer, shape, dt, latent)
    if "W_rec" not in layer.params:
        return node, shape
    W = layer.params["W_rec"]
    b = layer.params.get("b_rec")
    w_rec = nir.Affine(weight=W.copy(), bias=np.zeros(len(W), W.dtype) if b is None else b.copy(),
                       metadata=_meta("W_rec", dt, has_bias=b is not None))
    n = np.array(shape)
    sub = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": n}), "lif": node,
                              "w_rec": w_rec, "output": nir.Output(output_type={"output": n})},
                       edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"),
                              ("lif", "output")], metadata=_meta(type(layer).__name__, dt),
                       type_check=False)
    return sub, shape


def _node_writers():
    """(layer class, node writer) in the order to try; a writer returns (node, output shape)."""

    return ((Conv2d, _conv_node), (AvgPool2d, _pool_node), (SumPool2d, _pool_node),
            (BatchNorm2d, _batchnorm_node), (Neuron, _neuron_or_loop), (Flatten, _flatten_node),
            (Linear, _linear_node))


def to_nir(source, config=None, *, dt: float = DEFAULT_DT, latent_weights: bool = False):
    """The ``nir.NIRGraph`` of a network (see the module docstring for the mapping).

    source: a Network, a state dict (then ``config`` is its run configuration), a checkpoint tree,
    the path of a checkpoint file or run folder, or a pretrained model's name ("mnist-4bit").
    dt: seconds per time step (stated in the metadata and used for tau). latent_weights: also
    store the latent float weights of quantized layers, so that ``read_nir`` restores the state
    dict bit for bit (for training on); without them it restores weights that quantize to the
    same Wq (the same network, smaller file).
    """

    nir = nir_package()
    if isinstance(dt, bool) or not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise NIRError(f"to_nir: dt must be a finite number of seconds > 0, got {dt!r}")
    net = _network_of(source, config)
    shape = tuple(net.input_shape)
    nodes = {"input": nir.Input(input_type={"input": np.array(shape)},
                                metadata=_meta("Input", dt))}
    omitted, last, writers = [], "input", _node_writers()
    for layer in net.layers:
        if layer.name in ("input", "output"):
            raise NIRError(f"to_nir: layer name {layer.name!r} is taken by NIR's input/output "
                           "nodes; rename the layer")
        if isinstance(layer, Dropout):   # the identity in eval mode
            omitted.append({"name": layer.name, "kind": "Dropout", "p": layer.p, "after": last})
            continue
        write = next((w for cls, w in writers if isinstance(layer, cls)), None)
        if write is None:
            raise NIRError(f"to_nir: layer {layer.name!r} ({type(layer).__name__}) has no NIR "
                           "node; NIR export covers Conv2d, AvgPool2d, SumPool2d, BatchNorm2d, "
                           "the neurons, Flatten, Linear and Dropout")
        nodes[layer.name], shape = write(nir, layer, shape, dt, latent_weights)
        last = layer.name
    nodes["output"] = nir.Output(output_type={"output": np.array(shape)},
                                 metadata=_meta("Output", dt))
    config = getattr(net, "config", None)
    meta = {"producer": PRODUCER, "format": FORMAT, "format_version": FORMAT_VERSION,
            "mininsnn_version": __version__, "dt": float(dt), "dtype": net.dtype.name,
            "omitted": json.dumps(omitted)}
    if config is not None:
        meta["config"] = json.dumps(config)
    chain = list(nodes)
    try:   # NIR's own type check: every node's shape chains to the next
        return nir.NIRGraph(nodes=nodes, edges=list(zip(chain, chain[1:])), metadata=meta,
                            type_check=not any(isinstance(n, nir.NIRGraph) for n in nodes.values()))
    except (ValueError, AssertionError, TypeError) as e:
        raise NIRError(f"to_nir: NIR rejects the graph: {one_line(e)}") from None


def write_nir(path, source, config=None, *, dt: float = DEFAULT_DT,
              latent_weights: bool = False) -> Path:
    """Write :func:`to_nir` of ``source`` to the NIR (HDF5) file ``path``, atomically: a
    temporary file in the same folder, fsync'ed, then renamed; nothing half-written is left on
    any error. The folder is created if needed. Returns the path."""
    nir = nir_package()
    path = Path(path)
    if path.is_dir():
        raise NIRError(f"{path} is a folder; pass a file path such as {path / 'model.nir'}")
    graph = to_nir(source, config, dt=dt, latent_weights=latent_weights)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        nir.write(tmp, graph)
    return path
