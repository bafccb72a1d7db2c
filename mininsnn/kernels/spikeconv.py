"""Convolution forward and weight gradient for 0/1 spike inputs, by window patterns.

The same maths as ``conv.conv2d_forward`` / ``conv.conv2d_backward_weight`` (the plain forms, used
for any other input), organised around what a spike input allows: for one input channel c, one
kernel row kh and one output position (i, j), the KW inputs under that kernel row are a KW-bit
pattern m (bit kw set if X[n, c, i*s - p + kh, j*s - p + kw] = 1), so

    forward:  Y[n, :, i, j] += Tab[c, kh, m, :],      Tab[c, kh, m, :] = sum_{kw in m} W[:, c, kh, kw]
    backward: G[c, kh, m, :] += dY[n, :, i, j]   ...   dW[:, c, kh, kw] = sum_{m containing kw} G[c, kh, m, :]

One 64-wide add per (c, kh, i, j) with a non-empty pattern, in loops of fixed length, instead of
one per (spike, tap) in loops whose length depends on the data. The patterns come from one
bit mask per input row (``_row_mask``). Needs KW <= 8 and W + pad <= 62 (``fits``).

Below each kernel, ``<kernel>_plain`` is its plain twin (same arguments and result, plain loops, not
compiled). The twin of the forward computes the convolution itself, tap by tap, so it shows what the
pattern trick must equal; the twin of the weight gradient computes G from its definition, and
``unfold_pattern_grad`` of that G equals ``conv.conv2d_backward_weight_plain`` (tests/test_kernels.py).
"""

import numpy as np

from mininsnn._jit import jit, prange
from mininsnn.kernels.conv import sample_channels_last


def fits(KW, W, pad):
    """Whether the pattern kernels handle this shape (else use the plain kernels)."""
    return KW <= 8 and W + pad <= 62


@jit
def _row_mask(X, n, c, y, pad):
    """Bit x + pad set where X[n, c, y, x] != 0 (so a window starting at column x0 - pad is >> x0)."""
    M = 0
    for x in range(X.shape[3]):
        M |= (X[n, c, y, x] != 0) << (x + pad)
    return M


@jit
def pattern_table(Wt, Tab):
    """Tab[c, kh, m, :] = sum of Wt[c, kh, kw, :] over the bits kw of m.   Wt: (C, KH, KW, O);
    Tab: (C, KH, 2^KW, O), written. Each pattern is the one without its lowest bit plus that bit's row."""
    C, KH, KW, O = Wt.shape
    for c in range(C):
        for kh in range(KH):
            Tab[c, kh, 0] = 0.0
            for m in range(1, 1 << KW):
                low = m & (-m)
                kw = 0
                while (1 << kw) != low:
                    kw += 1
                for o in range(O):
                    Tab[c, kh, m, o] = Tab[c, kh, m ^ low, o] + Wt[c, kh, kw, o]


def pattern_table_plain(Wt, Tab):
    """Plain twin of :func:`pattern_table` (same arguments, same result up to rounding):

        Tab[c, kh, m, o] = sum_{kw < KW, bit kw of m set} W[o, c, kh, kw],    W[o, c, kh, kw] = Wt[c, kh, kw, o]
    """
    C, KH, KW, O = Wt.shape
    for c in range(C):
        for kh in range(KH):
            for m in range(1 << KW):
                for o in range(O):
                    acc = Tab.dtype.type(0)
                    for kw in range(KW):
                        if (m >> kw) & 1:
                            acc += Wt[c, kh, kw, o]
                    Tab[c, kh, m, o] = acc


@jit(parallel=True)
def spikeconv_forward(X, Tab, KW, stride, pad, rows, Y):
    """Y[n, o, i, j] = sum_{c, kh, kw} W[o, c, kh, kw] X[n, c, i*s - p + kh, j*s - p + kw], X in {0, 1}.

    X: (N, C, H, W) uint8 spikes;  Tab: (C, KH, 2^KW, O) from pattern_table;
    rows: (H, 2) output rows (lo, hi) each input row reaches;  Y: (N, O, OH, OW), written.
    """
    N, C, H, Wd = X.shape
    O = Tab.shape[3]
    OH, OW = Y.shape[2], Y.shape[3]
    full = (1 << KW) - 1
    for n in prange(N):
        acc = np.zeros((OH, OW, O), dtype=Y.dtype)  # Y[n] with channels last
        for c in range(C):
            for y in range(H):
                M = _row_mask(X, n, c, y, pad)
                if M == 0:
                    continue
                for i in range(rows[y, 0], rows[y, 1] + 1):
                    kh = y + pad - i * stride
                    for j in range(OW):
                        m = (M >> (j * stride)) & full  # the spikes under kernel row kh at (i, j)
                        if m == 0:
                            continue
                        for o in range(O):
                            acc[i, j, o] += Tab[c, kh, m, o]
        for o in range(O):
            for i in range(OH):
                for j in range(OW):
                    Y[n, o, i, j] = acc[i, j, o]


