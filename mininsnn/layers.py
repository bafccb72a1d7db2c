"""Layers: thin classes that validate, allocate, call the kernels and keep the cache.

Every layer works on whole time-major sequences: ``forward(x, ctx)`` takes ``x`` of shape
``(TI, B, ...)`` and ``backward(dout)`` returns ``dL/dx`` of the same shape. ``TI`` is either the
number of time steps ``ctx.T`` or 1 for a *static* input, which stands for ``ctx.T`` identical steps
and is computed once (for MNIST: conv1, pooling and BatchNorm 1 run once per batch). The first
:class:`Leaky` turns a static input into a ``(T, B, ...)`` spike train.

Stateless layers fold time into the batch (``T * B`` samples at once); only the neuron loops over
time. Gradients are accumulated (``+=``) into ``layer.grads``; call ``zero_grad`` between batches.
Each ``forward`` is followed by its ``backward``; the maths is restated in ``docs/bptt.md``.
"""

from dataclasses import dataclass

import numpy as np

from mininsnn.kernels import conv as kconv
from mininsnn.kernels import linear as klinear
from mininsnn.kernels import spikeconv as kspike
from mininsnn.kernels import lif as klif
from mininsnn.kernels import norm as knorm
from mininsnn.kernels import pool as kpool
from mininsnn.quant import check_bits, check_quant_grad, quantize_backward, quantize_forward

__all__ = [
    "ActiveGrad", "Context", "Layer", "Conv2d", "AvgPool2d", "MaxPool2d", "BatchNorm2d", "Linear", "Flatten",
    "Dropout", "box_sum", "fuse_avgpool", "unfuse_avgpool_grad", "integer_lanes", "conv_avgpool_forward_plain",
    "conv_avgpool_backward_weight_plain", "conv_avgpool_backward_input_plain",
]

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# A weight gradient sums over the T*B samples in this many slices (in parallel), then adds the
# slices: a fixed count, not one per thread, so that a run gives the same bits with any
# NUMBA_NUM_THREADS (a trial rerun by its command on another machine's worker count, say).
GRAD_SLICES = 8
SPIKE_DTYPE = np.dtype(np.uint8)


@dataclass
class ActiveGrad:
    """dL/dS of a sparse :class:`Leaky` given only at the entries its forward listed (the only
    ones whose truncated surrogate is not 0): ``values[e]`` for slot e of its active list. What
    a :class:`Conv2d` whose input is that layer's output returns from ``backward`` (``grad_at``)."""

    values: np.ndarray


@dataclass
class Context:
    """What a layer needs to know about the pass: number of steps, mode, and the RNG (Dropout)."""

    T: int
    training: bool
    rng: np.random.Generator


class Layer:
    """Base class: a name (set by the network), parameters, their gradients, buffers."""

    def __init__(self):
        self.name = type(self).__name__
        self.params = {}
        self.grads = {}
        self.buffers = {}
        self.check_inputs = True  # the network turns this off behind its own input check
        self.cache = None
        self._work = {}

    def _work_array(self, key, shape, dtype):
        """A work array kept across calls (no fresh pages to fault in at every step); reallocated
        when the shape or dtype changes. Forward outputs and backward results live in such buffers,
        so a layer's next call overwrites them: copy what you keep (Network.forward returns a copy)."""
        buf = self._work.get(key)
        if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype:
            buf = self._work[key] = np.empty(shape, dtype=dtype)
        return buf

    def _add_param(self, key, value):
        self.params[key] = value
        self.grads[key] = np.zeros_like(value)

    def zero_grad(self):
        for g in self.grads.values():
            g[...] = 0.0

    def _check_params(self):
        for key, p in self.params.items():
            if not np.isfinite(p).all():
                raise ValueError(f"{self.name}: parameter '{key}' contains NaN or inf")

    def _check_input(self, x, trailing, allow_spikes=False):
        """x must be an ndarray (TI, B, *trailing), float (or uint8 spikes if allowed), finite."""
        if not self.check_inputs:
            return
        if not isinstance(x, np.ndarray):
            raise ValueError(f"{self.name}: expected a numpy array, got {type(x).__name__}")
        want = "(T, B, " + ", ".join(str(d) for d in trailing) + ")"
        if x.ndim != 2 + len(trailing) or tuple(x.shape[2:]) != tuple(trailing):
            raise ValueError(f"{self.name}: expected input of shape {want}, got {x.shape}")
        if x.dtype == SPIKE_DTYPE and allow_spikes:
            if x.size and x.max() > 1:
                raise ValueError(f"{self.name}: uint8 input must be 0/1 spikes, got values up to {x.max()}")
            return
        if x.dtype not in FLOAT_DTYPES:
            kinds = "float32, float64" + (" or uint8 spikes" if allow_spikes else "")
            raise ValueError(f"{self.name}: expected dtype {kinds}, got {x.dtype}")
        if not np.isfinite(x).all():
            raise ValueError(f"{self.name}: input contains NaN or inf")

    def forward(self, x, ctx):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"

    def extra_repr(self):
        return ""


