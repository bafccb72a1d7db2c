"""The overflow proof of an integer model, and the errors of conversion (NumPy only).

``prove_layer`` bounds every accumulator, input current and membrane of one layer over all inputs
in range (pixels 0..in_max, spikes 0/1) and all time steps (``membrane_bound``), and
``check_bounds`` refuses with the numbers when one exceeds its width; ``tolerance`` is the float
margin above which an integer spike equals the float one. mininsnn.deploy.conversion proves each
layer it builds; mininsnn.deploy.modelfile proves a file's layers again. The equations:
conversion.py's docstring, docs/deploy.md.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = ["ConversionError", "OverflowProofError", "ProofTerms", "MEM_BITS", "ACC_BITS",
           "membrane_bound", "prove_layer", "check_bounds", "tolerance"]

MEM_BITS = 32       # membrane, threshold, bias and input current: int32
ACC_BITS = 32       # conv / linear accumulators: int32 (int16 where the proof allows it)


class ConversionError(ValueError):
    """A model that cannot be converted (full precision without bits, unknown layout, ...)."""


class OverflowProofError(ConversionError):
    """The overflow proof fails: some accumulator or membrane could exceed its integer width."""


def _shifted(a, F):
    """The accumulator term of the input: a << F (F >= 0) or (a + 2^(-F-1)) >> -F (F < 0)."""
    return a * 2 ** F if F >= 0 else (a + 2 ** (-F - 1)) >> -F


def membrane_bound(M, theta, beta, e, reset, num_steps=None):
    """An integer B with |V[t]| <= B for every t (or every t < num_steps), given |input| <= M,
    leak(v) in [beta v - e, beta v + e] (monotone), V[-1] = 0. Returns None when unbounded.

    By induction on |V[t-1]| <= B:
      no reset at t:  |V[t]| <= beta B + e + M
      subtract, R=1:  theta < V[t-1] <= B, so |leak(V[t-1]) - theta| <= max(beta B, (1-beta) theta) + e
      zero,     R=1:  V[t] = 0
    hence any B >= max(beta B, (1-beta) theta) + e + M:
      B = max((M + e) / (1 - beta), (1 - beta) theta + M + e)             (beta < 1, any T)
      B = M + (T - 1) (M + e)                                              (beta = 1, T steps)
    """
    if beta < 1:
        B = (M + e) / (1 - beta)
        if reset == "subtract":
            B = max(B, (1 - beta) * theta + M + e)
        return math.ceil(B)
    if num_steps is None:
        return None
    return math.ceil(M + (num_steps - 1) * (M + e))


class ProofTerms(NamedTuple):
    """What the overflow proof needs beside a layer's integers: the leak factor beta_eff (a float),
    the bound e of the leak's rounding error, the reset, and the T it covers (None: any T)."""

    beta: float
    e: float
    reset: str
    num_steps: int | None
    alpha: tuple | None = None     # synaptic layers: (alpha_eff, e_alpha) of the current's leak


def prove_layer(qf, in_max, ints, F, terms: ProofTerms, drive=None, rec=None):
    """Bounds of one layer (dict of Python ints), exact integer arithmetic; None when unbounded.
    qf: its integer weight codes (O, ...); inputs are integers 0..in_max; ints: (sign, bias,
    theta), Python int sequences (O,) each; F its fractional bits. ``drive`` (O,) ints: a
    synaptic layer, J[t] = leak_alpha(J[t-1]) + I[t] (never reset, |J| <= Bj by membrane_bound
    with theta 0), V's input J + Drive_c (|.| <= Bj + |Drive_c|), terms.alpha its leak. ``rec``
    (O, O) ints: a recurrent layer's feedback W_r S[t-1] (S 0/1), between the sums of the
    negative and of the positive entries of row c, added to I_c."""
    sign, bias, theta = ints
    flat = qf.reshape(qf.shape[0], -1)
    pos = np.where(flat > 0, flat, 0).sum(axis=1)           # A <= in_max * sum of positive codes
    neg = np.where(flat < 0, flat, 0).sum(axis=1)           # A >= in_max * sum of negative codes
    acc = inp = mem = shifted = 0
    for c in range(flat.shape[0]):
        a_lo, a_hi = int(neg[c]) * in_max, int(pos[c]) * in_max
        acc = max(acc, -a_lo, a_hi)
        ends = [sign[c] * _shifted(a, F) for a in (a_lo, a_hi)]
        shifted = max(shifted, *map(abs, ends))
        fb = (0, 0) if rec is None else (int(rec[c][rec[c] < 0].sum()), int(rec[c][rec[c] > 0].sum()))
        M = max(abs(v + bias[c] + f) for v in ends for f in fb)   # |I_c| <= M_c
        inp = max(inp, M)
        if drive is not None:                               # |J| <= Bj, V's input <= Bj + |D_c|
            Bj = membrane_bound(M, 0, terms.alpha[0], terms.alpha[1], "zero", terms.num_steps)
            if Bj is None:
                return None
            M = Bj + abs(drive[c])
            inp = max(inp, M)
        B = membrane_bound(M, theta[c], terms.beta, terms.e, terms.reset, terms.num_steps)
        if B is None:
            return None
        mem = max(mem, B, theta[c], abs(bias[c]))
    return {"acc": acc, "shifted": shifted, "input": inp, "membrane": mem}


def check_bounds(name, bounds, leak, F):
    """Raise OverflowProofError naming the first bound above its width."""
    if bounds is None:
        raise OverflowProofError(f"{name}: with beta_eff = 1 the membrane grows without bound over "
                                 "time; pass num_steps to prove it for a fixed T")
    for key, what, width in (("acc", "accumulator", ACC_BITS), ("shifted", "shifted accumulator",
                             MEM_BITS), ("input", "input current", MEM_BITS),
                             ("membrane", "membrane", MEM_BITS)):
        if bounds[key] > 2 ** (width - 1) - 1:
            raise OverflowProofError(
                f"{name}: the {what} can reach {bounds[key]} > {2 ** (width - 1) - 1} "
                f"(int{width}) with F={F}; lower the fractional bits (--frac-bits) or the "
                f"weight bits")
    if leak[0] == "multiply" and bounds["membrane"] * leak[2] + 2 ** (leak[1] - 1) > 2 ** 63 - 1:
        raise OverflowProofError(f"{name}: the leak product can reach "
                                 f"{bounds['membrane'] * leak[2]} > 2^63-1; lower Q")


def tolerance(unit, bound_mem, beta_float, terms: ProofTerms, F, syn=None):
    """Float margin per channel above which the integer spike equals the float spike:

        |D[t]| <= beta |D[t-1]| + u (e + 1 + |beta_eff - beta| B + r)   D = V u - U, r = 1/2 if F < 0
        tol = sup |D| + u/2   (the rounding of Theta)
    """
    r = 0.5 if F < 0 else 0.0
    step = unit * (terms.e + 1.0 + abs(terms.beta - beta_float) * bound_mem + r)
    if syn is not None:     # a synaptic layer (alpha, |J| bound): J's own error enters V each step
        alpha, bound_j = syn
        dj = unit * (terms.alpha[1] + 1.0 + abs(terms.alpha[0] - alpha) * bound_j + r)
        step = step + (dj / (1 - alpha) if alpha < 1 else dj * (terms.num_steps or np.inf))
    if beta_float < 1:
        D = step / (1 - beta_float)
    else:
        D = step * (terms.num_steps if terms.num_steps is not None else np.inf)
    return D + unit / 2
