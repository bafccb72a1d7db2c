"""C99 text of an integer model of any chain of conv and linear layers (NumPy only).

mininsnn.deploy.cexport writes the paper's layout (conv, conv, linear, no padding) with its
event-driven template and every other chain with :func:`general_files`: one function per layer
that forms the layer's input current from the previous layer's spikes (or the input), dense loops
over (C, H, W) arrays with the zero padding as bounds, and one ``lif_step`` for every neuron
layer. The same integers as engine.py (docs/deploy.md); no malloc, no float, only <stdint.h> and
<string.h>. The caller owns the state struct; the only stack use is a few ints.
"""

from __future__ import annotations

import numpy as np

from mininsnn.deploy.conversion import IntegerModel

__all__ = ["ctype", "c_array", "HELPERS", "general_files", "general_arrays", "general_sizes"]


def ctype(dtype):
    return {np.dtype(np.int8): "int8_t", np.dtype(np.int16): "int16_t",
            np.dtype(np.int32): "int32_t", np.dtype(np.uint8): "uint8_t"}[np.dtype(dtype)]


def c_array(name, a, per_line=24):
    a = np.asarray(a).ravel()
    vals = [str(int(v)) for v in a]
    lines = [", ".join(vals[i:i + per_line]) for i in range(0, len(vals), per_line)]
    body = ",\n    ".join(lines)
    return f"static const {ctype(a.dtype)} {name}[{len(a)}] = {{\n    {body}\n}};\n"


#: floor_shift, leak and current: C text for str.format with ``multiply`` (1: multiply leak);
#: the file defines LEAK_SHIFT and LEAK_MUL before it.
HELPERS = """/* floor(x / 2^s) for any sign, with shifts of non-negative values only (C99 leaves >> of a
 * negative value implementation-defined). */
static int64_t floor_shift(int64_t x, int s)
{{
    return x >= 0 ? (x >> s) : -(((-x) - 1) >> s) - 1;
}}

/* leak(v) = (v beta_q + 2^(Q-1)) >> Q   or   v - (v >> k) */
static int64_t leak(int64_t v)
{{
#if {multiply}
    return floor_shift(v * (int64_t)LEAK_MUL + ((int64_t)1 << (LEAK_SHIFT - 1)), LEAK_SHIFT);
#else
    return v - floor_shift(v, LEAK_SHIFT);
#endif
}}

/* I = sgn_c (A << F) + Bias_c   (F < 0: sgn_c ((A + 2^(-F-1)) >> -F) + Bias_c) */
static int32_t current(int64_t a, int f, int8_t sign, int32_t bias)
{{
    if (f >= 0) {{
        a = a * ((int64_t)1 << f);
    }} else {{
        a = floor_shift(a + ((int64_t)1 << (-f - 1)), -f);
    }}
    return (int32_t)(sign * a + bias);
}}

"""


def general_arrays(model: IntegerModel):
    """name -> const table: per layer l weights w<l> (conv (O, C, KH, KW); linear transposed to
    (F, O), a row per input), sign<l>, bias<l>, theta<l>."""
    out = {}
    for i, L in enumerate(model.layers):
        w = L.weight if L.kind == "conv" else np.ascontiguousarray(L.weight.T)
        out[f"w{i}"] = w
        out[f"sign{i}"] = L.sign.astype(np.int8)
        out[f"bias{i}"] = L.bias.astype(np.int32)
        out[f"theta{i}"] = L.theta.astype(np.int32)
        if L.drive is not None:
            out[f"drive{i}"] = L.drive.astype(np.int32)
        if L.rec is not None:       # the feedback W_r transposed: a row per input neuron
            out[f"rec{i}"] = np.ascontiguousarray(L.rec.T.astype(np.int32))
        mode, a, bq = L.leak or model.leak
        out[f"leak{i}"] = np.array([mode == "multiply", a, bq], np.int32)   # this layer's leak
    return out