def _uniform_init(rng, shape, fan_in, dtype):
    """PyTorch's default init for conv/linear weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def _check_positive_int(name, key, v):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name}: expected {key} to be a positive integer, got {v!r}")
    return int(v)


# ------------------------------------------------------------------------------------------------
# Conv2d (with weight quantization and optional fused 2x2 average pooling)

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


class Conv2d(Layer):
    """2-D convolution, weight (out, in, kh, kw) as in PyTorch, optionally n-bit fake-quantized.

    When the network sets ``fused_pool = k`` (this conv has stride 1 and is followed by k x k average
    pooling with stride k), forward and both gradients use the equivalent (K+k-1)-sized conv with
    stride k (see :func:`fuse_avgpool`), and the pooling layer passes its input through; the input
    gradient uses the unfused kernel and the pool's k x k box instead (fewer products).

    On 0/1 spikes the forward sums by window patterns (kernels/spikeconv.py), on exact int16 lanes
    when the weights are n-bit codes times one scale and :func:`integer_lanes` says the sums fit.
    With ``grad_at`` (set by the network) the input gradient is computed only at the active
    entries of the sparse Leaky before this layer and returned as an :class:`ActiveGrad`.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=False,
                 bits=None, dtype=np.float32, rng=None, quant_grad="ste+scale"):
        super().__init__()
        self.in_channels = _check_positive_int("Conv2d", "in_channels", in_channels)
        self.out_channels = _check_positive_int("Conv2d", "out_channels", out_channels)
        self.kernel_size = _check_positive_int("Conv2d", "kernel_size", kernel_size)
        self.stride = _check_positive_int("Conv2d", "stride", stride)
        if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
            raise ValueError(f"Conv2d: expected padding to be an integer >= 0, got {padding!r}")
        self.padding = int(padding)
        self.bits = check_bits(bits, "Conv2d")
        self.quant_grad = check_quant_grad(quant_grad, "Conv2d")
        self.fused_pool = None
        self.needs_input_grad = True
        self.path = None  # the forward kernels of the last call: "spike-int", "spike" or "plain"
        # a sparse Leaky whose output is this layer's input (Network sets it): the input gradient
        # is then computed at its active entries only and returned as an ActiveGrad
        self.grad_at = None
        rng = np.random.default_rng() if rng is None else rng
        fan_in = in_channels * kernel_size * kernel_size
        K = self.kernel_size
        self._add_param("weight", _uniform_init(rng, (out_channels, in_channels, K, K), fan_in, dtype))
        if bias:
            self._add_param("bias", _uniform_init(rng, (out_channels,), fan_in, dtype))

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, bias={'bias' in self.params}, bits={self.bits}"
                + ("" if self.bits is None else f", quant_grad={self.quant_grad!r}"))

    def output_hw(self, H, W):
        K, s, p = self.kernel_size, self.stride, self.padding
        OH, OW = (H + 2 * p - K) // s + 1, (W + 2 * p - K) // s + 1
        if self.fused_pool:
            OH, OW = OH // self.fused_pool, OW // self.fused_pool
        return OH, OW

    def forward(self, x, ctx):
        if self.check_inputs:
            if not isinstance(x, np.ndarray) or x.ndim != 5:
                raise ValueError(f"{self.name}: expected input of shape (T, B, {self.in_channels}, H, W), "
                                 f"got {getattr(x, 'shape', type(x).__name__)}")
            self._check_input(x, (self.in_channels,) + x.shape[3:], allow_spikes=True)
        self._check_params()
        TI, B, C, H, W = x.shape
        K, p = self.kernel_size, self.padding
        if H + 2 * p < K or W + 2 * p < K:
            raise ValueError(f"{self.name}: input {H}x{W} (padding {p}) is smaller than the {K}x{K} kernel")
        dtype = self.params["weight"].dtype
        # Wq = quantize(W) = scale * q: recomputed from the latent float weights at every forward
        Wq, scale = quantize_forward(self.params["weight"], self.bits)
        k = self.fused_pool or 1
        Wk, stride = Wq, self.stride
        if self.fused_pool:
            Wk, stride = fuse_avgpool(Wq, k), k
        OH, OW = self.output_hw(H, W)
        Wt = np.ascontiguousarray(Wk.transpose(1, 2, 3, 0))  # (C, KH, KW, O)
        KH, KW = Wt.shape[1], Wt.shape[2]
        X = x.reshape(TI * B, C, H, W)
        Y = self._work_array("Y", (TI * B, self.out_channels, OH, OW), dtype)  # (N, O, OH, OW)
        rows = kconv.out_ranges(H, p, KH, stride, OH)  # (H, 2) output rows each input row reaches
        spikes = x.dtype == SPIKE_DTYPE and kspike.fits(KW, W, p)
        lanes = integer_lanes(self.bits, C, K, k) if spikes else None
        if lanes is not None:
            # 0/1 input, n-bit weights: Wk = (scale / k^2) * qf with integer codes qf = box_sum(q, k),
            # so Y = (scale / k^2) * A with A an exact integer sum (kernels/spikeconv.py)
            q = np.rint(Wq / scale) if scale != 0 else np.zeros_like(Wq)  # the codes -L..L, exactly
            qt = np.ascontiguousarray(box_sum(q.astype(np.int64), k).transpose(1, 2, 3, 0)).astype(lanes)
            Tab = self._work_array("TabI", (C, KH, 1 << KW, self.out_channels), lanes)  # (C, KH, 2^KW, O)
            kspike.pattern_table(qt, Tab)
            kspike.spikeconv_forward_int(X, Tab, KW, stride, p, rows, dtype.type(scale) / dtype.type(k * k), Y)
            self.path = "spike-int"
        elif spikes:  # 0/1 input: the same sum, by window patterns (kernels/spikeconv.py)
            Tab = self._work_array("Tab", (C, KH, 1 << KW, self.out_channels), dtype)  # (C, KH, 2^KW, O)
            kspike.pattern_table(Wt, Tab)
            kspike.spikeconv_forward(X, Tab, KW, stride, p, rows, Y)
            self.path = "spike"
        else:
            kconv.conv2d_forward(X, Wt, stride, p, Y)
            self.path = "plain"
        if "bias" in self.params:
            Y += self.params["bias"][None, :, None, None]
        self.cache = (x, Wq, Wt, stride, rows, spikes)
        return Y.reshape(TI, B, self.out_channels, OH, OW)

    def backward(self, dout):
        x, Wq, Wt, stride, rows, spikes = self.cache
        TI, B, C, H, W = x.shape
        N = TI * B
        O = self.out_channels
        OH, OW = dout.shape[3], dout.shape[4]
        KH, KW = Wt.shape[1], Wt.shape[2]
        X = x.reshape(N, C, H, W)
        dY = np.ascontiguousarray(dout.reshape(N, O, OH, OW))  # (N, O, OH, OW)
        # fwd: Y[n,o,i,j] = sum W[o,c,kh,kw] X[n,c,i*s-p+kh,j*s-p+kw]  =>  dW[o,c,kh,kw] = sum_n,i,j dY X
        P = min(N, GRAD_SLICES)  # partial sums, a count fixed so the bits do not depend on threads
        if spikes:  # 0/1 input: gradient per window pattern, then unfolded onto the taps
            G_parts = self._work_array("G_parts", (P, C, KH, 1 << KW, O), dY.dtype)  # per-slice partial sums
            kspike.spikeconv_backward_weight(X, dY, KW, stride, self.padding, rows, G_parts)
            dWt = np.empty((C, KH, KW, O), dtype=dY.dtype)  # (C, KH, KW, O)
            kspike.unfold_pattern_grad(G_parts.sum(axis=0), dWt)
        else:
            parts = np.empty((P, C, KH, KW, O), dtype=dY.dtype)  # per-slice partial sums
            kconv.conv2d_backward_weight(X, dY, stride, self.padding, parts)
            dWt = parts.sum(axis=0)
        dWk = dWt.transpose(3, 0, 1, 2)  # (O, C, KH, KW)
        if self.fused_pool:
            dWk = unfuse_avgpool_grad(dWk, self.fused_pool, self.kernel_size, self.kernel_size)
        # fwd: Wq = quantize(W)  =>  dWq/dW = 1  (straight-through; see quant.py for "ste+scale")
        self.grads["weight"] += quantize_backward(dWk, self.params["weight"], self.bits,
                                                  self.quant_grad)
        if "bias" in self.params:
            # fwd: Y += b[o]  =>  db[o] = sum_{n,i,j} dY[n,o,i,j]
            self.grads["bias"] += dY.sum(axis=(0, 2, 3))
        if not self.needs_input_grad:
            return None
        # fwd: Y[n,o,i,j] = sum W[o,c,kh,kw] X[n,c,i*s-p+kh,...]  =>  dX[n,c,y,x] = sum_{o,i,j} dY W
        active = self.grad_at.active if self.grad_at is not None else None
        if active is not None:
            # sparse backward: dX only where the Leaky before this layer reads it (with Wt, fused)
            act_n, _, act_ptr = active
            dX_act = self._work_array("dX_act", act_n.shape, dY.dtype)  # (slots,), listed ones written
            kconv.conv2d_backward_input_at(dY, Wt, stride, self.padding, B, H, W, act_n, act_ptr, klif.BLOCK, dX_act)
            return ActiveGrad(dX_act)
        # (fused: the unfused Wq, then the pooling's k x k box; conv.conv2d_backward_input)
        K = self.kernel_size
        Wm = np.zeros(((O + 3) // 4 * 4, K * K * C), dtype=Wq.dtype)  # (O4, K*K*C), rows O.. zero
        Wm[:O] = Wq.transpose(0, 2, 3, 1).reshape(O, K * K * C)  # Wm[o, (kh*K + kw)*C + c] = Wq[o, c, kh, kw]
        dX = self._work_array("dX", (N, C, H, W), dY.dtype)  # (N, C, H, W)
        kconv.conv2d_backward_input(dY, Wm, self.stride, self.padding, K, K, self.fused_pool or 1, dX)
        return dX.reshape(x.shape)


# ------------------------------------------------------------------------------------------------
# Pooling

class AvgPool2d(Layer):
    """k x k average pooling (stride defaults to k). Passes its input through when fused into the conv before it."""

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.k = _check_positive_int("AvgPool2d", "kernel_size", kernel_size)
        self.stride = self.k if stride is None else _check_positive_int("AvgPool2d", "stride", stride)
        self.fused = False

    def extra_repr(self):
        return f"kernel_size={self.k}, stride={self.stride}" + (", fused" if self.fused else "")

    def forward(self, x, ctx):
        if self.fused:
            return x  # the pooling was folded into the previous conv's kernel
        if self.check_inputs:
            if not isinstance(x, np.ndarray) or x.ndim != 5:
                raise ValueError(f"{self.name}: expected input of shape (T, B, C, H, W), got "
                                 f"{getattr(x, 'shape', type(x).__name__)}")
            self._check_input(x, x.shape[2:])
        TI, B, C, H, W = x.shape
        if H < self.k or W < self.k:
            raise ValueError(f"{self.name}: input {H}x{W} is smaller than the {self.k}x{self.k} window")
        OH, OW = (H - self.k) // self.stride + 1, (W - self.k) // self.stride + 1
        Y = self._work_array("Y", (TI * B, C, OH, OW), x.dtype)  # (N, C, OH, OW)
        kpool.avgpool_forward(x.reshape(TI * B, C, H, W), self.k, self.stride, Y)
        self.cache = x.shape
        return Y.reshape(TI, B, C, OH, OW)

    def backward(self, dout):
        if self.fused:
            return dout
        TI, B, C, H, W = self.cache
        dX = self._work_array("dX", (TI * B, C, H, W), dout.dtype)  # (N, C, H, W)
        kpool.avgpool_backward(dout.reshape(TI * B, C, *dout.shape[3:]), self.k, self.stride, dX)
        return dX.reshape(self.cache)


class SumPool2d(Layer):
    """k x k sum pooling, stride (default k), zero padding p (Sinabs' ``SumPool2d``, NIR's
    ``SumPool2d``):  Y[n, c, i, j] = sum_{a, b < k} X[n, c, i*s - p + a, j*s - p + b], 0 outside.
    Takes float input or uint8 spikes (then the output is float32: sums of spikes are small
    integers, exact in float32)."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.k = _check_positive_int("SumPool2d", "kernel_size", kernel_size)
        self.stride = self.k if stride is None else _check_positive_int("SumPool2d", "stride", stride)
        if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
            raise ValueError(f"SumPool2d: expected padding to be an integer >= 0, got {padding!r}")
        self.padding = int(padding)

    def extra_repr(self):
        return f"kernel_size={self.k}, stride={self.stride}, padding={self.padding}"

    def forward(self, x, ctx):
        if self.check_inputs:
            if not isinstance(x, np.ndarray) or x.ndim != 5:
                raise ValueError(f"{self.name}: expected input of shape (T, B, C, H, W), got "
                                 f"{getattr(x, 'shape', type(x).__name__)}")
            self._check_input(x, x.shape[2:], allow_spikes=True)
        TI, B, C, H, W = x.shape
        k, s, p = self.k, self.stride, self.padding
        if H + 2 * p < k or W + 2 * p < k:
            raise ValueError(f"{self.name}: input {H}x{W} (padding {p}) is smaller than the {k}x{k} window")
        OH, OW = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
        dtype = x.dtype if x.dtype in FLOAT_DTYPES else np.dtype(np.float32)
        Y = self._work_array("Y", (TI * B, C, OH, OW), dtype)  # (N, C, OH, OW)
        kpool.sumpool_forward(x.reshape(TI * B, C, H, W), k, s, p, Y)
        self.cache = x.shape
        return Y.reshape(TI, B, C, OH, OW)

    def backward(self, dout):
        TI, B, C, H, W = self.cache
        dX = self._work_array("dX", (TI * B, C, H, W), dout.dtype)  # (N, C, H, W)
        dY = np.ascontiguousarray(dout.reshape(TI * B, C, *dout.shape[3:]))
        kpool.sumpool_backward(dY, self.k, self.stride, self.padding, dX)
        return dX.reshape(self.cache)


class MaxPool2d(Layer):
    """k x k max pooling (stride defaults to k); ties go to the first maximum in row-major order."""

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.k = _check_positive_int("MaxPool2d", "kernel_size", kernel_size)
        self.stride = self.k if stride is None else _check_positive_int("MaxPool2d", "stride", stride)

    def extra_repr(self):
        return f"kernel_size={self.k}, stride={self.stride}"

    def forward(self, x, ctx):
        if self.check_inputs:
            if not isinstance(x, np.ndarray) or x.ndim != 5:
                raise ValueError(f"{self.name}: expected input of shape (T, B, C, H, W), got "
                                 f"{getattr(x, 'shape', type(x).__name__)}")
            self._check_input(x, x.shape[2:], allow_spikes=True)
        TI, B, C, H, W = x.shape
        if H < self.k or W < self.k:
            raise ValueError(f"{self.name}: input {H}x{W} is smaller than the {self.k}x{self.k} window")
        OH, OW = (H - self.k) // self.stride + 1, (W - self.k) // self.stride + 1
        Y = np.empty((TI * B, C, OH, OW), dtype=x.dtype)  # (N, C, OH, OW)
        argmax = np.empty((TI * B, C, OH, OW), dtype=np.int32)  # (N, C, OH, OW)
        kpool.maxpool_forward(x.reshape(TI * B, C, H, W), self.k, self.stride, Y, argmax)
        self.cache = (x.shape, argmax)
        return Y.reshape(TI, B, C, OH, OW)

    def backward(self, dout):
        shape, argmax = self.cache
        TI, B, C, H, W = shape
        dX = np.empty((TI * B, C, H, W), dtype=dout.dtype)  # (N, C, H, W)
        kpool.maxpool_backward(dout.reshape(argmax.shape), argmax, self.k, self.stride, dX)
        return dX.reshape(shape)


# ------------------------------------------------------------------------------------------------
# BatchNorm over time

class BatchNorm2d(Layer):
    """BatchNorm applied at every time step with that step's batch statistics (training), running
    statistics updated once per step (momentum, unbiased variance), running statistics in eval.

    A static input (TI = 1) stands for T identical steps: the statistics are computed once and the
    running statistics updated T times, exactly as T separate identical steps would.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, dtype=np.float32):
        super().__init__()
        self.num_features = _check_positive_int("BatchNorm2d", "num_features", num_features)
        if not (np.isfinite(eps) and eps > 0):
            raise ValueError(f"BatchNorm2d: expected eps > 0, got {eps!r}")
        if not (np.isfinite(momentum) and 0 <= momentum <= 1):
            raise ValueError(f"BatchNorm2d: expected momentum in [0, 1], got {momentum!r}")
        self.eps, self.momentum = float(eps), float(momentum)
        self._add_param("weight", np.ones(num_features, dtype=dtype))
        self._add_param("bias", np.zeros(num_features, dtype=dtype))
        self.buffers["running_mean"] = np.zeros(num_features, dtype=dtype)
        self.buffers["running_var"] = np.ones(num_features, dtype=dtype)
        self.buffers["num_batches_tracked"] = np.zeros((), dtype=np.int64)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"

    def forward(self, x, ctx):
        if self.check_inputs:
            if not isinstance(x, np.ndarray) or x.ndim != 5:
                raise ValueError(f"{self.name}: expected input of shape (T, B, {self.num_features}, H, W), got "
                                 f"{getattr(x, 'shape', type(x).__name__)}")
            self._check_input(x, (self.num_features,) + x.shape[3:])
        self._check_params()
        TI, B, C, H, W = x.shape
        X = x.reshape(TI, B, C, H * W)
        gamma, beta = self.params["weight"], self.params["bias"]
        Y = self._work_array("Y", X.shape, X.dtype)  # (TI, B, C, M)
        if not ctx.training:
            knorm.batchnorm_eval(X, gamma, beta, self.buffers["running_mean"], self.buffers["running_var"],
                                 self.eps, Y)
            self.cache = ("eval", X)
            return Y.reshape(x.shape)
        n = B * H * W
        if n < 2:
            raise ValueError(f"{self.name}: training needs more than one value per channel, got input {x.shape}")
        Xhat = self._work_array("Xhat", X.shape, X.dtype)  # (TI, B, C, M)
        mean = np.empty((TI, C), dtype=X.dtype)  # (TI, C)
        var = np.empty((TI, C), dtype=X.dtype)  # (TI, C) biased
        knorm.batchnorm_forward(X, gamma, beta, self.eps, Y, Xhat, mean, var)
        # running stats: one update per time step (a static input stands for T identical steps)
        rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
        m = rm.dtype.type(self.momentum)
        unbiased = var * (n / (n - 1))
        for t in range(ctx.T if TI == 1 else TI):
            ti = 0 if TI == 1 else t
            rm[...] = (1 - m) * rm + m * mean[ti]
            rv[...] = (1 - m) * rv + m * unbiased[ti]
        self.buffers["num_batches_tracked"][...] += ctx.T if TI == 1 else TI
        self.cache = ("train", Xhat, var)
        return Y.reshape(x.shape)

    def backward(self, dout):
        shape = dout.shape
        TI, B, C = shape[:3]
        dY = dout.reshape(TI, B, C, -1)
        gamma = self.params["weight"]
        if self.cache[0] == "eval":
            # fwd: Y = gamma * (X - rm) / sqrt(rv + eps) + beta   (running stats are constants)
            X = self.cache[1]
            inv_std = 1.0 / np.sqrt(self.buffers["running_var"] + self.eps)
            xhat = (X - self.buffers["running_mean"][:, None]) * inv_std[:, None]
            self.grads["weight"] += (dY * xhat).sum(axis=(0, 1, 3))
            self.grads["bias"] += dY.sum(axis=(0, 1, 3))
            return (dY * (gamma * inv_std)[:, None]).astype(dout.dtype).reshape(shape)
        _, Xhat, var = self.cache
        dX = self._work_array("dX", dY.shape, dY.dtype)  # (TI, B, C, M)
        dgamma_t = np.empty((TI, C), dtype=dY.dtype)  # (TI, C)
        dbeta_t = np.empty((TI, C), dtype=dY.dtype)  # (TI, C)
        knorm.batchnorm_backward(dY, Xhat, gamma, var, self.eps, dX, dgamma_t, dbeta_t)
        self.grads["weight"] += dgamma_t.sum(axis=0)
        self.grads["bias"] += dbeta_t.sum(axis=0)
        return dX.reshape(shape)


# ------------------------------------------------------------------------------------------------
# Linear, Flatten, Dropout

class Linear(Layer):
    """Y = X @ Wq^T + b over (T, B, in) -> (T, B, out); weight (out, in) as in PyTorch."""

    def __init__(self, in_features, out_features, bias=True, bits=None, dtype=np.float32, rng=None,
                 quant_grad="ste+scale"):
        super().__init__()
        self.in_features = _check_positive_int("Linear", "in_features", in_features)
        self.out_features = _check_positive_int("Linear", "out_features", out_features)
        self.bits = check_bits(bits, "Linear")
        self.quant_grad = check_quant_grad(quant_grad, "Linear")
        self.needs_input_grad = True
        rng = np.random.default_rng() if rng is None else rng
        self._add_param("weight", _uniform_init(rng, (out_features, in_features), in_features, dtype))
        if bias:
            self._add_param("bias", _uniform_init(rng, (out_features,), in_features, dtype))

    def extra_repr(self):
        return (f"{self.in_features}, {self.out_features}, bias={'bias' in self.params}, bits={self.bits}"
                + ("" if self.bits is None else f", quant_grad={self.quant_grad!r}"))

    def forward(self, x, ctx):
        self._check_input(x, (self.in_features,), allow_spikes=True)
        self._check_params()
        TI, B, F = x.shape
        W = self.params["weight"]
        Wq, _ = quantize_forward(W, self.bits)  # recomputed at every forward
        Wt = np.ascontiguousarray(Wq.T)  # (F, O)
        Y = self._work_array("Y", (TI * B, self.out_features), W.dtype)  # (N, O)
        klinear.linear_forward(x.reshape(TI * B, F), Wt, Y)  # Y = X @ Wq^T, skipping zero inputs
        if "bias" in self.params:
            Y += self.params["bias"]
        self.cache = (x, Wq)
        return Y.reshape(TI, B, self.out_features)

    def backward(self, dout):
        x, Wq = self.cache
        TI, B, F = x.shape
        N = TI * B
        dY = np.ascontiguousarray(dout.reshape(N, self.out_features))
        # fwd: Y = X @ Wq^T + b  =>  dWq = dY^T @ X ;  db = sum_n dY ;  dX = dY @ Wq
        # fwd: Wq = quantize(W)  =>  dWq/dW = 1  (straight-through; see quant.py for "ste+scale")
        P = min(N, GRAD_SLICES)  # partial sums, a count fixed so the bits do not depend on threads
        parts = self._work_array("parts", (P, self.out_features, F), dY.dtype)  # per-slice partial sums of dW
        klinear.linear_backward_weight(x.reshape(N, F), dY, parts)
        self.grads["weight"] += quantize_backward(parts.sum(axis=0), self.params["weight"],
                                                  self.bits, self.quant_grad)
        if "bias" in self.params:
            self.grads["bias"] += dY.sum(axis=0)
        if not self.needs_input_grad:
            return None
        dX = self._work_array("dX", (N, F), dY.dtype)  # (N, F)
        klinear.linear_backward_input(dY, np.ascontiguousarray(Wq), dX)
        return dX.reshape(x.shape)


class Flatten(Layer):
    """(T, B, C, H, W) -> (T, B, C*H*W), in C-H-W order like torch.flatten(x, 1)."""

    def forward(self, x, ctx):
        if self.check_inputs and (not isinstance(x, np.ndarray) or x.ndim < 3):
            raise ValueError(f"{self.name}: expected input of shape (T, B, ...), got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        self.cache = x.shape
        return x.reshape(x.shape[0], x.shape[1], -1)

    def backward(self, dout):
        return dout.reshape(self.cache)


class Dropout(Layer):
    """Zero each element with probability p, scale the rest by 1/(1-p); a fresh mask at every time
    step; identity in eval mode. A static input is expanded to T steps first (each step its own mask)."""

    def __init__(self, p=0.5):
        super().__init__()
        if not (isinstance(p, (int, float, np.floating)) and 0 <= p < 1):
            raise ValueError(f"Dropout: expected p in [0, 1), got {p!r}")
        self.p = float(p)

    def extra_repr(self):
        return f"p={self.p}"

    def forward(self, x, ctx):
        if self.check_inputs and (not isinstance(x, np.ndarray) or x.ndim < 2):
            raise ValueError(f"{self.name}: expected input of shape (T, B, ...), got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        if x.shape[0] not in (1, ctx.T):
            raise ValueError(f"{self.name}: expected {ctx.T} time steps (or 1 for a static input), got {x.shape[0]}")
        if not ctx.training or self.p == 0:
            self.cache = None
            return x
        dtype = x.dtype if x.dtype in FLOAT_DTYPES else np.dtype(np.float32)
        shape = (ctx.T,) + x.shape[1:]
        keep = ctx.rng.random(shape) >= self.p
        mask = keep.astype(dtype) * dtype.type(1.0 / (1.0 - self.p))  # (T, B, ...)
        self.cache = (x.shape, mask)
        return x * mask

    def backward(self, dout):
        if self.cache is None:
            return dout
        shape, mask = self.cache
        # fwd: Y = X * mask  =>  dX = dY * mask   (summed over t for a static input)
        dX = dout * mask
        return dX.sum(axis=0, keepdims=True) if shape[0] != dX.shape[0] else dX


def __getattr__(name):
    """``mininsnn.layers.Leaky``, the neuron's old home, for code not yet moved to
    :mod:`mininsnn.neurons`. Resolved lazily, at attribute access: mininsnn.neurons imports this
    module, so an import at the top would be a cycle."""
    if name == "Leaky":
        from mininsnn.neurons import Leaky  # lazy: see above
        return Leaky
    raise AttributeError(f"module 'mininsnn.layers' has no attribute {name!r}")
