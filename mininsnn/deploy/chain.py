"""Integer deploy of any chain of supported layers, read from a Network's layer list (NumPy only).

The converter walks ``net.layers`` in order and cuts it into stages, one per neuron layer:

    [SumPool2d of spikes] [Flatten] synapse [AvgPool2d | SumPool2d] [BatchNorm2d] [Dropout]
    Leaky | Synaptic

synapse: Conv2d (any kernel, stride, zero padding, with or without bias) or Linear (with or without
bias; it flattens its input). What is folded into the stage's integers (conversion.py's equations,
docs/deploy.md):
- a k x k pool with stride k right after a conv of stride s: one conv with the summed codes
      qf[o, c, s a + kh, s b + kw] += q[o, c, kh, kw]     (a, b < k), stride s k, the same padding
  and 1/k^2 in k_c for AvgPool2d (SumPool2d: a sum, no 1/k^2);
- eval BatchNorm2d: g_c = gamma_c / sqrt(rv_c + eps) into k_c, beta_c - g_c rm_c into b_c;
- a conv or linear bias: into b_c (before the BatchNorm; k^2 times after a k x k sum pool);
- Dropout is the identity in eval; Flatten only changes the shape.
- a Leaky's gain and drive (one number, or one per channel): gain_c into k_c, gain_c b_c + drive_c
  into b_c; its threshold may be one per channel too.
- a pool of spikes before a synapse: each code repeated over its k x k inputs;
- a Synaptic (J[t] = alpha J[t-1] + gain syn_gain X[t], V[t] = beta U[t-1] + J[t] + drive):
  gain_c syn_gain_c into k_c and b_c, drive_c as its own per-channel Drive_c.
Each neuron layer gets its own F, Theta, Bias, leak (its beta) and overflow proof
(conversion.int_layer); the reset is shared, so every neuron layer must have the same reset and
reset_delay (the delayed reset, or the reset in the step that fires, as NIR's LIF), and every
Synaptic the same alpha.

Anything else is refused in one line naming the layer and the field (ConversionError), before
anything is written. Layers are recognised by class name, so this module imports no layer code
(and no Numba).
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

import numpy as np

from mininsnn.config import DEFAULTS
from mininsnn.deploy import conversion as cv
from mininsnn.deploy import engine as npe
from mininsnn.deploy.conversion import ConversionError

__all__ = ["convert_layers", "convert_network", "agreement", "random_inputs", "fuse_pool_strided", "SYNAPSES", "RUNS"]

SYNAPSES = ("Conv2d", "Linear")
POOLS = ("AvgPool2d", "SumPool2d")
PASS = ("Flatten", "Dropout")
NEURONS = ("Leaky", "Synaptic", "RLeaky", "RSynaptic")
RECURRENT = ("RLeaky", "RSynaptic")
RUNS = SYNAPSES + POOLS + PASS + ("BatchNorm2d",) + NEURONS   # what the integer engine runs


def fuse_pool_strided(q, k, s):
    """Codes of "conv (stride s) then k x k sum pooling (stride k)" as one conv of stride s k:

        qf[o, c, s a + kh, s b + kw] += q[o, c, kh, kw]        a, b < k  (exact integers)

    (s = 1: conversion.fuse_pool_codes.)  q: (O, C, KH, KW) -> (O, C, s(k-1)+KH, s(k-1)+KW)."""
    O, C, KH, KW = q.shape
    qf = np.zeros((O, C, s * (k - 1) + KH, s * (k - 1) + KW), np.int64)
    for a in range(k):
        for b in range(k):
            qf[:, :, s * a:s * a + KH, s * b:s * b + KW] += q
    return qf


class _Group(NamedTuple):
    """One stage of the chain: its synapse, pool and BatchNorm layers (None) and its Leaky; pre: a
    pool of the previous stage's spikes before the synapse (None)."""

    synapse: object
    pool: object
    bn: object
    lif: object
    pre: object = None


def _refuse(layer, field, why):
    raise ConversionError(f"{layer.name}: {field} {why}")


