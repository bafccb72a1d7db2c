"""Convolution fused with the k x k average pooling after it, and the plain twins of the fused path.

A stride-1 convolution followed by k x k average pooling with stride k is one convolution with
stride k and the kernel :func:`fuse_avgpool` (size K + k - 1); :func:`unfuse_avgpool_grad` takes
its weight gradient back to the K x K kernel. On 0/1 spikes with n-bit weights the fused kernel's
codes are the integer :func:`box_sum` of the codes, and :func:`integer_lanes` says whether its
sums fit int16. ``conv_avgpool_*_plain``: convolution, then pooling, as two separate steps with
the plain twins of those kernels; the fused path (mininsnn.layers.Conv2d with ``fused_pool``)
must equal them (tests/test_kernels.py, tests/test_layers.py).
"""

import numpy as np

from mininsnn.kernels import conv as kconv
from mininsnn.kernels import pool as kpool

__all__ = ["box_sum", "fuse_avgpool", "unfuse_avgpool_grad", "integer_lanes",
           "conv_avgpool_forward_plain", "conv_avgpool_backward_weight_plain",
           "conv_avgpool_backward_input_plain"]


def box_sum(W, k):
    """S[o, c, i, j] = sum_{a, b < k} W[o, c, i - a, j - b]   (size KH + k - 1; any dtype, integers exact)."""
    O, C, KH, KW = W.shape
    S = np.zeros((O, C, KH + k - 1, KW + k - 1), dtype=W.dtype)
    for a in range(k):
        for b in range(k):
            S[:, :, a:a + KH, b:b + KW] += W
    return S


def fuse_avgpool(W, k):
    """The kernel of "conv(W, stride 1) then k x k average pooling with stride k" as one conv.

    Wf[o, c, i, j] = (1/k^2) * sum_{a, b < k} W[o, c, i - a, j - b]     (stride k, size KH + k - 1)
    """
    Wf = box_sum(W, k)
    Wf *= W.dtype.type(1.0 / (k * k))
    return Wf


def integer_lanes(bits, C, K, pool):
    """The integer dtype that holds every sum of the spike convolution with n-bit codes exactly,
    or None. With q in -L..L (L = 2^(bits-1) - 1) and the fused pool's k x k box (k = pool, 1 if
    none), the kernel's codes are qf = box_sum(q, k), and a 0/1 input gives

        |A| <= sum_{c, u, v} |qf[o, c, u, v]| <= C * K * K * k^2 * L

    (4 bits, 16 channels, 5x5, 2x2 pool: 11200 <= 32767, so int16). None: the float kernels."""
    if bits is None:
        return None
    bound = C * K * K * pool * pool * (2 ** (bits - 1) - 1)
    return np.dtype(np.int16) if bound <= np.iinfo(np.int16).max else None


def unfuse_avgpool_grad(dWf, k, KH, KW):
    """Backward of :func:`fuse_avgpool`:  dW[o, c, i, j] = (1/k^2) * sum_{a, b < k} dWf[o, c, i + a, j + b]."""
    dW = np.zeros(dWf.shape[:2] + (KH, KW), dtype=dWf.dtype)
    for a in range(k):
        for b in range(k):
            dW += dWf[:, :, a:a + KH, b:b + KW]
    dW *= dWf.dtype.type(1.0 / (k * k))
    return dW


# Plain twins of the fused path (fuse_avgpool, then conv.conv2d_forward / conv2d_backward_weight /
# conv2d_backward_input with stride k, then unfuse_avgpool_grad): convolution, then pooling, as two
# separate steps, with the plain twins of those kernels. The fused path must equal them.

def conv_avgpool_forward_plain(X, W, pad, k, Y):
    """Convolution (stride 1, padding p), then k x k average pooling with stride k:

        Z[n, o, y, x] = sum_{c, kh, kw} W[o, c, kh, kw] * X[n, c, y - p + kh, x - p + kw]
        Y[n, o, i, j] = (1/k^2) * sum_{a, b < k} Z[n, o, k*i + a, k*j + b]

    X: (N, C, H, W);  W: (O, C, KH, KW);  Y: (N, O, ZH // k, ZW // k), written, where
    (ZH, ZW) = (H + 2p - KH + 1, W + 2p - KW + 1) is the convolution's output size.
    """
    N, C, H, Wd = X.shape
    O, _, KH, KW = W.shape
    Z = np.empty((N, O, H + 2 * pad - KH + 1, Wd + 2 * pad - KW + 1), dtype=Y.dtype)  # (N, O, ZH, ZW)
    kconv.conv2d_forward_plain(X, W.transpose(1, 2, 3, 0), 1, pad, Z)
    kpool.avgpool_forward_plain(Z, k, k, Y)


def conv_avgpool_backward_weight_plain(X, dY, pad, k, dW):
    """dW of :func:`conv_avgpool_forward_plain`, by the chain rule through Z:

        dZ = avgpool_backward(dY)         (rows and columns of Z that no window covers get 0)
        dW[o, c, kh, kw] = sum_{n, y, x} dZ[n, o, y, x] * X[n, c, y - p + kh, x - p + kw]

    X: (N, C, H, W);  dY: (N, O, OH, OW);  dW: (O, C, KH, KW), written.
    """
    N, C, H, Wd = X.shape
    O, _, KH, KW = dW.shape
    dZ = np.empty((N, O, H + 2 * pad - KH + 1, Wd + 2 * pad - KW + 1), dtype=dY.dtype)  # (N, O, ZH, ZW)
    kpool.avgpool_backward_plain(dY, k, k, dZ)
    dWt = np.empty((1, C, KH, KW, O), dtype=dW.dtype)  # one slice: the whole batch
    kconv.conv2d_backward_weight_plain(X, dZ, 1, pad, dWt)
    dW[...] = dWt[0].transpose(3, 0, 1, 2)


def conv_avgpool_backward_input_plain(dY, W, pad, k, dX):
    """dX of :func:`conv_avgpool_forward_plain`, by the chain rule through Z:

        dZ = avgpool_backward(dY)
        dX[n, c, y, x] = sum_{o, zy, zx} dZ[n, o, zy, zx] * W[o, c, y - zy + p, x - zx + p]   (taps in range)

    dY: (N, O, OH, OW);  W: (O, C, KH, KW);  dX: (N, C, H, W), written.
    """
    N, C, H, Wd = dX.shape
    O, _, KH, KW = W.shape
    dZ = np.empty((N, O, H + 2 * pad - KH + 1, Wd + 2 * pad - KW + 1), dtype=dY.dtype)  # (N, O, ZH, ZW)
    kpool.avgpool_backward_plain(dY, k, k, dZ)
    Wm = W.transpose(0, 2, 3, 1).reshape(O, KH * KW * C)  # Wm[o, (kh*KW + kw)*C + c] = W[o, c, kh, kw]
    kconv.conv2d_backward_input_plain(dZ, Wm, 1, pad, KH, KW, 1, dX)
