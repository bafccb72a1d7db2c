"""NIR export and import: a mininsnn network as a Neuromorphic Intermediate Representation graph.

NIR (https://nnir.readthedocs.io, the ``nir`` package) is how a trained spiking network moves to other
simulators (snnTorch, Norse, Sinabs, Spyx, ...) and to neuromorphic hardware. ``nir`` is an
optional dependency (``pip install 'mininsnn[nir]'``), imported when first needed.

    >>> from mininsnn.nir import write_nir, read_nir
    >>> write_nir("model.nir", net)          # a Network, checkpoint tree, run folder or "mnist-4bit"
    >>> net2 = read_nir("model.nir")                # a Network in eval mode; same spikes as net

Layer -> node (docs/nir.md derives each line; ``dt`` is the length of one time step, default 1e-4 s,
the step snnTorch's ``import_from_nir`` assumes):

    Conv2d       Conv2d, weight Wq = s * q (the quantized float weights), bias 0 if none
    AvgPool2d    AvgPool2d (kernel, stride, padding 0)
    BatchNorm2d  (eval) Conv2d 1x1, weight diag(a), bias b:  a = gamma / sqrt(running_var + eps),
                 b = beta - running_mean * a, so that y = a x + b per channel
    Leaky        LIF with tau = dt / (1 - beta), r = tau / dt, v_leak = 0, v_reset = 0,
                 v_threshold = theta; beta = 1 as IF with r = 1 / dt
    Flatten      Flatten (start_dim 0 of the per-sample shape: everything)
    Linear       Affine (with bias) or Linear, weight Wq
    Dropout      omitted (eval); recorded in the graph metadata

NIR's LIF, Euler-stepped by dt, is  v[t] = (1 - dt/tau) v[t-1] + (dt/tau) v_leak + (r dt/tau) I[t],
then a spike where v[t] > v_threshold and v[t] = v_reset there: with the values above that is
V[t] = beta U[t-1] + I[t], S[t] = H(V[t] - theta), U[t] = V[t] (1 - S[t]), the neuron of
``Leaky(reset="zero", reset_delay=False)``. The paper's neuron (subtract reset, one step late)
has no NIR form: it exports as the same LIF node, and its node metadata says
``reset="subtract"``, ``reset_delay=True``, ``nir_exact=False``. Every node carries its
mininsnn facts in metadata (``producer="mininsnn"``, ``layer``, ``dt``; weights: ``bits`` (0 =
full precision), ``scale``, ``max_abs_weight``, ``quant_grad``; neurons: ``reset``,
``reset_delay``, exact ``beta`` and ``threshold``, ``surrogate``, ``slope``; BatchNorm: its
parameters and running statistics), and the graph the run configuration, so that
``read_nir(write_nir(net))`` is the same network: the same weights bit for bit and the same spikes.

Reading a graph without mininsnn metadata (another tool's file, or ``use_metadata=False``) follows
NIR's semantics: Conv2d, AvgPool2d, Affine, Linear and Flatten nodes, LIF/IF nodes with
v_leak = 0, v_reset = 0 and one tau, r and threshold per node, in one chain from the input to the
output. Anything else is refused with a one-line :class:`NIRError` naming the file and the node.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from mininsnn.atomic import atomic_file
from mininsnn.config import ConfigError

__all__ = ["NIRError", "DEFAULT_DT", "FORMAT", "FORMAT_VERSION", "to_nir", "write_nir",
           "from_nir", "read_nir", "reconstruct_latent_weight"]

#: Length of one time step in seconds: snnTorch's export_to_nir / import_from_nir use 1e-4.
DEFAULT_DT = 1e-4
FORMAT = "mininsnn-nir"
FORMAT_VERSION = 1
_PRODUCER = "mininsnn"
#: |r dt / tau - 1| (input gain) and relative spread of values accepted as equal in foreign files
_TOL = 1e-6


class NIRError(ConfigError):
    """A network that cannot be exported to NIR, or a NIR file or graph that mininsnn cannot run.

    A ConfigError (so a ValueError): the command line prints it as one line and exits with 2."""


def _nir():
    """The ``nir`` package, or a one-line NIRError saying how to install it."""
    try:
        import nir
    except ImportError:
        raise NIRError("NIR export and import need the optional package 'nir': "
                       "pip install 'mininsnn[nir]' (or pip install nir)") from None
    return nir


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


# =============================================================================================
# export

def _network_of(source, config=None):
    """The Network to export: a Network; a state dict with ``config``; a checkpoint tree (dict
    with "model" and "config"); or any model source of mininsnn.sources.resolve given as a path
    or name: a run folder (its best.h5, else its last.h5), a checkpoint file, a pretrained
    model's name or .npz file, a .nir file."""
    from mininsnn.config import validate_config
    from mininsnn.models import build_from_config
    from mininsnn.network import Network
    from mininsnn.sources import SourceError, resolve

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
    return {"producer": _PRODUCER, "layer": layer, "dt": float(dt), **facts}


