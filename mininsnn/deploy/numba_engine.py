"""The integer forward as Numba kernels: the same integers as ``engine.py``, spike for spike.

One sample per parallel work item. Layer 1 depends on nothing after it, so it runs all T steps
first and lists, for each of its neurons, the steps it fired at; conv2 then adds each neuron's
weight rows at all of its steps at once, and layers 2 and 3 advance step by step. Work arrays are
channels-last, (OH, OW, O), so the event-driven conv adds contiguous rows: a spike of layer 1 at
(y, x, c) and step t adds W[:, c, kh, kw] to every output (i, j) its window reaches,

    A[t, i, j, :] += Wt[c, y - i*s, x - j*s, :]         (Wt[c, kh, kw, o] = W[o, c, kh, kw])

and silent inputs cost nothing. Integer sums in any order are the same integers, so this order
gives the NumPy engine's and the C export's spikes (tests). Equations: engine.py, conversion.py.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mininsnn._jit import jit, prange
from mininsnn.deploy.conversion import IntegerModel, reference_layout
from mininsnn.deploy import numba_general
from mininsnn.deploy.engine import check_input

__all__ = ["forward", "predict", "prepare", "fast_layout"]

MULTIPLY, SHIFT = 0, 1


@jit
def _leak(v, mode, a, bq):
    """leak(v) = (v * beta_q + 2^(a-1)) >> a  (MULTIPLY)  or  v - (v >> a)  (SHIFT); int64."""
    if mode == MULTIPLY:
        return (v * bq + (np.int64(1) << (a - 1))) >> a
    return v - (v >> a)


@jit
def _lif_step(V, A, drive, leak, zero_reset, S):
    """One step of N neurons with input current I = A * cf + bs.
    V: (N,) int32 membrane (updated);  A: (N,) ints;  drive = (cf, bs, thN): (N,) int32 each, per
    neuron: sgn_c 2^F (or 1), Bias_c (or 0), Theta_c;  S: (N,) uint8, in: S[t-1] (= R[t]), out: S[t].

        V = leak(V) + I - Theta R   (zero reset: V = (leak(V) + I) (1 - R));   S = [V > Theta]

    One branch-free loop per (leak, reset) case; the leak product is int32 x int32 -> int64 (the
    proof keeps V and beta_q within int32), so each loop vectorises.
    """
    cf, bs, thN = drive
    a = leak[1]
    if leak[0] == MULTIPLY:
        bq = np.int64(np.int32(leak[2]))
        half = np.int64(1) << (a - 1)
        if zero_reset:
            for n in range(V.shape[0]):
                v = ((np.int64(V[n]) * bq + half) >> a) + np.int64(A[n]) * cf[n] + bs[n]
                v = v * (1 - np.int64(S[n]))                       # (1 - R[t])
                V[n] = np.int32(v)
                S[n] = np.uint8(v > thN[n])
        else:
            for n in range(V.shape[0]):
                v = ((np.int64(V[n]) * bq + half) >> a) + np.int64(A[n]) * cf[n] + bs[n]
                v = v - np.int64(S[n]) * thN[n]                    # - Theta R[t]
                V[n] = np.int32(v)
                S[n] = np.uint8(v > thN[n])
    else:
        for n in range(V.shape[0]):
            v = np.int64(V[n])
            v = v - (v >> a) + np.int64(A[n]) * cf[n] + bs[n]     # v - (v >> k) + I
            r = np.int64(S[n])
            v = v * (1 - r) if zero_reset else v - r * thN[n]
            V[n] = np.int32(v)
            S[n] = np.uint8(v > thN[n])


@jit
def _may_fire(I, th, leak):
    """Whether a neuron with the constant input I can ever fire (static input).

    Without a spike there is no reset, and leak(v) <= beta v + e (e = 1/2 multiply, 1 shift), so
    from V[-1] = 0 by induction V[t] <= (I + e) / (1 - beta) for I >= 0, and V[t] <= 0 for I <= 0.
    If that bound is <= Theta, S[t] = [V[t] > Theta] is 0 at every step. In integers:
      multiply (beta = bq / 2^Q):  (2 I + 1) 2^Q <= 2 Theta (2^Q - bq)
      shift    (beta = 1 - 2^-k):  (I + 1) 2^k <= Theta
    """
    i, t = np.int64(I), np.int64(th)
    if i <= 0:
        return False
    if leak[0] == MULTIPLY:
        one = np.int64(1) << leak[1]
        return (2 * i + 1) * one > 2 * t * (one - leak[2])
    return (i + 1) << leak[1] > t


@jit
def _active(S, active):
    """Writes the n with S[n] != 0 to the start of ``active``; returns their number.
    Branch-free (always write, advance by the spike): a branch per neuron mispredicts at the
    spike rates of a trained network (10-20 %) and cost more than the LIF step itself."""
    k = 0
    for n in range(S.shape[0]):
        active[k] = n
        k += np.int64(S[n])
    return k


@jit
def _current(A, sign, F, bias, I):
    """I = sgn_c (A << F) + Bias_c  (F < 0: sgn_c ((A + 2^(-F-1)) >> -F) + Bias_c), channels last.
    A, I: (P*O,);  sign, bias: (O,)."""
    O = sign.shape[0]
    for p in range(A.shape[0] // O):
        for c in range(O):
            a = np.int64(A[p * O + c])
            a = a << F if F >= 0 else (a + (np.int64(1) << (-F - 1))) >> -F
            I[p * O + c] = np.int32(sign[c] * a + bias[c])


@jit
def _conv_input(x, Wt, stride, A):
    """Integer conv of one input sample, channels last.  x: (C, H, W) ints;  Wt: (C, KH, KW, O);
    A: (OH, OW, O) written:  A[i, j, o] = sum_{c,kh,kw} W[o, c, kh, kw] x[c, i*s + kh, j*s + kw]."""
    C, H, Wd = x.shape
    _, KH, KW, O = Wt.shape
    OH, OW = A.shape[0], A.shape[1]
    A[:] = 0
    for c in range(C):
        for y in range(H):
            for xx in range(Wd):
                v = np.int64(x[c, y, xx])
                if v == 0:
                    continue
                for i in range(max(0, (y - KH + stride) // stride), min(OH - 1, y // stride) + 1):
                    kh = y - i * stride
                    for j in range(max(0, (xx - KW + stride) // stride), min(OW - 1, xx // stride) + 1):
                        kw = xx - j * stride
                        for o in range(O):
                            A[i, j, o] += v * Wt[c, kh, kw, o]


def _pair_table(in_shape, kernel, stride, out_shape):
    """(start, pairs) for ``_conv_spike_trains``: the input neuron n = (y*W + x)*C + c (channels last)
    reaches the outputs (i, j) with 0 <= y - i*s < KH and 0 <= x - j*s < KW; for each, the pair
    ((i*OW + j)*O, ((c*KH + y - i*s)*KW + x - j*s)*O). in_shape (H, W, C), kernel (KH, KW),
    out_shape (OH, OW, O). Built once per model, in plain Python."""
    (H, W, C), (KH, KW), (OH, OW, O) = in_shape, kernel, out_shape
    start, pairs = [0], []
    for y in range(H):
        for x in range(W):
            for c in range(C):
                for i in range(max(0, (y - KH + stride) // stride), min(OH - 1, y // stride) + 1):
                    for j in range(max(0, (x - KW + stride) // stride), min(OW - 1, x // stride) + 1):
                        pairs.append(((i * OW + j) * O,
                                      ((c * KH + y - i * stride) * KW + x - j * stride) * O))
                start.append(len(pairs))
    return np.array(start, np.int32), np.array(pairs, np.int32).reshape(-1, 2)


@jit
def _linear_spikes(active, k, Wt, A):
    """A[o] = sum over the k spikes active[:k] of Wt[f, o].  Wt: (F, O);  A: (O,) written."""
    A[:] = 0
    for e in range(k):
        f = active[e]
        for o in range(Wt.shape[1]):
            A[o] += Wt[f, o]


@jit
def _per_neuron(chan_row, O, N):
    """(N,) int32: the value of each neuron's channel (channels last: channel n % O)."""
    out = np.empty(N, np.int32)
    for n in range(N):
        out[n] = chan_row[n % O]
    return out


