"""Surrogate gradients for the Heaviside spike function.

The forward pass always fires with the strict step ``S = H(x) = 1 if x > 0 else 0`` where
``x = U - theta``. The backward pass replaces the true derivative of H (a Dirac delta) by a smooth
``sg'(x)``. Each surrogate also has a *primitive* ``g`` with ``g' = sg'``: the "smooth twin" of the
network passes ``g(U - theta)`` on instead of ``H(U - theta)``, which makes the hand-written BPTT an
exact gradient that finite differences can check (see docs/bptt.md).

===============  ==============================================  ========================================
name             derivative sg'(x)                                primitive g(x)
===============  ==============================================  ========================================
fast_sigmoid k   1 / (k|x| + 1)^2                                 x / (1 + k|x|)
sigmoid k        k exp(-kx) / (1 + exp(-kx))^2                    1 / (1 + exp(-kx))
atan alpha       (alpha/2) / (1 + (pi/2 alpha x)^2)               1/2 + arctan(pi/2 alpha x) / pi
===============  ==============================================  ========================================

The kernels (``mininsnn.kernels.lif``) pick the formula by the integer ``code`` of a surrogate, so
that one compiled kernel serves all three.
"""

import math

import numpy as np

from mininsnn import rules
from mininsnn._jit import jit

__all__ = ["SURROGATES", "Surrogate", "fast_sigmoid", "sigmoid", "atan", "make_surrogate", "sg_grad", "sg_primitive"]

# name -> kernel code: the names of mininsnn.rules.SURROGATES, in their order
SURROGATES = {name: code for code, name in enumerate(rules.SURROGATES)}
FAST_SIGMOID, SIGMOID, ATAN = SURROGATES["fast_sigmoid"], SURROGATES["sigmoid"], SURROGATES["atan"]


@jit
def sg_grad(code, k, x):
    """sg'(x) for surrogate ``code`` with parameter ``k`` (slope, or alpha for atan)."""
    if code == FAST_SIGMOID:
        one = k / k  # 1 in k's dtype (k > 0): float32 kernels stay in float32
        d = k * abs(x) + one
        return one / (d * d)
    elif code == SIGMOID:
        e = math.exp(-k * abs(x))  # symmetric in x; abs() keeps exp from overflowing
        return k * e / ((1.0 + e) * (1.0 + e))
    else:  # ATAN
        z = 0.5 * math.pi * k * x
        return 0.5 * k / (1.0 + z * z)


@jit
def sg_primitive(code, k, x):
    """g(x) with g' = sg' for surrogate ``code``: the smooth twin of H(x)."""
    if code == FAST_SIGMOID:
        return x / (1.0 + k * abs(x))
    elif code == SIGMOID:
        if x >= 0:
            return 1.0 / (1.0 + math.exp(-k * x))
        e = math.exp(k * x)
        return e / (1.0 + e)
    else:  # ATAN
        return 0.5 + math.atan(0.5 * math.pi * k * x) / math.pi


class Surrogate:
    """A surrogate gradient: ``name`` and its parameter ``k`` (slope or alpha)."""

    def __init__(self, name, k):
        rules.check_surrogate("surrogate", name)
        k = rules.check_slope(f"surrogate {name}", k)
        self.name, self.k, self.code = name, k, SURROGATES[name]

    def __repr__(self):
        return f"Surrogate({self.name!r}, {self.k})"

    def forward(self, x):
        """The spike: strict Heaviside step H(x) = 1 if x > 0 else 0."""
        return (np.asarray(x) > 0).astype(np.asarray(x).dtype)

    def grad(self, x):
        """sg'(x), elementwise (NumPy; the kernels call :func:`sg_grad`)."""
        x = np.asarray(x, dtype=np.float64)
        if self.code == FAST_SIGMOID:
            return 1.0 / (self.k * np.abs(x) + 1.0) ** 2
        if self.code == SIGMOID:
            e = np.exp(-self.k * np.abs(x))
            return self.k * e / (1.0 + e) ** 2
        return 0.5 * self.k / (1.0 + (0.5 * np.pi * self.k * x) ** 2)

    def primitive(self, x):
        """g(x), elementwise: the smooth twin of the step."""
        x = np.asarray(x, dtype=np.float64)
        if self.code == FAST_SIGMOID:
            return x / (1.0 + self.k * np.abs(x))
        if self.code == SIGMOID:
            return 0.5 * (1.0 + np.tanh(0.5 * self.k * x))
        return 0.5 + np.arctan(0.5 * np.pi * self.k * x) / np.pi


# The parameter has no default here: the slope setting's default lives in the settings table
# (mininsnn.config.DEFAULTS["slope"]), a floor above this module; the network's builders pass it.

def fast_sigmoid(slope):
    return Surrogate("fast_sigmoid", slope)


def sigmoid(slope):
    return Surrogate("sigmoid", slope)


def atan(alpha):
    return Surrogate("atan", alpha)


def make_surrogate(spec, k=None):
    """A Surrogate from a Surrogate (``k`` ignored), or from a name and its parameter ``k``."""
    if isinstance(spec, Surrogate):
        return spec
    rules.check_surrogate("surrogate", spec)
    if k is None:
        raise ValueError(f"surrogate {spec}: expected its parameter k (slope, or alpha for atan), "
                         "got None")
    return Surrogate(spec, k)