def _weight_meta(layer, latent_weights: bool) -> tuple[np.ndarray, dict]:
    """(Wq, metadata) of a Conv2d or Linear: Wq = s * q, the weights the forward uses."""
    from mininsnn.quant import quantize_forward

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


def _leaky_node(nir, layer, shape, dt):
    """NIR LIF (beta < 1) or IF (beta = 1) equal, Euler-stepped by dt, to the same-step zero reset."""
    ones = np.ones(shape, np.float64)
    facts = dict(reset=layer.reset, reset_delay=layer.reset_delay, beta=layer.beta,
                 threshold=layer.threshold, surrogate=layer.surrogate.name,
                 slope=float(layer.surrogate.k),
                 nir_exact=layer.reset == "zero" and not layer.reset_delay)
    meta = _meta("Leaky", dt, **facts)
    theta = ones * layer.threshold
    if layer.beta == 1.0:
        # IF: dv/dt = r I  ->  v[t] = v[t-1] + dt r I[t]:  r = 1/dt gives gain 1, leak none
        return nir.IF(r=ones / dt, v_threshold=theta, v_reset=0 * ones, metadata=meta)
    # tau dv/dt = (v_leak - v) + r I  ->  v[t] = (1 - dt/tau) v[t-1] + (r dt/tau) I[t]  (v_leak 0)
    # beta = 1 - dt/tau  =>  tau = dt / (1 - beta);   gain r dt/tau = 1  =>  r = tau / dt
    tau = dt / (1.0 - layer.beta)
    return nir.LIF(tau=ones * tau, r=ones * (tau / dt), v_leak=0 * ones, v_threshold=theta,
                   v_reset=0 * ones, metadata=meta)