@jit
def _drive_coefs(sign, F, bias, O, N):
    """Per neuron (cf, bs) with I = A * cf + bs: (sgn_c 2^F, Bias_c) for F >= 0; for F < 0 the
    caller rounds A with ``_current`` first and uses (1, 0)."""
    cf = np.ones(N, np.int32)
    bs = np.zeros(N, np.int32)
    if F >= 0:
        for n in range(N):
            cf[n] = sign[n % O] << F
            bs[n] = bias[n % O]
    return cf, bs


@jit
def _add_row_at_steps(A, times, t0, t1, N, a0, w, O):
    """A[t*N + a0 : t*N + a0 + O] += w for every step t in times[t0:t1].

    The output widths of the paper's networks (64, 32) get a loop of constant length, which LLVM
    vectorises with full-width registers; a loop of run-time length 64 ran 8 int16 lanes at a time
    on an AVX-512 host (its vector loop takes 128) and made conv2 1.7x slower."""
    if O == 64:
        for u in range(t0, t1):
            base = times[u] * N + a0
            row = A[base:base + 64]
            for o in range(64):
                row[o] += w[o]
    elif O == 32:
        for u in range(t0, t1):
            base = times[u] * N + a0
            row = A[base:base + 32]
            for o in range(32):
                row[o] += w[o]
    else:
        for u in range(t0, t1):
            base = times[u] * N + a0
            row = A[base:base + O]
            for o in range(O):
                row[o] += w[o]


