"""Recurrent spiking layers: a layer of n neurons whose own spikes feed back with one step delay
(snnTorch ``RLeaky`` / ``RSynaptic``; NIR's LIF -> Affine -> same LIF subgraph).

The input of neuron i at step t is (S[-1] = 0)

    Xin[t] = X[t] + W_rec S[t-1] + b_rec         W_rec (n, n) as Linear's (out, in); b_rec (n,)

and then the neuron of :class:`mininsnn.neurons.Leaky` (``RLeaky``) or
:class:`mininsnn.neurons.Synaptic` (``RSynaptic``, whose current takes Xin:
I[t] = alpha I[t-1] + syn_gain Xin[t]) with all their options. ``W_rec`` and ``b_rec`` are
parameters under those names (``<layer>.W_rec``, ``<layer>.b_rec`` in the state dict), initialised
like Linear's weight and bias, U(-1/sqrt(n), 1/sqrt(n)). Kernels: kernels/recurrent.py.
"""

import numpy as np

from mininsnn.config import DEFAULTS
from mininsnn.kernels import recurrent as krec
from mininsnn.layers import GRAD_SLICES, SPIKE_DTYPE, _check_positive_int, _uniform_init
from mininsnn.neurons import _LIF_DEFAULTS, PARAM_RULES, Neuron

__all__ = ["RLeaky", "RSynaptic"]


class _Recurrent(Neuron):
    """What RLeaky and RSynaptic share: the feedback weights, the forward and the BPTT."""

    cuba = False
    keys = ()

    def _setup_recurrent(self, owner, n, bias, dtype, rng):
        self.n = _check_positive_int(owner, "n", n)
        if not isinstance(bias, (bool, np.bool_)):
            raise ValueError(f"{owner}: expected bias True or False, got {bias!r}")
        rng = np.random.default_rng() if rng is None else rng
        self._add_param("W_rec", _uniform_init(rng, (self.n, self.n), self.n, dtype))
        if bias:
            self._add_param("b_rec", _uniform_init(rng, (self.n,), self.n, dtype))

    W_rec = property(lambda self: self.params["W_rec"], doc="(n, n) feedback weight, (out, in)")
    b_rec = property(lambda self: self.params.get("b_rec"), doc="(n,) feedback bias, or None")

    def extra_repr(self):
        return (f"{self.n}, " + self._repr_values(self.keys, _LIF_DEFAULTS) + f", bias={'b_rec' in self.params}"
                + f", surrogate={self.surrogate}, reset={self.reset!r}"
                + ("" if self.reset_delay else ", reset_delay=False"))

    def forward(self, x, ctx):
        self._check_sequence(x, ctx)
        if self.check_inputs:
            self._check_input(x, (self.n,))
        T, B, n, dt = ctx.T, x.shape[1], self.n, x.dtype
        N = B * n
        par = self._build_par(B, (n,), dt)
        Xin = self._work_array("Xin", (T, N), dt)  # (T, N) X[t] + b_rec, then + W_rec S[t-1]
        Xin.reshape(T, B, n)[...] = x  # a static input (1, B, n) stands for T identical steps
        if "b_rec" in self.params:
            Xin.reshape(T, B, n)[...] += self.params["b_rec"].astype(dt, copy=False)
        M = self._work_array("U", (T, N), dt)  # (T, N) potential compared with theta
        S = self._work_array("S", (T, N), dt if self.smooth else SPIKE_DTYPE)  # (T, N)
        C = self._work_array("C", (T, N) if self.cuba else (0, 0), dt)  # (T, N) current
        mode = self._mode(dt, self.cuba)
        Wt = np.ascontiguousarray(self.params["W_rec"].T, dtype=dt)  # (n, n) rows by input neuron
        krec.recurrent_forward(Wt, par, mode, n, Xin, M, S, C)
        self.cache = (x.shape, M, Xin, par, C, mode, S)
        self._count_spikes(S, M, par)
        return S.reshape(T, B, n)

    def backward(self, dout):
        shape, M, Xin, par, C, mode, S = self.cache
        T, N = M.shape
        n, dt = self.n, M.dtype
        dS = self._work_array("dS", (T, N), dt)  # (T, N) dL/dS, then + the feedback's share
        dS[...] = dout.reshape(T, N)
        dXin = self._work_array("dXin", (T, N), dt)  # (T, N)
        learn = any(k in PARAM_RULES for k in self.params)
        dpar = np.zeros((len(par), N) if learn else (0, N), dt)  # (NPAR, N) per-neuron sums over t
        W = np.ascontiguousarray(self.params["W_rec"], dtype=dt)  # (n, n)
        krec.recurrent_backward(W, par, mode, n, Xin, M, C, dS, dXin, dpar)
        # fwd: Xin[t] = X[t] + W_rec S[t-1] + b_rec  =>  dW_rec = sum_{t>=1} dXin[t]^T S[t-1], db_rec = sum dXin
        if T > 1:
            parts = self._work_array("parts", (min(GRAD_SLICES, (T - 1) * shape[1]), n, n), dt)  # (P, n, n)
            krec.recurrent_backward_weight(dXin, S, n, parts)  # partial sums of dW_rec^T
            self.grads["W_rec"] += parts.sum(axis=0).T
        if "b_rec" in self.params:
            self.grads["b_rec"] += dXin.reshape(-1, n).sum(axis=0)
        self._add_param_grads(dpar, (shape[1], n))
        dX = dXin.reshape(T, shape[1], n)
        return dX.sum(axis=0, keepdims=True) if shape[0] != T else dX


