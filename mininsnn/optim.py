"""Adam, global gradient-norm clipping and weight clipping, with PyTorch semantics.

The parameters are the network's live arrays (``net.params``): every function here updates them
IN PLACE and keeps their dtype (float32 in training, float64 in tests). Nothing is reallocated, so
the network sees the new values without being told.

Adam (Kingma & Ba 2015) exactly as ``torch.optim.Adam`` computes it (single-tensor path), per
parameter p with gradient g at step n = 1, 2, ...:

    g    = g + weight_decay * p                    (L2 penalty added to the gradient, not AdamW)
    m    = beta1 * m + (1 - beta1) * g
    v    = beta2 * v + (1 - beta2) * g * g
    bc1  = 1 - beta1**n ;  bc2 = 1 - beta2**n
    step_size = lr / bc1
    denom     = sqrt(v) / sqrt(bc2) + eps
    p    = p - step_size * m / denom

which is the textbook ``p -= lr * mhat / (sqrt(vhat) + eps)`` with mhat = m/bc1, vhat = v/bc2,
except that eps is added after the bias correction of sqrt(v) (PyTorch's form; the rounding differs
in the last bits from the textbook form, so we keep PyTorch's). Scalars are computed in float64
and cast to the parameter dtype before touching the arrays, as PyTorch does.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["Adam", "clip_grad_norm", "clip_weights", "find_nonfinite"]


def find_nonfinite(arrays: dict) -> str | None:
    """The name of the first floating-point array of ``arrays`` (name -> array) holding NaN or
    inf, or None. (~0.1 ms for the weights, gradients and Adam moments of mnist-4bit, 4 x 36k
    values: benchmarks/bench_checks.py.)"""
    for name, a in arrays.items():
        a = np.asarray(a)
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            return name
    return None


def _check_lr(lr) -> float:
    try:
        lr = float(lr)
    except (TypeError, ValueError):
        raise ValueError(f"learning rate must be a number, got {lr!r}") from None
    if not math.isfinite(lr) or lr < 0.0:
        raise ValueError(f"learning rate must be finite and >= 0, got {lr!r}")
    return lr


def _check_names(expected: dict, given: dict, what: str) -> None:
    """Raise ValueError naming the first parameter that is missing or unknown."""
    missing = [k for k in expected if k not in given]
    unknown = [k for k in given if k not in expected]
    if missing:
        raise ValueError(f"{what}: missing entry for parameter {missing[0]!r}"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if unknown:
        raise ValueError(f"{what}: unknown parameter {unknown[0]!r}"
                         + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))


class Adam:
    """Adam over a dict name -> live parameter array.

    Args:
        params: name -> np.ndarray, updated in place by :meth:`step`.
        lr: learning rate used when :meth:`step` gets no ``lr``.
        betas: (beta1, beta2), each in [0, 1).
        eps: added to the bias-corrected sqrt(v).
        weight_decay: L2 coefficient added to the gradient (PyTorch Adam, not AdamW).

        check_finite: :meth:`step` refuses a gradient holding NaN or inf with a ValueError
            naming the parameter (default), instead of letting it spread into the moments and
            the weights for good; False skips that check (~30 us per step for 36k values).

    State: ``step_count`` (int, steps taken) and per parameter ``exp_avg`` m and ``exp_avg_sq`` v,
    arrays of the parameter's shape and dtype, zero before the first step.
    """

    def __init__(self, params: dict, lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, check_finite: bool = True):
        if not isinstance(params, dict) or not params:
            raise ValueError("Adam needs a non-empty dict name -> parameter array")
        for name, p in params.items():
            if not isinstance(p, np.ndarray) or not np.issubdtype(p.dtype, np.floating):
                raise ValueError(f"parameter {name!r} must be a floating-point np.ndarray")
        beta1, beta2 = (float(b) for b in betas)
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
            raise ValueError(f"betas must lie in [0, 1), got {betas!r}")
        if not (math.isfinite(eps) and eps >= 0.0):
            raise ValueError(f"eps must be finite and >= 0, got {eps!r}")
        if not (math.isfinite(weight_decay) and weight_decay >= 0.0):
            raise ValueError(f"weight_decay must be finite and >= 0, got {weight_decay!r}")
        self.params = params
        self.lr = _check_lr(lr)
        self.betas = (beta1, beta2)
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.check_finite = bool(check_finite)
        self.step_count = 0
        self.exp_avg = {k: np.zeros_like(p) for k, p in params.items()}     # m, shape of p
        self.exp_avg_sq = {k: np.zeros_like(p) for k, p in params.items()}  # v, shape of p

    def _check_grads(self, grads: dict) -> None:
        if not isinstance(grads, dict):
            raise ValueError("grads must be a dict name -> array")
        _check_names(self.params, grads, "grads")
        for name, p in self.params.items():
            g = grads[name]
            if np.shape(g) != p.shape:
                raise ValueError(f"grad of parameter {name!r} has shape {np.shape(g)}, "
                                 f"parameter has shape {p.shape}")
        if self.check_finite:
            bad = find_nonfinite(grads)
            if bad is not None:
                raise ValueError(f"Adam.step: the gradient of parameter {bad!r} holds NaN or "
                                 "inf; nothing was updated (Adam(check_finite=False) lets it "
                                 "through)")

    def step(self, grads: dict, lr: float | None = None) -> None:
        """One Adam update of every parameter, in place. ``lr`` (if given) becomes the current lr."""
        self._check_grads(grads)
        if lr is not None:
            self.lr = _check_lr(lr)
        beta1, beta2 = self.betas
        self.step_count += 1
        n = self.step_count
        bias_correction1 = 1.0 - beta1 ** n
        bias_correction2 = 1.0 - beta2 ** n
        step_size = self.lr / bias_correction1
        bias_correction2_sqrt = math.sqrt(bias_correction2)
        for name, p in self.params.items():
            cast = p.dtype.type
            g = np.asarray(grads[name], dtype=p.dtype)
            m = self.exp_avg[name]
            v = self.exp_avg_sq[name]
            if self.weight_decay != 0.0:
                g = g + cast(self.weight_decay) * p                   # g + wd * p (new array)
            # m = beta1 * m + (1 - beta1) * g
            m *= cast(beta1)
            m += cast(1.0 - beta1) * g
            # v = beta2 * v + (1 - beta2) * g * g
            v *= cast(beta2)
            v += (cast(1.0 - beta2) * g) * g
            # denom = sqrt(v) / sqrt(bc2) + eps
            denom = np.sqrt(v)
            denom /= cast(bias_correction2_sqrt)
            denom += cast(self.eps)
            # p = p - step_size * m / denom
            upd = cast(-step_size) * m
            upd /= denom
            p += upd

    def state_dict(self) -> dict:
        """Plain dict: ints/floats and copies of the moment arrays (per parameter name)."""
        return {
            "step": int(self.step_count),
            "lr": float(self.lr),
            "betas": [float(b) for b in self.betas],
            "eps": float(self.eps),
            "weight_decay": float(self.weight_decay),
            "exp_avg": {k: a.copy() for k, a in self.exp_avg.items()},
            "exp_avg_sq": {k: a.copy() for k, a in self.exp_avg_sq.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` produced (names and shapes must match the parameters)."""
        for key in ("step", "exp_avg", "exp_avg_sq"):
            if key not in state:
                raise ValueError(f"Adam state is missing {key!r}")
        step = int(state["step"])
        if step < 0:
            raise ValueError(f"Adam state has a negative step count {step}")
        new = {}
        for key in ("exp_avg", "exp_avg_sq"):
            _check_names(self.params, state[key], f"Adam state {key}")
            new[key] = {}
            for name, p in self.params.items():
                a = np.asarray(state[key][name])
                if a.shape != p.shape:
                    raise ValueError(f"Adam state {key} of parameter {name!r} has shape "
                                     f"{a.shape}, parameter has shape {p.shape}")
                if not np.isfinite(a).all():
                    raise ValueError(f"Adam state {key} of parameter {name!r} holds NaN or inf")
                new[key][name] = a.astype(p.dtype, copy=True)
        self.step_count = step
        self.exp_avg = new["exp_avg"]
        self.exp_avg_sq = new["exp_avg_sq"]
        if "lr" in state:
            self.lr = _check_lr(state["lr"])
        if "betas" in state:
            self.betas = tuple(float(b) for b in state["betas"])
        if "eps" in state:
            self.eps = float(state["eps"])
        if "weight_decay" in state:
            self.weight_decay = float(state["weight_decay"])


