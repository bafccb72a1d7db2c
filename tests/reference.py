"""Slow loop-per-equation NumPy twins of the Numba kernels. They live only in the tests."""

import numpy as np


def lif_forward_ref(I, T, beta, theta, zero_reset=False):
    """I: (TI, N). Returns U, S of shape (T, N), one equation per line."""
    TI, N = I.shape
    U = np.zeros((T, N), dtype=I.dtype)
    S = np.zeros((T, N), dtype=np.uint8)
    for n in range(N):
        u = I.dtype.type(0)
        for t in range(T):
            i = I[t if TI > 1 else 0, n]
            r = (u > theta) if t > 0 else False  # R[t] = H(U[t-1] - theta)
            if zero_reset:
                u = I.dtype.type(0) if r else beta * u + i
            else:
                u = beta * u + i
                if r:
                    u = u - theta
            U[t, n] = u
            S[t, n] = 1 if u > theta else 0
    return U, S


def lif_backward_ref(dS, U, beta, theta, sg_grad, TI, zero_reset=False):
    T, N = dS.shape
    dI = np.zeros((TI, N))
    for n in range(N):
        carry = 0.0
        for t in range(T - 1, -1, -1):
            dU = dS[t, n] * sg_grad(U[t, n] - theta) + carry
            if zero_reset and t > 0 and U[t - 1, n] > theta:
                dU = 0.0
            carry = beta * dU
            if TI == 1:
                dI[0, n] += dU
            else:
                dI[t, n] = dU
    return dI


def conv2d_ref(X, W, stride, pad):
    """Direct convolution: X (N, C, H, W), W (O, C, K, K)."""
    N, C, H, Wd = X.shape
    O, _, K, _ = W.shape
    Xp = np.zeros((N, C, H + 2 * pad, Wd + 2 * pad))
    Xp[:, :, pad:pad + H, pad:pad + Wd] = X
    OH, OW = (H + 2 * pad - K) // stride + 1, (Wd + 2 * pad - K) // stride + 1
    Y = np.zeros((N, O, OH, OW))
    for i in range(OH):
        for j in range(OW):
            patch = Xp[:, :, i * stride:i * stride + K, j * stride:j * stride + K]  # (N, C, K, K)
            Y[:, :, i, j] = np.einsum("nckl,ockl->no", patch, W)
    return Y


def avgpool_ref(X, k, s):
    N, C, H, W = X.shape
    OH, OW = (H - k) // s + 1, (W - k) // s + 1
    Y = np.zeros((N, C, OH, OW))
    for i in range(OH):
        for j in range(OW):
            Y[:, :, i, j] = X[:, :, i * s:i * s + k, j * s:j * s + k].mean(axis=(2, 3))
    return Y


def batchnorm_ref(X, gamma, beta, eps):
    """X: (T, B, C, H, W); statistics per time step and channel."""
    mean = X.mean(axis=(1, 3, 4), keepdims=True)
    var = X.var(axis=(1, 3, 4), keepdims=True)
    return gamma[None, None, :, None, None] * (X - mean) / np.sqrt(var + eps) + beta[None, None, :, None, None]
