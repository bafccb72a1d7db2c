"""The integer forward in pure NumPy: no Numba, no float in the time loop.

Imports only NumPy and ``mininsnn.deploy.conversion`` (itself NumPy only), so it runs where Numba is
absent. Semantics (conversion.py, docs/deploy.md), per LIF layer with channel c:

    A[t]  = integer conv / linear of the layer's input at step t  (layer 1: pixels; later: spikes)
    I[t]  = sgn_c * (A[t] << F) + Bias_c                (F < 0: sgn_c * ((A + 2^(-F-1)) >> -F))
    V[t]  = leak(V[t-1]) + I[t] - Theta_c R[t]          ("zero": (leak(V[t-1]) + I[t]) (1 - R[t]))
    R[t]  = [V[t-1] > Theta_c],  S[t] = [V[t] > Theta_c],  V[-1] = 0

How the work is laid out, since NumPy's integer matmul does not use BLAS:
- layer 1 with a static image: its accumulator is computed once per batch (im2col, tiny);
- each layer runs all T steps before the next one starts (no layer feeds back);
- a conv on 0/1 spikes is a sum of table rows: for one input channel c and kernel row kh, the KW
  spikes under the kernel form a KW-bit pattern m, and Tab[c, kh, m, :] = sum_{kw in m} W[:, c, kh, kw]
  (``pattern_table``); two kernel rows per slot (12-bit patterns, a 24 MiB int16 table for the MNIST
  conv2) make it C*KH/2 gathers of whole rows and adds per output instead of C*KH*KW
  multiply-adds (``conv_spikes``). A linear layer on spikes does the same with bytes of 8 inputs
  (``linear_spikes``). The plain twin (``conv_int_plain``, dense) is kept for the tests.
The membrane is held in int64 arrays here (the leak product needs 64 bits); the proof keeps its
values within int32, as in the C export.
"""

from __future__ import annotations

import numpy as np

from mininsnn import rules
from mininsnn.deploy.conversion import IntegerModel

__all__ = ["InputError", "check_input", "forward", "predict", "conv_int_plain", "conv_int",
           "pattern_table", "conv_spikes", "linear_spikes", "lif_run", "input_current",
           "current_terms"]

BATCH = 64          # samples per pass through the layers
TABLE_BYTES = 32 << 20  # largest pattern table of two kernel rows per slot (else one row)
CHUNK = 1 << 17     # accumulator values per conv-on-spikes chunk: the chunk stays in cache


class InputError(ValueError):
    """An input of the wrong shape, dtype or range."""


def check_input(model: IntegerModel, x, num_steps=None):
    """Validate ``x``: (B, *input_shape) static images or (T, B, *input_shape) frames, integers in
    0..input_max. Returns (x, static, T)."""
    if not isinstance(x, np.ndarray):
        raise InputError(f"expected a numpy array input, got {type(x).__name__}")
    per = tuple(model.input_shape)
    dims = ", ".join(str(d) for d in per)
    if model.static:
        if x.ndim != len(per) + 1 or x.shape[1:] != per:
            raise InputError(f"expected input of shape (B, {dims}) (an image fed at every step), "
                             f"got {x.shape}")
        if num_steps is None:
            num_steps = model.num_steps
        T = num_steps
    else:
        if x.ndim != len(per) + 2 or x.shape[2:] != per:
            raise InputError(f"expected input of shape (T, B, {dims}) (one frame per step), got "
                             f"{x.shape}")
        T = x.shape[0]
        if num_steps is not None and num_steps != T:
            raise InputError(f"num_steps={num_steps} but the input has {T} time steps")
    try:
        rules.POSITIVE(T)
    except rules.RuleError as e:
        raise InputError(f"expected num_steps to be {e.what}, got {e.got}") from None
    if model.max_steps is not None and T > model.max_steps:
        raise InputError(f"the overflow proof of this model covers T <= {model.max_steps}, got {T}")
    if x.dtype.kind not in "ui":
        raise InputError(f"expected integer input (uint8 pixels or event counts 0.."
                         f"{model.input_max}), got dtype {x.dtype}")
    if x.size == 0:
        raise InputError(f"empty input of shape {x.shape}")
    lo, hi = int(x.min()), int(x.max())
    if lo < 0 or hi > model.input_max:
        raise InputError(f"input values must lie in 0..{model.input_max}, got {lo}..{hi}")
    return x, model.static, int(T)