def clip_grad_norm(grads: dict, max_norm: float = 1.0) -> float:
    """Scale all gradients in place so that their global L2 norm is at most ``max_norm``.

        total_norm = sqrt(sum over all grads of sum(g**2))
        coef = max_norm / (total_norm + 1e-6);  if coef < 1: g *= coef   (torch clip_grad_norm_)

    Returns the total norm before clipping (a Python float; inf/nan when a gradient is).
    """
    if not (math.isfinite(max_norm) and max_norm > 0.0):
        raise ValueError(f"max_norm must be finite and > 0, got {max_norm!r}")
    sq = 0.0
    for g in grads.values():
        g64 = np.asarray(g, dtype=np.float64)
        sq += float(np.dot(g64.ravel(), g64.ravel()))
    total_norm = math.sqrt(sq)
    coef = max_norm / (total_norm + 1e-6)
    if coef < 1.0:
        for g in grads.values():
            g *= g.dtype.type(coef)
    return total_norm


def clip_weights(params: dict, lo: float = -1.0, hi: float = 1.0) -> None:
    """Clamp every parameter to [lo, hi] in place (the reference does this BEFORE the Adam step)."""
    if not lo <= hi:
        raise ValueError(f"clip_weights needs lo <= hi, got lo={lo!r}, hi={hi!r}")
    for p in params.values():
        np.clip(p, lo, hi, out=p)
