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

This module folds the paper's layout from a state dict and its config (``convert``), and holds
the pieces every conversion shares; mininsnn.deploy.chain converts any chain of layers read from
a Network's layer list with the same pieces (``int_layer``).

The overflow proof (mininsnn.deploy.proof: ``prove_layer``, ``membrane_bound``) bounds every accumulator, input current and membrane over all
inputs in range (pixels 0..input_max, spikes 0/1) and all time steps, and the converter refuses
with the numbers when one exceeds its width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import NamedTuple

import numpy as np

from mininsnn import rules                                   # NumPy only, like this module
from mininsnn.config import ARCHITECTURES, BN_EPS, DEFAULTS  # NumPy only too
from mininsnn.deploy.proof import (ACC_BITS, MEM_BITS, ConversionError,  # noqa: F401 (re-exported)
                                   OverflowProofError, ProofTerms, check_bounds, membrane_bound,
                                   prove_layer, tolerance)

__all__ = ["IntegerModel", "IntLayer", "OverflowProofError", "ConversionError", "convert",
           "reference_layout", "quant_codes", "fuse_pool_codes", "INPUT_SHAPES", "MEM_BITS",
           "ACC_BITS", "ZERO_GAIN_BITS", "FRAC_BITS_RANGE", "ProofTerms", "prove_layer",
           "check_bounds", "membrane_bound", "beta_eff_of"]