# ---------------------------------------------------------------------------------------------
# accumulators

def conv_int_plain(x, w, stride):
    """Dense integer conv, no padding: A[n, o, i, j] = sum_{c,kh,kw} w[o,c,kh,kw] x[n,c,i*s+kh,j*s+kw].
    x: (N, C, H, W) ints;  w: (O, C, KH, KW) ints.  Returns (N, O, OH, OW) int64."""
    N, C, H, W = x.shape
    O, _, KH, KW = w.shape
    OH, OW = (H - KH) // stride + 1, (W - KW) // stride + 1
    A = np.zeros((N, O, OH, OW), np.int64)
    for kh in range(KH):
        for kw in range(KW):
            win = x[:, :, kh:kh + stride * (OH - 1) + 1:stride, kw:kw + stride * (OW - 1) + 1:stride]
            A += np.einsum("nchw,oc->nohw", win.astype(np.int64), w[:, :, kh, kw].astype(np.int64))
    return A


def conv_int(x, w, stride):
    """The same as :func:`conv_int_plain` by im2col and one integer matmul (int64).
    x: (N, C, H, W);  w: (O, C, KH, KW).  Returns (N, O, OH, OW) int64."""
    N, C, H, W = x.shape
    O, _, KH, KW = w.shape
    win = np.lib.stride_tricks.sliding_window_view(x, (KH, KW), axis=(2, 3))[:, :, ::stride, ::stride]
    OH, OW = win.shape[2], win.shape[3]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(N * OH * OW, C * KH * KW).astype(np.int64)
    A = cols @ w.reshape(O, C * KH * KW).T.astype(np.int64)   # (N*OH*OW, O)
    return A.reshape(N, OH, OW, O).transpose(0, 3, 1, 2)


