"""Spiking neurons: layers that carry a state through time and emit spikes.

Every neuron subclasses :class:`Neuron` (itself a :class:`mininsnn.layers.Layer`): it takes a
current of shape ``(TI, B, ...)`` (``TI`` = T, or 1 for a static input that stands for T identical
steps), loops over time in a Numba kernel (kernels/lif.py, kernels/neuron.py) and returns ``(T, B, ...)``
spikes, uint8 0/1, or in smooth-twin mode (``smooth=True``) the float ``g(M - theta)`` of the
surrogate's primitive g (for gradient checks; docs/bptt.md). :meth:`Neuron.membrane` returns the
potential M compared with theta at every step of the last forward.
"""

import numpy as np

from mininsnn import surrogate as sg
from mininsnn.kernels import lif as klif
from mininsnn.layers import SPIKE_DTYPE, ActiveGrad, Layer

__all__ = ["Neuron", "Leaky"]


class Neuron(Layer):
    """Base of every spiking neuron: the network finds its neurons by this class (firing rates,
    recorded spikes and membranes, smooth-twin mode)."""

    def __init__(self):
        super().__init__()
        self.smooth = False
        self.firing_rate = float("nan")
        self.last_spikes = None

    def _check_sequence(self, x, ctx):
        """x: (TI, B, ...) float, finite, TI in {1, ctx.T}."""
        if self.check_inputs and (not isinstance(x, np.ndarray) or x.ndim < 2):
            raise ValueError(f"{self.name}: expected input of shape (T, B, ...), got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        self._check_input(x, x.shape[2:])
        if x.shape[0] not in (1, ctx.T):
            raise ValueError(f"{self.name}: expected {ctx.T} time steps (or 1 for a static input), "
                             f"got {x.shape[0]}")

    def membrane(self):
        """Potentials compared with theta at each step of the last forward, (T, B, ...)."""
        raise NotImplementedError


class Leaky(Neuron):
    """The reference LIF neuron (snnTorch ``Leaky``): delayed, detached reset; strict threshold.

        R[t] = H(U[t-1] - theta)      U[t] = beta U[t-1] + I[t] - theta R[t]      S[t] = H(U[t] - theta)

    ``reset="zero"`` gives U[t] = (beta U[t-1] + I[t]) (1 - R[t]). Output spikes are uint8 0/1 of
    shape (T, B, ...). With ``smooth=True`` the output is the float smooth twin g(U - theta) (for
    gradient checks). Backward: BPTT with the surrogate derivative (kernels/lif.py).

    ``reset_delay=False`` resets in the step that fires (snnTorch ``Leaky(reset_delay=False)``; the
    neuron NIR's LIF describes with ``reset="zero"``), S detached in the reset:

        V[t] = beta U[t-1] + I[t]     S[t] = H(V[t] - theta)     U[t] = V[t] (1 - S[t])  ("zero")
                                                                 U[t] = V[t] - theta S[t]  ("subtract")

    :meth:`membrane` returns the potential compared with theta at each step: U[t] with the delayed
    reset, V[t] (before its reset) with ``reset_delay=False``; so S[t] = H(membrane[t] - theta).

    ``sparse_grad=B`` (a float > 0; None: off) truncates the surrogate: sg'(U - theta) = 0 where
    |U - theta| > B (Perez-Nieves & Goodman, "Sparse Spiking Gradient Descent", NeurIPS 2021); the
    smooth twin is then g(clip(U - theta, -B, B)). It needs the delayed reset.
    """

    def __init__(self, beta, threshold=1.0, surrogate=None, reset="subtract", smooth=False,
                 reset_delay=True, sparse_grad=None):
        super().__init__()
        if not (isinstance(beta, (int, float, np.floating)) and np.isfinite(beta) and 0 <= beta <= 1):
            raise ValueError(f"Leaky: expected beta in [0, 1], got {beta!r}")
        if not (isinstance(threshold, (int, float, np.floating)) and np.isfinite(threshold) and threshold > 0):
            raise ValueError(f"Leaky: expected a finite threshold > 0, got {threshold!r}")
        if reset not in ("subtract", "zero"):
            raise ValueError(f"Leaky: expected reset 'subtract' or 'zero', got {reset!r}")
        if not isinstance(reset_delay, (bool, np.bool_)):
            raise ValueError(f"Leaky: expected reset_delay True or False, got {reset_delay!r}")
        if sparse_grad is not None and not (isinstance(sparse_grad, (int, float, np.floating))
                                            and not isinstance(sparse_grad, bool)
                                            and np.isfinite(sparse_grad) and sparse_grad > 0):
            raise ValueError(f"Leaky: expected sparse_grad to be None or a finite number > 0, got {sparse_grad!r}")
        if sparse_grad is not None and not reset_delay:
            raise ValueError("Leaky: sparse_grad needs the delayed reset (reset_delay=True)")
        self.beta, self.threshold, self.reset = float(beta), float(threshold), reset
        self.reset_delay = bool(reset_delay)
        # B of the truncated surrogate; inf = the exact surrogate (sparse_grad None)
        self.bound = float("inf") if sparse_grad is None else float(sparse_grad)
        self.surrogate = sg.fast_sigmoid(25.0) if surrogate is None else sg.make_surrogate(surrogate)
        self.smooth = bool(smooth)
        # list the entries with |U - theta| <= B in training (Network sets it when a Conv2d follows):
        # that layer then computes dL/dS at those entries only, and backward reads nothing else
        self.list_active = False
        self.active = None  # (act_n, act_g, act_ptr) of the last forward, kernels/lif.py's layout

    def extra_repr(self):
        return (f"beta={self.beta}, threshold={self.threshold}, surrogate={self.surrogate}, reset={self.reset!r}"
                + ("" if self.reset_delay else ", reset_delay=False")
                + (f", sparse_grad={self.bound}" if np.isfinite(self.bound) else ""))

    def forward(self, x, ctx):
        self._check_sequence(x, ctx)
        TI = x.shape[0]
        T, cast = ctx.T, x.dtype.type
        I = x.reshape(TI, -1)  # (TI, N)
        U = self._work_array("U", (T, I.shape[1]), x.dtype)  # (T, N) potential compared with theta
        S = self._work_array("S", (T, I.shape[1]), x.dtype if self.smooth else SPIKE_DTYPE)  # (T, N) spikes
        self.active = None
        if not self.reset_delay:
            klif.lif_forward_nodelay(I, T, cast(self.beta), cast(self.threshold), self.reset == "zero",
                                     self.smooth, self.surrogate.code, cast(self.surrogate.k), U, S)
        else:
            if self.list_active and ctx.training and np.isfinite(self.bound):
                nblk = (I.shape[1] + klif.BLOCK - 1) // klif.BLOCK
                slots = nblk * T * klif.BLOCK  # room for every entry; pages are touched only as used
                self.active = (self._work_array("act_n", (slots,), np.int32),  # (slots,) neuron
                               self._work_array("act_g", (slots,), x.dtype),  # (slots,) sg'(U - theta)
                               self._work_array("act_ptr", (nblk, T + 1), np.int64))  # (nblk, T+1)
            klif.lif_forward(I, T, cast(self.beta), cast(self.threshold), self.reset == "zero", self.smooth,
                             self.surrogate.code, cast(self.surrogate.k), cast(self.bound), U, S,
                             *(self.active or (None, None, None)))
        self.cache = (x.shape, U)
        fired = S if not self.smooth else U > self.threshold
        self.firing_rate = np.count_nonzero(fired) / fired.size  # count_nonzero: no float copy of S
        self.last_spikes = S
        return S.reshape((T,) + x.shape[1:])

    def membrane(self):
        """Membrane potentials of the last forward, (T, B, ...): the potential compared with theta
        at step t (U[t]; with ``reset_delay=False`` V[t], before that step's reset). A view of a
        work buffer that the next forward overwrites."""
        shape, U = self.cache
        return U.reshape((U.shape[0],) + shape[1:])

    def backward(self, dout):
        shape, U = self.cache
        T = U.shape[0]
        dI = self._work_array("dI", (shape[0], U.shape[1]), U.dtype)  # (TI, N)
        cast = U.dtype.type
        if isinstance(dout, ActiveGrad):  # dS at the listed entries only (sparse backward)
            act_n, act_g, act_ptr = self.active
            klif.lif_backward_active(dout.values, act_n, act_g, act_ptr, cast(self.beta), cast(self.threshold),
                                     self.reset == "zero", U, dI)
            return dI.reshape(shape)
        dS = np.ascontiguousarray(dout.reshape(T, -1), dtype=U.dtype)  # (T, N)
        if not self.reset_delay:
            klif.lif_backward_nodelay(dS, U, cast(self.beta), cast(self.threshold), self.reset == "zero",
                                      self.surrogate.code, cast(self.surrogate.k), dI)
        else:
            klif.lif_backward(dS, U, cast(self.beta), cast(self.threshold), self.reset == "zero",
                              self.surrogate.code, cast(self.surrogate.k), cast(self.bound), dI)
        return dI.reshape(shape)
