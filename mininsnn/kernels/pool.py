"""Pooling over non-overlapping or strided k x k windows (no padding), on (N, C, H, W).

Below each kernel, ``<kernel>_plain`` is its plain twin: the same arguments and result, one loop per
index of the equation, not compiled. The backward twins gather (each input element sums the
windows that contain it) where the kernels scatter (each window adds to its inputs).
"""

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
