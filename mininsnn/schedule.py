"""Learning-rate schedules, stepped per batch: batch k (0-based, counted over the whole run) trains
with lr(k).

The pure schedules are closed-form functions of k (no hidden counters, so resuming is trivial):

    cosine(k)         = eta_min + (lr0 - eta_min) * (1 + cos(pi * k / T_max)) / 2
                        never reset: past T_max it climbs back, period 2*T_max (the reference's
                        CosineAnnealingLR stepped every batch for more than T_max batches)
    warm_restarts(k)  = eta_min + (lr0 - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2
                        SGDR, hard restarts: cycle i lasts T_i = T_0 * T_mult**i batches and
                        T_cur = k - (start of the cycle containing k)  (CosineAnnealingWarmRestarts)
    constant(k)       = lr0

The paper's baseline "halve the lr whenever an epoch's mean training loss rises" depends on the
losses, so it is a small class with explicit state (current lr, previous epoch's mean loss).

Every schedule object has the same interface: ``lr(k)``, ``end_epoch(mean_loss)`` (a no-op for the
pure ones), ``state_dict()`` and ``load_state_dict(d)``. Build them with :func:`make_schedule`.
"""
from __future__ import annotations

import math
import numbers
import operator

__all__ = ["cosine", "cosine_warm_restarts", "constant", "Schedule", "Cosine", "WarmRestarts",
           "Constant", "HalveOnRise", "make_schedule", "SCHEDULES"]


def _check_k(k) -> int:
    try:
        if isinstance(k, bool):
            raise TypeError
        k = operator.index(k)
    except TypeError:
        raise ValueError(f"batch index must be an integer, got {k!r}") from None
    if k < 0:
        raise ValueError(f"batch index must be >= 0, got {k}")
    return k


def _check_rate(name: str, x) -> float:
    x = float(x)
    if not math.isfinite(x) or x < 0.0:
        raise ValueError(f"{name} must be finite and >= 0, got {x!r}")
    return x


def _check_period(name: str, x, minimum: int = 1) -> int:
    if (isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x)
            or x != int(x) or x < minimum):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {x!r}")
    return int(x)


def cosine(k: int, lr0: float, T_max: int, eta_min: float = 0.0) -> float:
    """Cosine annealing that keeps following the cosine after T_max (period 2*T_max, no reset)."""
    k = _check_k(k)
    T_max = _check_period("T_max", T_max)
    return eta_min + (lr0 - eta_min) * (1.0 + math.cos(math.pi * k / T_max)) / 2.0


def _sgdr_cycle(k: int, T_0: int, T_mult: int) -> tuple[int, int]:
    """(T_cur, T_i) for batch k: position inside the current cycle and that cycle's length.

    Integer arithmetic only, so the restart boundaries are exact. Cycle i starts at
    T_0 * (T_mult**i - 1) / (T_mult - 1) (or T_0 * i when T_mult == 1).
    """
    if T_mult == 1:
        return k % T_0, T_0
    start, T_i = 0, T_0
    while k >= start + T_i:               # O(log k) cycles
        start += T_i
        T_i *= T_mult
    return k - start, T_i


def cosine_warm_restarts(k: int, lr0: float, T_0: int, T_mult: int = 1,
                         eta_min: float = 0.0) -> float:
    """SGDR with hard restarts: lr jumps back to lr0 at the first batch of every cycle."""
    k = _check_k(k)
    T_cur, T_i = _sgdr_cycle(k, _check_period("T_0", T_0), _check_period("T_mult", T_mult))
    return eta_min + (lr0 - eta_min) * (1.0 + math.cos(math.pi * T_cur / T_i)) / 2.0


def constant(k: int, lr0: float) -> float:
    """The same lr at every batch."""
    _check_k(k)
    return lr0


