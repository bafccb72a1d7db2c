"""Spiking neurons: layers that carry a state through time and emit spikes.

Every neuron subclasses :class:`Neuron` (itself a :class:`mininsnn.layers.Layer`): it takes a
current of shape ``(TI, B, ...)`` (``TI`` = T, or 1 for a static input that stands for T identical
steps), loops over time in a Numba kernel (kernels/lif.py, kernels/neuron.py) and returns ``(T, B, ...)``
spikes, uint8 0/1, or in smooth-twin mode (``smooth=True``) the float ``g(M - theta)`` of the
surrogate's primitive g (for gradient checks; docs/bptt.md). :meth:`Neuron.membrane` returns the
potential M compared with theta at every step of the last forward.
"""

import numpy as np

from mininsnn import rules
from mininsnn import surrogate as sg
from mininsnn.config import DEFAULTS
from mininsnn.kernels import lif as klif
from mininsnn.kernels import neuron as kn
from mininsnn.layers import SPIKE_DTYPE, ActiveGrad, Layer

__all__ = ["Neuron", "Leaky", "Synaptic", "PARAM_RULES"]

# Every neuron parameter: its row in kernels/neuron.py's ``par`` and its rule (mininsnn.rules).
# Each may be a scalar or an array that broadcasts to the per-sample neuron shape, e.g. (N,),
# (C, H, W) or per channel (C, 1, 1). alpha and beta of a learnable layer are clipped to [0, 1]
# in the forward (the gradient is 0 where the stored value lies outside).
_FINITE = rules.number()
PARAM_RULES = {
    "alpha": (kn.ALPHA, rules.number(0, 1)),
    "syn_gain": (kn.SYN_GAIN, _FINITE),
    "beta": (kn.BETA, rules.BETA),
    "gain": (kn.GAIN, _FINITE),
    "drive": (kn.DRIVE, _FINITE),
    "threshold": (kn.THETA, rules.THRESHOLD),
    "v_reset": (kn.V_RESET, _FINITE),
}
CLIPPED = ("alpha", "beta")


def _check_value(owner, key, v):
    """A neuron parameter: a float (scalar) or a float64 array, every value within its rule."""
    if isinstance(v, (list, tuple)):
        v = np.asarray(v)
    a = rules.check(PARAM_RULES[key][1], owner, key, v, arrays=True)
    if isinstance(a, np.ndarray) and a.size == 0:
        raise ValueError(f"{owner}: expected {key} to be a number or a non-empty array, got an empty array")
    return float(a) if np.ndim(a) == 0 else a


def _sum_to(g, shape):
    """Sum g (..., *per) down to a parameter's shape, which broadcasts to per (reverse of broadcast)."""
    g = g.sum(axis=tuple(range(g.ndim - len(shape)))) if g.ndim > len(shape) else g
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    return (g.sum(axis=axes, keepdims=True) if axes else g).reshape(shape)