def _place(layer, kind, cur, groups):
    """Put a pool or BatchNorm into the stage being read (``cur``, a dict), or refuse."""
    if not cur:
        if kind in POOLS and groups:               # pooling spikes: folded into the next synapse
            return {"pre": layer}
        _refuse(layer, "type", f"{kind} must follow a Conv2d or Linear in its stage")
    if "synapse" not in cur:
        _refuse(layer, "type", f"{kind} after {cur['pre'].name}: one pool of spikes, then a "
                "Conv2d or Linear")
    slot = "pool" if kind in POOLS else "bn"
    if slot in cur or (slot == "pool" and "bn" in cur) or \
            type(cur["synapse"]).__name__ != "Conv2d":
        _refuse(layer, "type", f"{kind} must sit between a Conv2d and its Leaky, once "
                "(conv, pool, batchnorm)")
    return {**cur, slot: layer}


def _groups(layers):
    """The chain cut into stages (ConversionError naming the first layer that does not fit)."""
    groups, cur = [], {}
    for layer in layers:
        kind = type(layer).__name__
        if kind not in RUNS:
            _refuse(layer, "type", f"{kind} has no integer form (the integer engine runs "
                    f"{', '.join(RUNS)})")
        if kind in PASS:
            continue
        if kind in SYNAPSES:
            if "synapse" in cur:
                _refuse(layer, "type", f"{kind} follows {cur['synapse'].name} without a Leaky "
                        "between them")
            cur = {**cur, "synapse": layer}
        elif kind in NEURONS and "synapse" in cur:
            groups.append(_Group(cur["synapse"], cur.get("pool"), cur.get("bn"), layer,
                                 cur.get("pre")))
            cur = {}
        else:
            cur = _place(layer, kind, cur, groups)
    if cur:
        first = cur.get("synapse", cur.get("pre"))
        _refuse(first, "type", "the network must end in a Leaky (no neuron after it)")
    if not groups:
        raise ConversionError("network: no Leaky layer; nothing to convert")
    return groups


def _per_channel(lif, key, shape):
    """The value of ``key`` per output channel (O,) of a neuron layer of ``shape`` (O, ...): one
    number, or an array that broadcasts to ``shape`` and is constant within each channel."""
    v = np.asarray(lif.value(key), np.float64)
    try:
        full = np.broadcast_to(v, tuple(shape)).reshape(shape[0], -1)
    except ValueError:
        _refuse(lif, key, f"of shape {v.shape} does not broadcast to the neuron shape {tuple(shape)}")
    if not np.isfinite(full).all():
        _refuse(lif, key, "must be finite")
    if (full != full[:, :1]).any():
        _refuse(lif, key, "varies within a channel (per-neuron values have no integer form; "
                "one per channel or one for the layer)")
    return full[:, 0].copy()


class _Neuron(NamedTuple):
    """A Leaky the integer engine runs: beta (one number), per channel theta, gain, drive."""

    beta: float
    theta: np.ndarray
    gain: np.ndarray
    drive: np.ndarray
    reset: str
    delay: bool
    alpha: float = None        # a Synaptic: its current's decay (one number) and syn_gain (O,)
    syn_gain: np.ndarray = None
    rec: object = None         # an RLeaky / RSynaptic: the layer itself (its W_rec, b_rec)


def _neuron(lif, shape):
    """The _Neuron of a Leaky whose neurons have ``shape``, or ConversionError naming the field.

        V[t] = beta U[t-1] + gain_c I[t] + drive_c  =  beta U[t-1] + (gain_c k_c) A + (gain_c b_c + drive_c)

    so gain and drive fold into k_c and b_c (convert_layers); v_reset must be 0."""
    beta = _per_channel(lif, "beta", shape)
    if (beta != beta[0]).any():
        _refuse(lif, "beta", "differs between channels (the integer model shares one leak)")
    if lif.reset == "zero" and (_per_channel(lif, "v_reset", shape) != 0).any():
        _refuse(lif, "v_reset", "must be 0 for the integer engine")
    theta = _per_channel(lif, "threshold", shape)
    if (theta <= 0).any():
        _refuse(lif, "threshold", f"must be > 0, got {theta.min()}")
    if type(lif).__name__ in RECURRENT and tuple(shape) != (lif.n,):
        _refuse(lif, "n", f"{lif.n} does not match its input {tuple(shape)} (a recurrent layer "
                "follows a Linear of n outputs)")
    alpha = syn_gain = None
    if type(lif).__name__ in ("Synaptic", "RSynaptic"):      # I[t] = alpha I[t-1] + syn_gain X[t]
        a = _per_channel(lif, "alpha", shape)
        if (a != a[0]).any():
            _refuse(lif, "alpha", "differs between channels (the integer model shares one leak)")
        alpha, syn_gain = float(np.clip(a[0], 0, 1)), _per_channel(lif, "syn_gain", shape)
    return _Neuron(float(np.clip(beta[0], 0, 1)), theta, _per_channel(lif, "gain", shape),
                   _per_channel(lif, "drive", shape), lif.reset, bool(lif.reset_delay), alpha,
                   syn_gain, lif if type(lif).__name__ in RECURRENT else None)