#: Input shape per data set, from the one architecture table (mininsnn.config).
INPUT_SHAPES = {name: arch[0] for name, arch in ARCHITECTURES.items()}
STATIC_DATASETS = ("mnist", "fashion-mnist")  # images fed at every step as pixels/255
ZERO_GAIN_BITS = 20  # k_c = 0: u_c = max(theta, |b_c|) / 2^20
FRAC_BITS_RANGE = (-16, 24)  # the F that "max" searches
POOL = 2            # every conv of the reference networks is followed by 2x2 average pooling


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

    kind "conv": weight (O, C, KH, KW) fused codes, stride ``stride``, zero padding ``padding``;
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
    padding: int = 0        # zero padding of a conv's input, on every side
    drive: np.ndarray = None  # (O,) int32 Drive_c of a synaptic layer (None: a Leaky)
    leak: tuple = None        # its own leak when its beta differs from the model's (None: model.leak)
    rec: np.ndarray = None    # (O, O) int32 feedback W_r of a recurrent layer: I[t] += W_r S[t-1]


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
    delay: bool = True       # the reset one step late (R[t] = S[t-1]); False: in the step that fires
    alpha_leak: tuple = None  # the synaptic current's leak, as ``leak`` (None: no synaptic layer)

    @property
    def num_classes(self):
        return self.layers[-1].out_shape[0]

    def beta_eff(self):
        """The leak factor the integers implement, exactly (a Fraction)."""
        return beta_eff_of(self.leak)

    def describe(self):
        """A few lines: the number representation and the overflow proof of every layer."""
        mode, a, bq = self.leak
        leak = (f"leak v*{bq} >> {a} (beta_eff {float(self.beta_eff()):.9f})" if mode == "multiply"
                else f"leak v - (v >> {a}) (beta_eff {float(self.beta_eff()):.9f})")
        lines = [f"integer model: input {self.input_shape} ints 0..{self.input_max} "
                 f"({'static, fed at every step' if self.static else 'one frame per step'}), "
                 f"{leak}, {self.reset} reset{'' if self.delay else ' in the step that fires'}, "
                 f"membranes int{MEM_BITS}"
                 + ("" if self.max_steps is None else f", proven for T <= {self.max_steps}")]
        for L in self.layers:
            b = L.bounds
            lines.append(
                f"  {L.name}: {L.kind} {L.weight.shape}"
                + (f" stride {L.stride} padding {L.padding}" if L.padding else "")
                + (f" (own leak {L.leak[0]} {L.leak[1]} {L.leak[2]})" if L.leak else "")
                + f" codes {L.weight.dtype}, F={L.frac_bits}, "
                f"|acc| <= {b['acc']} (int{L.acc_bits}), |input| <= {b['input']}, "
                f"|membrane| <= {b['membrane']} (limit {2 ** (MEM_BITS - 1) - 1}), "
                f"Theta {int(L.theta.min())}..{int(L.theta.max())}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# folding: float parameters -> (k_c, b_c) per output channel

def _fold_layer(state, prefix, bn, codes_scale, in_scale, pool_area, eps=BN_EPS):
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
        g = gamma / np.sqrt(rv + eps)                       # g_c = gamma_c / sqrt(rv_c + eps)
        k = k * g                                           # k_c = g_c s in_scale / P
        b = g * (b - rm) + np.asarray(state[f"{bn}.bias"], np.float64)  # b_c = beta_c + g_c (bias - rm_c)
    return k, b


def _rint(x):
    """Round half to even, as a Python int (exact for any float)."""
    return int(np.rint(x))


def _integerize(k, b, theta, F):
    """sign, Bias, Theta (Python int lists) and the unit u_c (float64) for fractional bits F;
    theta one float or one per channel (O,)."""
    sign, bias, th, unit = [], [], [], []
    thetas = np.broadcast_to(np.asarray(theta, np.float64), np.shape(k))   # theta or theta_c
    for kc, bc, theta in zip(k, b, thetas):
        theta = float(theta)
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
# conversion

def _require(rule, field, value):
    """``rule(value)`` (mininsnn.rules), or ConversionError "<field> must be ..., got ..."."""
    try:
        return rule(value)
    except rules.RuleError as e:
        raise ConversionError(f"{field} {e}") from None



def beta_eff_of(leak):
    """The leak factor that ("multiply", Q, beta_q) or ("shift", k, 0) implements, exactly."""
    mode, a, bq = leak
    return Fraction(bq, 2 ** a) if mode == "multiply" else 1 - Fraction(1, 2 ** a)


def _leak_params(beta, leak, leak_bits, shift):
    """("multiply", Q, beta_q) or ("shift", k, 0), and the rounding error bound e of leak(v)."""
    if leak == "multiply":
        Q = _require(rules.integer(1, 30), "leak_bits (Q)", leak_bits)
        return ("multiply", Q, _rint(beta * 2 ** Q)), Fraction(1, 2)   # beta_q = rint(beta 2^Q)
    if leak == "shift":
        if shift is None:   # the k whose 1 - 2^-k is nearest to beta
            if beta >= 1:
                raise ConversionError("shift leak: beta = 1 has no shift form; use leak='multiply'")
            shift = min(range(1, 31), key=lambda k: abs(1 - 2.0 ** -k - beta))
        return ("shift", _require(rules.integer(1, 30), "shift", shift), 0), Fraction(1)
    raise ConversionError(f"leak must be 'multiply' or 'shift', got {leak!r}")


def _check_config(config):
    for key in ("beta", "threshold", "reset", "bits", "batchnorm", "dataset"):
        if key not in config:
            raise ConversionError(f"config is missing key {key!r}")
    if config["dataset"] not in INPUT_SHAPES:
        raise ConversionError(f"unknown dataset {config['dataset']!r}; expected one of "
                              f"{sorted(INPUT_SHAPES)}")
    _require(rules.RESET, "reset", config["reset"])
    if not config.get("reset_delay", DEFAULTS["reset_delay"]):
        raise ConversionError("reset_delay=False (the reset in the step that fires) has no "
                              "integer engine yet; export the network with --format nir")
    _require(rules.BETA, "beta", config["beta"])
    _require(rules.THRESHOLD, "threshold", config["threshold"])


def _check_state(state, names):
    for key in names:
        if key not in state:
            raise ConversionError(f"state dict is missing {key!r}")
        a = np.asarray(state[key])
        if a.dtype.kind != "f" or not np.isfinite(a).all():
            raise ConversionError(f"state dict entry {key!r} must be finite floats")


def _weight_bits(cfg_bits, bits):
    """The bits to convert with: the model's, or ``bits`` for a full-precision one (PTQ)."""
    if cfg_bits is None and bits is None:
        raise ConversionError("full-precision model: pass bits (2..16) to quantize its weights "
                              "after training (post-training quantization)")
    if cfg_bits is not None and bits is not None and bits != cfg_bits:
        raise ConversionError(f"the model was trained with {cfg_bits}-bit weights; omit bits or "
                              f"pass {cfg_bits}")
    return _require(rules.integer(*rules.BITS_RANGE), "bits", cfg_bits if bits is None else bits)


def _frac_bits_list(frac_bits, n=3):
    """F per LIF layer (``n`` of them): an int each, or None for "max"."""
    if isinstance(frac_bits, str):
        if frac_bits != "max":
            raise ConversionError(f"frac_bits must be an integer, a list of {n} or 'max', got "
                                  f"{frac_bits!r}")
        return [None] * n
    if isinstance(frac_bits, (int, np.integer)) and not isinstance(frac_bits, bool):
        Fs = [int(frac_bits)] * n
    else:
        Fs = [int(f) for f in frac_bits]
        if len(Fs) != n:
            raise ConversionError(f"frac_bits: expected {n} values (one per LIF layer), got "
                                  f"{len(Fs)}")
    for f in Fs:
        if not FRAC_BITS_RANGE[0] <= f <= 30:
            raise ConversionError(f"frac_bits must lie in {FRAC_BITS_RANGE[0]}..30, got {f}")
    return Fs


def _layer_codes(name, W, shape, bits):
    """(q, qf, out_shape, pool_area, stride) of one synapse: its codes, and conv + 2x2 pool fused
    into one stride-2 conv for a conv (``shape``: its input's)."""
    q, s = quant_codes(W, bits)
    if name.startswith("conv"):
        if W.ndim != 4 or W.shape[1] != shape[0]:
            raise ConversionError(f"{name}.weight: expected (O, {shape[0]}, KH, KW), got {W.shape}")
        OH, OW = (shape[1] - W.shape[2] + 1) // POOL, (shape[2] - W.shape[3] + 1) // POOL
        if OH < 1 or OW < 1:
            raise ConversionError(f"{name}: input {shape} too small for its kernel")
        return (q, s), fuse_pool_codes(q), (W.shape[0], OH, OW), POOL * POOL, POOL
    n_in = int(np.prod(shape))
    if W.ndim != 2 or W.shape[1] != n_in:
        raise ConversionError(f"{name}.weight: expected (O, {n_in}), got {W.shape}")
    return (q, s), q, (W.shape[0],), 1, 1


class _Stage(NamedTuple):
    """One synapse + LIF stage to convert: its synapse and BatchNorm (None) in the state dict,
    its inputs' range 0..in_max and float scale, and the F asked for (None: the largest proven)."""

    name: str
    bn: str | None
    in_max: int
    in_scale: float
    F: int | None


class _Shared(NamedTuple):
    """What every stage shares: the proof's terms, the float beta and theta, the leak, the bits."""

    terms: ProofTerms
    beta: float
    theta: float
    leak: tuple
    bits: int
    drive: object = None    # a synaptic layer: drive_c (O,) floats, and alpha its float decay
    alpha: float = None
    rec: object = None      # a recurrent layer: gain_c Wq_rec[c, j] (O, O) floats


def _integer_layer(stage: _Stage, qf, k, b, shared: _Shared):
    """(F, sign, Bias, Theta, units, bounds) of one stage at stage.F, or at the largest F in
    FRAC_BITS_RANGE whose proof holds (stage.F None); OverflowProofError when none does."""
    def attempt(F):
        sign, bias, th, unit = _integerize(k, b, shared.theta, F)
        drive = None if shared.drive is None else \
            [_rint(d / u) for d, u in zip(shared.drive, unit)]   # Drive_c = rint(drive_c / u_c)
        rec = None if shared.rec is None else np.rint(shared.rec / unit[:, None]).astype(np.int64)
        bounds = prove_layer(qf, stage.in_max, (sign, bias, th), F, shared.terms, drive, rec)
        check_bounds(stage.name, bounds, shared.leak, F)
        return F, sign, bias, th, unit, (bounds, drive, rec)

    if stage.F is not None:
        return attempt(stage.F)
    for f in range(FRAC_BITS_RANGE[1], FRAC_BITS_RANGE[0], -1):
        try:
            return attempt(f)
        except OverflowProofError:
            continue
    return attempt(FRAC_BITS_RANGE[0])      # the last one: its error says why


def _convert_layer(state, stage: _Stage, shape, shared: _Shared):
    """The IntLayer of one stage whose input has ``shape``."""
    W = np.asarray(state[f"{stage.name}.weight"])
    codes_scale, qf, out_shape, pool_area, stride = _layer_codes(stage.name, W, shape, shared.bits)
    k, b = _fold_layer(state, stage.name, stage.bn, codes_scale, stage.in_scale, pool_area)
    kind = "conv" if stage.name.startswith("conv") else "linear"
    return int_layer(stage, (kind, qf, stride, 0), (shape, out_shape), (k, b), shared)


def int_layer(stage: _Stage, synapse, shapes, kb, shared: _Shared):
    """The IntLayer of a stage: synapse (kind, fused codes qf, stride, padding), shapes (in, out),
    kb the folded (k, b) per output channel; F at stage.F or the largest proven."""
    kind, qf, stride, padding = synapse
    k, b = kb
    F, sign, bias, th, unit, (bounds, drive, rec) = _integer_layer(stage, qf, k, b, shared)
    qbits = max(1, int(np.abs(qf).max()).bit_length() + 1)
    syn = None if drive is None else (shared.alpha, bounds["input"])
    return IntLayer(
        name=stage.name, kind=kind, weight=qf.astype(_code_dtype(qbits)), stride=stride,
        in_shape=tuple(shapes[0]), out_shape=tuple(shapes[1]), sign=np.array(sign, np.int8),
        bias=np.array(bias, np.int32), theta=np.array(th, np.int32), frac_bits=int(F),
        in_max=int(stage.in_max), acc_bits=16 if bounds["acc"] <= 2 ** 15 - 1 else 32,
        unit=unit, tol=tolerance(unit, bounds["membrane"], shared.beta, shared.terms, F, syn),
        bounds=bounds, padding=int(padding),
        drive=None if drive is None else np.array(drive, np.int32),
        rec=None if rec is None else rec.astype(np.int32))


def reference_layout(model: IntegerModel):
    """Whether ``model`` has the paper's layout (conv, conv, linear on a (C, H, W) input, no
    padding, the delayed reset): the one the Numba kernels and the event-driven C template are written for."""
    return ([L.kind for L in model.layers] == ["conv", "conv", "linear"] and model.delay
            and all(L.leak is None and L.drive is None for L in model.layers)
            and len(model.input_shape) == 3 and not any(L.padding for L in model.layers))


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
    bits = _weight_bits(config["bits"], bits)
    input_max = _require(rules.integer(1, 255), "input_max", input_max)
    bn = bool(config["batchnorm"])
    _check_state(state, ["conv1.weight", "conv2.weight", "fc1.weight"]
                 + [f"bn{i}.{k}" for i in (1, 2) if bn
                    for k in ("weight", "bias", "running_mean", "running_var")])
    beta, theta = float(config["beta"]), float(config["threshold"])
    leak_p, e = _leak_params(beta, leak, leak_bits, shift)
    input_shape = tuple(INPUT_SHAPES[config["dataset"]] if input_shape is None else input_shape)
    static = config["dataset"] in STATIC_DATASETS if static is None else bool(static)
    Fs = _frac_bits_list(frac_bits)
    beta_eff = beta_eff_of(leak_p)
    if beta_eff == 1 and num_steps is None:
        raise OverflowProofError("with beta_eff = 1 the membrane grows without bound over time; "
                                 "pass num_steps to prove it for a fixed T")
    shared = _Shared(ProofTerms(float(beta_eff), float(e), config["reset"], num_steps), beta,
                     theta, leak_p, bits)
    stages = [_Stage("conv1", "bn1" if bn else None, input_max, 1.0 / 255 if static else 1.0,
                     Fs[0]),
              _Stage("conv2", "bn2" if bn else None, 1, 1.0, Fs[1]),
              _Stage("fc1", None, 1, 1.0, Fs[2])]
    layers, shape = [], input_shape
    for stage in stages:
        layers.append(_convert_layer(state, stage, shape, shared))
        shape = layers[-1].out_shape
    meta = {"config": {k: config[k] for k in ("beta", "threshold", "reset", "bits", "batchnorm",
                                              "dataset") if k in config},
            "bits": int(bits), "name": config.get("config", config.get("name"))}
    return IntegerModel(layers=layers, leak=leak_p, reset=config["reset"],
                        input_shape=tuple(input_shape), input_max=int(input_max), static=static,
                        num_steps=int(config.get("num_steps", DEFAULTS["num_steps"])),
                        max_steps=None if beta_eff < 1 else int(num_steps), meta=meta)
