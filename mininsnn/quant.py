"""Weight fake-quantization: n-bit, per-tensor, symmetric, narrow range (Brevitas' default).

Recomputed from the latent float weights W at every forward:

    s  = max|W| / (2^(b-1) - 1)                  b = 4  ->  integers -7..7
    Wq = s * clip(round_half_even(W / s), -(2^(b-1) - 1), 2^(b-1) - 1)

Backward (straight-through estimator): dL/dW = dL/dWq. The true derivative of round() is zero
almost everywhere; STE treats the quantizer as the identity. (Brevitas also back-propagates
through s, which adds a tiny term on the argmax-|W| element; plain STE is the documented choice.)
"""

import numpy as np

__all__ = ["check_bits", "quantize_forward", "quantize_backward", "quant_levels"]


def check_bits(bits, where="quantizer"):
    """None (full precision) or an int in 2..16; anything else is a ValueError naming ``where``."""
    if bits is None:
        return None
    if isinstance(bits, (bool, np.bool_)) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 16:
        raise ValueError(f"{where}: expected bits to be None or an integer in 2..16, got {bits!r}")
    return int(bits)


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


def quantize_backward(dWq):
    """fwd: Wq = s * round(W / s)  =>  dWq/dW = 1  (straight-through)."""
    return dWq
