"""Pooling over non-overlapping or strided k x k windows (no padding), on (N, C, H, W)."""

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