@jit(parallel=True)
def spikeconv_forward_int(X, Tab, KW, stride, pad, rows, scale, Y):
    """The same convolution with integer weights, exactly: Y[n, o, i, j] = scale * A[n, o, i, j],

        A[n, o, i, j] = sum_{c, kh, kw} q[o, c, kh, kw] X[n, c, i*s - p + kh, j*s - p + kw]     (integers)

    X: (N, C, H, W) uint8 spikes;  Tab: (C, KH, 2^KW, O) integer pattern table of q (pattern_table);
    rows as in spikeconv_forward;  scale: a scalar of Y's dtype;  Y: (N, O, OH, OW), written.
    A is summed in Tab's integer dtype: the caller picks one that holds sum_{c,kh,kw} |q| (int16 for
    4-bit weights: twice the lanes of float32 per vector, and a table half the size), so no sum
    overflows and A is exact; Y is then scale * A rounded once.
    """
    N, C, H, Wd = X.shape
    O = Tab.shape[3]
    OH, OW = Y.shape[2], Y.shape[3]
    full = (1 << KW) - 1
    for n in prange(N):
        acc = np.zeros((OH, OW, O), dtype=Tab.dtype)  # A[n] with channels last
        for c in range(C):
            for y in range(H):
                M = _row_mask(X, n, c, y, pad)
                if M == 0:
                    continue
                for i in range(rows[y, 0], rows[y, 1] + 1):
                    kh = y + pad - i * stride
                    for j in range(OW):
                        m = (M >> (j * stride)) & full  # the spikes under kernel row kh at (i, j)
                        if m == 0:
                            continue
                        for o in range(O):
                            acc[i, j, o] += Tab[c, kh, m, o]
        for o in range(O):
            for i in range(OH):
                for j in range(OW):
                    Y[n, o, i, j] = scale * acc[i, j, o]


def spikeconv_forward_int_plain(X, Tab, KW, stride, pad, rows, scale, Y):
    """Plain twin of :func:`spikeconv_forward_int` (same arguments, same result bit for bit): the
    integer convolution tap by tap, in Python integers, then one product with the scale.

        A[n, o, i, j] = sum_{c, kh, kw} q[o, c, kh, kw] * X[n, c, i*s - p + kh, j*s - p + kw],   q[o, c, kh, kw] = Tab[c, kh, 2^kw, o]
        Y[n, o, i, j] = scale * A[n, o, i, j]
    """
    N, C, H, Wd = X.shape
    KH, O = Tab.shape[1], Tab.shape[3]
    OH, OW = Y.shape[2], Y.shape[3]
    for n in range(N):
        for o in range(O):
            for i in range(OH):
                for j in range(OW):
                    acc = 0  # a Python integer: no overflow
                    for c in range(C):
                        for kh in range(KH):
                            for kw in range(KW):
                                y, x = i * stride - pad + kh, j * stride - pad + kw
                                if 0 <= y < H and 0 <= x < Wd:
                                    acc += int(X[n, c, y, x]) * int(Tab[c, kh, 1 << kw, o])
                    Y[n, o, i, j] = scale * Y.dtype.type(acc)


def spikeconv_forward_plain(X, Tab, KW, stride, pad, rows, Y):
    """Plain twin of :func:`spikeconv_forward` (same arguments, same result up to rounding): the
    convolution tap by tap, no patterns.

        Y[n, o, i, j] = sum_{c, kh, kw} W[o, c, kh, kw] * X[n, c, i*s - p + kh, j*s - p + kw]

    The weights are read from the table's one-bit patterns, W[o, c, kh, kw] = Tab[c, kh, 2^kw, o];
    X = 0 outside the input; ``rows`` is not needed (the loops check the bounds).
    """
    N, C, H, Wd = X.shape
    KH, O = Tab.shape[1], Tab.shape[3]
    OH, OW = Y.shape[2], Y.shape[3]
    for n in range(N):
        for o in range(O):
            for i in range(OH):
                for j in range(OW):
                    acc = Y.dtype.type(0)
                    for c in range(C):
                        for kh in range(KH):
                            for kw in range(KW):
                                y, x = i * stride - pad + kh, j * stride - pad + kw
                                if 0 <= y < H and 0 <= x < Wd:
                                    acc += X[n, c, y, x] * Tab[c, kh, 1 << kw, o]
                    Y[n, o, i, j] = acc