@jit
def _conv_spike_trains(trains, table, Wt, A, N, O):
    """A[t*N + i*OW*O + j*O + o] (all steps at once) = the sum over the layer-1 spikes at step t of
    their weight rows, neuron by neuron: trains = (nc, cand, tstart, times): candidate e (neuron
    cand[e]) fired at the steps times[tstart[e]:tstart[e+1]]; each row it reaches (table =
    (start, pairs), ``_pair_table``) is added at each of them. The per-row set-up is paid once
    per neuron instead of once per spike; integer sums in any order are the same integers (the
    proof bounds every partial sum too)."""
    nc, cand, tstart, times = trains
    start, pairs = table
    A[:] = 0
    for e in range(nc):
        t0, t1 = tstart[e], tstart[e + 1]
        if t0 == t1:
            continue
        n = cand[e]
        for q in range(start[n], start[n + 1]):
            _add_row_at_steps(A, times, t0, t1, N, pairs[q, 0], Wt[pairs[q, 1]:pairs[q, 1] + O], O)


class Geometry(NamedTuple):
    """Sizes of the three-layer integer network: layer 1's stride (layer 2's lives in the pair
    table), F of each layer, and the output shapes (OH, OW, O) channels last."""

    s1: int
    F1: int
    F2: int
    F3: int
    OH1: int
    OW1: int
    O1: int
    OH2: int
    OW2: int
    O2: int
    O3: int


class Prepared(NamedTuple):
    """What ``_run`` takes of a model (``prepare``). W1t: (C, KH, KW, O1) channels last; W2t: the
    same, flat (int16 where the proof allows); W3t: (F, O3), F in layer 2's channels-last order;
    start2, pairs2: layer 1 neuron -> rows of layer 2 (``_pair_table``); geo: Geometry;
    chan: (3, 3, Omax) int32 rows sign, bias, theta; leak: int64 [mode, a, beta_q].
    The kernels take it as a plain tuple (``_plain``; Numba's parallel loops take no named tuple)
    and unpack its fields, in this order, into named locals on their first line."""

    W1t: np.ndarray
    W2t: np.ndarray
    W3t: np.ndarray
    start2: np.ndarray
    pairs2: np.ndarray
    geo: Geometry
    chan: np.ndarray
    leak: np.ndarray
    zero_reset: bool


