"""From a trained float model to an integer-only model, with the overflow proof (NumPy only).

The float model in eval mode (running BatchNorm statistics, dropout off), one LIF layer ``l`` with
output channel c, is (docs/deploy.md derives each line; the names are the code below):

    A[t]  = sum_taps qf * x[t]                    integer accumulator (conv fused with the pooling)
    I[t]  = k_c * A[t] + b_c                      the LIF input current, in float units
    U[t]  = beta U[t-1] + I[t] - theta R[t]       R[t] = H(U[t-1] - theta),  S[t] = H(U[t] - theta)

with
    k_c = g_c * s * in_scale / P     g_c = gamma_c / sqrt(rv_c + eps)   (g_c = 1 without BatchNorm)
    b_c = beta_c - g_c * rm_c  (+ g_c * fc bias in full precision)      (b_c = 0 without either)
    s   = max|W| / L  the weight scale,  P = pool area (4),  in_scale = 1/255 for pixels, 1 for
    spike or event-count inputs.                                            (``_fold_layer``)

The integer membrane V measures U in units u_c = |k_c| / 2^F (F fractional bits below one
accumulator step), so the accumulator enters with its sign and a shift, no multiply:

    V[t] = leak(V[t-1]) + sgn_c * (A[t] << F) + Bias_c - Theta_c R[t]       ("subtract")
    V[t] = (leak(V[t-1]) + sgn_c * (A[t] << F) + Bias_c) * (1 - R[t])       ("zero")
    R[t] = [V[t-1] > Theta_c],   S[t] = [V[t] > Theta_c]
    Theta_c = rint(theta / u_c),  Bias_c = rint(b_c / u_c),  sgn_c = sign(k_c)

Dividing by |k_c| (positive) keeps the direction of the comparison; a negative BatchNorm gain
only flips the sign of the accumulator (sgn_c = -1). k_c = 0 (gamma_c = 0 or an all-zero weight
tensor): the current is the constant b_c, the accumulator does not enter (sgn_c = 0), and the
unit is u_c = max(theta, |b_c|) / 2^20. F < 0 is allowed (for wide weights): the accumulator
then enters as (A + 2^(-F-1)) >> -F, rounded half up.

The leak is ``("multiply", Q)``: leak(v) = (v * beta_q + 2^(Q-1)) >> Q, beta_q = rint(beta 2^Q)
(round half up of the product, int64 intermediate), or ``("shift", k)``: leak(v) = v - (v >> k),
beta_eff = 1 - 2^-k. ``>>`` is an arithmetic shift (floor).

The overflow proof (``_prove_layer``, ``membrane_bound``) bounds every accumulator, input current and membrane over all
inputs in range (pixels 0..input_max, spikes 0/1) and all time steps, and the converter refuses
with the numbers when one exceeds its width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from mininsnn.config import ARCHITECTURES     # NumPy only, like this module

__all__ = ["IntegerModel", "IntLayer", "OverflowProofError", "ConversionError", "convert",
           "convert_network", "quant_codes", "fuse_pool_codes", "INPUT_SHAPES", "MEM_BITS",
           "ACC_BITS", "ZERO_GAIN_BITS", "FRAC_BITS_RANGE"]

#: Input shape per data set, from the one architecture table (mininsnn.config).
INPUT_SHAPES = {name: arch[0] for name, arch in ARCHITECTURES.items()}
STATIC_DATASETS = ("mnist", "fashion-mnist")  # images fed at every step as pixels/255
MEM_BITS = 32       # membrane, threshold, bias and input current: int32
ACC_BITS = 32       # conv / linear accumulators: int32 (int16 where the proof allows it)
ZERO_GAIN_BITS = 20  # k_c = 0: u_c = max(theta, |b_c|) / 2^20
FRAC_BITS_RANGE = (-16, 24)  # the F that "max" searches
BN_EPS = 1e-5       # BatchNorm2d's eps in mininsnn.layers (not stored in the state dict)
POOL = 2            # every conv of the reference networks is followed by 2x2 average pooling


class ConversionError(ValueError):
    """A model that cannot be converted (full precision without bits, unknown layout, ...)."""


class OverflowProofError(ConversionError):
    """The overflow proof fails: some accumulator or membrane could exceed its integer width."""


# ---------------------------------------------------------------------------------------------
# weight codes

def quant_codes(W, bits):
    """Integer codes q and scale s of ``mininsnn.quant.quantize_forward`` (same arithmetic, in W's
    dtype): s = max|W| / L, q = clip(rint(W / s), -L, L), L = 2^(bits-1) - 1; Wq = s * q.
    Returns (q as int64, s as a Python float of W's dtype's value)."""
    L = 2 ** (bits - 1) - 1
    scale = np.abs(W).max() / L  # s = max|W| / (2^(b-1) - 1), in W's dtype
    if scale == 0:
        return np.zeros(W.shape, np.int64), 0.0
    q = np.clip(np.round(W / scale), -L, L)  # np.round rounds half to even
    return q.astype(np.int64), float(scale)


def fuse_pool_codes(q, k=POOL):
    """Codes of "conv then k x k sum pooling" as one stride-k conv (layers.fuse_avgpool times k^2):

        qf[o, c, i, j] = sum_{a, b < k} q[o, c, i - a, j - b]      (size KH + k - 1, exact integers)
    """
    O, C, KH, KW = q.shape
    qf = np.zeros((O, C, KH + k - 1, KW + k - 1), np.int64)
    for a in range(k):
        for b in range(k):
            qf[:, :, a:a + KH, b:b + KW] += q
    return qf


def _code_dtype(bits_needed):
    return np.int8 if bits_needed <= 8 else np.int16 if bits_needed <= 16 else np.int32


# ---------------------------------------------------------------------------------------------
# the integer model

@dataclass
class IntLayer:
    """One synapse + LIF stage of an integer model.

    kind "conv": weight (O, C, KH, KW) fused codes, stride ``stride``, no padding;
    kind "linear": weight (O, F).  in_shape (C, H, W) or (F,); out_shape (O, OH, OW) or (O,).
    sign, bias, theta: (O,) per output channel; frac_bits F of this layer.
    """

    name: str
    kind: str
    weight: np.ndarray
    stride: int
    in_shape: tuple
    out_shape: tuple
    sign: np.ndarray        # (O,) int8 in {-1, 0, 1}
    bias: np.ndarray        # (O,) int32
    theta: np.ndarray       # (O,) int32
    frac_bits: int
    in_max: int             # inputs are integers in 0..in_max (pixels 255, spikes 1)
    acc_bits: int = 32      # 16 when the proof allows int16 accumulators
    # float-side numbers kept for the report and the tests (never used by the engines)
    unit: np.ndarray = None  # (O,) float64 u_c: one membrane step in float units
    tol: np.ndarray = None   # (O,) float64: float margin |U - theta| above which spikes agree
    bounds: dict = field(default_factory=dict)


@dataclass
class IntegerModel:
    """An integer-only spiking network: layers, the shared leak and reset, input range.

    leak: ("multiply", Q, beta_q) or ("shift", k, 0).  reset: "subtract" or "zero".
    static: the input is one image fed at every step (else one frame per step).
    max_steps: None (the proof holds for any T) or the largest T it covers (beta_eff = 1).
    """

    layers: list
    leak: tuple
    reset: str
    input_shape: tuple
    input_max: int
    static: bool
    num_steps: int           # the default T
    max_steps: int = None
    meta: dict = field(default_factory=dict)

    @property
    def num_classes(self):
        return self.layers[-1].out_shape[0]

    def beta_eff(self):
        """The leak factor the integers implement, exactly (a Fraction)."""
        mode, a, bq = self.leak
        return Fraction(bq, 2 ** a) if mode == "multiply" else 1 - Fraction(1, 2 ** a)

    def describe(self):
        """A few lines: the number representation and the overflow proof of every layer."""
        mode, a, bq = self.leak
        leak = (f"leak v*{bq} >> {a} (beta_eff {float(self.beta_eff()):.9f})" if mode == "multiply"
                else f"leak v - (v >> {a}) (beta_eff {float(self.beta_eff()):.9f})")
        lines = [f"integer model: input {self.input_shape} ints 0..{self.input_max} "
                 f"({'static, fed at every step' if self.static else 'one frame per step'}), "
                 f"{leak}, {self.reset} reset, membranes int{MEM_BITS}"
                 + ("" if self.max_steps is None else f", proven for T <= {self.max_steps}")]
        for L in self.layers:
            b = L.bounds
            lines.append(
                f"  {L.name}: {L.kind} {L.weight.shape} codes {L.weight.dtype}, F={L.frac_bits}, "
                f"|acc| <= {b['acc']} (int{L.acc_bits}), |input| <= {b['input']}, "
                f"|membrane| <= {b['membrane']} (limit {2 ** (MEM_BITS - 1) - 1}), "
                f"Theta {int(L.theta.min())}..{int(L.theta.max())}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# folding: float parameters -> (k_c, b_c) per output channel

def _fold_layer(state, prefix, bn, codes_scale, in_scale, pool_area):
    """(k, b) float64 arrays (O,) with I_c = k_c * A + b_c (module docstring)."""
    _, s = codes_scale
    W = state[f"{prefix}.weight"]
    O = W.shape[0]
    k = np.full(O, s * in_scale / pool_area, np.float64)   # conv/linear scale, pooling 1/P
    b = np.zeros(O, np.float64)
    if f"{prefix}.bias" in state:                           # full-precision fc1 (PTQ): + bias
        b += np.asarray(state[f"{prefix}.bias"], np.float64)
    if bn is not None:                                      # eval BatchNorm: y = g (x - rm) + beta
        gamma = np.asarray(state[f"{bn}.weight"], np.float64)
        rm = np.asarray(state[f"{bn}.running_mean"], np.float64)
        rv = np.asarray(state[f"{bn}.running_var"], np.float64)
        g = gamma / np.sqrt(rv + BN_EPS)                    # g_c = gamma_c / sqrt(rv_c + eps)
        k = k * g                                           # k_c = g_c s in_scale / P
        b = g * (b - rm) + np.asarray(state[f"{bn}.bias"], np.float64)  # b_c = beta_c + g_c (bias - rm_c)
    return k, b


def _rint(x):
    """Round half to even, as a Python int (exact for any float)."""
    return int(np.rint(x))


def _integerize(k, b, theta, F):
    """sign, Bias, Theta (Python int lists) and the unit u_c (float64) for fractional bits F."""
    sign, bias, th, unit = [], [], [], []
    for kc, bc in zip(k, b):
        if kc == 0:     # the current is the constant b_c: its own unit, the accumulator ignored
            u = max(theta, abs(bc)) / 2.0 ** ZERO_GAIN_BITS
            sign.append(0)
        else:
            u = abs(kc) / 2.0 ** F                          # u_c = |k_c| / 2^F
            sign.append(1 if kc > 0 else -1)                # sgn_c = sign(k_c)
        unit.append(u)
        th.append(_rint(theta / u))                         # Theta_c = rint(theta / u_c)
        bias.append(_rint(bc / u))                          # Bias_c = rint(b_c / u_c)
    return sign, bias, th, np.array(unit)


# ---------------------------------------------------------------------------------------------
# the overflow proof

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


def _prove_layer(qf, in_max, sign, bias, theta, F, beta, e, reset, num_steps):
    """Bounds of one layer (dict of Python ints), exact integer arithmetic."""
    flat = qf.reshape(qf.shape[0], -1)
    pos = np.where(flat > 0, flat, 0).sum(axis=1)           # A <= in_max * sum of positive codes
    neg = np.where(flat < 0, flat, 0).sum(axis=1)           # A >= in_max * sum of negative codes
    acc = inp = mem = shifted = 0
    for c in range(flat.shape[0]):
        a_lo, a_hi = int(neg[c]) * in_max, int(pos[c]) * in_max
        acc = max(acc, -a_lo, a_hi)
        ends = [sign[c] * _shifted(a, F) for a in (a_lo, a_hi)]
        shifted = max(shifted, *map(abs, ends))
        M = max(abs(v + bias[c]) for v in ends)             # |I_c| <= M_c
        inp = max(inp, M)
        B = membrane_bound(M, theta[c], beta, e, reset, num_steps)
        if B is None:
            return None
        mem = max(mem, B, theta[c], abs(bias[c]))
    return {"acc": acc, "shifted": shifted, "input": inp, "membrane": mem}


def _check_bounds(name, bounds, leak, F):
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


def _tolerance(unit, theta_int, bounds_mem, beta_float, beta_eff, e, F, num_steps):
    """Float margin per channel above which the integer spike equals the float spike:

        |D[t]| <= beta |D[t-1]| + u (e + 1 + |beta_eff - beta| B + r)   D = V u - U, r = 1/2 if F < 0
        tol = sup |D| + u/2   (the rounding of Theta)
    """
    r = 0.5 if F < 0 else 0.0
    step = unit * (e + 1.0 + abs(float(beta_eff) - beta_float) * bounds_mem + r)
    if beta_float < 1:
        D = step / (1 - beta_float)
    else:
        D = step * (num_steps if num_steps is not None else np.inf)
    return D + unit / 2


# ---------------------------------------------------------------------------------------------
# conversion

def _leak_params(beta, leak, leak_bits, shift):
    """("multiply", Q, beta_q) or ("shift", k, 0), and the rounding error bound e of leak(v)."""
    if leak == "multiply":
        if isinstance(leak_bits, bool) or not isinstance(leak_bits, (int, np.integer)) \
                or not 1 <= leak_bits <= 30:
            raise ConversionError(f"leak_bits (Q) must be an integer in 1..30, got {leak_bits!r}")
        Q = int(leak_bits)
        return ("multiply", Q, _rint(beta * 2 ** Q)), Fraction(1, 2)   # beta_q = rint(beta 2^Q)
    if leak == "shift":
        if shift is None:   # the k whose 1 - 2^-k is nearest to beta
            if beta >= 1:
                raise ConversionError("shift leak: beta = 1 has no shift form; use leak='multiply'")
            cands = range(1, 31)
            shift = min(cands, key=lambda k: abs(1 - 2.0 ** -k - beta))
        if isinstance(shift, bool) or not isinstance(shift, (int, np.integer)) or not 1 <= shift <= 30:
            raise ConversionError(f"shift must be an integer in 1..30, got {shift!r}")
        return ("shift", int(shift), 0), Fraction(1)
    raise ConversionError(f"leak must be 'multiply' or 'shift', got {leak!r}")


def _check_config(config):
    for key in ("beta", "threshold", "reset", "bits", "batchnorm", "dataset"):
        if key not in config:
            raise ConversionError(f"config is missing key {key!r}")
    if config["dataset"] not in INPUT_SHAPES:
        raise ConversionError(f"unknown dataset {config['dataset']!r}; expected one of "
                              f"{sorted(INPUT_SHAPES)}")
    if config["reset"] not in ("subtract", "zero"):
        raise ConversionError(f"reset must be 'subtract' or 'zero', got {config['reset']!r}")
    if not config.get("reset_delay", True):
        raise ConversionError("reset_delay=False (the reset in the step that fires) has no "
                              "integer engine yet; export the network with --format nir")
    beta, theta = config["beta"], config["threshold"]
    if not (isinstance(beta, (int, float)) and 0 <= beta <= 1):
        raise ConversionError(f"beta must be in [0, 1], got {beta!r}")
    if not (isinstance(theta, (int, float)) and math.isfinite(theta) and theta > 0):
        raise ConversionError(f"threshold must be a finite number > 0, got {theta!r}")


def _check_state(state, names):
    for key in names:
        if key not in state:
            raise ConversionError(f"state dict is missing {key!r}")
        a = np.asarray(state[key])
        if a.dtype.kind != "f" or not np.isfinite(a).all():
            raise ConversionError(f"state dict entry {key!r} must be finite floats")


def convert(state, config, *, bits=None, frac_bits="max", leak="multiply", leak_bits=30,
            shift=None, input_max=255, num_steps=None, input_shape=None, static=None):
    """The integer model of a reference network given as a state dict and its config (NumPy only).

    state: name -> array as ``Network.state_dict()`` (``conv1.weight`` (O, C, 5, 5), ``bn1.*``,
    ``conv2.weight``, ``bn2.*``, ``fc1.weight`` (O, F), ``fc1.bias`` in full precision).
    config: needs beta, threshold, reset, bits, batchnorm, dataset (a run or model config).
    bits: weight bits for a full-precision model (post-training quantization); must be omitted or
    equal to config["bits"] for a quantized one.
    frac_bits: F of every layer (int), one per layer (sequence of 3), or "max": per layer the
    largest F in FRAC_BITS_RANGE that the overflow proof admits.
    leak: "multiply" (Q = leak_bits) or "shift" (k = shift, default the nearest to beta).
    input_max: inputs are integers 0..input_max (255: uint8 pixels or event counts).
    num_steps: only needed when beta_eff = 1 (the proof then covers T <= num_steps).
    input_shape (C, H, W) and static (pixels/255 fed at every step, else integer frames) default
    to the data set's (INPUT_SHAPES); give them for networks of other sizes.
    Raises ConversionError / OverflowProofError (ValueErrors) with one-line messages.
    """
    _check_config(config)
    cfg_bits = config["bits"]
    if cfg_bits is None and bits is None:
        raise ConversionError("full-precision model: pass bits (2..16) to quantize its weights "
                              "after training (post-training quantization)")
    if cfg_bits is not None and bits is not None and bits != cfg_bits:
        raise ConversionError(f"the model was trained with {cfg_bits}-bit weights; omit bits or "
                              f"pass {cfg_bits}")
    bits = cfg_bits if bits is None else bits
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 16:
        raise ConversionError(f"bits must be an integer in 2..16, got {bits!r}")
    if isinstance(input_max, bool) or not isinstance(input_max, (int, np.integer)) or \
            not 1 <= input_max <= 255:
        raise ConversionError(f"input_max must be an integer in 1..255, got {input_max!r}")
    bn = bool(config["batchnorm"])
    names = ["conv1.weight", "conv2.weight", "fc1.weight"]
    if bn:
        names += [f"bn{i}.{k}" for i in (1, 2) for k in ("weight", "bias", "running_mean",
                                                         "running_var")]
    _check_state(state, names)
    beta, theta = float(config["beta"]), float(config["threshold"])
    leak_p, e = _leak_params(beta, leak, leak_bits, shift)
    input_shape = tuple(INPUT_SHAPES[config["dataset"]] if input_shape is None else input_shape)
    static = config["dataset"] in STATIC_DATASETS if static is None else bool(static)
    in_scale = 1.0 / 255 if static else 1.0
    if isinstance(frac_bits, str):
        if frac_bits != "max":
            raise ConversionError(f"frac_bits must be an integer, a list of 3 or 'max', got "
                                  f"{frac_bits!r}")
        Fs = [None] * 3
    elif isinstance(frac_bits, (int, np.integer)) and not isinstance(frac_bits, bool):
        Fs = [int(frac_bits)] * 3
    else:
        Fs = [int(f) for f in frac_bits]
        if len(Fs) != 3:
            raise ConversionError(f"frac_bits: expected 3 values (one per LIF layer), got {len(Fs)}")
    for f in Fs:
        if f is not None and not FRAC_BITS_RANGE[0] <= f <= 30:
            raise ConversionError(f"frac_bits must lie in {FRAC_BITS_RANGE[0]}..30, got {f}")
    beta_eff = (Fraction(leak_p[2], 2 ** leak_p[1]) if leak_p[0] == "multiply"
                else 1 - Fraction(1, 2 ** leak_p[1]))
    if beta_eff == 1 and num_steps is None:
        raise OverflowProofError("with beta_eff = 1 the membrane grows without bound over time; pass "
                             "num_steps to prove it for a fixed T")

    layers = []
    shape = input_shape
    plan = [("conv1", "bn1", input_max, in_scale), ("conv2", "bn2", 1, 1.0), ("fc1", None, 1, 1.0)]
    for (name, bn_name, in_max, scale), F_req in zip(plan, Fs):
        W = np.asarray(state[f"{name}.weight"])
        q, s = quant_codes(W, bits)
        if name.startswith("conv"):
            if W.ndim != 4 or W.shape[1] != shape[0]:
                raise ConversionError(f"{name}.weight: expected (O, {shape[0]}, KH, KW), got {W.shape}")
            qf = fuse_pool_codes(q)                          # conv + 2x2 pool = one stride-2 conv
            OH, OW = (shape[1] - W.shape[2] + 1) // POOL, (shape[2] - W.shape[3] + 1) // POOL
            if OH < 1 or OW < 1:
                raise ConversionError(f"{name}: input {shape} too small for its kernel")
            out_shape, pool_area, stride = (W.shape[0], OH, OW), POOL * POOL, POOL
        else:
            n_in = int(np.prod(shape))
            if W.ndim != 2 or W.shape[1] != n_in:
                raise ConversionError(f"{name}.weight: expected (O, {n_in}), got {W.shape}")
            qf, out_shape, pool_area, stride = q, (W.shape[0],), 1, 1
        k, b = _fold_layer(state, name, bn_name if bn else None, (q, s), scale, pool_area)

        def attempt(F):
            sign, bias, th, unit = _integerize(k, b, theta, F)
            bounds = _prove_layer(qf, in_max, sign, bias, th, F, float(beta_eff), float(e),
                                  config["reset"], num_steps)
            return sign, bias, th, unit, bounds

        if F_req is None:   # "max": the largest F whose proof holds
            F = None
            for f in range(FRAC_BITS_RANGE[1], FRAC_BITS_RANGE[0] - 1, -1):
                try:
                    res = attempt(f)
                    _check_bounds(name, res[4], leak_p, f)
                except OverflowProofError:
                    continue
                F = f
                break
            if F is None:
                res = attempt(FRAC_BITS_RANGE[0])
                _check_bounds(name, res[4], leak_p, FRAC_BITS_RANGE[0])
        else:
            F = F_req
            res = attempt(F)
            _check_bounds(name, res[4], leak_p, F)
        sign, bias, th, unit, bounds = res
        acc_bits = 16 if bounds["acc"] <= 2 ** 15 - 1 else 32
        qbits = max(1, int(np.abs(qf).max()).bit_length() + 1)
        tol = _tolerance(unit, np.array(th), bounds["membrane"], beta, beta_eff, float(e), F,
                         num_steps)
        layers.append(IntLayer(
            name=name, kind="conv" if name.startswith("conv") else "linear",
            weight=qf.astype(_code_dtype(qbits)), stride=stride, in_shape=tuple(shape),
            out_shape=tuple(out_shape), sign=np.array(sign, np.int8),
            bias=np.array(bias, np.int32), theta=np.array(th, np.int32), frac_bits=int(F),
            in_max=int(in_max), acc_bits=acc_bits, unit=unit, tol=tol, bounds=bounds))
        shape = out_shape
    meta = {"config": {k: config[k] for k in ("beta", "threshold", "reset", "bits", "batchnorm",
                                              "dataset") if k in config},
            "bits": int(bits), "name": config.get("config", config.get("name"))}
    return IntegerModel(layers=layers, leak=leak_p, reset=config["reset"],
                        input_shape=tuple(input_shape), input_max=int(input_max), static=static,
                        num_steps=int(config.get("num_steps", 100)),
                        max_steps=None if beta_eff < 1 else int(num_steps), meta=meta)


def convert_network(net, **kwargs):
    """:func:`convert` of a ``mininsnn.network.Network`` built by ``mininsnn.models`` (its
    ``config`` and ``state_dict()``)."""
    config = getattr(net, "config", None)
    if config is None:
        raise ConversionError("the network has no config; build it with mininsnn.models or pass "
                              "a state dict and a config to convert()")
    return convert(net.state_dict(), config, **kwargs)