def pattern_table(w, dtype, rows=1):
    """Tab[c, g, m, o] = sum of w[o, c, kh, kw] over the bits of m, for slot g of ``rows`` kernel
    rows: bit r*KW + kw of m stands for (kh = g*rows + r, kw).  w: (O, C, KH, KW); returns
    (C * G * 2^(rows*KW), O) of ``dtype``, G = ceil(KH / rows) (row (c * G + g) * 2^(rows*KW) + m)."""
    O, C, KH, KW = w.shape
    G = -(-KH // rows)
    wt = np.zeros((C, G * rows, KW, O), np.int64)
    wt[:, :KH] = w.transpose(1, 2, 3, 0)                    # (C, KH, KW, O), zero rows appended
    one = np.zeros((C, G * rows, 1 << KW, O), np.int64)     # one kernel row: 2^KW patterns
    for m in range(1, 1 << KW):
        low = m & -m                                         # pattern = (m without its low bit) + that tap
        one[:, :, m] = one[:, :, m ^ low] + wt[:, :, low.bit_length() - 1]
    one = one.reshape(C, G, rows, 1 << KW, O)
    Tab = one[:, :, 0]
    for r in range(1, rows):                                 # m = m_0 | m_1 << KW | ...
        Tab = (one[:, :, r][:, :, :, None] + Tab[:, :, None]).reshape(C, G, -1, O)
    return Tab.reshape(-1, O).astype(dtype)


def _row_masks(S):
    """Bit x of M[n, c, y] = S[n, c, y, x].  S: (N, C, H, W) 0/1 uint8, W <= 64 -> (N, C, H) int64."""
    packed = np.packbits(S, axis=-1, bitorder="little")     # (N, C, H, ceil(W/8)) uint8
    M = np.zeros(S.shape[:3], np.int64)
    for i in range(packed.shape[-1]):
        M |= packed[..., i].astype(np.int64) << (8 * i)
    return M


def conv_spikes(S, Tab, KH, KW, stride, out_hw, rows=1):
    """Conv of 0/1 spikes by window patterns (== conv_int_plain on S).
    S: (N, C, H, W) uint8;  Tab from pattern_table(w, dtype, rows);  returns (N, O, OH, OW).

        A[n, :, i, j] = sum_{c, g} Tab[c, g, m(n, c, g, i, j), :]
        m = the spikes S[n, c, i*s + kh, j*s + kw] under kernel rows kh of slot g, kw < KW

    A dense sum over the C*G pattern slots (an empty pattern reads a zero row): each slot is one
    gather of whole table rows and one add, over a chunk of samples that stays in cache. The row
    patterns come from one bit mask per input row (``_row_masks``).
    """
    N, C, H, W = S.shape
    OH, OW = out_hw
    O = Tab.shape[1]
    G = -(-KH // rows)
    out = np.empty((N, OH, OW, O), Tab.dtype)                          # channels last
    full = (1 << KW) - 1
    ys = np.arange(KH)[:, None] + stride * np.arange(OH)[None, :]      # (KH, OH) input rows
    shifts = stride * np.arange(OW)                                    # (OW,) window starts
    base = (np.arange(C * G).reshape(C, G) << (rows * KW))[None, :, :, None, None]
    step = max(1, CHUNK // (OH * OW * O))                              # samples per chunk
    buf = np.empty((min(step, N), OH, OW, O), Tab.dtype)
    for lo in range(0, N, step):
        hi = min(N, lo + step)
        M = _row_masks(S[lo:hi])                                       # (n, C, H)
        one = (M[:, :, ys][..., None] >> shifts) & full                # (n, C, KH, OH, OW)
        pat = np.zeros((hi - lo, C, G, OH, OW), np.int64)
        for r in range(rows):                                          # m = m_0 | m_1 << KW ...
            pat[:, :, :len(range(r, KH, rows))] |= one[:, :, r::rows] << (r * KW)
        pat += base                                                    # table rows
        acc = out[lo:hi]
        acc[...] = 0
        b = buf[:hi - lo]
        for c in range(C):
            for g in range(G):
                np.take(Tab, pat[:, c, g], axis=0, out=b)              # (n, OH, OW, O)
                acc += b
    return out.transpose(0, 3, 1, 2)


def byte_table(w, dtype):
    """Tab[g, m, o] = sum_{bit i of m} w[o, 8 g + i].  w: (O, F) -> (ceil(F/8) * 256, O)."""
    O, F = w.shape
    G = (F + 7) // 8
    wp = np.zeros((G * 8, O), np.int64)
    wp[:F] = w.T
    wp = wp.reshape(G, 8, O)
    Tab = np.zeros((G, 256, O), np.int64)
    for m in range(1, 256):
        for i in range(8):
            if m >> i & 1:
                Tab[:, m] += wp[:, i]
    return Tab.reshape(G * 256, O).astype(dtype)


def linear_spikes(S, Tab):
    """A[n, o] = sum_f w[o, f] S[n, f] by bytes of 8 spikes:  A[n] = sum_g Tab[g, byte_g(S[n]), :].
    S: (N, F) uint8;  Tab from byte_table.  Returns (N, O) of Tab's dtype."""
    bytes_ = np.packbits(S, axis=-1, bitorder="little").astype(np.intp)   # (N, G)
    G = bytes_.shape[1]
    out = np.zeros((S.shape[0], Tab.shape[1]), Tab.dtype)
    for g in range(G):
        out += Tab[bytes_[:, g] + (g << 8)]
    return out


# ---------------------------------------------------------------------------------------------
# neurons

def input_current(A, sign, F, bias):
    """I = sgn_c * (A << F) + Bias_c (F >= 0) or sgn_c * ((A + 2^(-F-1)) >> -F) + Bias_c.
    A: (..., O, M) ints; sign, bias: (O,).  Returns int64 of A's shape (the plain form;
    lif_run folds the same sum into its step)."""
    A, coef, const = current_terms(A, sign, F, bias)
    return A * coef + const


def current_terms(A, sign, F, bias):
    """(A', coef, const) with I = A' * coef + const: coef = sgn_c 2^F (a shift and a sign) and
    const = Bias_c, per channel (shape (O, 1)); for F < 0, A' = (A + 2^(-F-1)) >> -F, coef = sgn_c."""
    if F < 0:
        A = (A.astype(np.int64) + (1 << (-F - 1))) >> -F
        F = 0
    coef = sign.astype(np.int64)[:, None] << F                  # sgn_c 2^F
    return A, coef, bias.astype(np.int64)[:, None]


def lif_run(drive, T, theta, leak, reset, delay=True):
    """Run integer LIF neurons over T steps, with input current I[t] = A[t] * coef + const.
    drive = (A, coef, const): A (TI, ...) ints, TI in {1, T};  coef, const, theta: int64 arrays
    broadcastable to A[0] (per channel: (O, 1) for A of shape (TI, N, O, M)).
    Returns S (T, ...) uint8.

        R[t] = [V[t-1] > Theta]                 (the previous step's spike)
        V[t] = leak(V[t-1]) + I[t] - Theta R[t]   or  (leak(V[t-1]) + I[t]) (1 - R[t])
        S[t] = [V[t] > Theta]

    ``delay=False`` (the reset in the step that fires): W = leak(V[t-1]) + I[t], S[t] = [W > Theta],
    V[t] = W - Theta S[t]  or  W (1 - S[t]).

    Multiply leak: leak(v) + I = (v beta_q + 2^(Q-1) + I 2^Q) >> Q exactly (I is an integer), so a
    step is V beta_q + A coef 2^Q + (const 2^Q + 2^(Q-1)), one shift; with a static input
    (TI = 1) the last two terms are one array formed once.
    """
    A, coef, const = drive
    TI = A.shape[0]
    shape = A.shape[1:]
    Th = np.broadcast_to(theta.astype(np.int64), shape)
    V = np.zeros(shape, np.int64)                     # V[-1] = 0
    tmp = np.empty(shape, np.int64)
    drive = np.empty(shape, np.int64)
    S = np.empty((T,) + shape, np.uint8)
    R = np.zeros(shape, bool)                         # R[0] = 0
    mode, a, bq = leak
    q = a if mode == "multiply" else 0                # the drive is I 2^q (+ 2^(q-1))
    coef_q = coef << q
    const_q = (const << q) + ((1 << (q - 1)) if q else 0)
    if TI == 1:
        np.multiply(A[0], coef_q, out=drive)
        drive += const_q
    for t in range(T):
        if TI > 1:                                    # I[t] 2^q (+ 2^(q-1)), formed per step
            np.multiply(A[t], coef_q, out=drive)
            drive += const_q
        if mode == "multiply":                        # V = (V beta_q + 2^(Q-1) + I 2^Q) >> Q
            np.multiply(V, bq, out=tmp)
            tmp += drive
            np.right_shift(tmp, a, out=V)
        else:                                         # V = V - (V >> k) + I
            np.right_shift(V, a, out=tmp)
            V -= tmp
            V += drive
        if not delay:                                 # the reset in the step that fires:
            np.greater(V, Th, out=R)                  # S[t] = [V[t] > Theta], then V -= Theta S[t]
        if reset == "subtract":                       # or V (1 - S[t]), V[t] now is U[t]
            np.subtract(V, Th, out=V, where=R)        # - Theta R[t]
        else:
            V[R] = 0                                  # (1 - R[t])
        if delay:
            np.greater(V, Th, out=R)                  # S[t] = [V[t] > Theta] = R[t+1]
        S[t] = R
    return S


def _leak_of(v, leak):
    """leak(v) = (v beta_q + 2^(Q-1)) >> Q  or  v - (v >> k), int64 arrays."""
    mode, a, bq = leak
    return (v * bq + (1 << (a - 1))) >> a if mode == "multiply" else v - (v >> a)


def _fire(V, R, theta, reset, delay):
    """One step's spike and reset, as in lif_run: with ``delay`` R holds last step's spikes and the
    reset it makes, then R = [V > Theta] for the next step; without, R = [V > Theta] resets now.
    Returns the new (V, R); S[t] = R."""
    if not delay:
        R = V > theta
    V = np.where(R, 0 if reset == "zero" else V - theta, V)
    if delay:
        R = V > theta
    return V, R


def cuba_run(drive, T, theta, leaks, reset, delay, D, Wr=None):
    """Synaptic neurons: lif_run's arguments and, per channel, Drive D (broadcastable like theta);
    leaks = (leak, alpha_leak); Wr (O, O) the feedback of an RSynaptic (A (TI, B, O, 1)).
    Returns S (T, ...) uint8.

        J[t] = leak_alpha(J[t-1]) + I[t] (+ W_r S[t-1])   (never reset; J[-1] = 0, S[-1] = 0)
        V[t] = leak(V[t-1]) + J[t] + D - Theta R[t]    then spike and reset as lif_run
    """
    A, coef, const = drive
    shape = A.shape[1:]
    V = np.zeros(shape, np.int64)
    J = np.zeros(shape, np.int64)
    R = np.zeros(shape, bool)
    S = np.empty((T,) + shape, np.uint8)
    for t in range(T):
        J = _leak_of(J, leaks[1]) + (A[t if A.shape[0] > 1 else 0] * coef + const)
        if Wr is not None and t:
            J = J + (S[t - 1][..., 0].astype(np.int64) @ Wr.astype(np.int64).T)[..., None]
        V = _leak_of(V, leaks[0]) + J + D
        V, R = _fire(V, R, theta, reset, delay)
        S[t] = R
    return S


def rec_run(drive, T, theta, leak, reset, delay, Wr):
    """Recurrent LIF neurons (an RLeaky): lif_run's arguments (A of shape (TI, B, O, 1)) and the
    feedback W_r (O, O) ints, added to the current with one step delay (S[-1] = 0):

        V[t] = leak(V[t-1]) + I[t] + W_r S[t-1] - Theta R[t]    then spike and reset as lif_run
    """
    A, coef, const = drive
    shape = A.shape[1:]
    Wt = Wr.astype(np.int64).T                        # (in, out)
    V = np.zeros(shape, np.int64)
    R = np.zeros(shape, bool)
    S = np.zeros((T,) + shape, np.uint8)
    prev = np.zeros(shape[:-1], np.int64)             # (B, O) S[t-1]
    for t in range(T):
        fb = (prev @ Wt)[..., None]                   # W_r S[t-1]
        V = _leak_of(V, leak) + (A[t if A.shape[0] > 1 else 0] * coef + const) + fb
        V, R = _fire(V, R, theta, reset, delay)
        S[t] = R
        prev = S[t][..., 0].astype(np.int64)
    return S


def may_fire(I, theta, leak):
    """Whether a neuron with the constant input I can ever fire (as numba_engine._may_fire):
    without a spike V[t] <= (I + e) / (1 - beta) (e = 1/2 multiply, 1 shift) and V[t] <= 0 for
    I <= 0, so it fires only if (2 I + 1) 2^Q > 2 Theta (2^Q - beta_q)  (shift: (I + 1) 2^k > Theta)."""
    mode, a, bq = leak
    if mode == "multiply":
        return (I > 0) & ((2 * I + 1) << a > 2 * theta * ((1 << a) - bq))
    return (I > 0) & ((I + 1) << a > theta)


# ---------------------------------------------------------------------------------------------
# the network

def forward(model: IntegerModel, x, num_steps=None, record=False):
    """Output spikes (T, B, classes) uint8 of the integer model; with ``record``, also a dict
    layer name -> spikes (T, B, *out_shape) of every LIF layer.  x: see :func:`check_input`.
    Runs BATCH samples at a time (their work arrays stay in cache)."""
    x, static, T = check_input(model, x, num_steps)
    B = x.shape[0] if static else x.shape[1]
    parts = []
    for lo in range(0, B, BATCH):
        xb = x[lo:lo + BATCH] if static else x[:, lo:lo + BATCH]
        parts.append(_forward(model, xb, static, T, record))
    out = np.concatenate([p[0] for p in parts], axis=1)
    if not record:
        return out
    return out, {k: np.concatenate([p[1][k] for p in parts], axis=1) for k in parts[0][1]}


def pad(x, p):
    """x (N, C, H, W) with p zeros added on every side of H and W (p = 0: x itself)."""
    return x if not p else np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))


def _tables(model, L, dtype):
    """The pattern (or byte) table of layer L, built once per model: two kernel rows per slot
    (2^12 patterns of KW = 6) while the table stays under TABLE_BYTES, else one."""
    cache = model.__dict__.setdefault("_numpy_tables", {})
    if L.name not in cache:
        if L.kind == "linear":
            cache[L.name] = byte_table(L.weight, dtype), 1
        else:
            O, C, KH, KW = L.weight.shape
            rows = 2 if C * -(-KH // 2) * (1 << 2 * KW) * O * np.dtype(dtype).itemsize <= \
                TABLE_BYTES else 1
            cache[L.name] = pattern_table(L.weight, dtype, rows), rows
    return cache[L.name]


def _forward(model, x, static, T, record):
    """forward() of one batch of checked input; returns (spikes, records)."""
    B = x.shape[0] if static else x.shape[1]
    recorded = {}
    h = None
    for li, L in enumerate(model.layers):
        O = L.out_shape[0]
        acc_dtype = np.int16 if L.acc_bits == 16 else np.int32
        if li == 0:       # integer input: im2col or a matmul (static: once)
            xs = x if static else x.reshape((T * B,) + x.shape[2:])
            if L.kind == "linear":
                A = xs.reshape(xs.shape[0], -1).astype(np.int64) @ L.weight.T.astype(np.int64)
            else:
                A = conv_int(pad(xs, L.padding), L.weight, L.stride)   # (TI * B, O, OH, OW)
        elif L.kind == "conv":
            Tab, rows = _tables(model, L, acc_dtype)
            S = pad(h.reshape((T * B,) + tuple(L.in_shape)), L.padding)
            A = conv_spikes(S, Tab, L.weight.shape[2], L.weight.shape[3], L.stride, L.out_shape[1:],
                            rows)
        else:
            Tab, _ = _tables(model, L, acc_dtype)
            A = linear_spikes(h.reshape(T * B, -1), Tab)
        TI = 1 if (li == 0 and static) else T
        A, coef, const = current_terms(A.reshape(TI, B, O, -1), L.sign, L.frac_bits, L.bias)
        theta = L.theta.astype(np.int64)[:, None]                  # (O, 1)
        if L.rec is not None and L.drive is None:       # an RLeaky
            h = rec_run((A, coef, const), T, theta, L.leak or model.leak, model.reset,
                        model.delay, L.rec)
        elif L.drive is not None:     # a synaptic layer
            h = cuba_run((A, coef, const), T, theta, (L.leak or model.leak, model.alpha_leak),
                         model.reset, model.delay, L.drive.astype(np.int64)[:, None], L.rec)
        elif TI == 1:     # static: only the neurons that can ever fire are simulated
            I = A[0] * coef + const                                # (B, O, M) constant current
            Th = np.broadcast_to(theta, I.shape)
            cand = np.flatnonzero(may_fire(I, Th, L.leak or model.leak))
            one = np.ones(1, np.int64)
            Sc = lif_run((I.reshape(1, -1)[:, cand], one, 0 * one), T, Th.reshape(-1)[cand],
                         L.leak or model.leak, model.reset, model.delay)   # (T, candidates)
            h = np.zeros((T, I.size), np.uint8)
            h[:, cand] = Sc
        else:
            h = lif_run((A, coef, const), T, theta, L.leak or model.leak, model.reset,
                        model.delay)
        h = h.reshape((T, B) + tuple(L.out_shape))
        if record:
            recorded[L.name] = h
    return h, recorded


def predict(model: IntegerModel, x, num_steps=None):
    """Output spike counts (B, classes) int32 (the class is argmax, ties to the lowest index)."""
    return forward(model, x, num_steps).sum(axis=0, dtype=np.int32)