class RLeaky(_Recurrent):
    """n LIF neurons (:class:`mininsnn.neurons.Leaky`'s general form) with recurrent feedback:
    input (T, B, n), output (T, B, n) spikes. See the module docstring."""

    keys = ("beta", "threshold", "gain", "drive", "v_reset")

    def __init__(self, n, beta, threshold=DEFAULTS["threshold"], surrogate=None,
                 reset=DEFAULTS["reset"], smooth=False, reset_delay=DEFAULTS["reset_delay"],
                 *, bias=True, gain=1.0, drive=0.0, v_reset=0.0, learn_beta=False, learn_threshold=False,
                 dtype=DEFAULTS["dtype"], rng=None):
        super().__init__()
        self._setup_recurrent("RLeaky", n, bias, dtype, rng)
        self._setup("RLeaky", dict(beta=beta, threshold=threshold, gain=gain, drive=drive, v_reset=v_reset,
                                   alpha=0.0, syn_gain=1.0),
                    dict(beta=learn_beta, threshold=learn_threshold), reset, reset_delay, surrogate, smooth, dtype)

    beta = property(lambda self: self.value("beta"))
    threshold = property(lambda self: self.value("threshold"))


class RSynaptic(_Recurrent):
    """n current-based LIF neurons (:class:`mininsnn.neurons.Synaptic`) with recurrent feedback into
    the current: I[t] = alpha I[t-1] + syn_gain (X[t] + W_rec S[t-1] + b_rec)."""

    cuba = True
    keys = ("alpha", "beta", "threshold", "syn_gain", "gain", "drive", "v_reset")

    def __init__(self, n, alpha, beta, threshold=DEFAULTS["threshold"], surrogate=None,
                 reset=DEFAULTS["reset"], smooth=False, reset_delay=DEFAULTS["reset_delay"], *,
                 bias=True, syn_gain=1.0, gain=1.0, drive=0.0, v_reset=0.0, learn_alpha=False,
                 learn_beta=False, learn_threshold=False, dtype=DEFAULTS["dtype"], rng=None):
        super().__init__()
        self._setup_recurrent("RSynaptic", n, bias, dtype, rng)
        self._setup("RSynaptic", dict(alpha=alpha, syn_gain=syn_gain, beta=beta, threshold=threshold, gain=gain,
                                      drive=drive, v_reset=v_reset),
                    dict(alpha=learn_alpha, beta=learn_beta, threshold=learn_threshold), reset, reset_delay,
                    surrogate, smooth, dtype)

    alpha = property(lambda self: self.value("alpha"))
    beta = property(lambda self: self.value("beta"))
    threshold = property(lambda self: self.value("threshold"))

    def current(self):
        """The synaptic current I[t] of the last forward, (T, B, n)."""
        shape, C = self.cache[0], self.cache[4]
        return C.reshape((C.shape[0],) + shape[1:])