class Neuron(Layer):
    """Base of every spiking neuron: the network finds its neurons by this class (firing rates,
    recorded spikes and membranes, smooth-twin mode). It holds the per-neuron parameters
    (:data:`PARAM_RULES`), the learnable ones in ``params`` (Adam updates them, the state dict
    saves them as ``<layer>.beta`` ...), and runs the general kernels of kernels/neuron.py."""

    general = True  # runs kernels/neuron.py (or kernels/recurrent.py); a reference Leaky sets False

    def __init__(self):
        super().__init__()
        self.smooth = False
        self.firing_rate = float("nan")
        self.last_spikes = None
        self._values = {}

    def _setup(self, owner, values, learn, reset, reset_delay, surrogate, smooth, dtype):
        """Validate and keep the parameters (``values``: key -> scalar or array), make the keys in
        ``learn`` learnable (arrays of ``dtype`` in params), and the common options."""
        rules.check_reset(owner, reset)
        rules.check_flag(owner, "reset_delay", reset_delay)
        for key, v in values.items():
            self._values[key] = _check_value(owner, key, v)
        for key in learn:
            if rules.check_flag(owner, f"learn_{key}", learn[key]):
                self._add_param(key, np.array(self._values.pop(key), dtype=dtype))
        self.reset, self.reset_delay = reset, bool(reset_delay)
        self.surrogate = sg.make_surrogate(DEFAULTS["surrogate"] if surrogate is None else surrogate,
                                           DEFAULTS["slope"])
        self.smooth = bool(smooth)

    def value(self, key):
        """The parameter's current value: the learnable array, or the float / array given."""
        return self.params[key] if key in self.params else self._values[key]

    def _repr_values(self, keys, defaults):
        out = []
        for key in keys:
            v = self.value(key)
            if key in defaults and key not in self.params and np.ndim(v) == 0 and v == defaults[key]:
                continue
            shown = f"{float(v)}" if np.ndim(v) == 0 else f"<array {np.shape(v)}>"
            out.append(f"{key}={shown}" + (" (learned)" if key in self.params else ""))
        return ", ".join(out)

    def _check_sequence(self, x, ctx):
        """x: (TI, B, ...) float, finite, TI in {1, ctx.T}."""
        if self.check_inputs and (not isinstance(x, np.ndarray) or x.ndim < 2):
            raise ValueError(f"{self.name}: expected input of shape (T, B, ...), got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        self._check_input(x, x.shape[2:])
        if x.shape[0] not in (1, ctx.T):
            raise ValueError(f"{self.name}: expected {ctx.T} time steps (or 1 for a static input), "
                             f"got {x.shape[0]}")

    def _build_par(self, B, per, dtype):
        """par (NPAR, B * prod(per)): each parameter broadcast over the batch and the neurons; or
        (NPAR, 1) when every parameter is one number (the kernels then read one column for all)."""
        self._check_params()
        M = int(np.prod(per, dtype=np.int64))
        values = {key: self.value(key) if key in self.params or key in self._values else _DEFAULTS[key]
                  for key in PARAM_RULES}
        for key, v in values.items():
            if np.ndim(v) and _broadcast(np.shape(v), per) != tuple(per):
                raise ValueError(f"{self.name}: {key} of shape {np.shape(v)} does not broadcast to the "
                                 f"neuron shape {tuple(per)}")
        one = all(np.size(v) == 1 for v in values.values())  # one column serves every neuron
        par = self._work_array("par", (kn.NPAR, 1 if one else B * M), dtype)  # (NPAR, N) or (NPAR, 1)
        view = par.reshape((kn.NPAR, 1) if one else (kn.NPAR, B) + tuple(per))
        for key, (row, _) in PARAM_RULES.items():
            v = np.reshape(values[key], ()) if one else values[key]
            view[row] = np.clip(v, 0, 1) if key in CLIPPED else v
        return par

    def _mode(self, dtype, cuba):
        """The kernels' mode tuple (zero_reset, delay, cuba, smooth, sg_code, sg_k)."""
        return (self.reset == "zero", self.reset_delay, bool(cuba), self.smooth, int(self.surrogate.code),
                dtype.type(self.surrogate.k))

    def _forward_general(self, x, ctx, cuba):
        """Run kernels/neuron.py's neuron_forward; cache what its backward reads."""
        T, (TI, B), per = ctx.T, x.shape[:2], x.shape[2:]
        X = x.reshape(TI, -1)  # (TI, N)
        N = X.shape[1]
        par = self._build_par(B, per, x.dtype)
        M = self._work_array("U", (T, N), x.dtype)  # (T, N) potential compared with theta
        S = self._work_array("S", (T, N), x.dtype if self.smooth else SPIKE_DTYPE)  # (T, N)
        C = self._work_array("C", (T, N) if cuba else (0, 0), x.dtype)  # (T, N) current I[t]
        mode = self._mode(x.dtype, cuba)
        kn.neuron_forward(X, T, par, mode, M, S, C)
        self.cache = (x.shape, M, X, par, C, mode)
        self._count_spikes(S, M, par)
        return S.reshape((T,) + x.shape[1:])

    def _count_spikes(self, S, M, par):
        fired = S if not self.smooth else M > par[kn.THETA]
        self.firing_rate = np.count_nonzero(fired) / max(fired.size, 1)
        self.last_spikes = S

    def _backward_general(self, dout):
        shape, M, X, par, C, mode = self.cache
        T, N = M.shape
        dS = np.ascontiguousarray(dout.reshape(T, N), dtype=M.dtype)  # (T, N)
        dX = self._work_array("dI", (shape[0], N), M.dtype)  # (TI, N)
        dpar = np.zeros((kn.NPAR, N) if self.params else (0, N), M.dtype)  # (NPAR, N) per-neuron sums over t
        kn.neuron_backward(dS, X, par, mode, M, C, dX, dpar)
        self._add_param_grads(dpar, shape[1:])
        return dX.reshape(shape)

    def _add_param_grads(self, dpar, batch_shape):
        """grads[key] += dpar[row] summed over the batch and the neurons that share the value;
        0 where a clipped parameter lies outside [0, 1] (the clip's derivative)."""
        for key, p in self.params.items():
            if key not in PARAM_RULES:
                continue
            g = _sum_to(dpar[PARAM_RULES[key][0]].reshape(batch_shape), p.shape)
            if key in CLIPPED:
                g = g * ((p >= 0) & (p <= 1))
            self.grads[key] += g

    def membrane(self):
        """Membrane potentials of the last forward, (T, B, ...): the potential compared with theta
        at step t (U[t]; with ``reset_delay=False`` V[t], before that step's reset). A view of a
        work buffer that the next forward overwrites."""
        shape, M = self.cache[0], self.cache[1]
        return M.reshape((M.shape[0],) + shape[1:])


_DEFAULTS = {"alpha": 0.0, "syn_gain": 1.0, "beta": 0.0, "gain": 1.0, "drive": 0.0, "threshold": 1.0, "v_reset": 0.0}
_LIF_DEFAULTS = {"gain": 1.0, "drive": 0.0, "v_reset": 0.0, "syn_gain": 1.0}


def _broadcast(a, b):
    try:
        return np.broadcast_shapes(a, b)
    except ValueError:
        return None


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

    In general (NIR's LIF, forward Euler: beta = 1 - dt/tau, gain = r dt/tau, drive = v_leak dt/tau)
    every parameter may be a scalar or an array that broadcasts to the per-sample neuron shape,
    e.g. (N,), (C, H, W) or per channel (C, 1, 1), and (kernels/neuron.py, S detached in resets)

        V[t] = beta U[t-1] + gain I[t] + drive     S[t] = H(V[t] - theta)
        U[t] = V[t] (1 - S[t]) + v_reset S[t]  ("zero")     U[t] = V[t] - theta S[t]  ("subtract")

    with ``reset_delay=False``; with the delayed reset R[t] = H(U[t-1] - theta) and
    U[t] = beta U[t-1] + gain I[t] + drive - theta R[t] ("subtract") or
    (beta U[t-1] + gain I[t] + drive) (1 - R[t]) + v_reset R[t] ("zero"), S[t] = H(U[t] - theta).
    Scalar beta and threshold with gain 1, drive 0, v_reset 0 run the kernels of kernels/lif.py.

    ``learn_beta`` / ``learn_threshold``: the parameter (of the shape given: a scalar for the
    layer, an array per channel or neuron) joins ``params`` as ``beta`` / ``threshold`` in
    ``dtype``, with its gradient in ``grads``. A learned beta is clipped to [0, 1] in the forward;
    its gradient is 0 where the stored value lies outside. The threshold is not clipped.
    """

    def __init__(self, beta, threshold=DEFAULTS["threshold"], surrogate=None, reset=DEFAULTS["reset"],
                 smooth=False, reset_delay=DEFAULTS["reset_delay"], sparse_grad=None, *, gain=1.0,
                 drive=0.0, v_reset=0.0, learn_beta=False, learn_threshold=False,
                 dtype=DEFAULTS["dtype"]):
        super().__init__()
        values = dict(beta=beta, threshold=threshold, gain=gain, drive=drive, v_reset=v_reset)
        self._setup("Leaky", values, dict(beta=learn_beta, threshold=learn_threshold), reset, reset_delay,
                    surrogate, smooth, dtype)
        sparse_grad = rules.check_sparse_grad("Leaky", sparse_grad)
        if sparse_grad is not None and not reset_delay:
            raise ValueError("Leaky: sparse_grad needs the delayed reset (reset_delay=True)")
        # the kernels of kernels/lif.py (the reference neuron, bit for bit as before) serve scalar
        # beta and threshold with gain 1, drive 0, v_reset 0, nothing learned; anything else runs
        # the general kernels of kernels/neuron.py
        self.general = bool(self.params) or any(np.ndim(v) for v in self._values.values()) \
            or any(self._values[k] != _LIF_DEFAULTS[k] for k in ("gain", "drive", "v_reset"))
        if sparse_grad is not None and self.general:
            raise ValueError("Leaky: sparse_grad needs scalar beta and threshold, gain 1, drive 0, v_reset 0 "
                             "and nothing learned")
        # B of the truncated surrogate; inf = the exact surrogate (sparse_grad None)
        self.bound = float("inf") if sparse_grad is None else float(sparse_grad)
        # list the entries with |U - theta| <= B in training (Network sets it when a Conv2d follows):
        # that layer then computes dL/dS at those entries only, and backward reads nothing else
        self.list_active = False
        self.active = None  # (act_n, act_g, act_ptr) of the last forward, kernels/lif.py's layout

    beta = property(lambda self: self.value("beta"), doc="beta: a float, an array, or the learned array")
    threshold = property(lambda self: self.value("threshold"), doc="theta, as beta")

    def extra_repr(self):
        if not self.general:
            return (f"beta={self.beta}, threshold={self.threshold}, surrogate={self.surrogate}, reset={self.reset!r}"
                    + ("" if self.reset_delay else ", reset_delay=False")
                    + (f", sparse_grad={self.bound}" if np.isfinite(self.bound) else ""))
        return (self._repr_values(("beta", "threshold", "gain", "drive", "v_reset"), _LIF_DEFAULTS)
                + f", surrogate={self.surrogate}, reset={self.reset!r}"
                + ("" if self.reset_delay else ", reset_delay=False"))

    def forward(self, x, ctx):
        self._check_sequence(x, ctx)
        if self.general:
            return self._forward_general(x, ctx, cuba=False)
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

    def backward(self, dout):
        if self.general:
            return self._backward_general(dout)
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


class Synaptic(Neuron):
    """Current-based LIF (snnTorch ``Synaptic``, NIR's CubaLIF): a synaptic current feeds the membrane.

        I[t] = alpha I[t-1] + syn_gain X[t]            (the current is never reset; I[-1] = 0)
        V[t] = beta U[t-1] + gain I[t] + drive          then spike and reset as :class:`Leaky`

    with both resets (``"subtract"``, ``"zero"`` to ``v_reset``) and both reset timings
    (``reset_delay``; snnTorch's default is delayed, NIR's CubaLIF resets in the step that fires).
    Every parameter may be a scalar or an array broadcasting to the neuron shape; ``learn_alpha``,
    ``learn_beta``, ``learn_threshold`` make them parameters (alpha and beta clipped to [0, 1] in
    the forward, as in Leaky). NIR's CubaLIF with forward Euler at step dt: alpha = 1 - dt/tau_syn,
    syn_gain = dt/tau_syn (times w_in), beta = 1 - dt/tau_mem, gain = r dt/tau_mem,
    drive = v_leak dt/tau_mem. :meth:`membrane` and :meth:`current` return M[t] and I[t] of the
    last forward. Kernels: kernels/neuron.py (``cuba``).
    """

    def __init__(self, alpha, beta, threshold=DEFAULTS["threshold"], surrogate=None,
                 reset=DEFAULTS["reset"], smooth=False, reset_delay=DEFAULTS["reset_delay"], *,
                 syn_gain=1.0, gain=1.0, drive=0.0, v_reset=0.0, learn_alpha=False,
                 learn_beta=False, learn_threshold=False, dtype=DEFAULTS["dtype"]):
        super().__init__()
        values = dict(alpha=alpha, syn_gain=syn_gain, beta=beta, threshold=threshold, gain=gain, drive=drive,
                      v_reset=v_reset)
        self._setup("Synaptic", values, dict(alpha=learn_alpha, beta=learn_beta, threshold=learn_threshold),
                    reset, reset_delay, surrogate, smooth, dtype)

    alpha = property(lambda self: self.value("alpha"), doc="alpha: a float, an array, or the learned array")
    beta = property(lambda self: self.value("beta"), doc="beta, as alpha")
    threshold = property(lambda self: self.value("threshold"), doc="theta, as alpha")

    def extra_repr(self):
        return (self._repr_values(("alpha", "beta", "threshold", "syn_gain", "gain", "drive", "v_reset"),
                                  _LIF_DEFAULTS)
                + f", surrogate={self.surrogate}, reset={self.reset!r}"
                + ("" if self.reset_delay else ", reset_delay=False"))

    def forward(self, x, ctx):
        self._check_sequence(x, ctx)
        return self._forward_general(x, ctx, cuba=True)

    def current(self):
        """The synaptic current I[t] of the last forward, (T, B, ...); a view the next forward overwrites."""
        shape, C = self.cache[0], self.cache[4]
        return C.reshape((C.shape[0],) + shape[1:])

    def backward(self, dout):
        return self._backward_general(dout)