@jit(parallel=True)
def spikeconv_backward_weight(X, dY, KW, stride, pad, rows, G_parts):
    """G[c, kh, m, :] = sum over (n, i, j) whose kernel row kh sees pattern m of dY[n, :, i, j].

    X: (N, C, H, W) uint8 spikes;  dY: (N, O, OH, OW);  rows as in spikeconv_forward;
    G_parts: (P, C, KH, 2^KW, O), written: partial sums over P slices of the batch. Then
    dW[:, c, kh, kw] = sum over m with bit kw of G[c, kh, m, :]  (unfold_pattern_grad).
    """
    N, C, H, Wd = X.shape
    P = G_parts.shape[0]
    O, OH, OW = dY.shape[1], dY.shape[2], dY.shape[3]
    full = (1 << KW) - 1
    for p in prange(P):
        G = G_parts[p]
        G[:] = 0.0
        dYt = np.empty((OH, OW, O), dtype=dY.dtype)  # one sample of dY, channels last
        for n in range(p * N // P, (p + 1) * N // P):
            sample_channels_last(dY, n, dYt)
            for c in range(C):
                for y in range(H):
                    M = _row_mask(X, n, c, y, pad)
                    if M == 0:
                        continue
                    for i in range(rows[y, 0], rows[y, 1] + 1):
                        kh = y + pad - i * stride
                        for j in range(OW):
                            m = (M >> (j * stride)) & full
                            if m == 0:
                                continue
                            for o in range(O):
                                G[c, kh, m, o] += dYt[i, j, o]


def spikeconv_backward_weight_plain(X, dY, KW, stride, pad, rows, G_parts):
    """Plain twin of :func:`spikeconv_backward_weight` (same arguments, same result): G from its
    definition, the pattern of every (n, c, kh, i, j) built tap by tap.

        m(n, c, kh, i, j) = sum_{kw} 2^kw * [X[n, c, i*s - p + kh, j*s - p + kw] != 0]     (0 outside the input)
        G[c, kh, m, o]    = sum_{n, i, j with m(n, c, kh, i, j) = m} dY[n, o, i, j]         for m >= 1

    G[c, kh, 0, o] = 0: the empty pattern touches no weight. Written as G_parts[p], the sum over the
    samples of slice p of the batch, p*N//P <= n < (p+1)*N//P, as in the fast kernel; each (n, i, j)
    adds its dY to the one pattern it sees, in the order n, i, j. Then
    unfold_pattern_grad(sum_p G_parts[p]) = dW of conv.conv2d_backward_weight_plain.
    """
    N, C, H, Wd = X.shape
    P, _, KH, _, O = G_parts.shape
    OH, OW = dY.shape[2], dY.shape[3]
    G_parts[...] = 0
    for p in range(P):
        for n in range(p * N // P, (p + 1) * N // P):
            for c in range(C):
                for kh in range(KH):
                    for i in range(OH):
                        for j in range(OW):
                            m = 0  # the pattern m(n, c, kh, i, j), one tap at a time
                            for kw in range(KW):
                                y, x = i * stride - pad + kh, j * stride - pad + kw
                                if 0 <= y < H and 0 <= x < Wd and X[n, c, y, x] != 0:
                                    m += 1 << kw
                            if m >= 1:
                                for o in range(O):
                                    G_parts[p, c, kh, m, o] += dY[n, o, i, j]


@jit
def unfold_pattern_grad(G, dWt):
    """dWt[c, kh, kw, :] = sum over patterns m with bit kw of G[c, kh, m, :].   G: (C, KH, 2^KW, O);
    dWt: (C, KH, KW, O), written."""
    C, KH, KW, O = dWt.shape
    dWt[:] = 0.0
    for c in range(C):
        for kh in range(KH):
            for m in range(1, 1 << KW):
                for kw in range(KW):
                    if (m >> kw) & 1:
                        for o in range(O):
                            dWt[c, kh, kw, o] += G[c, kh, m, o]


def unfold_pattern_grad_plain(G, dWt):
    """Plain twin of :func:`unfold_pattern_grad` (same arguments, same result):

        dW[o, c, kh, kw] = sum_{m with bit kw set} G[c, kh, m, o],    written as dWt[c, kh, kw, o]

    (the transpose of pattern_table: Tab is linear in W, and G is dL/dTab).
    """
    C, KH, KW, O = dWt.shape
    for c in range(C):
        for kh in range(KH):
            for kw in range(KW):
                for o in range(O):
                    acc = dWt.dtype.type(0)
                    for m in range(1 << KW):
                        if (m >> kw) & 1:
                            acc += G[c, kh, m, o]
                    dWt[c, kh, kw, o] = acc
