"""2-D convolution (cross-correlation, as in PyTorch) over a batch of N = T*B samples.

    Y[n, o, i, j] = sum_{c, kh, kw} W[o, c, kh, kw] * X[n, c, i*s - p + kh, j*s - p + kw]

(zero outside the input; s = stride, p = padding). The kernels take the weight with output
channels last, Wt[c, kh, kw, o] = W[o, c, kh, kw], so the innermost loops run over contiguous
output channels.

The forward and the weight gradient are *event-driven*: they walk the input and skip zeros, and
each non-zero input element x adds x * W[:, c, kh, kw] to every output it reaches. Spike inputs
are 0/1 and mostly 0, so this does a fraction of the dense work. The input gradient is dense (every
input position needs it): one small matrix product per sample (BLAS through ``np.dot``), then the
rows are scattered back to the input positions they came from.

Below each kernel, ``<kernel>_plain`` is its plain twin: the same arguments and result, one loop per
index of the equation, every term summed (zeros included), not compiled.
"""

import numpy as np

from mininsnn._jit import jit, prange


@jit
def out_ranges(n_in, pad, K, stride, n_out):
    """For every input index y, the output indices i with 0 <= y + pad - i*stride < K, as an
    inclusive range: R[y] = (lo, hi). A table, so that no division runs per input spike."""
    R = np.empty((n_in, 2), dtype=np.int64)
    for y in range(n_in):
        R[y, 0] = max(0, (y + pad - K + stride) // stride)  # ceil((y + pad - K + 1) / stride)
        R[y, 1] = min(n_out - 1, (y + pad) // stride)
    return R


@jit
def sample_channels_last(dY, n, out):
    """out[i, j, o] = dY[n, o, i, j]: sample n of an (N, O, OH, OW) array, channels last (OH, OW, O)."""
    for o in range(dY.shape[1]):
        for i in range(dY.shape[2]):
            for j in range(dY.shape[3]):
                out[i, j, o] = dY[n, o, i, j]


@jit(parallel=True)
def conv2d_forward(X, Wt, stride, pad, Y):
    """X: (N, C, H, W) any real dtype;  Wt: (C, KH, KW, O);  Y: (N, O, OH, OW), written."""
    N, C, H, Wd = X.shape
    _, KH, KW, O = Wt.shape
    OH, OW = Y.shape[2], Y.shape[3]
    rows, cols = out_ranges(H, pad, KH, stride, OH), out_ranges(Wd, pad, KW, stride, OW)
    for n in prange(N):
        acc = np.zeros((OH, OW, O), dtype=Y.dtype)  # Y[n] with channels last
        for c in range(C):
            for y in range(H):
                i_lo, i_hi = rows[y, 0], rows[y, 1]
                for x in range(Wd):
                    v = X[n, c, y, x]
                    if v == 0:
                        continue  # event-driven: a silent input adds nothing
                    j_lo, j_hi = cols[x, 0], cols[x, 1]
                    for i in range(i_lo, i_hi + 1):
                        kh = y + pad - i * stride
                        for j in range(j_lo, j_hi + 1):
                            kw = x + pad - j * stride
                            for o in range(O):
                                acc[i, j, o] += v * Wt[c, kh, kw, o]
        for o in range(O):
            for i in range(OH):
                for j in range(OW):
                    Y[n, o, i, j] = acc[i, j, o]


def conv2d_forward_plain(X, Wt, stride, pad, Y):
    """Plain twin of :func:`conv2d_forward` (same arguments, same result).

        Y[n, o, i, j] = sum_{c, kh, kw} W[o, c, kh, kw] * X[n, c, i*s - p + kh, j*s - p + kw]

    with W[o, c, kh, kw] = Wt[c, kh, kw, o] and X = 0 outside the input (zero padding).
    """
    N, C, H, Wd = X.shape
    _, KH, KW, O = Wt.shape
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
                                    acc += X[n, c, y, x] * Wt[c, kh, kw, o]
                    Y[n, o, i, j] = acc


@jit(parallel=True)
def conv2d_backward_weight(X, dY, stride, pad, dWt_parts):
    """dW[o, c, kh, kw] = sum_{n, i, j} dY[n, o, i, j] * X[n, c, i*s - p + kh, j*s - p + kw]

    X: (N, C, H, W);  dY: (N, O, OH, OW);
    dWt_parts: (P, C, KH, KW, O), written: partial sums over P slices of the batch (sum them).
    Event-driven like the forward: only non-zero inputs contribute. Each sample's dY is first
    copied channels-last (dYt[i, j, o]) so that the innermost loop runs over contiguous o.
    """
    N, C, H, Wd = X.shape
    P, _, KH, KW, O = dWt_parts.shape
    OH, OW = dY.shape[2], dY.shape[3]
    rows, cols = out_ranges(H, pad, KH, stride, OH), out_ranges(Wd, pad, KW, stride, OW)
    for p in prange(P):
        part = dWt_parts[p]
        part[:] = 0.0
        dYt = np.empty((OH, OW, O), dtype=dY.dtype)  # one sample of dY, channels last
        for n in range(p * N // P, (p + 1) * N // P):
            sample_channels_last(dY, n, dYt)
            for c in range(C):
                for y in range(H):
                    i_lo, i_hi = rows[y, 0], rows[y, 1]
                    for x in range(Wd):
                        v = X[n, c, y, x]
                        if v == 0:
                            continue
                        j_lo, j_hi = cols[x, 0], cols[x, 1]
                        for i in range(i_lo, i_hi + 1):
                            kh = y + pad - i * stride
                            for j in range(j_lo, j_hi + 1):
                                kw = x + pad - j * stride
                                for o in range(O):
                                    part[c, kh, kw, o] += v * dYt[i, j, o]


def conv2d_backward_weight_plain(X, dY, stride, pad, dWt_parts):
    """Plain twin of :func:`conv2d_backward_weight` (same arguments, same result).

        dW[o, c, kh, kw] = sum_{n, i, j} dY[n, o, i, j] * X[n, c, i*s - p + kh, j*s - p + kw]

    written as dWt_parts[p, c, kh, kw, o]: the sum over the samples n of slice p of the batch,
    p*N//P <= n < (p+1)*N//P (the slices the fast kernel runs in parallel; their sum is dW).
    """
    N, C, H, Wd = X.shape
    P, _, KH, KW, O = dWt_parts.shape
    OH, OW = dY.shape[2], dY.shape[3]
    for p in range(P):
        for c in range(C):
            for kh in range(KH):
                for kw in range(KW):
                    for o in range(O):
                        acc = dWt_parts.dtype.type(0)
                        for n in range(p * N // P, (p + 1) * N // P):
                            for i in range(OH):
                                for j in range(OW):
                                    y, x = i * stride - pad + kh, j * stride - pad + kw
                                    if 0 <= y < H and 0 <= x < Wd:
                                        acc += dY[n, o, i, j] * X[n, c, y, x]
                        dWt_parts[p, c, kh, kw, o] = acc


@jit(parallel=True)
def conv2d_backward_input(dY, Wm, stride, pad, KH, KW, dX):
    """dX[n, c, y, x] = sum_{o, i, j} dY[n, o, i, j] * W[o, c, y - i*s + p, x - j*s + p]   (taps in range)

    dY: (N, O, OH, OW);  Wm: (O, KH*KW*C), Wm[o, (kh*KW + kw)*C + c] = W[o, c, kh, kw];
    dX: (N, C, H, W), written.
    Per sample, the matrix product P[(i, j), (kh, kw, c)] = sum_o dY[n, o, i, j] * W[o, c, kh, kw]
    (BLAS); then each row P[(i, j)] is added to the input window that position saw, kept channels
    last (dXt[y, x, c]) so that one kernel row (kw, c) of the window is one contiguous run.
    """
    N, O, OH, OW = dY.shape
    C, H, Wd = dX.shape[1], dX.shape[2], dX.shape[3]
    for n in prange(N):
        P = np.dot(dY[n].reshape(O, OH * OW).T, Wm)  # (OH*OW, KH*KW*C)
        dXt = np.zeros((H, Wd * C), dtype=dX.dtype)  # dX[n] channels last, (H, W*C)
        for i in range(OH):
            kh_lo = max(0, pad - i * stride)  # taps with 0 <= i*s - p + kh < H
            kh_hi = min(KH, H + pad - i * stride)
            for j in range(OW):
                kw_lo = max(0, pad - j * stride)
                kw_hi = min(KW, Wd + pad - j * stride)
                x0 = j * stride - pad
                r = i * OW + j
                L = (kw_hi - kw_lo) * C  # one kernel row of the window: (kw, c) contiguous
                for kh in range(kh_lo, kh_hi):
                    y = i * stride - pad + kh
                    src = P[r, (kh * KW + kw_lo) * C:(kh * KW + kw_hi) * C]
                    dst = dXt[y, (x0 + kw_lo) * C:(x0 + kw_hi) * C]
                    for q in range(L):
                        dst[q] += src[q]
        for c in range(C):
            for y in range(H):
                for x in range(Wd):
                    dX[n, c, y, x] = dXt[y, x * C + c]


def conv2d_backward_input_plain(dY, Wm, stride, pad, KH, KW, dX):
    """Plain twin of :func:`conv2d_backward_input` (same arguments, same result up to rounding).

        dX[n, c, y, x] = sum_{o, i, j} dY[n, o, i, j] * W[o, c, y - i*s + p, x - j*s + p]

    over the outputs (i, j) whose window covers (y, x), i.e. whose tap (kh, kw) = (y - i*s + p,
    x - j*s + p) lies in the kernel; W[o, c, kh, kw] = Wm[o, (kh*KW + kw)*C + c].
    """
    N, O, OH, OW = dY.shape
    C, H, Wd = dX.shape[1], dX.shape[2], dX.shape[3]
    for n in range(N):
        for c in range(C):
            for y in range(H):
                for x in range(Wd):
                    acc = dX.dtype.type(0)
                    for o in range(O):
                        for i in range(OH):
                            for j in range(OW):
                                kh, kw = y - i * stride + pad, x - j * stride + pad
                                if 0 <= kh < KH and 0 <= kw < KW:
                                    acc += dY[n, o, i, j] * Wm[o, (kh * KW + kw) * C + c]
                    dX[n, c, y, x] = acc
