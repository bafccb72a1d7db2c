"""Reading NIR graphs as mininsnn networks (``mininsnn.nir`` re-exports ``read_nir``, ``from_nir``).

A graph written by mininsnn carries each layer's exact facts in its nodes' metadata and reads back
as the same network, bit for bit. Any other graph (or ``use_metadata=False``) is read with NIR's
semantics, stepped with forward Euler at the user's ``dt`` (docs/nir.md derives each line):

    LIF      v[t] = v + dt/tau (v_leak - v + r I[t])   -> Leaky(beta = 1 - dt/tau, gain = r dt/tau,
                                                             drive = dt v_leak / tau)
    IF       v[t] = v + r I[t]  (per step, as Sinabs, Norse and snnTorch read it) -> Leaky(beta 1, gain r)
    CubaLIF  I[t] = I + dt/tau_syn (w_in x[t] - I)     -> Synaptic(alpha = 1 - dt/tau_syn,
             V[t] = V + dt/tau_mem (v_leak - V + r I[t])   syn_gain = dt w_in / tau_syn, beta, gain, drive)

each firing where v > v_threshold and reset to v_reset in the same step (reset="zero",
reset_delay=False, v_reset per neuron). ``node -> Affine/Linear -> same node`` (flat, or a nested
subgraph such as snnTorch's ``{input, lif, w_rec, output}``) is a recurrent layer (RLeaky /
RSynaptic) whose spikes of step t-1 arrive at step t. Every parameter may be one value or an array
of the layer's shape. Anything else is refused with one line naming the file, node and field.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np

from mininsnn import neurons, recurrent
from mininsnn import surrogate as sg
from mininsnn.config import validate_config
from mininsnn.layers import AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, SumPool2d
from mininsnn.network import Network
from mininsnn.nir_graph import (DEFAULT_DT, FORMAT_VERSION, NEURON_TYPES, NIRError, chain_of,
                                check_fields, fold_recurrence, inline_subgraphs, input_shape_of,
                                nir_package, node_metadata, one_line, scan_file, shape_of)
from mininsnn.quant import QUANT_GRADS, check_bits, latent_from_codes, quantize_forward


def reconstruct_latent_weight(Wq: np.ndarray, bits: int, scale, max_abs_weight) -> np.ndarray:
    """Latent weights W with quantize(W, bits) == Wq bit for bit, from the exported Wq = s * q,
    s = ``scale`` and ``max_abs_weight`` = max|W| of the original latent weights:

        W = Wq, except W_i = sign(q_i) * max|W| where |q_i| = L = 2^(bits-1) - 1.

    Then max|W| is the original one (every other |Wq_i| <= (L-1) s < max|W|), so quantize recomputes
    s = max|W| / L exactly, round(W_i / s) = q_i, and s * q_i = Wq_i. (W = Wq alone would not do:
    max|Wq| = fl(L s) may differ from the original max|W|, and with it the scale's last bit.)"""

    s = Wq.dtype.type(scale)
    if s == 0:
        return np.zeros_like(Wq)
    # float codes keep the sign of -0.0 codes, so W = s * q gives back Wq's signed zeros bit for bit
    return latent_from_codes(np.round(Wq / s), s, max_abs_weight, Wq.dtype)


class _Reader:
    """Turns the nodes of one chain into mininsnn layers, tracking the per-sample shape."""

    def __init__(self, nir, where: str, dt: float, dtype, use_metadata: bool):
        self.nir, self.where, self.dt, self.dtype = nir, where, dt, np.dtype(dtype)
        self.use = use_metadata

    def fail(self, name, message):
        raise NIRError(f"{self.where}: node {name!r}: {message}")

    # -- fields -------------------------------------------------------------------------------
    def array(self, name, node, field):
        v = getattr(node, field, None)
        try:
            a = np.asarray(v)
        except Exception:                      # noqa: BLE001 - any unreadable field
            a = None
        if a is None or a.dtype.kind not in "biuf" or not np.isfinite(a).all():
            self.fail(name, f"{field} is not a finite numeric array (NaN, inf or missing)")
        return a

    def weights(self, name, node, field="weight"):
        return self.array(name, node, field).astype(self.dtype)

    def param(self, name, node, field, shape, positive=False):
        """A neuron parameter as float64 of the layer's shape: one value or an array that
        broadcasts to it (a leading batch dimension of 1 dropped)."""
        a = self.array(name, node, field).astype(np.float64)
        if a.ndim == len(shape) + 1 and a.shape[0] == 1:   # Sinabs: the state's batch dim of 1
            a = a[0]
        try:
            a = np.broadcast_to(a.reshape(a.shape if a.size != 1 else ()), shape)
        except ValueError:
            self.fail(name, f"{field} has shape {a.shape}, the layer {shape}: shapes do not chain")
        if positive and not (a > 0).all():
            self.fail(name, f"{field} must be > 0, got {a.min():g}")
        return a

    def pair(self, name, node, field, default=None):
        v = getattr(node, field, default)
        if isinstance(v, (str, bytes)):
            v = {"valid": 0, b"valid": 0}.get(v, v)
            if isinstance(v, (str, bytes)):
                self.fail(name, f"{field}={v!r} is not supported; give explicit integers")
        a = np.atleast_1d(np.asarray(v))
        if a.size == 1:
            a = np.repeat(a, 2)
        if a.shape != (2,) or a.dtype.kind not in "iuf" or (a != np.round(a)).any() \
                or a[0] != a[1]:
            self.fail(name, f"{field} {v!r} is not one integer for both axes "
                            "(mininsnn has square kernels, equal strides and padding only)")
        return int(a[0])

    def quantized(self, name, meta, Wq):
        """Latent weights of a mininsnn-quantized layer, checked to reproduce Wq bit for bit."""

        bits = int(meta.get("bits", 0))
        if bits == 0:
            return None, Wq
        try:
            bits = check_bits(bits, "bits")
        except ValueError as e:
            self.fail(name, str(e))
        if "latent_weight" in meta:
            W = np.asarray(meta["latent_weight"]).astype(self.dtype)
            if W.shape != Wq.shape:
                self.fail(name, f"latent_weight has shape {W.shape}, weight {Wq.shape}")
        else:
            W = reconstruct_latent_weight(Wq, bits, meta.get("scale", 0), meta.get("max_abs_weight", 0))
        if not np.array_equal(quantize_forward(W, bits)[0], Wq):
            self.fail(name, f"its weights are not {bits}-bit codes times the stored scale; "
                            "the file was changed after export")
        return bits, W

    def quant_grad(self, name, meta):
        qg = meta.get("quant_grad", "ste+scale")
        if qg not in QUANT_GRADS:
            self.fail(name, f"quant_grad {qg!r} is not one of {', '.join(QUANT_GRADS)}")
        return qg

    # -- nodes --------------------------------------------------------------------------------
    def node(self, name, node, meta, shape, rec):
        """(layer, output shape) of one node; ``rec`` is its recurrent weight node or None."""
        kind = type(node).__name__
        if kind in NEURON_TYPES:
            return self.neuron(name, node, meta, shape, rec), shape
        if kind in ("Affine", "Linear"):
            return self.linear(name, node, meta, shape, kind == "Affine")
        read = {"Conv2d": self.conv2d, "AvgPool2d": self.pool, "SumPool2d": self.pool,
                "Flatten": self.flatten}.get(kind)
        if read is None:
            self.fail(name, f"{kind} nodes cannot run in mininsnn; it runs Conv2d, AvgPool2d, "
                            "SumPool2d, Affine, Linear, Flatten, LIF, IF and CubaLIF nodes and "
                            "recurrent loops of them")
        return read(name, node, meta, shape)

    def conv2d(self, name, node, meta, shape):

        W = self.weights(name, node)
        if W.ndim != 4:
            self.fail(name, f"Conv2d weight must be (out, in, kh, kw), got shape {W.shape}")
        O, C, KH, KW = W.shape
        if int(np.asarray(getattr(node, "groups", 1))) != 1:
            self.fail(name, "groups != 1: grouped convolution is not supported")
        if self.pair(name, node, "dilation", 1) != 1:
            self.fail(name, "dilation != 1: dilated convolution is not supported")
        s, p = self.pair(name, node, "stride", 1), self.pair(name, node, "padding", 0)
        if len(shape) != 3 or shape[0] != C:
            self.fail(name, f"Conv2d expects ({C}, H, W) inputs, the previous node gives {shape}:"
                            " shapes do not chain")
        if KH != KW:
            self.fail(name, f"kernel {KH}x{KW} is not square")
        OH, OW = (shape[1] + 2 * p - KH) // s + 1, (shape[2] + 2 * p - KW) // s + 1
        if OH < 1 or OW < 1:
            self.fail(name, f"kernel {KH}x{KW} (padding {p}) is larger than its {shape} input")
        b = self.weights(name, node, "bias") if getattr(node, "bias", None) is not None \
            else np.zeros(O, self.dtype)
        if b.shape != (O,):
            self.fail(name, f"bias has shape {b.shape}, expected ({O},)")
        if meta.get("layer") == "BatchNorm2d":
            return self.batchnorm(name, meta, C, O, KH, s, p), (O, OH, OW)
        bits, W = self.quantized(name, meta, W)
        has_bias = bool(meta["has_bias"]) if "has_bias" in meta else bool((b != 0).any())
        layer = Conv2d(C, O, KH, stride=s, padding=p, bias=has_bias, bits=bits, dtype=self.dtype,
                       rng=np.random.default_rng(0), quant_grad=self.quant_grad(name, meta))
        layer.params["weight"][...] = W
        if has_bias:
            layer.params["bias"][...] = b
        elif (b != 0).any():
            self.fail(name, "the bias is not zero but the layer had none")
        return layer, (O, OH, OW)

    def batchnorm(self, name, meta, C, O, K, s, p):

        if not (C == O and K == 1 and s == 1 and p == 0):
            self.fail(name, "metadata says BatchNorm2d but the node is not a 1x1 conv C -> C")
        layer = BatchNorm2d(C, eps=float(meta.get("eps", 1e-5)),
                            momentum=float(meta.get("momentum", 0.1)), dtype=self.dtype)
        for key, dst in (("bn_weight", layer.params["weight"]), ("bn_bias", layer.params["bias"]),
                         ("running_mean", layer.buffers["running_mean"]),
                         ("running_var", layer.buffers["running_var"]),
                         ("num_batches_tracked", layer.buffers["num_batches_tracked"])):
            v = np.asarray(meta.get(key))
            if v.shape != dst.shape or v.dtype.kind not in "biuf":
                self.fail(name, f"BatchNorm metadata {key!r} is missing or not of shape {dst.shape}")
            dst[...] = v
        return layer

    def pool(self, name, node, meta, shape):

        k = self.pair(name, node, "kernel_size")
        s, p = self.pair(name, node, "stride", k), self.pair(name, node, "padding", 0)
        summed = isinstance(node, self.nir.SumPool2d)
        if p and not summed:
            self.fail(name, "padding != 0: padded average pooling is not supported (NIR does not "
                            "say whether the padding counts in the mean)")
        if len(shape) != 3 or shape[1] + 2 * p < k or shape[2] + 2 * p < k:
            self.fail(name, f"a {k}x{k} window does not fit its input {shape}: shapes do not chain")
        out = (shape[0], (shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1)
        return (SumPool2d(k, s, padding=p) if summed else AvgPool2d(k, s)), out

    def flatten(self, name, node, meta, shape):

        n = len(shape)
        start, end = int(getattr(node, "start_dim", 0)), int(getattr(node, "end_dim", -1))
        # NIR counts dims of the per-sample shape (start_dim 0 flattens everything); files from
        # torch.nn.Flatten count the batch too (start_dim 1): both flatten everything here.
        per_sample = start % n == 0 and end % n == n - 1 if n else False
        with_batch = start == 1 and end == -1
        if not (per_sample or with_batch):
            self.fail(name, f"start_dim={start}, end_dim={end} of a {shape} input keep several "
                            "dims; mininsnn flattens everything after the batch")
        return Flatten(), (int(np.prod(shape)),)

    def linear(self, name, node, meta, shape, affine):

        W = self.weights(name, node)
        if W.ndim != 2:
            self.fail(name, f"weight must be (out, in), got shape {W.shape}")
        O, F = W.shape
        if shape != (F,):
            self.fail(name, f"{type(node).__name__} expects {F} inputs, the previous node gives "
                            f"{shape}: shapes do not chain")
        bits, W = self.quantized(name, meta, W)
        layer = Linear(F, O, bias=affine, bits=bits, dtype=self.dtype,
                       rng=np.random.default_rng(0), quant_grad=self.quant_grad(name, meta))
        layer.params["weight"][...] = W
        if affine:
            b = self.weights(name, node, "bias")
            if b.shape != (O,):
                self.fail(name, f"bias has shape {b.shape}, expected ({O},)")
            layer.params["bias"][...] = b
        return layer, (O,)

    def neuron(self, name, node, meta, shape, rec):
        """LIF / IF / CubaLIF (and its recurrent weight node ``rec``: (name, node) or None) ->
        Leaky / Synaptic (RLeaky / RSynaptic): the metadata's exact layer, else NIR's semantics."""

        kind, kw = self.neuron_metadata(name, meta) if meta else self.neuron_nir(name, node, shape)
        try:
            if rec is None:
                return getattr(neurons, kind)(**kw)
            n = int(np.prod(shape))
            W, b = self.recurrent_weights(rec, n, len(shape))
            layer = getattr(recurrent, "R" + kind)(n, **{**kw, "dtype": self.dtype}, bias=b is not None,
                                                   rng=np.random.default_rng(0))
            layer.params["W_rec"][...] = W
            if b is not None:
                layer.params["b_rec"][...] = b
            return layer
        except NIRError:
            raise
        except (ValueError, TypeError) as e:
            self.fail(name, f"mininsnn's {kind} refuses these parameters: {one_line(e)}")

    def neuron_nir(self, name, node, shape):
        """(layer kind, constructor arguments) of a node read with NIR's semantics at dt."""
        dt, kind = self.dt, type(node).__name__

        def p(field, positive=False):
            if getattr(node, field, None) is None and field in _OPTIONAL:   # NIR's defaults
                return np.full(shape, _OPTIONAL[field])
            return self.param(name, node, field, shape, positive)

        def decay(field):   # 1 - dt/tau of forward Euler, refused where the step leaves [0, 1)
            tau = p(field, positive=True)
            if (tau < dt).any():
                self.fail(name, f"{field} = {tau.min():g} is shorter than the step dt = {dt:g}: "
                                "forward Euler is unstable there; pass a smaller dt")
            return tau, 1.0 - dt / tau
        kw = dict(threshold=p("v_threshold"), v_reset=p("v_reset"), reset="zero",
                  reset_delay=False)
        if kind == "IF":        # v[t] = v + r I[t] per step (Sinabs, Norse, snnTorch)
            kw.update(beta=1.0, gain=p("r"), drive=0.0)
        else:
            tau, kw["beta"] = decay("tau" if kind == "LIF" else "tau_mem")
            kw.update(gain=p("r") * dt / tau, drive=dt * p("v_leak") / tau)
        if kind == "CubaLIF":   # I[t] = I + dt/tau_syn (w_in x - I)
            tau_syn, kw["alpha"] = decay("tau_syn")
            kw["syn_gain"] = dt * p("w_in") / tau_syn
        return ("Synaptic" if kind == "CubaLIF" else "Leaky"), \
            {k: self.compact(v) for k, v in kw.items()}

    def compact(self, v):
        """One float where all neurons agree (the layer's fast path), else an array in dtype."""
        if not isinstance(v, np.ndarray):
            return v
        return float(v.flat[0]) if (v == v.flat[0]).all() else v.astype(self.dtype)

    def recurrent_weights(self, rec, n, ndim):
        name, node = rec
        W = self.weights(name, node)
        if ndim != 1 or W.shape != (n, n):
            self.fail(name, f"a recurrent weight must be ({n}, {n}) on a layer of {n} neurons "
                            f"in one dimension, got weight {W.shape}")
        meta = node_metadata(node, True) if self.use else {}
        if isinstance(node, self.nir.Linear) or not meta.get("has_bias", True):
            if isinstance(node, self.nir.Affine) and (self.weights(name, node, "bias") != 0).any():
                self.fail(name, "the bias is not zero but the layer had none")
            return W, None
        b = self.weights(name, node, "bias")
        if b.shape != (n,):
            self.fail(name, f"bias has shape {b.shape}, expected ({n},)")
        return W, b

    def neuron_metadata(self, name, meta):
        """(layer kind, constructor arguments) stored by mininsnn's writer: bit for bit."""

        kind = str(meta.get("layer", "Leaky")).removeprefix("R")
        if kind not in ("Leaky", "Synaptic"):
            self.fail(name, f"metadata names an unknown neuron layer {meta.get('layer')!r}")
        try:
            kw = {"surrogate": sg.make_surrogate(str(meta.get("surrogate", "fast_sigmoid")),
                                                 float(meta.get("slope", 25.0))),
                  "reset": str(meta.get("reset", "zero")),
                  "reset_delay": bool(meta.get("reset_delay", False))}
            for key in _NEURON_FACTS:
                if key in meta:
                    v = np.asarray(meta[key])
                    kw[key] = float(v) if v.ndim == 0 else v.astype(self.dtype)
            learned = [k for k in str(meta.get("learned", "")).split(",") if k]
            if learned:
                kw.update({f"learn_{k}": True for k in learned}, dtype=self.dtype)
        except (KeyError, ValueError, TypeError) as e:
            self.fail(name, f"bad neuron metadata: {one_line(e)}")
        return kind, kw


#: optional neuron fields and NIR's default for them
_OPTIONAL = {"v_reset": 0.0, "w_in": 1.0}
#: the neuron facts mininsnn's writer stores in metadata and its reader passes back
_NEURON_FACTS = ("alpha", "beta", "threshold", "syn_gain", "gain", "drive", "v_reset")


# =============================================================================================
# from a graph to a Network

def _dtype(gmeta, nodes, names, dtype, where):
    """The network's dtype: the one asked for, mininsnn's metadata, else the first float32 or
    float64 weights, else float32."""
    if dtype is not None:
        try:
            asked = np.dtype(dtype)
        except TypeError:
            asked = None
        if asked not in (np.float32, np.float64):
            raise NIRError(f"{where}: dtype must be float32 or float64, got {dtype!r}")
        return asked
    if gmeta.get("dtype") in ("float32", "float64"):
        return np.dtype(gmeta["dtype"])
    for k in names:
        w = getattr(nodes[k], "weight", None)
        if w is not None and np.asarray(w).dtype in (np.float32, np.float64):
            return np.asarray(w).dtype
    return np.dtype(np.float32)


def _layer_name(name, rec):
    """'lif1' for a recurrent neuron 'lif1.lif' whose weight is 'lif1.w_rec' (a subgraph, inlined
    or written flat with such names), else the node's name."""
    head = name.rpartition(".")[0]
    return head if rec is not None and head and rec[0].rpartition(".")[0] == head else name


def _layers(reader, nodes, chain, loops, shape, use_metadata):
    layers = []
    for name in chain[1:-1]:
        node = nodes[name]
        rec = loops.get(name)
        try:
            layer, shape = reader.node(name, node, node_metadata(node, use_metadata), shape, rec)
        except NIRError:
            raise
        except (ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
            reader.fail(name, f"malformed {type(node).__name__} node ({one_line(e)})")
        layers.append((_layer_name(name, rec), layer))
    want = shape_of(getattr(nodes[chain[-1]], "output_type", None), "output")
    if want is not None and want not in (shape, (1,) + shape):
        raise NIRError(f"{reader.where}: the output node declares shape {want}, the last node "
                       f"gives {shape}: shapes do not chain")
    return layers


def _with_omitted(layers, input_name, gmeta, where):
    """Put back the layers mininsnn's writer left out of the graph (Dropout), where they were."""

    names = [input_name] + [n for n, _ in layers]
    try:
        for item in json.loads(gmeta.get("omitted", "[]")):
            if item["kind"] != "Dropout":
                raise ValueError(f"unknown kind {item['kind']!r}")
            at = names.index(item["after"])
            layers.insert(at, (item["name"], Dropout(float(item["p"]))))
            names.insert(at + 1, item["name"])
    except (ValueError, TypeError, KeyError) as e:
        raise NIRError(f"{where}: bad 'omitted' graph metadata: {one_line(e)}") from None
    return layers


def from_nir(graph, *, dt: float = DEFAULT_DT, use_metadata: bool = True,
             where: str = "NIR graph", dtype=None):
    """The Network (eval mode) of a ``nir.NIRGraph``; see :func:`read_nir`."""

    nir = nir_package()
    if isinstance(dt, bool) or not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise NIRError(f"{where}: dt must be a finite number of seconds > 0, got {dt!r}")
    if not isinstance(graph, nir.NIRGraph) or not isinstance(graph.nodes, dict):
        raise NIRError(f"{where}: expected a nir.NIRGraph, got {type(graph).__name__}")
    gmeta = node_metadata(graph, use_metadata)
    if gmeta and int(gmeta.get("format_version", 0)) > FORMAT_VERSION:
        raise NIRError(f"{where}: written by a newer mininsnn (format version "
                       f"{gmeta.get('format_version')}); this one reads 1..{FORMAT_VERSION}")
    nodes, edges = inline_subgraphs(graph, nir, where)
    for name, node in nodes.items():
        check_fields(node, name, where, nir)
    dtype = _dtype(gmeta, nodes, list(nodes), dtype, where)
    loops = fold_recurrence(nodes, edges, where, nir)
    chain = chain_of(nodes, edges, where, nir)
    if len(chain) < 3:
        raise NIRError(f"{where}: the graph has no layers between its input and output")
    reader = _Reader(nir, where, dt, dtype, use_metadata)
    shape = input_shape_of(nodes, chain, where, nir)
    layers = _layers(reader, nodes, chain, loops, shape, use_metadata)
    layers = _with_omitted(layers, chain[0], gmeta, where)
    try:
        net = Network(layers, shape, dtype=dtype)
        if "config" in gmeta:
            net.config = validate_config(json.loads(gmeta["config"]))
    except ValueError as e:      # ConfigError and JSONDecodeError are ValueErrors too
        raise NIRError(f"{where}: {one_line(e)}") from None
    return net.eval()


def read_nir(path, *, dt: float = DEFAULT_DT, use_metadata: bool = True, dtype=None):
    """The Network (eval mode) stored in the NIR file ``path``.

    Written by mininsnn (``write_nir``): the same network, its run configuration as
    ``net.config``. Otherwise (or with ``use_metadata=False``, which reads a mininsnn file the way
    another tool does) NIR's semantics stepped with forward Euler at ``dt`` seconds per step
    (default 1e-4, snnTorch's); see the module docstring. ``dtype`` (float32 or float64): the
    network's; default the file's weights' (mininsnn's metadata: the network's as written). Every
    problem is a one-line NIRError naming the file, the node and the field."""
    nir = nir_package()
    where = os.fspath(path)
    if not os.path.isfile(where):
        raise NIRError(f"{where}: no such NIR file")
    try:
        scan_file(where)
        graph = nir.read(where, type_check=False)    # mininsnn checks the shapes itself, by node
    except NIRError:
        raise
    except Exception as e:                           # noqa: BLE001 - h5py/nir raise anything
        raise NIRError(f"{where}: not a readable NIR file (truncated, damaged or not NIR): "
                       f"{one_line(e)}") from None
    return from_nir(graph, dt=dt, use_metadata=use_metadata, where=where, dtype=dtype)