def general_sizes(model: IntegerModel):
    """(const bytes, state bytes): the tables, and sizeof the state struct (per layer int32
    current and membrane, uint8 spikes, aligned as a C compiler lays them out)."""
    const = sum(a.nbytes for a in general_arrays(model).values())
    offset = 0
    for L in model.layers:
        n = int(np.prod(L.out_shape))
        for size in (4, 4) + (4, 4) * (L.drive is not None) + (4,) * (L.rec is not None) + (1,):
            offset = -(-offset // size) * size + n * size
    return const, -(-offset // 4) * 4


_LEAK_BY = """\
/* The layer's leak, lk = {multiply?, Q or k, beta_q}: (v beta_q + 2^(Q-1)) >> Q  or  v - (v >> k) */
static int64_t leak_by(int64_t v, const int32_t *lk)
{
    if (lk[0]) {
        return floor_shift(v * (int64_t)lk[2] + ((int64_t)1 << (lk[1] - 1)), lk[1]);
    }
    return v - floor_shift(v, lk[1]);
}

"""

_LIF = """\
/* One LIF step of n neurons, m per channel (channel = k / m, arrays (C, H, W)):
 * V = leak(V) + I - Theta R  (zero reset: (leak(V) + I)(1 - R)), R = previous spike, S = [V > Theta];
 * without RESET_DELAY: W = leak(V) + I, S = [W > Theta], V = W - Theta S  (zero: W (1 - S)) */
static void lif_step(int32_t *v, const int32_t *cur, uint8_t *s, int n, int m, const int32_t *theta,
                     const int32_t *lk)
{
    int k;
    for (k = 0; k < n; ++k) {
        int64_t th = theta[k / m];
        int64_t u = leak_by(v[k], lk) + cur[k];
#if !RESET_DELAY
        s[k] = (uint8_t)(u > th);       /* the reset in the step that fires: R = S[t] */
#endif
        if (s[k]) {
#if ZERO_RESET
            u = 0;
#else
            u -= th;
#endif
        }
        v[k] = (int32_t)u;
#if RESET_DELAY
        s[k] = (uint8_t)(u > th);
#endif
    }
}
"""

_CUBA = """\
/* alpha_leak(j): the synaptic current's leak, as leak() */
static int64_t alpha_leak(int64_t j)
{
#if ALEAK_MUL
    return floor_shift(j * (int64_t)ALEAK_MUL + ((int64_t)1 << (ALEAK_SHIFT - 1)), ALEAK_SHIFT);
#else
    return j - floor_shift(j, ALEAK_SHIFT);
#endif
}

/* One step of n synaptic neurons, m per channel: J = alpha_leak(J) + I (never reset), then
 * lif_step's update with the input J + Drive_c. */
static void cuba_step(int32_t *v, int32_t *j, const int32_t *cur, uint8_t *s, int n, int m,
                      const int32_t *theta, const int32_t *lk, const int32_t *drive, int32_t *in)
{
    int k;
    for (k = 0; k < n; ++k) {
        j[k] = (int32_t)(alpha_leak(j[k]) + cur[k]);
        in[k] = j[k] + drive[k / m];
    }
    lif_step(v, in, s, n, m, theta, lk);
}
"""

_REC = """\
/* in = cur + W_r S[t-1] of a recurrent layer of n neurons (s: its spikes of the last step);
 * event-driven: a spike of neuron f adds row f of r (W_r transposed). The overflow proof bounds
 * cur plus any partial sum of the feedback. */
static void rec_add(const int32_t *cur, const uint8_t *s, const int32_t *r, int n, int32_t *in)
{
    int f, k;
    memcpy(in, cur, sizeof(int32_t) * (size_t)n);
    for (f = 0; f < n; ++f) {
        if (s[f]) {
            const int32_t *row = &r[f * n];
            for (k = 0; k < n; ++k) {
                in[k] += row[k];
            }
        }
    }
}
"""

_CONV = """\
/* {lname}: conv {O}x{C}x{KH}x{KW} codes, stride {S}, zero padding {P}, input {C}x{H}x{W} ->
 * {O}x{OH}x{OW}, F = {F}:  A[o][i][j] = sum w[o][c][kh][kw] x[c][i {S} + kh - {P}][j {S} + kw - {P}] */
static void layer{l}(const uint8_t *x, int32_t *cur)
{{
    int o, i, j, c, kh, kw;
    for (o = 0; o < {O}; ++o) {{
        for (i = 0; i < {OH}; ++i) {{
            for (j = 0; j < {OW}; ++j) {{
                int32_t a = 0;
                for (c = 0; c < {C}; ++c) {{
                    for (kh = 0; kh < {KH}; ++kh) {{
                        int y = i * {S} + kh - {P};
                        if (y < 0 || y >= {H}) {{
                            continue;
                        }}
                        for (kw = 0; kw < {KW}; ++kw) {{
                            int xx = j * {S} + kw - {P};
                            if (xx < 0 || xx >= {W}) {{
                                continue;
                            }}
                            a += (int32_t)w{l}[((o * {C} + c) * {KH} + kh) * {KW} + kw] *
                                 (int32_t)x[(c * {H} + y) * {W} + xx];
                        }}
                    }}
                }}
                cur[(o * {OH} + i) * {OW} + j] = current(a, {F}, sign{l}[o], bias{l}[o]);
            }}
        }}
    }}
}}
"""

_LINEAR = """\
/* {lname}: linear {O}x{N} codes (stored as rows per input), F = {F}; event-driven: a nonzero
 * input x[f] adds x[f] w[f][:] to the accumulator. */
static void layer{l}(const uint8_t *x, int32_t *cur)
{{
    int f, o;
    memset(cur, 0, sizeof(int32_t) * {O});
    for (f = 0; f < {N}; ++f) {{
        if (x[f]) {{
            const {wtype} *w = &w{l}[f * {O}];
            int32_t xf = x[f];
            for (o = 0; o < {O}; ++o) {{
                cur[o] += (int32_t)w[o] * xf;
            }}
        }}
    }}
    for (o = 0; o < {O}; ++o) {{
        cur[o] = current(cur[o], {F}, sign{l}[o], bias{l}[o]);
    }}
}}
"""


def _layer_fn(i, L):
    """The C function ``layer<i>`` that writes layer i's input current."""
    shape_in = tuple(L.in_shape)
    if L.kind == "linear":
        return _LINEAR.format(lname=L.name, l=i, O=L.out_shape[0], N=int(np.prod(shape_in)),
                              F=L.frac_bits, wtype=ctype(L.weight.dtype))
    O, C, KH, KW = L.weight.shape
    return _CONV.format(lname=L.name, l=i, O=O, C=C, KH=KH, KW=KW, S=L.stride, P=L.padding,
                        H=shape_in[1], W=shape_in[2], OH=L.out_shape[1], OW=L.out_shape[2],
                        F=L.frac_bits)


def _input_dims(shape):
    """(C, H, W) macros of the input: (F,) -> (F, 1, 1), (H, W) -> (1, H, W)."""
    shape = tuple(int(d) for d in shape)
    return (1,) * (3 - len(shape)) + shape if len(shape) > 1 else (shape[0], 1, 1)


def _predict(model, name, P):
    """The body of <name>_predict."""
    n = len(model.layers)
    K = model.layers[-1].out_shape[0]
    first = "    layer0(input, st->cur0);\n" if model.static else ""
    per_step = "" if model.static else \
        f"        layer0(input + (long)t * {P}_IN_C * {P}_IN_H * {P}_IN_W, st->cur0);\n"
    for i, L in enumerate(model.layers):
        if i:
            per_step += f"        layer{i}(st->s{i - 1}, st->cur{i});\n"
        m = int(np.prod(L.out_shape[1:])) if len(L.out_shape) > 1 else 1
        cur = f"st->cur{i}"
        if L.rec is not None:       # st->fb{i}: cur + W_r S[t-1], before s{i} is overwritten
            per_step += (f"        rec_add(st->cur{i}, st->s{i}, rec{i}, "
                         f"{int(np.prod(L.out_shape))}, st->fb{i});\n")
            cur = f"st->fb{i}"
        if L.drive is not None:     # st->in{i}: J + Drive, formed where cur{i} is not needed
            per_step += (f"        cuba_step(st->v{i}, st->j{i}, {cur}, st->s{i}, "
                         f"{int(np.prod(L.out_shape))}, {m}, theta{i}, leak{i}, drive{i}, "
                         f"st->in{i});\n")
            continue
        per_step += (f"        lif_step(st->v{i}, {cur}, st->s{i}, "
                     f"{int(np.prod(L.out_shape))}, {m}, theta{i}, leak{i});\n")
    return f"""\
int {name}_predict(const uint8_t *input, int32_t num_steps, {name}_state *st, uint16_t *counts)
{{
    int32_t t;
    int o, best;
    if (num_steps < 1 || num_steps > {P}_MAX_STEPS) {{
        return -1;
    }}
    memset(st, 0, sizeof(*st));
    memset(counts, 0, sizeof(uint16_t) * {K});
{first}    for (t = 0; t < num_steps; ++t) {{
{per_step}        for (o = 0; o < {K}; ++o) {{
            counts[o] = (uint16_t)(counts[o] + st->s{n - 1}[o]);
        }}
    }}
    best = 0;
    for (o = 1; o < {K}; ++o) {{
        if (counts[o] > counts[best]) {{
            best = o;
        }}
    }}
    return best;
}}
"""


def _header(model, name, P, desc, sizes, max_steps):
    C, H, W = _input_dims(model.input_shape)
    fields = "".join(
        f"    int32_t cur{i}[{n}];   /* {L.name}: input current (C, H, W) */\n"
        f"    int32_t v{i}[{n}];     /* membranes */\n"
        + (f"    int32_t j{i}[{n}];     /* synaptic currents */\n"
           f"    int32_t in{i}[{n}];    /* J + Drive: the membranes' input */\n"
           if L.drive is not None else "")
        + (f"    int32_t fb{i}[{n}];    /* I + W_r S[t-1]: the recurrent layer's input */\n"
           if L.rec is not None else "")
        + f"    uint8_t s{i}[{n}];     /* spikes of the last step */\n"
        for i, L in enumerate(model.layers) for n in [int(np.prod(L.out_shape))])
    return f"""\
/* {name}.h: integer-only spiking network exported by mininsnn (mininsnn.deploy.cexport).
 * {desc}
 * Weights and parameters: {sizes[0]} bytes of const data; state (RAM): {sizes[1]} bytes.
 * C99, no malloc, no float; only <stdint.h> and <string.h>.
 */
#ifndef {P}_H_INCLUDED
#define {P}_H_INCLUDED

#include <stdint.h>

#define {P}_IN_C {C}
#define {P}_IN_H {H}
#define {P}_IN_W {W}
#define {P}_INPUT_MAX {model.input_max}
#define {P}_STATIC_INPUT {int(model.static)}   /* 1: one image fed at every step; 0: one frame per step */
#define {P}_CLASSES {model.layers[-1].out_shape[0]}
#define {P}_MAX_STEPS {max_steps}      /* the overflow proof covers num_steps <= this */

typedef struct {{
{fields}}} {name}_state;

/* Runs num_steps steps (1..{P}_MAX_STEPS) and writes the output spike counts to counts[{P}_CLASSES].
 * input: {"C*H*W bytes, one image (fed at every step)" if model.static else
           "num_steps*C*H*W bytes, one frame per step"}, values 0..{P}_INPUT_MAX.
 * Returns the predicted class (argmax of counts, ties to the lowest index), or -1 if num_steps is
 * out of range. The state needs no initialisation. */
int {name}_predict(const uint8_t *input, int32_t num_steps, {name}_state *st, uint16_t *counts);

#endif
"""


def _helpers_without_leak():
    """HELPERS (floor_shift, current) without its model-wide leak(): each layer has its own."""
    a, b = HELPERS.index("/* leak(v) ="), HELPERS.index("/* I = sgn_c")
    return (HELPERS[:a] + HELPERS[b:]).format(multiply=0)


def _alpha_macros(model):
    if model.alpha_leak is None:
        return ""
    mode, a, bq = model.alpha_leak
    return (f"#define ALEAK_SHIFT {a}\n#define ALEAK_MUL {bq if mode == 'multiply' else 0}"
            "   /* the synaptic current's leak, as LEAK_* */\n")


def general_files(model: IntegerModel, name, desc, max_steps):
    """{file name: text} of ``<name>.h`` and ``<name>.c`` for any chain, and (const, state) bytes.
    The last layer must be linear (its neurons are the classes)."""
    sizes = general_sizes(model)
    P = name.upper()
    arrays = "".join(c_array(k, v) for k, v in general_arrays(model).items())
    layers = "\n".join(_layer_fn(i, L) for i, L in enumerate(model.layers))
    source = (f"/* {name}.c: see {name}.h. Generated by mininsnn; the equations are in "
              f"docs/deploy.md. */\n#include <string.h>\n#include \"{name}.h\"\n\n"
              f"#define ZERO_RESET {int(model.reset == 'zero')}\n"
              f"#define RESET_DELAY {int(model.delay)}\n{_alpha_macros(model)}\n{arrays}"
              + _helpers_without_leak() + _LEAK_BY + _LIF + "\n"
              + (_CUBA + "\n" if model.alpha_leak is not None else "")
              + (_REC + "\n" if any(L.rec is not None for L in model.layers) else "")
              + layers + "\n"
              + _predict(model, name, P))
    return ({f"{name}.h": _header(model, name, P, desc, sizes, max_steps), f"{name}.c": source},
            sizes)
