"""What every layer shares: the :class:`Layer` base (parameters, gradients, buffers, work arrays,
input checks), the pass's :class:`Context`, the sparse :class:`ActiveGrad`, the float and spike
dtypes and PyTorch's initialisation. The layers themselves: mininsnn.layers.
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["FLOAT_DTYPES", "GRAD_SLICES", "SPIKE_DTYPE", "ActiveGrad", "Context", "Layer",
           "uniform_init"]

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

    def _check_ndim(self, x, want, ndim=5, at_least=False):
        """x must be an ndarray of ``ndim`` dimensions (at least, with ``at_least``); else
        "<name>: expected input of shape <want>, got <its shape>"."""
        if self.check_inputs and (not isinstance(x, np.ndarray)
                                  or (x.ndim < ndim if at_least else x.ndim != ndim)):
            raise ValueError(f"{self.name}: expected input of shape {want}, got "
                             f"{getattr(x, 'shape', type(x).__name__)}")

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


def uniform_init(rng, shape, fan_in, dtype):
    """PyTorch's default init for conv/linear weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(dtype)