def _recurrent(lif, bits, gain):
    """(gain_c Wq[c, j] (n, n), b_rec (n,) or 0) of an RLeaky: W_rec quantized per tensor to
    ``bits`` as a Linear's weight (Wq = s q; the float twin must run with W_rec = Wq), b_rec folded
    like a bias. The integer feedback is W_r = rint(gain_c Wq / u_c) (conversion._integer_layer)."""
    W = np.asarray(lif.params["W_rec"], np.float64)
    if not np.isfinite(W).all():
        _refuse(lif, "W_rec", "must be finite")
    q, s = cv.quant_codes(W, bits)
    b = np.asarray(lif.params.get("b_rec", 0.0), np.float64)
    if not np.isfinite(b).all():
        _refuse(lif, "b_rec", "must be finite")
    return gain[:, None] * (q * s), b


def quantized_w_rec(lif, bits):
    """The W_rec an RLeaky's integer model follows: quantized per tensor to ``bits``."""
    q, s = cv.quant_codes(np.asarray(lif.params["W_rec"], np.float64), bits)
    return q * s


def _rec_tol(L, rec, leaks, num_steps):
    """A recurrent layer's tolerance grows by the rounding of its feedback: per step at most
    sum_j |W_r[c, j] u_c - gain_c Wq[c, j]|, summed with the leak like the other errors (an
    RSynaptic's first through its current's leak alpha, then the membrane's beta)."""
    err = np.abs(L.rec * L.unit[:, None] - rec).sum(axis=1)
    for a in (x for x in leaks[::-1] if x is not None):
        err = err / (1 - a) if a < 1 else err * (num_steps or np.inf)
    L.tol = L.tol + err


def _pool_k(pool, syn):
    """k of a k x k pool with stride k and no padding (the ones that fold), and its area factor
    (k^2 for AvgPool2d, 1 for SumPool2d)."""
    k = pool.k
    if pool.stride != k or getattr(pool, "padding", 0):
        _refuse(pool, "stride", f"must equal kernel_size {k} with no padding to fold into "
                f"{syn.name}")
    return k, k * k if type(pool).__name__ == "AvgPool2d" else 1


