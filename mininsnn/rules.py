"""Validation rules, each stated once. NumPy only: no Numba, directly or through an import, so that
the settings table (mininsnn.config), the layers and the integer deploy path all check a value
the same way.

A *rule* checks one value: ``rule(v)`` returns the value normalised (an int, a float, a name) or
raises ``ValueError("must be ..., got ...")``. The settings table uses the rules as its checks
(``Setting.check``; ``rule.type`` is what a command-line value is parsed as, ``rule.choices()``
the names of a choice). The rules of the network's settings:

    BETA         a finite number in [0, 1]               membrane leak
    THRESHOLD    a finite number > 0                     firing threshold theta
    RESET        "subtract" or "zero"                    (RESETS)
    BITS         None or an integer in 2..16             weight bits (BITS_RANGE)
    QUANT_GRAD   "ste" or "ste+scale"                    quantizer backward (QUANT_GRADS)
    SURROGATE    "fast_sigmoid", "sigmoid" or "atan"     (SURROGATES)
    SLOPE        a finite number > 0                     surrogate slope (atan: alpha)
    SPARSE_GRAD  None or a finite number > 0             truncation bound B of the surrogate
    DROPOUT      a finite number in [0, 1)
    FLAG         true or false
    POSITIVE     an integer >= 1                         sizes, strides, time steps

and the building blocks for others: ``integer(lo, hi=None, optional=False)``,
``number(lo, hi, lo_open=False, hi_open=False, optional=False)``, ``choice(*names)``.

A rule's error is a :class:`RuleError` (a ValueError) that keeps ``what`` the value must be and
``got``, the offending value as written. A *checker* applies a rule for an owner (a layer, a
converter, a file) and says who asked: ``ValueError("<owner>: expected <field> to be ..., got
...")``, one line. The checkers of the per-neuron settings (beta, threshold) also take a NumPy
array and check it elementwise (the array comes back as float64; a scalar as a float):

    check(rule, owner, field, value)         any rule
    check_beta(owner, value)                 check_threshold(owner, value)
    check_reset(owner, value)                check_bits(owner, value)
    check_quant_grad(owner, value)           check_surrogate(owner, value)
    check_slope(owner, value)                check_sparse_grad(owner, value)
    check_flag(owner, field, value)          check_positive_int(owner, field, value)
    check_int_range(owner, field, value, lo, hi=None)

    >>> check_beta("Leaky", 0.9)
    0.9
    >>> check_beta("Leaky", 1.5)
    Traceback (most recent call last):
    ValueError: Leaky: expected beta to be a finite number in [0, 1], got 1.5
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["RuleError", "integer", "number", "boolean", "choice", "BETA", "THRESHOLD", "RESET", "RESETS",
           "BITS", "BITS_RANGE", "QUANT_GRAD", "QUANT_GRADS", "SURROGATE", "SURROGATES", "SLOPE",
           "SPARSE_GRAD", "DROPOUT", "FLAG", "POSITIVE", "check", "check_beta", "check_threshold",
           "check_reset", "check_bits", "check_quant_grad", "check_surrogate", "check_slope",
           "check_sparse_grad", "check_flag", "check_positive_int", "check_int_range"]


class RuleError(ValueError):
    """A value that breaks a rule: "must be <what>, got <got>"."""

    def __init__(self, what, got):
        super().__init__(f"must be {what}, got {got}")
        self.what, self.got = what, got


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_real(v):
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


# ---------------------------------------------------------------------------------------------
# building blocks: each returns a rule, v -> normalised v or ValueError("must be ..., got ...")

def integer(lo, hi=None, optional=False, none=""):
    """An integer >= lo (in lo..hi when ``hi`` is given); None too when ``optional`` (``none``:
    what None means, said in the message)."""
    span = f"an integer >= {lo}" if hi is None else f"an integer in {lo}..{hi}"
    if optional:
        span += f", or None{' for ' + none if none else ''}" if hi is not None else " or None"

    def rule(v):
        if v is None and optional:
            return None
        if not _is_int(v) or v < lo or (hi is not None and v > hi):
            raise RuleError(span, repr(v))
        return int(v)
    rule.type = int          # what a command-line value is parsed as
    return rule


def number(lo=-math.inf, hi=math.inf, lo_open=False, hi_open=False, optional=False):
    """A finite number in the interval (open or closed at each end); None too when ``optional``.
    ``rule(v, arrays=True)`` also takes a NumPy array of numbers, checked elementwise."""
    lo_s, hi_s = ("(" if lo_open else "["), (")" if hi_open else "]")
    span = f"in {lo_s}{lo:g}, {hi:g}{hi_s}" if math.isfinite(hi) else \
        f"{'>' if lo_open else '>='} {lo:g}"
    span += " or None" if optional else ""

    def inside(a):      # elementwise, a float64 array
        return (np.isfinite(a) & ((a > lo) if lo_open else (a >= lo))
                & ((a < hi) if hi_open else (a <= hi)))

    def rule(v, arrays=False):
        if v is None and optional:
            return None
        if arrays and isinstance(v, np.ndarray) and v.dtype.kind in "iuf":
            a = v.astype(np.float64)
            bad = np.flatnonzero(~inside(a))
            if bad.size:
                where = np.unravel_index(bad[0], a.shape)
                raise RuleError(f"finite numbers {span}", f"{float(a[where])!r} at index "
                                f"{tuple(int(i) for i in where)}")
            return a
        ok = _is_real(v)
        if ok:
            v = float(v)
            ok = bool(inside(np.float64(v)))
        if not ok:
            raise RuleError(f"a finite number {span}", repr(v))
        return v
    rule.type = float
    return rule


def boolean(v):
    """True or False (NumPy booleans too); a rule."""
    if not isinstance(v, (bool, np.bool_)):
        raise RuleError("true or false", repr(v))
    return bool(v)


def choice(*names):
    """One of ``names``; ``rule.choices()`` gives them."""
    def rule(v):
        if not isinstance(v, str) or v not in names:
            raise RuleError(f"one of {', '.join(names)}", repr(v))
        return v
    rule.choices = lambda: names
    return rule


# ---------------------------------------------------------------------------------------------
# the rules of the network's settings

RESETS = ("subtract", "zero")
BITS_RANGE = (2, 16)
QUANT_GRADS = ("ste", "ste+scale")
SURROGATES = ("fast_sigmoid", "sigmoid", "atan")   # mininsnn.surrogate's kernel codes, in order

BETA = number(0, 1)
THRESHOLD = number(0, lo_open=True)
RESET = choice(*RESETS)
BITS = integer(*BITS_RANGE, optional=True, none="full precision")
QUANT_GRAD = choice(*QUANT_GRADS)
SURROGATE = choice(*SURROGATES)
SLOPE = number(0, lo_open=True)
SPARSE_GRAD = number(0, lo_open=True, optional=True)
DROPOUT = number(0, 1, hi_open=True)
FLAG = boolean
POSITIVE = integer(1)


# ---------------------------------------------------------------------------------------------
# checkers: a rule applied for an owner, ValueError("<owner>: expected <field> to be ..., got ...")

def check(rule, owner, field, value, **kw):
    """``rule(value)``; its RuleError becomes one line naming the owner and the field."""
    try:
        return rule(value, **kw)
    except RuleError as e:
        raise ValueError(f"{owner}: expected {field} to be {e.what}, got {e.got}") from None


def check_beta(owner, value):
    """beta in [0, 1]: a float, or a float64 array checked elementwise (per neuron)."""
    return check(BETA, owner, "beta", value, arrays=True)


def check_threshold(owner, value):
    """threshold finite and > 0: a float, or a float64 array checked elementwise (per neuron)."""
    return check(THRESHOLD, owner, "threshold", value, arrays=True)


def check_reset(owner, value):
    """reset "subtract" or "zero"."""
    return check(RESET, owner, "reset", value)


def check_bits(owner, value):
    """bits None (full precision) or an integer in 2..16."""
    return check(BITS, owner, "bits", value)


def check_quant_grad(owner, value):
    """quant_grad "ste" or "ste+scale"."""
    return check(QUANT_GRAD, owner, "quant_grad", value)


def check_surrogate(owner, value):
    """surrogate one of SURROGATES."""
    return check(SURROGATE, owner, "surrogate", value)


def check_slope(owner, value):
    """the surrogate's slope (atan: alpha), finite and > 0."""
    return check(SLOPE, owner, "slope", value)


def check_sparse_grad(owner, value):
    """sparse_grad None (exact surrogate) or a finite number > 0."""
    return check(SPARSE_GRAD, owner, "sparse_grad", value)


def check_flag(owner, field, value):
    """True or False."""
    return check(FLAG, owner, field, value)


def check_positive_int(owner, field, value):
    """An integer >= 1."""
    return check(POSITIVE, owner, field, value)


def check_int_range(owner, field, value, lo, hi=None):
    """An integer in lo..hi (>= lo when hi is None)."""
    return check(integer(lo, hi), owner, field, value)
