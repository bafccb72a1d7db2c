"""The integer forward of any chain of conv and linear layers as one Numba kernel.

numba_engine.py's kernels are written for the paper's layout; this one reads the layers from a
table (``Plan``) and runs them all, one sample per parallel work item, every layer advancing one
step at a time. The same integers as engine.py (equations: conversion.py, chain.py):

    A[t]   = conv / linear of the layer's input at step t, event-driven: a nonzero input x at
             (y, x, c) adds x * Wt[c, kh, kw, :] to every output (i, j) its window reaches
             (kh = y + P - i S, kw = x + P - j S), a nonzero input f of a linear layer x * Wt[f, :]
    I[t]   = sgn_c (A << F) + Bias_c          (F < 0: sgn_c ((A + 2^(-F-1)) >> -F) + Bias_c)
    V[t]   = leak(V[t-1]) + I[t] - Theta_c R[t]   (delayed reset; or in the step that fires)

Work arrays are channels-last ((OH, OW, O), so a weight row of O outputs is contiguous); the input
is transposed to (H, W, C) before the kernel, and each linear layer's weight rows are permuted to
the channels-last order of its input. A static input's first-layer current is formed once.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mininsnn._jit import jit, prange
from mininsnn.deploy import engine as npe
from mininsnn.deploy.conversion import IntegerModel

__all__ = ["Plan", "plan", "forward", "predict"]

# columns of Plan.geo
KIND, C, H, W, O, OH, OW, KH, KW, S, P, F, WOFF, COFF, NIN, NOUT, CUBA, LMODE, LA, LBQ, ROFF = \
    range(21)


class Plan(NamedTuple):
    """geo (L, 16) int64 per layer (the columns above); weights int32, every layer's Wt
    concatenated (conv (C, KH, KW, O), linear (n_in, O) in channels-last input order); chan
    (sum O, 4) int64 sign, bias, theta, Drive; leak: the model's leak (mode 0 multiply / 1 shift,
    a, beta_q) then the synaptic current's (each layer's own in geo); flags (zero reset, delayed
    reset) int64; rec: every recurrent layer's W_r transposed (n_out, n_out) concatenated, int64
    (geo ROFF its offset, -1: none)."""

    geo: np.ndarray
    weights: np.ndarray
    chan: np.ndarray
    leak: np.ndarray
    flags: np.ndarray
    rec: np.ndarray


def _hwc_rows(shape):
    """Index permutation: row r of a (C, H, W)-ordered weight that channels-last position k reads."""
    if len(shape) != 3:
        return np.arange(int(np.prod(shape)))
    c, h, w = shape
    return np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)


def plan(model: IntegerModel) -> Plan:
    """The tables the kernel reads, from an IntegerModel (cached on the model)."""
    cached = getattr(model, "_numba_plan", None)
    if cached is not None:
        return cached
    geo = np.zeros((len(model.layers), 21), np.int64)
    ws, chans, woff, coff, recs, roff = [], [], 0, 0, [np.zeros(1, np.int64)], 1
    for i, L in enumerate(model.layers):
        n_in, n_out = int(np.prod(L.in_shape)), int(np.prod(L.out_shape))
        ins = tuple(L.in_shape) if len(L.in_shape) == 3 else (1, 1, n_in)
        outs = tuple(L.out_shape) if len(L.out_shape) == 3 else (n_out, 1, 1)
        if L.kind == "conv":
            wt = L.weight.transpose(1, 2, 3, 0)                          # (C, KH, KW, O)
            kh, kw = L.weight.shape[2:]
        else:
            wt = L.weight.T[_hwc_rows(L.in_shape)]                       # (n_in, O), HWC rows
            kh = kw = 1
        ws.append(np.ascontiguousarray(wt, np.int32).reshape(-1))
        drive = np.zeros(outs[0], np.int64) if L.drive is None else L.drive
        chans.append(np.stack([L.sign, L.bias, L.theta, drive], axis=1).astype(np.int64))
        geo[i] = (int(L.kind == "linear"), ins[0], ins[1], ins[2], outs[0], outs[1], outs[2],
                  kh, kw, L.stride, L.padding, L.frac_bits, woff, coff, n_in, n_out,
                  int(L.drive is not None), int((L.leak or model.leak)[0] == "shift"),
                  (L.leak or model.leak)[1], (L.leak or model.leak)[2],
                  -1 if L.rec is None else roff)
        if L.rec is not None:
            recs.append(np.ascontiguousarray(L.rec.T, np.int64).reshape(-1))
            roff += recs[-1].size
        woff += ws[-1].size
        coff += outs[0]
    leaks = [model.leak, model.alpha_leak or ("multiply", 1, 0)]
    out = Plan(geo, np.concatenate(ws), np.concatenate(chans),
               np.array([v for mode, a, bq in leaks
                         for v in (0 if mode == "multiply" else 1, a, bq)], np.int64),
               np.array([model.reset == "zero", model.delay], np.int64), np.concatenate(recs))
    model._numba_plan = out
    return out


@jit
def _accumulate(g, weights, x, acc):
    """acc (n_out,) int32 = the layer's accumulator of input x ((H, W, C) flat, any ints; the
    overflow proof bounds every partial sum by the int32 accumulator bound)."""
    acc[:] = 0
    O_ = g[O]
    w0 = g[WOFF]
    if g[KIND] == 1:                                     # linear: a row per nonzero input
        for f in range(g[NIN]):
            v = np.int32(x[f])
            if v != 0:
                base = w0 + f * O_
                for o in range(O_):
                    acc[o] += v * weights[base + o]
        return
    C_, H_, W_, OH_, OW_, KH_, KW_, S_, P_ = g[C], g[H], g[W], g[OH], g[OW], g[KH], g[KW], g[S], g[P]
    for y in range(H_):
        yp = y + P_
        i_lo = max(0, (yp - KH_ + S_) // S_)             # i S <= y + P <= i S + KH - 1
        i_hi = min(OH_ - 1, yp // S_)
        for xx in range(W_):
            xp = xx + P_
            j_lo = max(0, (xp - KW_ + S_) // S_)
            j_hi = min(OW_ - 1, xp // S_)
            for c in range(C_):
                v = np.int32(x[(y * W_ + xx) * C_ + c])
                if v == 0:
                    continue
                for i in range(i_lo, i_hi + 1):
                    for j in range(j_lo, j_hi + 1):
                        base = w0 + ((c * KH_ + (yp - i * S_)) * KW_ + (xp - j * S_)) * O_
                        out = (i * OW_ + j) * O_
                        if v == 1:                       # a spike: add the row
                            for o in range(O_):
                                acc[out + o] += weights[base + o]
                        else:
                            for o in range(O_):
                                acc[out + o] += v * weights[base + o]


@jit
def _current(g, chan, acc, cur):
    """cur = sgn_c (A << F) + Bias_c per neuron (channel = index % O, channels last)."""
    O_, F_, c0 = g[O], g[F], g[COFF]
    for k in range(g[NOUT]):
        a = np.int64(acc[k])
        if F_ >= 0:
            a = a << F_
        else:
            a = (a + (np.int64(1) << (-F_ - 1))) >> -F_
        c = c0 + k % O_
        cur[k] = chan[c, 0] * a + chan[c, 1]


@jit
def _leak(v, leak, i):
    """leak(v) with the leak at leak[i:i+3] (mode 0 multiply / 1 shift, a, beta_q):
    (v beta_q + 2^(a-1)) >> a  or  v - (v >> a)."""
    a = leak[i + 1]
    if leak[i] == 0:
        return (v * leak[i + 2] + (np.int64(1) << (a - 1))) >> a
    return v - (v >> a)


@jit
def _lif(g, chan, cur, state, Sp, leak, flags):
    """One step: V = leak(V) + I - Theta R (or (..)(1 - R)); R = S[t-1], or S[t] without delay.
    A synaptic layer (g[CUBA]): J = leak_alpha(J) + I, V = leak(V) + J + Drive_c. state: (V, J)."""
    V, J = state
    O_, c0 = g[O], g[COFF]
    for k in range(g[NOUT]):
        c = c0 + k % O_
        th = chan[c, 2]
        u = _leak(V[k], g, LMODE)                    # the layer's own leak
        if g[CUBA]:
            J[k] = _leak(J[k], leak, 3) + cur[k]
            u += J[k] + chan[c, 3]
        else:
            u += cur[k]
        if flags[1] == 0:
            Sp[k] = u > th
        if Sp[k]:
            u = 0 if flags[0] == 1 else u - th
        V[k] = u
        if flags[1] == 1:
            Sp[k] = u > th


@jit
def _feedback(g, rec, s, src, dst):
    """dst = src + W_r S[t-1] of a recurrent layer (s: its spikes of the last step): a spike of
    neuron j adds row j of W_r transposed."""
    n = g[NOUT]
    off = g[ROFF]
    for k in range(n):
        dst[k] = src[k]
    for j in range(n):
        if s[j]:
            row = off + j * n
            for k in range(n):
                dst[k] += rec[row + k]


@jit(parallel=True)
def _run(x, static, T, pl, counts):
    """counts (B, classes) += output spikes; x (TI, B, n_in0) ints channels-last."""
    geo, weights, chan, leak, flags, rec = pl
    L = geo.shape[0]
    B = x.shape[1]
    n_max = 1
    for li in range(L):
        n_max = max(n_max, geo[li, NOUT])
    for b in prange(B):
        V = np.zeros((L, n_max), np.int64)
        J = np.zeros((L, n_max), np.int64)
        Sp = np.zeros((L, n_max), np.uint8)
        acc = np.zeros(n_max, np.int32)
        cur0 = np.zeros(n_max, np.int64)
        cur = np.zeros(n_max, np.int64)
        fb = np.zeros(n_max, np.int64)
        for t in range(T):
            for li in range(L):
                g = geo[li]
                if li == 0:
                    if t == 0 or not static:
                        _accumulate(g, weights, x[0 if static else t, b], acc)
                        _current(g, chan, acc, cur0)
                    src = cur0
                else:
                    _accumulate(g, weights, Sp[li - 1], acc)
                    _current(g, chan, acc, cur)
                    src = cur
                if g[ROFF] >= 0:        # a recurrent layer: + W_r S[t-1]
                    _feedback(g, rec, Sp[li], src, fb)
                    src = fb
                _lif(g, chan, src, (V[li], J[li]), Sp[li], leak, flags)
            last = geo[L - 1]
            for k in range(last[NOUT]):
                counts[b, k] += Sp[L - 1, k]


def forward(model: IntegerModel, x, num_steps=None, record=False):
    """numba_engine.forward of a model of any layout: counts (B, classes) int32 from the kernel;
    with ``record``, or a conv as the last layer, from the NumPy engine (the same integers)."""
    if record or len(model.layers[-1].out_shape) != 1:
        out = npe.forward(model, x, num_steps, record)
        counts = (out[0] if record else out).sum(axis=0, dtype=np.int32)
        return (counts, out[1]) if record else counts
    x, static, T = npe.check_input(model, x, num_steps)
    return predict(model, x, static, T)


def predict(model: IntegerModel, x, static, T):
    """Output spike counts (B, classes) int32 of checked input x (engine.check_input)."""
    pl = plan(model)
    xs = x[None] if static else x
    if xs.ndim == 5:                                      # (TI, B, C, H, W) -> channels last
        xs = xs.transpose(0, 1, 3, 4, 2)
    xs = np.ascontiguousarray(xs.reshape(xs.shape[0], xs.shape[1], -1))
    counts = np.zeros((xs.shape[1], int(pl.geo[-1, NOUT])), np.int32)
    _run(xs, bool(static), int(T), tuple(pl), counts)
    return counts
