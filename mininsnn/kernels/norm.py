"""BatchNorm over time: each time step t is normalised with its own batch statistics.

X: (TI, B, C, M) with M = H*W. For every (t, c), over the n = B*M values of that step and channel:

    mean = (1/n) sum x ;  var = (1/n) sum (x - mean)^2
    xhat = (x - mean) / sqrt(var + eps)
    y    = gamma[c] * xhat + beta[c]

The kernels run one time step per parallel work item and read each step in memory order
(b, c, m), keeping per-channel sums in small arrays.
"""

import math

import numpy as np

from mininsnn._jit import jit, prange


@jit(parallel=True)
def batchnorm_forward(X, gamma, beta, eps, Y, Xhat, mean, var):
    """X, Y, Xhat: (TI, B, C, M);  gamma, beta: (C,);  mean, var: (TI, C) batch statistics, written
    (var is the biased variance used for normalising)."""
    TI, B, C, M = X.shape
    n = B * M
    for t in prange(TI):
        s = np.zeros(C)  # float64 sums
        for b in range(B):
            for c in range(C):
                for m in range(M):
                    s[c] += X[t, b, c, m]
        mu = s / n
        s2 = np.zeros(C)
        for b in range(B):
            for c in range(C):
                for m in range(M):
                    d = X[t, b, c, m] - mu[c]
                    s2[c] += d * d
        inv_std = np.empty(C)
        for c in range(C):
            mean[t, c] = mu[c]
            var[t, c] = s2[c] / n
            inv_std[c] = 1.0 / math.sqrt(s2[c] / n + eps)
        for b in range(B):
            for c in range(C):
                for m in range(M):
                    xh = (X[t, b, c, m] - mu[c]) * inv_std[c]
                    Xhat[t, b, c, m] = xh
                    Y[t, b, c, m] = gamma[c] * xh + beta[c]


@jit(parallel=True)
def batchnorm_backward(dY, Xhat, gamma, var, eps, dX, dgamma_t, dbeta_t):
    """dY, Xhat, dX: (TI, B, C, M);  var: (TI, C);  dgamma_t, dbeta_t: (TI, C), written (sum over t outside).

        dbeta  = sum dY ;  dgamma = sum dY * xhat ;  dxhat = dY * gamma
        dX = (1/n) / sqrt(var + eps) * (n * dxhat - sum dxhat - xhat * sum(dxhat * xhat))
    """
    TI, B, C, M = dY.shape
    n = B * M
    for t in prange(TI):
        sum_dy = np.zeros(C)
        sum_dy_xh = np.zeros(C)
        for b in range(B):
            for c in range(C):
                for m in range(M):
                    sum_dy[c] += dY[t, b, c, m]
                    sum_dy_xh[c] += dY[t, b, c, m] * Xhat[t, b, c, m]
        k = np.empty(C)
        for c in range(C):
            dbeta_t[t, c] = sum_dy[c]
            dgamma_t[t, c] = sum_dy_xh[c]
            # sum dxhat = gamma * sum_dy ;  sum dxhat * xhat = gamma * sum_dy_xh
            k[c] = gamma[c] / math.sqrt(var[t, c] + eps) / n
        for b in range(B):
            for c in range(C):
                for m in range(M):
                    dX[t, b, c, m] = k[c] * (n * dY[t, b, c, m] - sum_dy[c] - Xhat[t, b, c, m] * sum_dy_xh[c])


@jit(parallel=True)
def batchnorm_eval(X, gamma, beta, running_mean, running_var, eps, Y):
    """Y = gamma * (X - running_mean) / sqrt(running_var + eps) + beta.   X, Y: (TI, B, C, M)."""
    TI, B, C, M = X.shape
    for tb in prange(TI * B):
        t = tb // B
        b = tb % B
        for c in range(C):
            scale = gamma[c] / math.sqrt(running_var[c] + eps)
            shift = beta[c] - running_mean[c] * scale
            for m in range(M):
                Y[t, b, c, m] = X[t, b, c, m] * scale + shift
