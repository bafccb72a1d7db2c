"""Pooling over k x k windows on (N, C, H, W): average and max (no padding), sum (zero padding).

Below each kernel, ``<kernel>_plain`` is its plain twin: the same arguments and result, one loop per
index of the equation, not compiled. The backward twins gather (each input element sums the
windows that contain it) where the kernels scatter (each window adds to its inputs).
"""

import numpy as np

from mininsnn._jit import jit, prange


@jit(parallel=True)
def avgpool_forward(X, k, stride, Y):
    """Y[n, c, i, j] = (1/k^2) * sum_{a, b < k} X[n, c, i*s + a, j*s + b].   X: (N, C, H, W); Y: (N, C, OH, OW)."""
    N, C, OH, OW = Y.shape
    scale = 1.0 / (k * k)
    for n in prange(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    acc = X[n, c, i * stride, j * stride] * 0.0
                    for a in range(k):
                        for b in range(k):
                            acc += X[n, c, i * stride + a, j * stride + b]
                    Y[n, c, i, j] = acc * scale


def avgpool_forward_plain(X, k, stride, Y):
    """Plain twin of :func:`avgpool_forward` (same arguments, same result up to rounding).

        Y[n, c, i, j] = (1/k^2) * sum_{a, b < k} X[n, c, i*s + a, j*s + b]
    """
    N, C, OH, OW = Y.shape
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    acc = Y.dtype.type(0)
                    for a in range(k):
                        for b in range(k):
                            acc += X[n, c, i * stride + a, j * stride + b]
                    Y[n, c, i, j] = acc / (k * k)


@jit(parallel=True)
def avgpool_backward(dY, k, stride, dX):
    """fwd: Y[i, j] = (1/k^2) sum X[i*s + a, j*s + b]  =>  dX[i*s + a, j*s + b] += dY[i, j] / k^2.   dX written."""
    N, C, OH, OW = dY.shape
    scale = 1.0 / (k * k)
    for n in prange(N):
        dX[n] = 0.0
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    g = dY[n, c, i, j] * scale
                    for a in range(k):
                        for b in range(k):
                            dX[n, c, i * stride + a, j * stride + b] += g


def avgpool_backward_plain(dY, k, stride, dX):
    """Plain twin of :func:`avgpool_backward` (same arguments, same result up to rounding).

        fwd: Y[n, c, i, j] = (1/k^2) sum_{a, b} X[n, c, i*s + a, j*s + b]
        =>   dX[n, c, y, x] = sum over the windows (i, j) with y = i*s + a, x = j*s + b (0 <= a, b < k)
                              of dY[n, c, i, j] / k^2
    """
    N, C, H, W = dX.shape
    OH, OW = dY.shape[2], dY.shape[3]
    for n in range(N):
        for c in range(C):
            for y in range(H):
                for x in range(W):
                    acc = dX.dtype.type(0)
                    for i in range(OH):
                        for j in range(OW):
                            a, b = y - i * stride, x - j * stride
                            if 0 <= a < k and 0 <= b < k:
                                acc += dY[n, c, i, j] / (k * k)
                    dX[n, c, y, x] = acc


@jit(parallel=True)
def maxpool_forward(X, k, stride, Y, argmax):
    """Y[n, c, i, j] = max_{a, b < k} X[n, c, i*s + a, j*s + b]; argmax = flat index a*k + b of the
    first maximum in row-major window order.   X: (N, C, H, W); Y, argmax: (N, C, OH, OW)."""
    N, C, OH, OW = Y.shape
    for n in prange(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    best = X[n, c, i * stride, j * stride]
                    arg = 0
                    for a in range(k):
                        for b in range(k):
                            v = X[n, c, i * stride + a, j * stride + b]
                            if v > best:
                                best = v
                                arg = a * k + b
                    Y[n, c, i, j] = best
                    argmax[n, c, i, j] = arg


def maxpool_forward_plain(X, k, stride, Y, argmax):
    """Plain twin of :func:`maxpool_forward` (same arguments, same result).

        Y[n, c, i, j] = max_{a, b < k} X[n, c, i*s + a, j*s + b]
        argmax[n, c, i, j] = a*k + b of the first maximum in row-major order (a, then b)
    """
    N, C, OH, OW = Y.shape
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    top, left = i * stride, j * stride  # the window's first row and column
                    best_a, best_b = 0, 0
                    for a in range(k):
                        for b in range(k):
                            # strictly greater: on a tie the first maximum stays
                            if X[n, c, top + a, left + b] > X[n, c, top + best_a, left + best_b]:
                                best_a, best_b = a, b
                    Y[n, c, i, j] = X[n, c, top + best_a, left + best_b]
                    argmax[n, c, i, j] = best_a * k + best_b


@jit(parallel=True)
def maxpool_backward(dY, argmax, k, stride, dX):
    """fwd: Y[i, j] = X[i*s + a*, j*s + b*] (the argmax)  =>  dX[i*s + a*, j*s + b*] += dY[i, j].   dX written."""
    N, C, OH, OW = dY.shape
    for n in prange(N):
        dX[n] = 0.0
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    a = argmax[n, c, i, j] // k
                    b = argmax[n, c, i, j] % k
                    dX[n, c, i * stride + a, j * stride + b] += dY[n, c, i, j]


def maxpool_backward_plain(dY, argmax, k, stride, dX):
    """Plain twin of :func:`maxpool_backward` (same arguments, same result).

        fwd: Y[n, c, i, j] = X[n, c, i*s + a*, j*s + b*],   a* = argmax // k,  b* = argmax % k
        =>   dX[n, c, y, x] = sum over the windows (i, j) whose maximum is at (y, x) of dY[n, c, i, j]
    """
    N, C, H, W = dX.shape
    OH, OW = dY.shape[2], dY.shape[3]
    for n in range(N):
        for c in range(C):
            for y in range(H):
                for x in range(W):
                    acc = dX.dtype.type(0)
                    for i in range(OH):
                        for j in range(OW):
                            a, b = argmax[n, c, i, j] // k, argmax[n, c, i, j] % k
                            if i * stride + a == y and j * stride + b == x:
                                acc += dY[n, c, i, j]
                    dX[n, c, y, x] = acc


# ------------------------------------------------------------------------------------------------
# Sum pooling with zero padding (Sinabs' SumPool2d, NIR's SumPool2d): windows may overhang the
# input by the padding p, and the positions outside count as 0.

@jit(parallel=True)
def sumpool_forward(X, k, stride, pad, Y):
    """Y[n, c, i, j] = sum_{a, b < k} X[n, c, i*s - p + a, j*s - p + b]   (0 outside the input).
    X: (N, C, H, W), float or uint8 spikes;  Y: (N, C, OH, OW) float, written."""
    N, C, OH, OW = Y.shape
    H, W = X.shape[2], X.shape[3]
    for n in prange(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    Y[n, c, i, j] = 0
                    for a in range(k):
                        y = i * stride - pad + a
                        if 0 <= y < H:
                            for b in range(k):
                                x = j * stride - pad + b
                                if 0 <= x < W:
                                    Y[n, c, i, j] += X[n, c, y, x]


def sumpool_forward_plain(X, k, stride, pad, Y):
    """Plain twin of :func:`sumpool_forward`: the padded input first, then each window's sum.

        Xp = X with p zeros on every side;   Y[n, c, i, j] = sum_{a, b < k} Xp[n, c, i*s + a, j*s + b]
    """
    N, C, H, W = X.shape
    Xp = np.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=Y.dtype)  # (N, C, H + 2p, W + 2p)
    Xp[:, :, pad:pad + H, pad:pad + W] = X
    for n in range(N):
        for c in range(C):
            for i in range(Y.shape[2]):
                for j in range(Y.shape[3]):
                    acc = Y.dtype.type(0)
                    for a in range(k):
                        for b in range(k):
                            acc += Xp[n, c, i * stride + a, j * stride + b]
                    Y[n, c, i, j] = acc


@jit(parallel=True)
def sumpool_backward(dY, k, stride, pad, dX):
    """fwd: Y[i, j] = sum X[i*s - p + a, j*s - p + b]  =>  dX[i*s - p + a, j*s - p + b] += dY[i, j]
    (positions inside the input only).   dY: (N, C, OH, OW);  dX: (N, C, H, W), written."""
    N, C, OH, OW = dY.shape
    H, W = dX.shape[2], dX.shape[3]
    for n in prange(N):
        dX[n] = 0.0
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    g = dY[n, c, i, j]
                    for a in range(k):
                        y = i * stride - pad + a
                        if 0 <= y < H:
                            for b in range(k):
                                x = j * stride - pad + b
                                if 0 <= x < W:
                                    dX[n, c, y, x] += g


def sumpool_backward_plain(dY, k, stride, pad, dX):
    """Plain twin of :func:`sumpool_backward` (same result up to rounding): each input element
    gathers the windows that contain it.

        dX[n, c, y, x] = sum over (i, j) with y = i*s - p + a, x = j*s - p + b (0 <= a, b < k) of dY[n, c, i, j]
    """
    N, C, H, W = dX.shape
    for n in range(N):
        for c in range(C):
            for y in range(H):
                for x in range(W):
                    acc = dX.dtype.type(0)
                    for i in range(dY.shape[2]):
                        for j in range(dY.shape[3]):
                            if 0 <= y + pad - i * stride < k and 0 <= x + pad - j * stride < k:
                                acc += dY[n, c, i, j]
                    dX[n, c, y, x] = acc