def to_nir(source, config=None, *, dt: float = DEFAULT_DT, latent_weights: bool = False):
    """The ``nir.NIRGraph`` of a network (see the module docstring for the mapping).

    source: a Network, a state dict (then ``config`` is its run configuration), a checkpoint tree,
    the path of a checkpoint file or run folder, or a pretrained model's name ("mnist-4bit").
    dt: seconds per time step (stated in the metadata and used for tau and r). latent_weights: also store the latent float weights of
    quantized layers, so that ``read_nir`` restores the state dict bit for bit (for training on);
    without them it restores weights that quantize to the same Wq (the same network, smaller file).
    """
    from mininsnn.layers import AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Leaky, Linear
    from mininsnn import __version__

    nir = _nir()
    if not (isinstance(dt, (int, float)) and not isinstance(dt, bool) and math.isfinite(dt)
            and dt > 0):
        raise NIRError(f"to_nir: dt must be a finite number of seconds > 0, got {dt!r}")
    net = _network_of(source, config)
    shape = tuple(net.input_shape)
    nodes = {"input": nir.Input(input_type={"input": np.array(shape)},
                                metadata=_meta("Input", dt))}
    chain, omitted, last = ["input"], [], "input"
    for layer in net.layers:
        name = layer.name
        if name in ("input", "output"):
            raise NIRError(f"to_nir: layer name {name!r} is taken by NIR's input/output nodes; "
                           "rename the layer")
        if isinstance(layer, Dropout):   # the identity in eval mode
            omitted.append({"name": name, "kind": "Dropout", "p": layer.p, "after": last})
            continue
        if isinstance(layer, Conv2d):
            Wq, facts = _weight_meta(layer, latent_weights)
            s, p = layer.stride, layer.padding
            bias = layer.params["bias"].copy() if "bias" in layer.params else \
                np.zeros(layer.out_channels, Wq.dtype)
            node = nir.Conv2d(input_shape=shape[1:], weight=Wq, stride=(s, s), padding=(p, p),
                              dilation=(1, 1), groups=1, bias=bias,
                              metadata=_meta("Conv2d", dt, **facts))
            K = layer.kernel_size
            shape = (layer.out_channels, (shape[1] + 2 * p - K) // s + 1,
                     (shape[2] + 2 * p - K) // s + 1)
        elif isinstance(layer, AvgPool2d):
            k, s = layer.k, layer.stride
            node = nir.AvgPool2d(kernel_size=np.array([k, k]), stride=np.array([s, s]),
                                 padding=np.array([0, 0]), metadata=_meta("AvgPool2d", dt))
            shape = (shape[0], (shape[1] - k) // s + 1, (shape[2] - k) // s + 1)
        elif isinstance(layer, BatchNorm2d):
            node = _batchnorm_node(nir, layer, shape, dt)
        elif isinstance(layer, Leaky):
            node = _leaky_node(nir, layer, shape, dt)
        elif isinstance(layer, Flatten):
            node = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1,
                               metadata=_meta("Flatten", dt))
            shape = (int(np.prod(shape)),)
        elif isinstance(layer, Linear):
            Wq, facts = _weight_meta(layer, latent_weights)
            meta = _meta("Linear", dt, **facts)
            node = (nir.Affine(weight=Wq, bias=layer.params["bias"].copy(), metadata=meta)
                    if "bias" in layer.params else nir.Linear(weight=Wq, metadata=meta))
            shape = (layer.out_features,)
        else:
            raise NIRError(f"to_nir: layer {name!r} ({type(layer).__name__}) has no NIR node; "
                           "NIR export covers Conv2d, AvgPool2d, BatchNorm2d, Leaky, Flatten, "
                           "Linear and Dropout")
        nodes[name] = node
        chain.append(name)
        last = name
    nodes["output"] = nir.Output(output_type={"output": np.array(shape)},
                                 metadata=_meta("Output", dt))
    chain.append("output")
    config = getattr(net, "config", None)
    meta = {"producer": _PRODUCER, "format": FORMAT, "format_version": FORMAT_VERSION,
            "mininsnn_version": __version__, "dt": float(dt), "dtype": net.dtype.name,
            "omitted": json.dumps(omitted)}
    if config is not None:
        meta["config"] = json.dumps(config)
    try:   # NIR's own type check: every node's shape chains to the next
        return nir.NIRGraph(nodes=nodes, edges=list(zip(chain, chain[1:])), metadata=meta,
                            type_check=True)
    except (ValueError, AssertionError, TypeError) as e:
        raise NIRError(f"to_nir: NIR rejects the graph: {_one_line(e)}") from None


def _batchnorm_node(nir, layer, shape, dt):
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
    return nir.Conv2d(input_shape=shape[1:], weight=W, stride=(1, 1), padding=(0, 0),
                      dilation=(1, 1), groups=1, bias=b.astype(dtype),
                      metadata=_meta("BatchNorm2d", dt, **facts))


def write_nir(path, source, config=None, *, dt: float = DEFAULT_DT,
              latent_weights: bool = False) -> Path:
    """Write :func:`to_nir` of ``source`` to the NIR (HDF5) file ``path``, atomically: a
    temporary file in the same folder, fsync'ed, then renamed; nothing half-written is left on
    any error. The folder is created if needed. Returns the path."""
    nir = _nir()
    path = Path(path)
    if path.is_dir():
        raise NIRError(f"{path} is a folder; pass a file path such as {path / 'model.nir'}")
    graph = to_nir(source, config, dt=dt, latent_weights=latent_weights)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        nir.write(tmp, graph)
    return path


# =============================================================================================
# import

def reconstruct_latent_weight(Wq: np.ndarray, bits: int, scale, max_abs_weight) -> np.ndarray:
    """Latent weights W with quantize(W, bits) == Wq bit for bit, from the exported Wq = s * q,
    s = ``scale`` and ``max_abs_weight`` = max|W| of the original latent weights:

        W = Wq, except W_i = sign(q_i) * max|W| where |q_i| = L = 2^(bits-1) - 1.

    Then max|W| is the original one (every other |Wq_i| <= (L-1) s < max|W|), so quantize recomputes
    s = max|W| / L exactly, round(W_i / s) = q_i, and s * q_i = Wq_i. (W = Wq alone would not do:
    max|Wq| = fl(L s) may differ from the original max|W|, and with it the scale's last bit.)"""
    from mininsnn.quant import latent_from_codes

    s = Wq.dtype.type(scale)
    if s == 0:
        return np.zeros_like(Wq)
    # float codes keep the sign of -0.0 codes, so W = s * q gives back Wq's signed zeros bit for bit
    return latent_from_codes(np.round(Wq / s), s, max_abs_weight, Wq.dtype)


def _metadata(node, use: bool) -> dict:
    md = getattr(node, "metadata", None)
    if use and isinstance(md, dict) and md.get("producer") == _PRODUCER:
        return md
    return {}


class _Reader:
    """Turns the nodes of one chain into mininsnn layers, tracking the per-sample shape."""

    def __init__(self, nir, where: str, dt, use_metadata: bool):
        self.nir, self.where, self.dt, self.use = nir, where, dt, use_metadata
        self.dtype = None
        self.steps = []   # (node, time step) of every neuron read with NIR's semantics

    def fail(self, name, message):
        raise NIRError(f"{self.where}: node {name!r}: {message}")

    # -- helpers ------------------------------------------------------------------------------
    def array(self, name, node, field):
        v = getattr(node, field, None)
        try:
            a = np.asarray(v)
        except Exception:                      # noqa: BLE001 - any unreadable field
            a = None
        if a is None or a.dtype.kind not in "biuf" or not np.isfinite(a).all():
            self.fail(name, f"{field} is not a finite numeric array")
        return a

    def weights(self, name, node, meta, field="weight"):
        a = self.array(name, node, field)
        if self.dtype is None:
            self.dtype = np.dtype(a.dtype) if a.dtype in (np.float32, np.float64) \
                else np.dtype(np.float32)
        return a.astype(self.dtype)

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

    def uniform(self, name, node, field, shape):
        a = self.array(name, node, field).astype(np.float64)
        if a.size > 1 and tuple(a.shape) != tuple(shape):
            self.fail(name, f"{field} has shape {a.shape}, its input {shape}: shapes do not chain")
        v = float(a.reshape(-1)[0]) if a.size else float("nan")
        if a.size == 0 or np.abs(a - v).max() > _TOL * max(1.0, abs(v)):
            self.fail(name, f"{field} differs between neurons (from {a.min():g} to {a.max():g});"
                            " mininsnn's Leaky has one value per layer")
        return v

    def quantized(self, name, meta, Wq):
        """Latent weights of a mininsnn-quantized layer, checked to reproduce Wq bit for bit."""
        from mininsnn.quant import check_bits, quantize_forward

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
        from mininsnn.quant import QUANT_GRADS
        qg = meta.get("quant_grad", "ste+scale")
        if qg not in QUANT_GRADS:
            self.fail(name, f"quant_grad {qg!r} is not one of {', '.join(QUANT_GRADS)}")
        return qg

    # -- nodes --------------------------------------------------------------------------------
    def conv2d(self, name, node, meta, shape):
        from mininsnn.layers import Conv2d

        W = self.weights(name, node, meta)
        if W.ndim != 4:
            self.fail(name, f"Conv2d weight must be (out, in, kh, kw), got shape {W.shape}")
        O, C, KH, KW = W.shape
        if int(np.asarray(getattr(node, "groups", 1))) != 1:
            self.fail(name, "grouped convolution is not supported")
        if self.pair(name, node, "dilation", 1) != 1:
            self.fail(name, "dilated convolution is not supported")
        s, p = self.pair(name, node, "stride", 1), self.pair(name, node, "padding", 0)
        if len(shape) != 3 or shape[0] != C:
            self.fail(name, f"Conv2d expects ({C}, H, W) inputs, the previous node gives {shape}:"
                            " shapes do not chain")
        if KH != KW:
            self.fail(name, f"kernel {KH}x{KW} is not square")
        OH, OW = (shape[1] + 2 * p - KH) // s + 1, (shape[2] + 2 * p - KW) // s + 1
        if OH < 1 or OW < 1:
            self.fail(name, f"kernel {KH}x{KW} (padding {p}) is larger than its {shape} input")
        b = self.weights(name, node, meta, "bias") if getattr(node, "bias", None) is not None \
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
        from mininsnn.layers import BatchNorm2d

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

    def avgpool(self, name, node, meta, shape):
        from mininsnn.layers import AvgPool2d

        k, s = self.pair(name, node, "kernel_size"), self.pair(name, node, "stride")
        if self.pair(name, node, "padding", 0) != 0:
            self.fail(name, "padded average pooling is not supported")
        if len(shape) != 3 or shape[1] < k or shape[2] < k:
            self.fail(name, f"a {k}x{k} window does not fit its input {shape}: shapes do not chain")
        return AvgPool2d(k, s), (shape[0], (shape[1] - k) // s + 1, (shape[2] - k) // s + 1)

    def flatten(self, name, node, meta, shape):
        from mininsnn.layers import Flatten

        n = len(shape)
        start, end = int(getattr(node, "start_dim", 0)), int(getattr(node, "end_dim", -1))
        # NIR counts dims of the per-sample shape (start_dim 0 flattens everything); files from
        # torch.nn.Flatten count the batch too (start_dim 1): both flatten everything here.
        per_sample = start % n == 0 and end % n == n - 1 if n else False
        with_batch = start == 1 and end == -1
        if not (per_sample or with_batch):
            self.fail(name, f"Flatten(start_dim={start}, end_dim={end}) of a {shape} input keeps "
                            "several dims; mininsnn flattens everything after the batch")
        return Flatten(), (int(np.prod(shape)),)

    def linear(self, name, node, meta, shape, affine):
        from mininsnn.layers import Linear

        W = self.weights(name, node, meta)
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
            b = self.weights(name, node, meta, "bias")
            if b.shape != (O,):
                self.fail(name, f"bias has shape {b.shape}, expected ({O},)")
            layer.params["bias"][...] = b
        return layer, (O,)

    def neuron(self, name, node, meta, shape, integrate_only):
        """LIF or IF -> Leaky. With mininsnn metadata: its exact beta, threshold, reset and
        surrogate. Without: NIR's semantics at step dt (module docstring), which must give input
        gain 1 and zero leak and reset potentials."""
        from mininsnn.layers import Leaky

        for field in ("v_reset",) + (() if integrate_only else ("v_leak",)):
            if self.uniform(name, node, field, shape) != 0.0:
                self.fail(name, f"{field} is not 0; mininsnn's neuron leaks and resets to 0")
        theta = self.uniform(name, node, "v_threshold", shape)
        r = self.uniform(name, node, "r", shape)
        tau = math.inf if integrate_only else self.uniform(name, node, "tau", shape)
        if meta:
            return self.leaky_from_metadata(name, meta), shape
        if not theta > 0:
            self.fail(name, f"v_threshold {theta:g} must be > 0")
        if not (r > 0 and tau > 0):
            self.fail(name, f"r ({r:g}) and tau ({tau:g}) must be > 0")
        # input gain r dt / tau must be 1: the step is dt = tau / r (IF: dt = 1 / r) unless given
        dt = self.dt if self.dt is not None else (1.0 / r if integrate_only else tau / r)
        gain = dt * r if integrate_only else r * dt / tau
        if abs(gain - 1.0) > _TOL:
            self.fail(name, f"input gain r*dt/tau = {gain:g} at dt = {dt:g}; mininsnn's Leaky "
                            "adds its input unscaled, so it needs gain 1 (pass dt = tau/r)")
        beta = 1.0 if integrate_only else 1.0 - dt / tau   # Euler: v <- (1 - dt/tau) v + ...
        if not 0.0 <= beta <= 1.0:
            self.fail(name, f"tau = {tau:g} is shorter than the step dt = {dt:g} (beta = {beta:g})")
        self.steps.append((name, dt))
        return Leaky(beta, theta, reset="zero", reset_delay=False), shape

    def leaky_from_metadata(self, name, meta):
        from mininsnn import surrogate as sg
        from mininsnn.layers import Leaky

        try:
            surrogate = sg.make_surrogate(str(meta.get("surrogate", "fast_sigmoid")),
                                          float(meta.get("slope", 25.0)))
            return Leaky(float(meta["beta"]), float(meta["threshold"]), surrogate,
                         reset=str(meta.get("reset", "zero")),
                         reset_delay=bool(meta.get("reset_delay", False)))
        except (KeyError, ValueError, TypeError) as e:
            self.fail(name, f"bad neuron metadata: {_one_line(e)}")


def _chain(graph, where: str, nir) -> list[str]:
    """Node names from the Input node to the Output node; NIRError unless the graph is one chain."""
    nodes, edges = graph.nodes, [tuple(e) for e in graph.edges]
    if not isinstance(nodes, dict) or not nodes:
        raise NIRError(f"{where}: the graph has no nodes")
    for name, node in nodes.items():
        if isinstance(node, nir.NIRGraph):
            raise NIRError(f"{where}: node {name!r} is a subgraph (e.g. a recurrent layer); "
                           "mininsnn runs feed-forward chains only")
    inputs = [k for k, n in nodes.items() if isinstance(n, nir.Input)]
    outputs = [k for k, n in nodes.items() if isinstance(n, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise NIRError(f"{where}: the graph has {len(inputs)} Input and {len(outputs)} Output "
                       "nodes; mininsnn runs graphs with one of each")
    succ = {}
    for a, b in edges:
        if a not in nodes or b not in nodes:
            raise NIRError(f"{where}: edge ({a!r}, {b!r}) names a node that does not exist")
        if a in succ:
            raise NIRError(f"{where}: node {a!r} feeds both {succ[a]!r} and {b!r}; mininsnn runs "
                           "one chain of layers, without branches")
        succ[a] = b
    preds = {}
    for a, b in edges:
        if b in preds:
            raise NIRError(f"{where}: node {b!r} has two inputs ({preds[b]!r}, {a!r}); mininsnn "
                           "runs one chain of layers, without merges")
        preds[b] = a
    chain, seen = [inputs[0]], {inputs[0]}
    while chain[-1] != outputs[0]:
        nxt = succ.get(chain[-1])
        if nxt is None:
            raise NIRError(f"{where}: node {chain[-1]!r} leads nowhere; the chain from "
                           f"{inputs[0]!r} does not reach the output {outputs[0]!r}")
        if nxt in seen:
            raise NIRError(f"{where}: the graph has a cycle through {nxt!r} (recurrence); mininsnn"
                           " runs feed-forward chains only")
        chain.append(nxt)
        seen.add(nxt)
    stray = [k for k in nodes if k not in seen]
    if stray:
        raise NIRError(f"{where}: node {stray[0]!r} is not on the chain from input to output")
    return chain


def from_nir(graph, *, dt: float | None = None, use_metadata: bool = True,
             where: str = "NIR graph"):
    """The Network (eval mode) of a ``nir.NIRGraph``; see :func:`read_nir`."""
    from mininsnn.config import validate_config
    from mininsnn.layers import Dropout
    from mininsnn.network import Network

    nir = _nir()
    if dt is not None and not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise NIRError(f"{where}: dt must be a finite number of seconds > 0, got {dt!r}")
    gmeta = _metadata(graph, use_metadata)
    if gmeta and int(gmeta.get("format_version", 0)) > FORMAT_VERSION:
        raise NIRError(f"{where}: written by a newer mininsnn (format version "
                       f"{gmeta.get('format_version')}); this one reads 1..{FORMAT_VERSION}")
    chain = _chain(graph, where, nir)
    reader = _Reader(nir, where, dt, use_metadata)
    if gmeta.get("dtype") in ("float32", "float64"):
        reader.dtype = np.dtype(gmeta["dtype"])
    first = graph.nodes[chain[0]]
    shape = tuple(int(d) for d in np.atleast_1d(np.asarray(first.input_type["input"])))
    input_shape, layers = shape, []
    kinds = {nir.Conv2d: "conv2d", nir.AvgPool2d: "avgpool", nir.Flatten: "flatten"}
    for name in chain[1:-1]:
        node = graph.nodes[name]
        meta = _metadata(node, use_metadata)
        try:
            if type(node) in kinds:
                layer, shape = getattr(reader, kinds[type(node)])(name, node, meta, shape)
            elif isinstance(node, (nir.Affine, nir.Linear)):
                layer, shape = reader.linear(name, node, meta, shape, isinstance(node, nir.Affine))
            elif isinstance(node, (nir.LIF, nir.IF)):
                layer, shape = reader.neuron(name, node, meta, shape, isinstance(node, nir.IF))
            else:
                reader.fail(name, f"{type(node).__name__} nodes cannot run in mininsnn; it runs "
                                  "Conv2d, AvgPool2d, Affine, Linear, Flatten, LIF and IF nodes")
        except NIRError:
            raise
        except (ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
            reader.fail(name, f"malformed {type(node).__name__} node ({_one_line(e)})")
        layers.append((name, layer))
    out = graph.nodes[chain[-1]]
    want = tuple(int(d) for d in np.atleast_1d(np.asarray(out.output_type["output"])))
    if want != shape:
        raise NIRError(f"{where}: the output node declares shape {want}, the last node gives "
                       f"{shape}: shapes do not chain")
    steps = {round(s, 12) for _, s in reader.steps}
    if dt is None and len(steps) > 1:
        raise NIRError(f"{where}: the neurons imply different time steps (tau/r = "
                       f"{', '.join(f'{s:g}' for s in sorted(steps))}); pass dt")
    names = [chain[0]] + [n for n, _ in layers]
    try:
        for item in json.loads(gmeta.get("omitted", "[]")):   # layers with no node (Dropout)
            if item["kind"] != "Dropout":
                raise ValueError(f"unknown kind {item['kind']!r}")
            at = names.index(item["after"])
            layers.insert(at, (item["name"], Dropout(float(item["p"]))))
            names.insert(at + 1, item["name"])
    except (ValueError, TypeError, KeyError) as e:
        raise NIRError(f"{where}: bad 'omitted' graph metadata: {_one_line(e)}") from None
    if not layers:
        raise NIRError(f"{where}: the graph has no layers between its input and output")
    try:
        net = Network(layers, input_shape, dtype=reader.dtype or np.float32)
        if "config" in gmeta:
            net.config = validate_config(json.loads(gmeta["config"]))
    except ValueError as e:      # ConfigError and JSONDecodeError are ValueErrors too
        raise NIRError(f"{where}: {_one_line(e)}") from None
    return net.eval()


def read_nir(path, *, dt: float | None = None, use_metadata: bool = True):
    """The Network (eval mode) stored in the NIR file ``path``.

    Written by mininsnn (``write_nir``): the same network, its run configuration as
    ``net.config``. Otherwise (or with ``use_metadata=False``, which reads a mininsnn file the way
    another tool does) NIR's semantics with the time step ``dt`` (default: each neuron's tau / r,
    the step at which its input gain is 1); see the module docstring. Every problem is a one-line
    NIRError naming the file."""
    nir = _nir()
    where = os.fspath(path)
    if not os.path.isfile(where):
        raise NIRError(f"{where}: no such NIR file")
    try:
        graph = nir.read(where, type_check=False)    # mininsnn checks the shapes itself, by node
    except Exception as e:                           # noqa: BLE001 - h5py/nir raise anything
        raise NIRError(f"{where}: not a readable NIR file (truncated, damaged or not NIR): "
                       f"{_one_line(e)}") from None
    return from_nir(graph, dt=dt, use_metadata=use_metadata, where=where)
