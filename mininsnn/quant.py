"""Weight fake-quantization: n-bit, per-tensor, symmetric, narrow range (Brevitas' default).

Recomputed from the latent float weights W at every forward:

    s  = max|W| / (2^(b-1) - 1)                  b = 4  ->  integers -7..7
    Wq = s * clip(round_half_even(W / s), -(2^(b-1) - 1), 2^(b-1) - 1)

Backward, ``quant_grad``:

    "ste"        straight-through: dL/dW = dL/dWq. The true derivative of round() is zero almost
                 everywhere; STE treats the quantizer as the identity.
    "ste+scale"  what Brevitas (the paper's code) computes, and mininsnn's default for quantized
                 configurations (docs/semantics.md): round() straight-through as above,
                 but s = max|W| / L is not detached, so the gradient also flows through the
                 scale into the argmax-|W| element m:

                     dL/dW = dL/dWq + e_m * sign(W_m) / L * sum_i dL/dWq_i (round(W_i/s) - W_i/s)

                 One element per tensor, but not a small one: on the reference 4-bit MNIST
                 network at initialisation it is 0.85 x the largest gradient of conv2
                 (parity/compare.py). It ties the scale to the loss; without it
                 max|W| drifts away from the bulk of the weights during training and most
                 weights round to 0 (RESULTS.md).
"""

import numpy as np

from mininsnn import rules
from mininsnn.rules import QUANT_GRADS

__all__ = ["check_bits", "check_quant_grad", "quantize_forward", "quantize_backward",
           "quant_levels", "latent_from_codes", "QUANT_GRADS"]


def check_bits(bits, where="quantizer"):
    """None (full precision) or an int in 2..16 (the rule: mininsnn.rules.BITS); anything else is
    a ValueError naming ``where``."""
    return rules.check_bits(where, bits)


def check_quant_grad(mode, where="quantizer"):
    """One of QUANT_GRADS (the rule: mininsnn.rules.QUANT_GRAD); anything else is a ValueError
    naming ``where``."""
    return rules.check_quant_grad(where, mode)


def quant_levels(bits):
    """Largest integer level: 2^(bits-1) - 1 (narrow range: -L..L)."""
    return 2 ** (bits - 1) - 1


def quantize_forward(W, bits):
    """Fake-quantize W to ``bits`` bits. Returns (Wq, scale); Wq is W itself when bits is None."""
    if bits is None:
        return W, None
    levels = quant_levels(bits)
    scale = np.abs(W).max() / levels  # s = max|W| / (2^(b-1) - 1), in W's dtype
    if scale == 0:
        return np.zeros_like(W), scale  # all-zero tensor: every level is 0
    q = np.clip(np.round(W / scale), -levels, levels)  # np.round rounds half to even
    return (q * scale).astype(W.dtype, copy=False), scale


def quantize_backward(dWq, W=None, bits=None, mode=None):
    """dL/dW from dL/dWq (``W`` and ``bits`` are needed for mode "ste+scale" only).

    fwd: Wq_i = s * round(W_i / s),  s = max|W| / L,  round' := 1 (straight-through)
      => dWq_i/dW_j = delta_ij + (round(W_i/s) - W_i/s) * ds/dW_j
         ds/dW_j = sign(W_m) / L  at  j = m = argmax|W|  (the first one on ties), else 0
    "ste" keeps only delta_ij (s treated as a constant); "ste+scale" keeps both terms. With
    ``bits`` None (no quantizer) the gradient passes unchanged; otherwise ``mode`` is required
    (the quant_grad setting; its default lives in the settings table, mininsnn.config).
    """
    if bits is None:
        return dWq
    check_quant_grad(mode)
    if mode == "ste":
        return dWq
    L = quant_levels(bits)
    m = np.unravel_index(np.argmax(np.abs(W)), W.shape)
    s = np.abs(W[m]) / L
    if s == 0:
        return dWq
    r = W / s
    dW = dWq.copy()
    dW[m] += np.sign(W[m]) / L * np.sum(dWq * (np.clip(np.round(r), -L, L) - r), dtype=np.float64)
    return dW


def latent_from_codes(q, scale, maxabs, dtype):
    """Latent weights W that quantize back to exactly (scale, q), from integer codes q, the
    scale s and the original max|W| (what a pretrained or NIR file stores instead of W); q may be
    integers or whole floats (whose -0.0 codes then give -0.0 weights, as quantize_forward does):

        W_i = s * q_i,  except  W_i = sign(q_i) * maxabs  where |q_i| = L = max|q|

    Then max|W| = maxabs, so quantize_forward recomputes s = maxabs / L bit for bit (W = s q
    alone would not do: fl(L s) can differ from maxabs, and with it the scale's last bit), and
    round(W_i / s) = q_i since every other |W_i| <= (L - 1) s lies far from a rounding tie."""
    q = np.asarray(q)
    cast = np.dtype(dtype).type
    W = (q.astype(dtype) * cast(scale)).astype(dtype)
    L = np.abs(q).max() if q.size else 0
    if L > 0:
        top = np.abs(q) == L
        W[top] = np.sign(q[top]).astype(dtype) * cast(maxabs)
    return W
