"""Fully connected layer over N = T*B samples: the forward, event-driven in the input.

    Y[n, o] = sum_f X[n, f] * W[o, f]

The kernels take the weight transposed, Wt[f, o] = W[o, f], so that each non-zero input adds one
contiguous row. Spike inputs (uint8 0/1, mostly 0) skip the silent features. The gradients are
dense matrix products (``layers.Linear.backward``).
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