def _pre_pool(g: _Group, shape):
    """(k, area, pooled shape) of the pool of spikes before the synapse (1, 1, shape: none)."""
    if g.pre is None:
        return 1, 1, tuple(shape)
    k, area = _pool_k(g.pre, g.synapse)
    if area != 1:       # layers.AvgPool2d keeps its input's dtype: on uint8 spikes it truncates
        _refuse(g.pre, "type", "AvgPool2d of spikes has no integer form (the float layer "
                "averages uint8 spikes in uint8); use SumPool2d")
    if len(shape) != 3 or shape[1] < k or shape[2] < k:
        _refuse(g.pre, "kernel_size", f"{k} does not fit its input {tuple(shape)}")
    if type(g.synapse).__name__ == "Conv2d" and (shape[1] % k or shape[2] % k):
        _refuse(g.pre, "kernel_size", f"{k} must divide its input's height and width "
                f"{tuple(shape[1:])} to fold into {g.synapse.name}")
    return k, area, (shape[0], shape[1] // k, shape[2] // k)


def _synapse(g: _Group, shape, bits):
    """(kind, codes_scale, qf, stride, padding, out_shape, pool_area) of a stage's synapse. A pool
    of spikes before it (g.pre, k x k) is folded by repeating each code over its k x k inputs."""
    syn = g.synapse
    W = np.asarray(syn.params["weight"])
    if not np.isfinite(W).all():
        _refuse(syn, "weight", "must be finite")
    q, s = cv.quant_codes(W, bits)
    kp, area, pshape = _pre_pool(g, shape)
    if type(syn).__name__ == "Linear":
        if W.shape[1] != int(np.prod(pshape)):
            _refuse(syn, "in_features", f"{W.shape[1]} does not match its input {pshape}")
        if kp > 1:      # w'[o, c, y, x] = w[o, c, y // k, x // k] inside the pooled rows, else 0
            C, PH, PW = pshape
            full = np.zeros((W.shape[0],) + tuple(shape), np.int64)
            full[:, :, :PH * kp, :PW * kp] = q.reshape(-1, C, PH, PW).repeat(kp, 2).repeat(kp, 3)
            q = full.reshape(W.shape[0], -1)
        return "linear", (None, s), q, 1, 0, (W.shape[0],), area
    if len(pshape) != 3 or W.shape[1] != pshape[0]:
        _refuse(syn, "in_channels", f"{W.shape[1]} does not match its input {pshape}")
    st, p, K = syn.stride, syn.padding, W.shape[2]
    OH, OW = (pshape[1] + 2 * p - K) // st + 1, (pshape[2] + 2 * p - K) // st + 1
    q = q.repeat(kp, 2).repeat(kp, 3)           # conv of the pooled input = conv of k x k blocks
    k = 1
    if g.pool is not None:
        k, post = _pool_k(g.pool, syn)
        area *= post
        q = fuse_pool_strided(q, k, st * kp)
    if OH // k < 1 or OW // k < 1:
        _refuse(syn, "kernel_size", f"too large for its input {pshape}")
    return "conv", (None, s), q, st * kp * k, p * kp, (W.shape[0], OH // k, OW // k), area


def _layer_bits(syn, bits):
    try:
        return cv._weight_bits(syn.bits, bits)
    except ConversionError as e:
        raise ConversionError(f"{syn.name}: bits: {e}") from None


def _stage_state(g: _Group):
    """The state-dict entries conversion._fold_layer reads for this stage."""
    state = {f"{g.synapse.name}.{k}": np.asarray(v) for k, v in g.synapse.params.items()}
    bias = f"{g.synapse.name}.bias"
    if bias in state and g.pool is not None and type(g.pool).__name__ == "SumPool2d":
        state[bias] = state[bias] * g.pool.k ** 2       # a k x k sum adds the bias k^2 times
    if g.bn is not None:
        if g.bn.num_features != state[f"{g.synapse.name}.weight"].shape[0]:
            _refuse(g.bn, "num_features", f"{g.bn.num_features} does not match {g.synapse.name}")
        state.update({f"{g.bn.name}.{k}": np.asarray(v) for k, v in g.bn.params.items()})
        state.update({f"{g.bn.name}.{k}": np.asarray(v) for k, v in g.bn.buffers.items()})
    for key, v in state.items():
        if v.dtype.kind == "f" and not np.isfinite(v).all():
            raise ConversionError(f"{key}: must be finite")
    return state


class _Options(NamedTuple):
    """The model-wide choices: per neuron layer its leak, proof terms and float beta; the reset,
    input range and form, F per stage; the synaptic current's decay and leak (None: none)."""

    leaks: list
    terms: list
    betas: list
    reset: str
    input_max: int
    static: bool
    Fs: list
    alpha: float = None
    alpha_leak: tuple = None


def _alpha(groups, neurons, kw):
    """(alpha, alpha_leak, (alpha_eff, e)) of the synaptic layers (one alpha for all), or Nones."""
    syn = [(g, n) for g, n in zip(groups, neurons) if n.alpha is not None]
    for g, n in syn:
        if n.alpha != syn[0][1].alpha:
            _refuse(g.lif, "alpha", f"{n.alpha!r} differs from {syn[0][0].lif.name}'s "
                    f"{syn[0][1].alpha!r} (the integer model shares one current leak)")
    if not syn:
        return None, None, None
    alpha = syn[0][1].alpha
    alpha_leak, e_a = cv._leak_params(alpha, kw["leak"], kw["leak_bits"], None)
    if cv.beta_eff_of(alpha_leak) == 1 and kw["num_steps"] is None:
        raise cv.OverflowProofError("with alpha_eff = 1 the synaptic current grows without "
                                    "bound over time; pass num_steps")
    return alpha, alpha_leak, (float(cv.beta_eff_of(alpha_leak)), float(e_a))


def _options(groups, neurons, net, kw):
    """_Options from the neurons (one reset and delay for all; a leak per layer) and the keyword
    arguments."""
    n0, first = neurons[0], groups[0].lif.name
    for g, n in zip(groups[1:], neurons[1:]):
        for field, a, b in (("reset", n.reset, n0.reset), ("reset_delay", n.delay, n0.delay)):
            if a != b:
                _refuse(g.lif, field, f"{a!r} differs from {first}'s {b!r} (the integer model "
                        "shares one reset)")
    alpha, alpha_leak, alpha_terms = _alpha(groups, neurons, kw)
    leaks, terms = [], []
    for n in neurons:
        leak_p, e = cv._leak_params(n.beta, kw["leak"], kw["leak_bits"], kw["shift"])
        beta_eff = cv.beta_eff_of(leak_p)
        if beta_eff == Fraction(1) and kw["num_steps"] is None:
            raise cv.OverflowProofError("with beta_eff = 1 the membrane grows without bound over "
                                        "time; pass num_steps to prove it for a fixed T")
        leaks.append(leak_p)
        terms.append(cv.ProofTerms(float(beta_eff), float(e), n0.reset, kw["num_steps"],
                                   alpha_terms))
    config = getattr(net, "config", None) or {}
    static = kw["static"]
    if static is None:
        static = config.get("dataset", "mnist") in cv.STATIC_DATASETS
    return _Options(leaks, terms, [n.beta for n in neurons], n0.reset,
                    cv._require(cv.rules.integer(1, 255), "input_max", kw["input_max"]),
                    bool(static), cv._frac_bits_list(kw["frac_bits"], len(groups)), alpha,
                    alpha_leak)


def _meta(config, used_bits, rec_bits):
    """The model's meta: its config's model fields, the weight bits, the name, and per RLeaky the
    bits its W_rec was quantized to (chain.agreement's float twin uses them)."""
    return {"config": {k: config[k] for k in ("beta", "threshold", "reset", "bits", "batchnorm",
                                              "dataset") if k in config},
            "bits": int(max(used_bits)), "name": config.get("config", config.get("name")),
            **({"rec_bits": rec_bits} if rec_bits else {})}


def convert_layers(net, *, bits=None, frac_bits="max", leak="multiply", leak_bits=30, shift=None,
                   input_max=255, num_steps=None, static=None, frame_scale=1.0):
    """The integer model of any chain of supported layers (``net``: a mininsnn Network in eval
    form; its ``layers``, ``input_shape`` and, if present, ``config``). Arguments as
    conversion.convert (frac_bits: one per neuron layer); static defaults to the config's data
    set (pixels/255 fed at every step), else True; frame_scale: the float value of one unit of
    a frame (1/255: frames of pixels, as an image read row by row; mininsnn.spec's "input":
    "rows"). ConversionError names the layer and field."""
    groups = _groups(net.layers)
    shapes, shape = [], tuple(net.input_shape)
    for g in groups:                       # the neuron shapes, checked before anything is folded
        shape = _synapse(g, shape, 2)[5]
        shapes.append(shape)
    neurons = [_neuron(g.lif, sh) for g, sh in zip(groups, shapes)]
    opt = _options(groups, neurons, net, dict(leak=leak, leak_bits=leak_bits, shift=shift,
                                     num_steps=num_steps, static=static, input_max=input_max,
                                     frac_bits=frac_bits))
    layers, shape, used_bits, rec_bits = [], tuple(net.input_shape), set(), {}
    for i, g in enumerate(groups):
        b = _layer_bits(g.synapse, bits)
        used_bits.add(b)
        kind, codes_scale, qf, stride, pad, out_shape, area = _synapse(g, shape, b)
        in_max, in_scale = (opt.input_max, 1.0 / 255 if opt.static else frame_scale) if i == 0 \
            else (1, 1.0)
        stage = cv._Stage(g.synapse.name, None if g.bn is None else g.bn.name, in_max, in_scale,
                          opt.Fs[i])
        k, bc = cv._fold_layer(_stage_state(g), g.synapse.name, stage.bn, codes_scale, in_scale,
                               area, eps=cv.BN_EPS if g.bn is None else g.bn.eps)
        n = neurons[i]
        base = (opt.terms[i], opt.betas[i], n.theta, opt.leaks[i], b)
        rec = None
        if n.rec is not None:      # X + W_rec S[t-1] + b_rec: b_rec as a bias
            rec, brec = _recurrent(n.rec, b, n.gain if n.alpha is None else n.gain * n.syn_gain)
            bc = bc + brec
        if n.alpha is None:
            k, bc = n.gain * k, n.gain * bc + n.drive          # gain_c I + drive_c
            shared = cv._Shared(*base, None, None, rec)
        else:      # J = gain I: J[t] = alpha J[t-1] + gain syn_gain X[t];  V += J + drive
            k, bc = n.gain * n.syn_gain * k, n.gain * n.syn_gain * bc
            shared = cv._Shared(*base, n.drive, opt.alpha, rec)
        layers.append(cv.int_layer(stage, (kind, qf, stride, pad), (shape, out_shape), (k, bc),
                                   shared))
        if opt.leaks[i] != opt.leaks[0]:       # its own beta: its own leak
            layers[-1].leak = opt.leaks[i]
        if rec is not None:
            _rec_tol(layers[-1], rec, (opt.betas[i], n.alpha), num_steps)
            rec_bits[g.lif.name] = int(b)
        shape = out_shape
    config = getattr(net, "config", None) or {}
    meta = _meta(config, used_bits, rec_bits)
    return cv.IntegerModel(layers=layers, leak=opt.leaks[0], reset=opt.reset,
                           input_shape=tuple(net.input_shape), input_max=opt.input_max,
                           static=opt.static,
                           num_steps=int(config.get("num_steps", DEFAULTS["num_steps"])),
                           max_steps=None if all(t.beta < 1 and (t.alpha or (0,))[0] < 1
                                                 for t in opt.terms) else int(num_steps),
                           meta=meta,
                           delay=neurons[0].delay, alpha_leak=opt.alpha_leak)


def convert_network(net, **kwargs):
    """:func:`convert_layers` of a Network: any chain of supported layers, the paper's included
    (for those it builds conversion.convert's integers exactly; tests/test_deploy_any.py)."""
    return convert_layers(net, **kwargs)


def random_inputs(model: cv.IntegerModel, n, T, seed=0, rate=0.2):
    """A batch of ``n`` integer inputs the model takes: static images with values 0..input_max
    uniform, or T frames of 0/1 events at ``rate`` (the input a spiking graph expects)."""
    rng = np.random.default_rng(seed)
    shape = tuple(model.input_shape)
    if model.static:
        return rng.integers(0, model.input_max + 1, (n,) + shape).astype(np.uint8)
    return (rng.random((T, n) + shape) < rate).astype(np.uint8)


def agreement(net, model: cv.IntegerModel, x, T):
    """(share of samples whose output spike counts are identical, share whose predicted class is
    the same) between the float network ``net`` (run in eval mode on x/255 for a static model,
    else on the integer frames as floats; an RLeaky with its W_rec quantized as the integer model's)
    and the integer model, on integer inputs ``x``."""
    xin = (x / 255.0) if model.static else x
    recs = {L.name: L for L in net.layers if L.name in model.meta.get("rec_bits", {})}
    kept = {k: L.params["W_rec"].copy() for k, L in recs.items()}
    try:        # the float twin of an RLeaky runs with the W_rec the integer model follows
        for k, L in recs.items():
            L.params["W_rec"][...] = quantized_w_rec(L, model.meta["rec_bits"][k])
        out = net.eval().forward(np.asarray(xin, net.dtype), num_steps=T if model.static else None)
    finally:
        for k, L in recs.items():
            L.params["W_rec"][...] = kept[k]
    fc = np.asarray(out).sum(axis=0).reshape(out.shape[1], -1)
    ic = npe.predict(model, x, T).reshape(fc.shape[0], -1)
    return float((fc == ic).all(axis=1).mean()), float((fc.argmax(1) == ic.argmax(1)).mean())
