"""Fully connected layer over N = T*B samples.

    Y[n, o] = sum_f X[n, f] * W[o, f]

The kernels take the weight transposed, Wt[f, o] = W[o, f], so that each non-zero input adds one
contiguous row; spike inputs (uint8 0/1, mostly 0) skip the silent features. The gradients are
dense loops, parallel over the batch (no BLAS threads competing with Numba's).
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