@jit
def _neuron_rows(chan, geo):
    """Per neuron (channels last): (cf, bs, theta) of layers 2 and 3.  geo: a plain Geometry."""
    _, _, F2, F3, _, _, _, OH2, OW2, O2, O3 = geo
    N2 = OH2 * OW2 * O2
    th2 = _per_neuron(chan[1, 2], O2, N2)
    th3 = _per_neuron(chan[2, 2], O3, O3)
    cf2, bs2 = _drive_coefs(chan[1, 0], F2, chan[1, 1], O2, N2)
    cf3, bs3 = _drive_coefs(chan[2, 0], F3, chan[2, 1], O3, O3)
    return (cf2, bs2, th2), (cf3, bs3, th3)


@jit
def _layer1(x, b, static, T, net, rec1):
    """Layer 1 of sample b, all T steps: (nc, cand, S1), S1[t, e] the spike of candidate e (neuron
    cand[e]) at step t; with a static input only the neurons that can ever fire are candidates.
    net: a plain Prepared (``_plain``); rec1: (T, B, N1) uint8 written when recording, or empty."""
    W1t, _, _, _, _, geo, chan, leak, zero_reset = net
    s1, F1, _, _, OH1, OW1, O1, _, _, _, _ = geo
    N1 = OH1 * OW1 * O1
    th1 = _per_neuron(chan[0, 2], O1, N1)         # threshold of every neuron (channels last)
    A1 = np.zeros((OH1, OW1, O1), np.int64)
    I1 = np.empty(N1, np.int32)
    sg1, bi1 = chan[0, 0, :O1], chan[0, 1, :O1]
    one1, zero1 = np.ones(N1, np.int32), np.zeros(N1, np.int32)
    nc = N1
    cand = np.arange(N1).astype(np.int32)
    if static:   # layer 1's current is the same at every step: computed once
        _conv_input(x[0, b], W1t, s1, A1)
        _current(A1.reshape(N1), sg1, F1, bi1, I1)
        nc = 0
        for n in range(N1):
            if _may_fire(I1[n], th1[n], leak):
                cand[nc] = n
                nc += 1
    Vc = np.zeros(nc, np.int32)          # layer 1, candidates only: V, I, Theta
    Ic = np.empty(nc, np.int32)
    thc = np.empty(nc, np.int32)
    for e in range(nc):
        Ic[e], thc[e] = I1[cand[e]], th1[cand[e]]
    S1 = np.zeros((T, nc), np.uint8)
    for t in range(T):
        if t > 0:
            S1[t] = S1[t - 1]            # R[t] = S[t-1] for the reset
        if static:
            _lif_step(Vc, Ic, (one1, zero1, thc), leak, zero_reset, S1[t])
        else:
            _conv_input(x[t, b], W1t, s1, A1)
            _current(A1.reshape(N1), sg1, F1, bi1, I1)
            _lif_step(Vc, I1, (one1, zero1, thc), leak, zero_reset, S1[t])
        if rec1.shape[0] > 0:
            for e in range(nc):
                rec1[t, b, cand[e]] = S1[t, e]
    return nc, cand, S1


@jit
def _firing_steps(S1, nc, T):
    """(tstart, times): candidate e fired at the steps times[tstart[e]:tstart[e+1]].
    Branch-free: write the step, advance by the spike."""
    tstart = np.zeros(nc + 1, np.int32)
    for t in range(T):
        for e in range(nc):
            tstart[e + 1] += S1[t, e]
    for e in range(nc):
        tstart[e + 1] += tstart[e]
    # after its last spike a neuron's loop keeps writing one slot past its list: the next
    # neuron's first slot (which that neuron rewrites), or for the last neuron this spare one
    times = np.empty(tstart[nc] + 1, np.int32)
    for e in range(nc):
        k = tstart[e]
        for t in range(T):
            times[k] = t
            k += S1[t, e]
    return tstart, times


