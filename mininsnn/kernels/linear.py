"""Fully connected layer over N = T*B samples.

    Y[n, o] = sum_f X[n, f] * W[o, f]

The kernels take the weight transposed, Wt[f, o] = W[o, f], so that each non-zero input adds one
contiguous row; spike inputs (uint8 0/1, mostly 0) skip the silent features. The gradients are
dense loops, parallel over the batch (no BLAS threads competing with Numba's). Below each kernel,
``<kernel>_plain`` is its plain twin: the same arguments and result, one loop per index of the
equation, every term summed (zeros included), not compiled.
"""

from mininsnn._jit import jit, prange


@jit(parallel=True)
def linear_forward(X, Wt, Y):
    """X: (N, F) any real dtype;  Wt: (F, O);  Y: (N, O), written."""
    N, F = X.shape
    O = Wt.shape[1]
    for n in prange(N):
        Y[n] = 0.0
        for f in range(F):
            v = X[n, f]
            if v == 0:
                continue
            for o in range(O):
                Y[n, o] += v * Wt[f, o]


def linear_forward_plain(X, Wt, Y):
    """Plain twin of :func:`linear_forward` (same arguments, same result).

        Y[n, o] = sum_f X[n, f] * W[o, f],    W[o, f] = Wt[f, o]
    """
    N, F = X.shape
    O = Wt.shape[1]
    for n in range(N):
        for o in range(O):
            acc = Y.dtype.type(0)
            for f in range(F):
                acc += X[n, f] * Wt[f, o]
            Y[n, o] = acc


@jit(parallel=True)
def linear_backward_weight(X, dY, dW_parts):
    """dW[o, f] = sum_n dY[n, o] * X[n, f].   X: (N, F) any real dtype;  dY: (N, O);
    dW_parts: (P, O, F), written: partial sums over P slices of the batch (sum them)."""
    N, F = X.shape
    P, O, _ = dW_parts.shape
    for p in prange(P):
        part = dW_parts[p]
        part[:] = 0.0
        for n in range(p * N // P, (p + 1) * N // P):
            for o in range(O):
                g = dY[n, o]
                for f in range(F):
                    part[o, f] += g * X[n, f]


def linear_backward_weight_plain(X, dY, dW_parts):
    """Plain twin of :func:`linear_backward_weight` (same arguments, same result).

        fwd: Y[n, o] = sum_f X[n, f] W[o, f]  =>  dW[o, f] = sum_n dY[n, o] * X[n, f]

    written as dW_parts[p, o, f]: the sum over the samples of slice p of the batch,
    p*N//P <= n < (p+1)*N//P (the slices the fast kernel runs in parallel; their sum is dW).
    """
    N, F = X.shape
    P, O, _ = dW_parts.shape
    for p in range(P):
        for o in range(O):
            for f in range(F):
                acc = dW_parts.dtype.type(0)
                for n in range(p * N // P, (p + 1) * N // P):
                    acc += dY[n, o] * X[n, f]
                dW_parts[p, o, f] = acc


@jit(parallel=True)
def linear_backward_input(dY, W, dX):
    """dX[n, f] = sum_o dY[n, o] * W[o, f].   dY: (N, O);  W: (O, F);  dX: (N, F), written."""
    N, O = dY.shape
    for n in prange(N):
        dX[n] = 0.0
        for o in range(O):
            g = dY[n, o]
            for f in range(W.shape[1]):
                dX[n, f] += g * W[o, f]


def linear_backward_input_plain(dY, W, dX):
    """Plain twin of :func:`linear_backward_input` (same arguments, same result).

        fwd: Y[n, o] = sum_f X[n, f] W[o, f]  =>  dX[n, f] = sum_o dY[n, o] * W[o, f]
    """
    N, O = dY.shape
    F = W.shape[1]
    for n in range(N):
        for f in range(F):
            acc = dX.dtype.type(0)
            for o in range(O):
                acc += dY[n, o] * W[o, f]
            dX[n, f] = acc
