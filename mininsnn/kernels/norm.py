"""BatchNorm over time: each time step t is normalised with its own batch statistics.

X: (TI, B, C, M) with M = H*W. For every (t, c), over the B*M values of that step and channel:

    mean = (1/n) sum x ;  var = (1/n) sum (x - mean)^2 ;  n = B*M
    xhat = (x - mean) / sqrt(var + eps)
    y    = gamma[c] * xhat + beta[c]
"""

import math

from mininsnn._jit import jit, prange


@jit(parallel=True)
def batchnorm_forward(X, gamma, beta, eps, Y, Xhat, mean, var):
    """X, Y, Xhat: (TI, B, C, M);  gamma, beta: (C,);  mean, var: (TI, C) batch statistics, written
    (var is the biased variance used for normalising)."""
    TI, B, C, M = X.shape
    n = B * M
    for tc in prange(TI * C):
        t = tc // C
        c = tc % C
        s = 0.0
        for b in range(B):
            for m in range(M):
                s += X[t, b, c, m]
        mu = s / n
        s2 = 0.0
        for b in range(B):
            for m in range(M):
                d = X[t, b, c, m] - mu
                s2 += d * d
        v = s2 / n
        mean[t, c] = mu
        var[t, c] = v
        inv_std = 1.0 / math.sqrt(v + eps)
        for b in range(B):
            for m in range(M):
                xh = (X[t, b, c, m] - mu) * inv_std
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
    for tc in prange(TI * C):
        t = tc // C
        c = tc % C
        sum_dy = 0.0
        sum_dy_xh = 0.0
        for b in range(B):
            for m in range(M):
                sum_dy += dY[t, b, c, m]
                sum_dy_xh += dY[t, b, c, m] * Xhat[t, b, c, m]
        dbeta_t[t, c] = sum_dy
        dgamma_t[t, c] = sum_dy_xh
        # sum dxhat = gamma * sum_dy ;  sum dxhat * xhat = gamma * sum_dy_xh
        k = gamma[c] / math.sqrt(var[t, c] + eps) / n
        for b in range(B):
            for m in range(M):
                dX[t, b, c, m] = k * (n * dY[t, b, c, m] - sum_dy - Xhat[t, b, c, m] * sum_dy_xh)


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