@jit
def _layers23(A2, b, T, net, drives, out):
    """Layers 2 and 3 of sample b, step by step, from conv2's sums A2 (T*N2,) at all steps;
    drives: (cf, bs, theta) of each (``_neuron_rows``); out: (counts, rec1, rec2, rec3)."""
    _, _, W3t, _, _, geo, chan, leak, zero_reset = net
    _, _, F2, F3, _, _, _, OH2, OW2, O2, O3 = geo
    counts, _, rec2, rec3 = out
    drive2, drive3 = drives
    N2 = OH2 * OW2 * O2
    A3 = np.zeros(O3, np.int32)
    I2 = np.empty(N2, np.int32)
    I3 = np.empty(O3, np.int32)
    V2 = np.zeros(N2, np.int32)
    V3 = np.zeros(O3, np.int32)
    S2 = np.zeros(N2, np.uint8)
    S3 = np.zeros(O3, np.uint8)
    act2 = np.empty(N2, np.int32)
    sg2, bi2 = chan[1, 0, :O2], chan[1, 1, :O2]
    sg3, bi3 = chan[2, 0, :O3], chan[2, 1, :O3]
    for o in range(O3):
        counts[b, o] = 0
    for t in range(T):
        A2t = A2[t * N2:(t + 1) * N2]
        if F2 >= 0:   # I2 = A2 sgn 2^F + Bias inside the LIF loop
            _lif_step(V2, A2t, drive2, leak, zero_reset, S2)
        else:
            _current(A2t, sg2, F2, bi2, I2)
            _lif_step(V2, I2, drive2, leak, zero_reset, S2)
        k2 = _active(S2, act2)
        _linear_spikes(act2, k2, W3t, A3)
        if F3 >= 0:
            _lif_step(V3, A3, drive3, leak, zero_reset, S3)
        else:
            _current(A3, sg3, F3, bi3, I3)
            _lif_step(V3, I3, drive3, leak, zero_reset, S3)
        for o in range(O3):
            counts[b, o] += S3[o]
        if rec2.shape[0] > 0:
            rec2[t, b] = S2
            rec3[t, b] = S3


@jit(parallel=True)
def _run(x, static, T, net, out):
    """The three-layer integer network over T steps for every sample, one sample per thread.

    Layer 1 does not depend on what follows it, so it runs all T steps first and lists, neuron by
    neuron, the steps it fired at (``_layer1``, ``_firing_steps``); conv2 then adds every row of
    every neuron at all its steps (``_conv_spike_trains``); layers 2 and 3 advance step by step
    (``_layers23``).

    x: (TI, B, C, H, W): TI = 1 for a static image (fed at every step), else TI = T frames.
    net: a Prepared as a plain tuple, its Geometry too (Numba's parallel loops do not take
    named tuples).  out = (counts, rec1, rec2, rec3): counts (B, O3) int32 written; rec1/2/3:
    (T, B, N) uint8 spike records in channels-last order, or (0, 0, 0) arrays for none.
    """
    W1t, W2t, W3t, start2, pairs2, geo, chan, leak, zero_reset = net
    counts, rec1, rec2, rec3 = out
    s1, F1, F2, F3, OH1, OW1, O1, OH2, OW2, O2, O3 = geo
    N2 = OH2 * OW2 * O2
    (cf2, bs2, th2), (cf3, bs3, th3) = _neuron_rows(chan, geo)
    for b in prange(x.shape[1]):
        # a parallel loop takes arrays and numbers only: the tuples are rebuilt inside it
        net_b = (W1t, W2t, W3t, start2, pairs2, (s1, F1, F2, F3, OH1, OW1, O1, OH2, OW2, O2, O3),
                 chan, leak, zero_reset)
        nc, cand, S1 = _layer1(x, b, static, T, net_b, rec1)
        tstart, times = _firing_steps(S1, nc, T)
        A2 = np.zeros(T * N2, W2t.dtype)           # conv2 at all steps
        _conv_spike_trains((nc, cand, tstart, times), (start2, pairs2), W2t, A2, N2, O2)
        _layers23(A2, b, T, net_b, ((cf2, bs2, th2), (cf3, bs3, th3)),
                  (counts, rec1, rec2, rec3))


