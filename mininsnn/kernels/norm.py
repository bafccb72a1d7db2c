"""BatchNorm over time: each time step t is normalised with its own batch statistics.

X: (TI, B, C, M) with M = H*W. For every (t, c), over the n = B*M values of that step and channel:

    mean = (1/n) sum x ;  var = (1/n) sum (x - mean)^2
    xhat = (x - mean) / sqrt(var + eps)
    y    = gamma[c] * xhat + beta[c]

The kernels run one time step per parallel work item and read each step in memory order
(b, c, m), keeping float64 sums per (c, m) (vectorised over contiguous m), then adding the M
lanes of each channel. Below each kernel, ``<kernel>_plain`` is its
plain twin: the same arguments and result (up to rounding), one (t, c) at a time, the equations as
written, in float64 (Python floats) like the fast kernels' statistics, not compiled.
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
        # float64 sums, one lane per (c, m) over b (a vectorised pass in memory order), then over m
        lanes = np.zeros((C, M))
        for b in range(B):
            for c in range(C):
                for m in range(M):
                    lanes[c, m] += X[t, b, c, m]
        mu = lanes.sum(axis=1) / n  # (C,)
        lanes[:] = 0.0
        for b in range(B):
            for c in range(C):
                for m in range(M):
                    d = X[t, b, c, m] - mu[c]
                    lanes[c, m] += d * d
        s2 = lanes.sum(axis=1)  # (C,)
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


def batchnorm_forward_plain(X, gamma, beta, eps, Y, Xhat, mean, var):
    """Plain twin of :func:`batchnorm_forward` (same arguments, same result up to rounding)."""
    TI, B, C, M = X.shape
    n = B * M
    for t in range(TI):
        for c in range(C):
            # mean = (1/n) sum_{b, m} x
            total = 0.0
            for b in range(B):
                for m in range(M):
                    total += float(X[t, b, c, m])
            mu = total / n
            # var = (1/n) sum_{b, m} (x - mean)^2        (biased)
            total = 0.0
            for b in range(B):
                for m in range(M):
                    d = float(X[t, b, c, m]) - mu
                    total += d * d
            v = total / n
            mean[t, c] = mu
            var[t, c] = v
            for b in range(B):
                for m in range(M):
                    # xhat = (x - mean) / sqrt(var + eps) ;  y = gamma * xhat + beta
                    xh = (float(X[t, b, c, m]) - mu) / math.sqrt(v + eps)
                    Xhat[t, b, c, m] = xh
                    Y[t, b, c, m] = float(gamma[c]) * xh + float(beta[c])


@jit(parallel=True)
def batchnorm_backward(dY, Xhat, gamma, var, eps, dX, dgamma_t, dbeta_t):
    """dY, Xhat, dX: (TI, B, C, M);  var: (TI, C);  dgamma_t, dbeta_t: (TI, C), written (sum over t outside).

        dbeta  = sum dY ;  dgamma = sum dY * xhat ;  dxhat = dY * gamma
        dX = (1/n) / sqrt(var + eps) * (n * dxhat - sum dxhat - xhat * sum(dxhat * xhat))
    """
    TI, B, C, M = dY.shape
    n = B * M
    for t in prange(TI):
        lanes_dy = np.zeros((C, M))  # float64 sums per (c, m) over b, then over m (as the forward)
        lanes_dy_xh = np.zeros((C, M))
        for b in range(B):
            for c in range(C):
                for m in range(M):
                    lanes_dy[c, m] += dY[t, b, c, m]
                    lanes_dy_xh[c, m] += dY[t, b, c, m] * Xhat[t, b, c, m]
        sum_dy, sum_dy_xh = lanes_dy.sum(axis=1), lanes_dy_xh.sum(axis=1)  # (C,)
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


def batchnorm_backward_plain(dY, Xhat, gamma, var, eps, dX, dgamma_t, dbeta_t):
    """Plain twin of :func:`batchnorm_backward` (same arguments, same result up to rounding)."""
    TI, B, C, M = dY.shape
    n = B * M
    for t in range(TI):
        for c in range(C):
            # fwd: y = gamma * xhat + beta  =>  dbeta = sum dy ;  dgamma = sum dy * xhat ;  dxhat = dy * gamma
            dbeta = dgamma = sum_dxhat = sum_dxhat_xhat = 0.0
            for b in range(B):
                for m in range(M):
                    dy, xh = float(dY[t, b, c, m]), float(Xhat[t, b, c, m])
                    dxhat = dy * float(gamma[c])
                    dbeta += dy
                    dgamma += dy * xh
                    sum_dxhat += dxhat
                    sum_dxhat_xhat += dxhat * xh
            dbeta_t[t, c] = dbeta
            dgamma_t[t, c] = dgamma
            # fwd: xhat = (x - mean) / sqrt(var + eps), mean and var functions of every x of (t, c)
            # =>   dx = 1 / (n sqrt(var + eps)) * (n dxhat - sum dxhat - xhat * sum(dxhat * xhat))
            std = math.sqrt(float(var[t, c]) + eps)
            for b in range(B):
                for m in range(M):
                    dxhat = float(dY[t, b, c, m]) * float(gamma[c])
                    xh = float(Xhat[t, b, c, m])
                    dX[t, b, c, m] = (n * dxhat - sum_dxhat - xh * sum_dxhat_xhat) / (n * std)


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


def batchnorm_eval_plain(X, gamma, beta, running_mean, running_var, eps, Y):
    """Plain twin of :func:`batchnorm_eval` (same arguments, same result up to rounding)."""
    TI, B, C, M = X.shape
    for t in range(TI):
        for b in range(B):
            for c in range(C):
                for m in range(M):
                    # y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta
                    x = float(X[t, b, c, m])
                    Y[t, b, c, m] = (float(gamma[c]) * (x - float(running_mean[c]))
                                     / math.sqrt(float(running_var[c]) + eps) + float(beta[c]))
