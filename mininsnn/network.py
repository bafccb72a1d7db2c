"""A feed-forward spiking network run over whole time-major sequences.

``forward`` runs each layer over all time steps at once, in order; ``backward`` runs them in
reverse. A static input ``(B, C, H, W)`` enters as a length-1 sequence that stands for ``T``
identical steps, so the layers before the first neuron run once, not T times.
"""

import numpy as np

from mininsnn.layers import FLOAT_DTYPES, AvgPool2d, Context, Conv2d
from mininsnn.neurons import Leaky, Neuron

__all__ = ["Network", "save_state_dict", "load_state_dict_file"]


class Network:
    """Sequential network of named layers.

    layers: list of (name, Layer);  input_shape: per-sample shape, e.g. (1, 28, 28).
    fuse: fold "Conv2d (stride 1) -> AvgPool2d(k, stride k)" into one strided conv (same maths, less work).
    """

    def __init__(self, layers, input_shape, dtype=np.float32, seed=None, fuse=True):
        self.layers = []
        names = set()
        for name, layer in layers:
            if name in names:
                raise ValueError(f"Network: duplicate layer name {name!r}")
            names.add(name)
            layer.name = name
            self.layers.append(layer)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.dtype = np.dtype(dtype)
        if self.dtype not in FLOAT_DTYPES:
            raise ValueError(f"Network: expected dtype float32 or float64, got {self.dtype}")
        self.rng = np.random.default_rng(seed)  # Dropout masks
        self.training = True
        self.recorded = {}
        for layer in self.layers[1:]:
            layer.check_inputs = False  # the network checks its input; internal arrays are ours
        # the first layer's input is data: no gradient needed for it
        if hasattr(self.layers[0], "needs_input_grad"):
            self.layers[0].needs_input_grad = False
        self.set_fusion(fuse)
        self._link_sparse()

    # -- structure ---------------------------------------------------------------------------
    def set_fusion(self, fuse):
        """Turn conv + average-pool fusion on or off (results agree to rounding)."""
        for layer in self.layers:
            if isinstance(layer, Conv2d):
                layer.fused_pool = None
            if isinstance(layer, AvgPool2d):
                layer.fused = False
        if not fuse:
            return
        for a, b in zip(self.layers, self.layers[1:]):
            if isinstance(a, Conv2d) and isinstance(b, AvgPool2d) and a.stride == 1 and b.stride == b.k:
                a.fused_pool = b.k
                b.fused = True

    def _link_sparse(self):
        """A Leaky with a sparse backward (finite ``bound``) followed by a Conv2d: the Leaky lists
        its active entries and the conv computes its input gradient only there (layers.ActiveGrad)."""
        for a, b in zip(self.layers, self.layers[1:]):
            if isinstance(a, Leaky) and isinstance(b, Conv2d) and np.isfinite(a.bound):
                a.list_active, b.grad_at = True, a

    def set_smooth(self, smooth=True):
        """Smooth-twin mode: every neuron passes g(U - theta) on instead of a spike (gradient checks)."""
        for layer in self.neurons():
            layer.smooth = bool(smooth)

    def neurons(self):
        return [layer for layer in self.layers if isinstance(layer, Neuron)]

    def __repr__(self):
        lines = [f"Network(input_shape={self.input_shape}, dtype={self.dtype.name})"]
        lines += [f"  ({layer.name}): {layer!r}" for layer in self.layers]
        return "\n".join(lines)

    # -- parameters and state ---------------------------------------------------------------
    @property
    def params(self):
        """name -> live parameter array, e.g. 'conv1.weight' (out, in, kh, kw)."""
        return {f"{l.name}.{k}": v for l in self.layers for k, v in l.params.items()}

    @property
    def grads(self):
        return {f"{l.name}.{k}": v for l in self.layers for k, v in l.grads.items()}

    @property
    def buffers(self):
        return {f"{l.name}.{k}": v for l in self.layers for k, v in l.buffers.items()}

    def zero_grad(self):
        for layer in self.layers:
            layer.zero_grad()

    def state_dict(self, num_batches_tracked=True):
        """Copies of parameters and buffers, named and laid out as the reference PyTorch model.
        ``num_batches_tracked=False`` leaves out BatchNorm's step counters (some PyTorch state
        dicts lack them; mininsnn does not use them)."""
        state = {k: v.copy() for k, v in self.params.items()}
        state.update({k: v.copy() for k, v in self.buffers.items()
                      if num_batches_tracked or not k.endswith(".num_batches_tracked")})
        return state

    def load_state_dict(self, state, strict=True):
        """Copy arrays (NumPy arrays, or anything np.asarray takes, e.g. CPU torch tensors) into
        the live parameters and buffers: same names, same shapes. ``strict`` refuses missing and
        unexpected names, except BatchNorm's ``num_batches_tracked``, which may be absent (it is
        then left as it is)."""
        own = {**self.params, **self.buffers}
        missing = sorted(k for k in set(own) - set(state) if not k.endswith(".num_batches_tracked"))
        unexpected = sorted(set(state) - set(own))
        if strict and (missing or unexpected):
            raise ValueError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for k, dst in own.items():
            if k not in state:
                continue
            src = np.asarray(state[k])
            if src.shape != dst.shape:
                raise ValueError(f"load_state_dict: '{k}' expected shape {dst.shape}, got {src.shape}")
            if not np.isfinite(src).all():
                raise ValueError(f"load_state_dict: '{k}' contains NaN or inf")
            dst[...] = src

    def train(self, mode=True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def firing_rates(self):
        """Mean spike rate of every neuron layer in the last forward."""
        return {layer.name: layer.firing_rate for layer in self.neurons()}

    # -- forward / backward -------------------------------------------------------------------
    def _check_input(self, x, num_steps):
        if not isinstance(x, np.ndarray):
            raise ValueError(f"Network: expected a numpy array input, got {type(x).__name__}")
        per = self.input_shape
        if x.ndim == len(per) + 1 and x.shape[1:] == per:
            static = True
        elif x.ndim == len(per) + 2 and x.shape[2:] == per:
            static = False
        else:
            shapes = ", ".join(str(d) for d in per)
            raise ValueError(f"Network: expected input of shape (B, {shapes}) (static, fed at every step) or "
                             f"(T, B, {shapes}) (one frame per step), got {x.shape}")
        if x.shape[1 if not static else 0] == 0:
            raise ValueError(f"Network: empty batch in input of shape {x.shape}")
        if x.dtype != self.dtype:
            raise ValueError(f"Network: expected input dtype {self.dtype.name} (the network's dtype), got "
                             f"{x.dtype}; convert with x.astype(np.{self.dtype.name})")
        if not np.isfinite(x).all():
            raise ValueError("Network: input contains NaN or inf")
        if static:
            if num_steps is None:
                raise ValueError("Network: a static input (B, C, H, W) needs num_steps")
            T = num_steps
        else:
            T = x.shape[0]
            if num_steps is not None and num_steps != T:
                raise ValueError(f"Network: num_steps={num_steps} but the input has {T} time steps")
        if isinstance(T, (bool, np.bool_)) or not isinstance(T, (int, np.integer)) or T < 1:
            raise ValueError(f"Network: expected num_steps to be an integer >= 1, got {T!r}")
        return static, int(T)

    def forward(self, x, num_steps=None, record=False):
        """x: (B, *input_shape) static or (T, B, *input_shape) per step. Returns the last layer's
        output, (T, B, ...) spikes for a network ending in a neuron.

        ``record`` keeps copies of what every neuron layer produced, in ``self.recorded``:
        ``"spikes"`` (or True) -> ``recorded["spikes"][name]``, (T, B, ...) uint8 0/1;
        ``"membrane"`` -> ``recorded["membrane"][name]``, (T, B, ...) membrane potentials U[t]
        in the network's dtype; ``("spikes", "membrane")`` both.
        """
        kinds = _record_kinds(record)
        static, T = self._check_input(x, num_steps)
        h = x[None] if static else x
        ctx = Context(T=T, training=self.training, rng=self.rng)
        self.recorded = {kind: {} for kind in kinds}
        for layer in self.layers:
            h = layer.forward(h, ctx)
            if isinstance(layer, Neuron):
                if "spikes" in kinds:
                    self.recorded["spikes"][layer.name] = h.copy()
                if "membrane" in kinds:
                    self.recorded["membrane"][layer.name] = layer.membrane().copy()
        if h.shape[0] != T:  # a network without neurons on a static input: expand explicitly
            h = np.broadcast_to(h, (T,) + h.shape[1:])
        self._out_shape = h.shape
        return h.copy()  # layers reuse their buffers at the next call; the caller's array is its own

    def backward(self, dout):
        """dout: dL/d(output), (T, B, ...). Accumulates parameter gradients into ``grads``.
        A ``dout`` holding NaN or inf is refused (ValueError) before any gradient changes: it
        would reach every gradient and, through the optimiser, every weight."""
        if getattr(self, "_out_shape", None) is None:
            raise RuntimeError("Network.backward: call forward first")
        d = np.asarray(dout)
        if d.shape != self._out_shape:
            raise ValueError(f"Network.backward: expected a gradient of shape {self._out_shape}, got {d.shape}")
        if not np.issubdtype(d.dtype, np.floating):
            raise ValueError(f"Network.backward: expected a float gradient, got dtype {d.dtype}")
        d = d.astype(self.dtype, copy=False)
        if not np.isfinite(d).all():                 # also a float64 value beyond float32's range
            raise ValueError(f"Network.backward: the gradient dL/d(output) holds NaN or inf (in "
                             f"{self.dtype.name}); no gradient was changed (check the loss)")
        for layer in reversed(self.layers):
            d = layer.backward(d)
            if d is None:
                break
        return d


def _record_kinds(record) -> tuple:
    """The kinds ``Network.forward`` records: () for False/None, ("spikes",) for True."""
    if record is None or record is False:
        return ()
    if record is True:
        return ("spikes",)
    kinds = (record,) if isinstance(record, str) else tuple(record)
    bad = [k for k in kinds if k not in ("spikes", "membrane")]
    if bad:
        raise ValueError(f"Network.forward: record must be True, 'spikes', 'membrane' or both, "
                         f"got {record!r}")
    return kinds


def save_state_dict(state, path):
    """Save a state dict (name -> array) as .npz; the names follow the PyTorch model."""
    np.savez(path, **{k: np.asarray(v) for k, v in state.items()})


def load_state_dict_file(path):
    """Load a state dict saved by :func:`save_state_dict` (or ``np.savez`` of a PyTorch state dict)."""
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