def prepare(model: IntegerModel) -> Prepared:
    """The arrays ``_run`` takes, from an IntegerModel (cached on the model)."""
    cached = getattr(model, "_numba_arrays", None)
    if cached is not None:
        return cached
    L1, L2, L3 = model.layers
    if [L.kind for L in model.layers] != ["conv", "conv", "linear"]:
        raise ValueError("numba engine: expected layers conv, conv, linear")
    O1, OH1, OW1 = L1.out_shape
    O2, OH2, OW2 = L2.out_shape
    O3 = L3.out_shape[0]
    W1t = np.ascontiguousarray(L1.weight.transpose(1, 2, 3, 0).astype(np.int32))
    # int16 accumulators and weights where the proof allows it: twice the lanes per vector
    W2t = np.ascontiguousarray(L2.weight.transpose(1, 2, 3, 0).astype(
        np.int16 if L2.acc_bits == 16 else np.int32)).reshape(-1)
    start2, pairs2 = _pair_table((OH1, OW1, O1), L2.weight.shape[2:], L2.stride, (OH2, OW2, O2))
    # fc input index in the float model's (C, H, W) flatten order -> channels-last (H, W, C)
    W3 = L3.weight.reshape(O3, O2, OH2, OW2).transpose(2, 3, 1, 0).reshape(OH2 * OW2 * O2, O3)
    W3t = np.ascontiguousarray(W3.astype(np.int32))
    chan = np.zeros((3, 3, max(O1, O2, O3)), np.int32)
    for i, L in enumerate(model.layers):
        O = L.out_shape[0]
        chan[i, 0, :O], chan[i, 1, :O], chan[i, 2, :O] = L.sign, L.bias, L.theta
    geo = Geometry(*(int(v) for v in (L1.stride, L1.frac_bits, L2.frac_bits, L3.frac_bits,
                                      OH1, OW1, O1, OH2, OW2, O2, O3)))
    mode, a, bq = model.leak
    leak = np.array([MULTIPLY if mode == "multiply" else SHIFT, a, bq], np.int64)
    arrays = Prepared(W1t, W2t, W3t, start2, pairs2, geo, chan, leak, model.reset == "zero")
    model._numba_arrays = arrays
    return arrays


def _plain(net: Prepared):
    """``net`` as the plain tuple the kernels take, its Geometry a plain tuple too."""
    return tuple(net[:5]) + (tuple(net.geo),) + tuple(net[6:])


def _to_chw(rec, shape):
    """(T, B, H*W*C) channels-last records -> (T, B, C, H, W) (or (T, B, O) for a linear layer)."""
    T, B = rec.shape[:2]
    if len(shape) == 1:
        return rec
    C, H, W = shape
    return rec.reshape(T, B, H, W, C).transpose(0, 1, 4, 2, 3)


fast_layout = reference_layout      # the layout these kernels are written for (the paper's)


def forward(model: IntegerModel, x, num_steps=None, record=False):
    """Spike counts (B, classes) int32 of the integer model; with ``record`` also a dict layer name
    -> spikes (T, B, *out_shape) of every LIF layer (as engine.forward records them).
    Another layout runs on numba_general's kernel (with ``record``, or a conv as the last layer,
    on the NumPy engine): the same integers."""
    if not fast_layout(model):
        return numba_general.forward(model, x, num_steps, record)
    x, static, T = check_input(model, x, num_steps)
    B = x.shape[0] if static else x.shape[1]
    counts = np.zeros((B, model.num_classes), np.int32)
    sizes = [int(np.prod(L.out_shape)) for L in model.layers]
    recs = [np.zeros((T, B, n) if record else (0, 0, 0), np.uint8) for n in sizes]
    _run(np.ascontiguousarray(x[None] if static else x), static, T, _plain(prepare(model)),
         (counts, *recs))
    if not record:
        return counts
    return counts, {L.name: _to_chw(r, L.out_shape) for L, r in zip(model.layers, recs)}


def predict(model: IntegerModel, x, num_steps=None):
    """Output spike counts (B, classes) int32, equal to ``engine.predict``."""
    return forward(model, x, num_steps)