class Schedule:
    """Common interface. Subclasses set ``name`` and ``params`` (their documented constants)."""

    name = "schedule"

    def __init__(self, lr0: float):
        self.lr0 = _check_rate("lr0", lr0)
        if self.lr0 == 0.0:
            raise ValueError("lr0 must be > 0")

    def lr(self, k: int) -> float:
        raise NotImplementedError

    def end_epoch(self, mean_loss: float) -> None:
        """Called once after each epoch with its mean training loss. Pure schedules ignore it."""

    def config(self) -> dict:
        return {"name": self.name, "lr0": self.lr0}

    def state_dict(self) -> dict:
        return self.config()

    def load_state_dict(self, state: dict) -> None:
        """Pure schedules have no state; check that the saved one is the same schedule."""
        mine = self.config()
        theirs = {k: state.get(k) for k in mine}
        if theirs != mine:
            raise ValueError(f"saved schedule {dict(state)!r} differs from this one {mine!r}")


class Cosine(Schedule):
    name = "cosine"

    def __init__(self, lr0: float, T_max: int, eta_min: float = 0.0):
        super().__init__(lr0)
        self.T_max = _check_period("T_max", T_max)
        self.eta_min = _check_rate("eta_min", eta_min)

    def lr(self, k: int) -> float:
        return cosine(k, self.lr0, self.T_max, self.eta_min)

    def config(self) -> dict:
        return {**super().config(), "T_max": self.T_max, "eta_min": self.eta_min}


class WarmRestarts(Schedule):
    name = "warm_restarts"

    def __init__(self, lr0: float, T_0: int, T_mult: int = 1, eta_min: float = 0.0):
        super().__init__(lr0)
        self.T_0 = _check_period("T_0", T_0)
        self.T_mult = _check_period("T_mult", T_mult)
        self.eta_min = _check_rate("eta_min", eta_min)

    def lr(self, k: int) -> float:
        return cosine_warm_restarts(k, self.lr0, self.T_0, self.T_mult, self.eta_min)

    def config(self) -> dict:
        return {**super().config(), "T_0": self.T_0, "T_mult": self.T_mult,
                "eta_min": self.eta_min}


class Constant(Schedule):
    name = "constant"

    def lr(self, k: int) -> float:
        return constant(k, self.lr0)


class HalveOnRise(Schedule):
    """lr starts at lr0 and is multiplied by ``factor`` (0.5) after every epoch whose mean
    training loss is higher than the previous epoch's. State: ``current_lr``, ``prev_loss``
    (None before the first epoch ends). Within an epoch the lr is constant: lr(k) = current_lr.
    """

    name = "halve_on_rise"

    def __init__(self, lr0: float, factor: float = 0.5):
        super().__init__(lr0)
        factor = float(factor)
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must lie in (0, 1), got {factor!r}")
        self.factor = factor
        self.current_lr = self.lr0
        self.prev_loss: float | None = None

    def lr(self, k: int) -> float:
        _check_k(k)
        return self.current_lr

    lr_at = lr

    def end_epoch(self, mean_loss: float) -> None:
        mean_loss = float(mean_loss)
        if self.prev_loss is not None and mean_loss > self.prev_loss:
            self.current_lr *= self.factor
        self.prev_loss = mean_loss

    def config(self) -> dict:
        return {**super().config(), "factor": self.factor}

    def state_dict(self) -> dict:
        return {**self.config(), "current_lr": self.current_lr,
                "prev_loss": self.prev_loss}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.current_lr = _check_rate("current_lr", state["current_lr"])
        prev = state["prev_loss"]
        self.prev_loss = None if prev is None else float(prev)


SCHEDULES = {"cosine": Cosine, "warm_restarts": WarmRestarts, "constant": Constant,
             "halve_on_rise": HalveOnRise}


def make_schedule(name: str, lr0: float, **kw) -> Schedule:
    """Build a schedule by name: "cosine" (T_max, eta_min), "warm_restarts" (T_0, T_mult,
    eta_min), "constant", "halve_on_rise" (factor). Unknown names or keywords -> ValueError."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    try:
        return SCHEDULES[name](lr0, **kw)
    except TypeError as e:
        raise ValueError(f"bad arguments for schedule {name!r}: {e}") from None
