"""Every kernel in mininsnn/kernels/ (and the fused conv + pool) equals its plain twin.

Each twin sits in the library right below its kernel, takes the same arguments and writes the same
outputs, so each test calls both the same way on hypothesis-drawn shapes and values and compares:

- ``assert_array_equal`` where the kernel and its twin do the same floating-point operations in the
  same order (the event-driven kernels skip zero inputs, which adds nothing: x + 0 == x);
- ``assert_within_rounding`` where they sum the same terms in another order or grouping (BLAS, the
  window-pattern tables, float64 intermediates in the kernel): see its docstring for the bound.

Study mode: ``NUMBA_DISABLE_JIT=1 PYTHONPATH=$PWD python -m pytest tests/test_kernels.py`` runs the
kernels themselves as plain Python; the shapes here are small enough for that to take well under a
minute with the default example count.
"""

import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st

from mininsnn import surrogate as sg
from mininsnn.kernels import conv as kconv
from mininsnn.kernels import lif as klif
from mininsnn.kernels import linear as klinear
from mininsnn.kernels import norm as knorm
from mininsnn.kernels import pool as kpool
from mininsnn.kernels import spikeconv as kspike
from mininsnn.layers import (conv_avgpool_backward_input_plain, conv_avgpool_backward_weight_plain,
                             conv_avgpool_forward_plain, fuse_avgpool, unfuse_avgpool_grad)

DTYPES = st.sampled_from([np.float32, np.float64])


def assert_within_rounding(fast, plain, magnitude, terms):
    """Elementwise |fast - plain| <= 2 * (terms + 2) * eps * magnitude, eps of fast's dtype.

    Both sides evaluate the same sum of at most ``terms`` rounded products, in different orders or
    groupings. Any such evaluation lies within gamma_n * sum|products| of the exact sum, with
    gamma_n = n u / (1 - n u), u = eps / 2 (Higham, Accuracy and Stability of Numerical Algorithms,
    ch. 3-4); ``magnitude`` is that sum of absolute values (the plain twin run on |inputs|, in
    float64). The two sides therefore differ by at most 2 gamma_n * magnitude ~ n eps * magnitude;
    "+ 2" covers a scaling such as 1/k^2 and the final rounding to the output dtype, and the factor 2
    is margin. A wrong index or a missing term breaks this by far more than rounding.
    """
    eps = np.finfo(fast.dtype).eps
    bound = 2 * (terms + 2) * eps * np.asarray(magnitude, np.float64)
    err = np.abs(fast.astype(np.float64) - plain.astype(np.float64))
    worst = np.unravel_index(np.argmax(err - bound), err.shape) if err.size else ()
    assert (err <= bound).all(), f"|fast - plain| = {err[worst]:.3e} > bound {bound[worst]:.3e} at {worst}"


def _values(rng, shape, dtype, kind="dense"):
    """Random inputs: "dense" normal floats, "sparse" floats with ~70 % zeros, "spikes" uint8 0/1."""
    if kind == "spikes":
        return (rng.random(shape) < 0.3).astype(np.uint8)
    x = rng.standard_normal(shape).astype(dtype)
    return x * (rng.random(shape) < 0.3) if kind == "sparse" else x


# ------------------------------------------------------------------------------------------------
# LIF

SURR = [sg.fast_sigmoid(13.84), sg.sigmoid(5.0), sg.atan(2.0)]
lif_cases = st.fixed_dictionaries(dict(
    T=st.integers(1, 8), N=st.integers(1, 6), static=st.booleans(), zero_reset=st.booleans(),
    reset_delay=st.booleans(),
    beta=st.floats(0.0, 1.0), theta=st.floats(0.05, 3.0), surr=st.sampled_from(SURR),
    bound=st.sampled_from([np.inf, 0.25, 1.0]), on_grid=st.booleans(), seed=st.integers(0, 2**31 - 1),
    dtype=DTYPES))


def _lif_args(c):
    """Input current and scalars of the case's dtype. ``on_grid``: theta = 1, beta = 0.5 and inputs on
    a 1/4 grid, so that potentials land exactly on the threshold (strict H: no spike) and on the
    sparse-gradient bound theta +- B (B = 0.25 or 1: the surrogate is kept there) now and then."""
    rng = np.random.default_rng(c["seed"])
    d = np.dtype(c["dtype"]).type
    TI = 1 if c["static"] else c["T"]
    bound = d(c["bound"] if c.get("reset_delay", True) else np.inf)  # same-step reset: exact only
    if c["on_grid"]:
        I = rng.integers(-2, 6, (TI, c["N"])).astype(c["dtype"]) / 4
        return I, d(0.5), d(1.0), c["surr"], bound
    I = (rng.standard_normal((TI, c["N"])) * c["theta"]).astype(c["dtype"])
    return I, d(c["beta"]), d(c["theta"]), c["surr"], bound


def _lif_kernels(c):
    """(forward, its twin, backward, its twin) of the case's reset timing, delayed (the paper's) or
    in the same step (reset_delay=False), with one signature each:
    forward(I, T, beta, theta, zero_reset, smooth, code, k, bound, U, S) (no active list) and
    backward(dS, U, beta, theta, zero_reset, code, k, bound, dI). The same-step kernels have no
    truncated surrogate (the sparse backward needs the delayed reset): _lif_args gives them
    bound = inf, and the wrappers drop it."""
    if c["reset_delay"]:
        unlisted = lambda kernel: (lambda *a: kernel(*a, None, None, None))  # noqa: E731
        return (unlisted(klif.lif_forward), unlisted(klif.lif_forward_plain), klif.lif_backward,
                klif.lif_backward_plain)
    no_bound = lambda kernel, i: (lambda *a: kernel(*a[:i], *a[i + 1:]))  # noqa: E731
    return (no_bound(klif.lif_forward_nodelay, 8), no_bound(klif.lif_forward_nodelay_plain, 8),
            no_bound(klif.lif_backward_nodelay, 7), no_bound(klif.lif_backward_nodelay_plain, 7))


@given(c=lif_cases, smooth=st.booleans())
def test_lif_forward_equals_plain(c, smooth):
    """Exact, spikes and smooth twin alike: the same operations in the same order, so no margin from
    the threshold is needed (a potential exactly at theta stays silent in both)."""
    I, beta, theta, s, bound = _lif_args(c)
    T, N = c["T"], c["N"]
    out = []
    for kernel in _lif_kernels(c)[:2]:
        U = np.empty((T, N), c["dtype"])  # (T, N)
        S = np.empty((T, N), c["dtype"] if smooth else np.uint8)  # (T, N)
        kernel(I, T, beta, theta, c["zero_reset"], smooth, s.code, np.dtype(c["dtype"]).type(s.k), bound, U, S)
        out.append((U, S))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])


@given(c=lif_cases)
def test_lif_backward_equals_plain(c):
    """Exact: the same recursion dU[t] = dS[t] sg_B'(U[t] - theta) + beta dU[t+1] (same-step reset:
    dV[t] = dS[t] sg'(V[t] - theta) + beta dV[t+1] (1 - S[t] for zero reset)), same order."""
    I, beta, theta, s, bound = _lif_args(c)
    forward, _, backward, backward_plain = _lif_kernels(c)
    T, N = c["T"], c["N"]
    k = np.dtype(c["dtype"]).type(s.k)
    U = np.empty((T, N), c["dtype"])  # (T, N)
    S = np.empty((T, N), np.uint8)  # (T, N)
    forward(I, T, beta, theta, c["zero_reset"], False, s.code, k, bound, U, S)
    dS = np.random.default_rng(c["seed"] + 1).standard_normal((T, N)).astype(c["dtype"])  # (T, N)
    dI, dI_plain = np.full_like(I, np.nan), np.full_like(I, np.nan)  # (TI, N)
    backward(dS, U, beta, theta, c["zero_reset"], s.code, k, bound, dI)
    backward_plain(dS, U, beta, theta, c["zero_reset"], s.code, k, bound, dI_plain)
    np.testing.assert_array_equal(dI, dI_plain)


def _lif_active(kernel, I, T, beta, theta, c, s, bound, block_count):
    """Run a LIF forward that lists its active entries; (U, S, act_n, act_g, act_ptr)."""
    N = I.shape[1]
    U, S = np.empty((T, N), c["dtype"]), np.empty((T, N), np.uint8)  # (T, N)
    slots = block_count * T * klif.BLOCK
    act_n, act_g = np.full(slots, -1, np.int32), np.full(slots, np.nan, c["dtype"])  # (slots,)
    act_ptr = np.full((block_count, T + 1), -1, np.int64)  # (nblk, T+1)
    kernel(I, T, beta, theta, c["zero_reset"], False, s.code, np.dtype(c["dtype"]).type(s.k), bound, U, S,
           act_n, act_g, act_ptr)
    return U, S, act_n, act_g, act_ptr


@given(c=lif_cases)
def test_lif_forward_active_list_equals_plain(c):
    """Exact: the same entries (|U - theta| <= B, n ascending per step), the same sg' values, the
    same pointers; and they are exactly the entries where the truncated surrogate is not 0."""
    I, beta, theta, s, bound = _lif_args(c)
    T, N = c["T"], c["N"]
    a = _lif_active(klif.lif_forward, I, T, beta, theta, c, s, bound, 1)
    b = _lif_active(klif.lif_forward_plain, I, T, beta, theta, c, s, bound, 1)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    U, _, act_n, _, act_ptr = a
    listed = np.zeros((T, N), bool)
    for t in range(T):
        listed[t, act_n[act_ptr[0, t]:act_ptr[0, t + 1]]] = True
    np.testing.assert_array_equal(listed, np.abs(U - theta) <= bound)


@given(c=lif_cases)
def test_lif_backward_active_equals_plain_and_dense(c):
    """Exact, both: the twin, and the dense lif_backward (truncated) with dS equal to the listed
    values at the listed entries and anything finite elsewhere (it is multiplied by 0 there)."""
    I, beta, theta, s, bound = _lif_args(c)
    T, N = c["T"], c["N"]
    k = np.dtype(c["dtype"]).type(s.k)
    U, S, act_n, act_g, act_ptr = _lif_active(klif.lif_forward, I, T, beta, theta, c, s, bound, 1)
    rng = np.random.default_rng(c["seed"] + 1)
    dS = rng.standard_normal((T, N)).astype(c["dtype"])  # (T, N)
    dS_act = np.full(act_n.shape, np.nan, c["dtype"])  # (slots,)
    for t in range(T):
        e = np.arange(act_ptr[0, t], act_ptr[0, t + 1])
        dS_act[e] = dS[t, act_n[e]]
    out = []
    for kernel in (klif.lif_backward_active, klif.lif_backward_active_plain):
        dI = np.full_like(I, np.nan)  # (TI, N)
        kernel(dS_act, act_n, act_g, act_ptr, beta, theta, c["zero_reset"], U, dI)
        out.append(dI)
    dI_dense = np.full_like(I, np.nan)
    klif.lif_backward(dS, U, beta, theta, c["zero_reset"], s.code, k, bound, dI_dense)
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[0], dI_dense)


# ------------------------------------------------------------------------------------------------
# Convolution

conv_cases = st.fixed_dictionaries(dict(
    N=st.integers(1, 3), C=st.integers(1, 3), O=st.integers(1, 3), KH=st.integers(1, 4), KW=st.integers(1, 4),
    stride=st.integers(1, 3), pad=st.integers(0, 2), H=st.integers(1, 7), W=st.integers(1, 7),
    P=st.integers(1, 3), kind=st.sampled_from(["dense", "sparse", "spikes"]),
    seed=st.integers(0, 2**31 - 1), dtype=DTYPES))


def _conv_shapes(c):
    assume(c["H"] + 2 * c["pad"] >= c["KH"] and c["W"] + 2 * c["pad"] >= c["KW"])
    OH = (c["H"] + 2 * c["pad"] - c["KH"]) // c["stride"] + 1
    OW = (c["W"] + 2 * c["pad"] - c["KW"]) // c["stride"] + 1
    return OH, OW


def _conv_data(c):
    """X (N, C, H, W), Wt (C, KH, KW, O) and dY (N, O, OH, OW) for a case."""
    OH, OW = _conv_shapes(c)
    rng = np.random.default_rng(c["seed"])
    X = _values(rng, (c["N"], c["C"], c["H"], c["W"]), c["dtype"], c["kind"])
    Wt = rng.standard_normal((c["C"], c["KH"], c["KW"], c["O"])).astype(c["dtype"])
    dY = rng.standard_normal((c["N"], c["O"], OH, OW)).astype(c["dtype"])
    return X, Wt, dY


@given(c=conv_cases)
def test_conv2d_forward_equals_plain(c):
    """Exact: for each output the kernel adds the products in the twin's order (c, kh, kw)."""
    X, Wt, dY = _conv_data(c)
    Y, Y_plain = np.full_like(dY, np.nan), np.full_like(dY, np.nan)  # (N, O, OH, OW)
    kconv.conv2d_forward(X, Wt, c["stride"], c["pad"], Y)
    kconv.conv2d_forward_plain(X, Wt, c["stride"], c["pad"], Y_plain)
    np.testing.assert_array_equal(Y, Y_plain)


@given(c=conv_cases)
def test_conv2d_backward_weight_equals_plain(c):
    """Exact, slice by slice: each part adds its samples' products in the twin's order (n, i, j)."""
    X, Wt, dY = _conv_data(c)
    shape = (c["P"],) + Wt.shape  # (P, C, KH, KW, O)
    parts, parts_plain = np.full(shape, np.nan, c["dtype"]), np.full(shape, np.nan, c["dtype"])
    kconv.conv2d_backward_weight(X, dY, c["stride"], c["pad"], parts)
    kconv.conv2d_backward_weight_plain(X, dY, c["stride"], c["pad"], parts_plain)
    np.testing.assert_array_equal(parts, parts_plain)


def _input_grad_weights(W):
    """Wm (O4, KH*KW*C) as conv2d_backward_input takes it: Wm[o, (kh*KW + kw)*C + c] = W[o, c, kh, kw],
    O rounded up to a multiple of 4 with zero rows."""
    O, C, KH, KW = W.shape
    Wm = np.zeros(((O + 3) // 4 * 4, KH * KW * C), W.dtype)  # (O4, KH*KW*C)
    Wm[:O] = W.transpose(0, 2, 3, 1).reshape(O, KH * KW * C)
    return Wm


@given(c=conv_cases)
def test_conv2d_backward_input_equals_plain(c):
    """To rounding: the kernel sums over o in a blocked product (pairs of pairs), then over the taps;
    at most O*KH*KW terms."""
    X, Wt, dY = _conv_data(c)
    C, KH, KW, O = Wt.shape
    Wm = _input_grad_weights(Wt.transpose(3, 0, 1, 2))  # (O4, KH*KW*C)
    dX, dX_plain = np.full(X.shape, np.nan, c["dtype"]), np.full(X.shape, np.nan, c["dtype"])  # (N, C, H, W)
    kconv.conv2d_backward_input(dY, Wm, c["stride"], c["pad"], KH, KW, 1, dX)
    kconv.conv2d_backward_input_plain(dY, Wm, c["stride"], c["pad"], KH, KW, 1, dX_plain)
    mag = np.empty(X.shape)
    kconv.conv2d_backward_input_plain(np.abs(dY).astype(np.float64), np.abs(Wm).astype(np.float64),
                                      c["stride"], c["pad"], KH, KW, 1, mag)
    assert_within_rounding(dX, dX_plain, mag, O * KH * KW)


@given(c=conv_cases, pool=st.integers(1, 3))
def test_conv2d_backward_input_with_pooling_equals_plain(c, pool):
    """Conv (any stride) then k x k pooling: to rounding, against the twin's direct sum over
    (o, i, j, a, b); at most O*KH*KW*k^2 terms. Also bit for bit the same on any BLAS: no BLAS."""
    X, Wt, _ = _conv_data(c)
    C, KH, KW, O = Wt.shape
    OH, OW = _conv_shapes(c)
    assume(OH >= pool and OW >= pool)
    dY = np.random.default_rng(c["seed"] + 3).standard_normal((c["N"], O, OH // pool, OW // pool)).astype(c["dtype"])
    Wm = _input_grad_weights(Wt.transpose(3, 0, 1, 2))  # (O4, KH*KW*C)
    dX, dX_plain = np.full(X.shape, np.nan, c["dtype"]), np.full(X.shape, np.nan, c["dtype"])  # (N, C, H, W)
    kconv.conv2d_backward_input(dY, Wm, c["stride"], c["pad"], KH, KW, pool, dX)
    kconv.conv2d_backward_input_plain(dY, Wm, c["stride"], c["pad"], KH, KW, pool, dX_plain)
    mag = np.empty(X.shape)
    kconv.conv2d_backward_input_plain(np.abs(dY).astype(np.float64), np.abs(Wm).astype(np.float64),
                                      c["stride"], c["pad"], KH, KW, pool, mag)
    assert_within_rounding(dX, dX_plain, mag, O * KH * KW * pool * pool)


@given(c=conv_cases, T=st.integers(1, 3), rate=st.sampled_from([0.0, 0.3, 1.0]))
def test_conv2d_backward_input_at_equals_plain_and_dense(c, T, rate):
    """At the listed entries only: to rounding against the twin and against the dense input
    gradient (O*KH*KW terms); slots not listed are left alone."""
    X, Wt, dY = _conv_data(c)
    C, KH, KW, O = Wt.shape
    B = c["N"]
    rng = np.random.default_rng(c["seed"] + 2)
    dY = rng.standard_normal((T * B,) + dY.shape[1:]).astype(c["dtype"])  # (T*B, O, OH, OW)
    N1 = B * C * c["H"] * c["W"]  # neurons of the layer before
    nblk = (N1 + klif.BLOCK - 1) // klif.BLOCK
    act_n = np.zeros(nblk * T * klif.BLOCK, np.int32)
    act_ptr = np.zeros((nblk, T + 1), np.int64)
    chosen = rng.random((T, N1)) < rate
    for t in range(T):  # one block: N1 <= BLOCK here
        idx = np.flatnonzero(chosen[t])
        act_n[act_ptr[0, t]:act_ptr[0, t] + len(idx)] = idx
        act_ptr[0, t + 1] = act_ptr[0, t] + len(idx)
    args = (c["stride"], c["pad"], B, c["H"], c["W"], act_n, act_ptr, klif.BLOCK)
    out, out_plain = np.full(act_n.shape, 7.0, c["dtype"]), np.full(act_n.shape, 7.0, c["dtype"])
    kconv.conv2d_backward_input_at(dY, Wt, *args, out)
    kconv.conv2d_backward_input_at_plain(dY, Wt, *args, out_plain)
    mag = np.zeros(act_n.shape)
    kconv.conv2d_backward_input_at_plain(np.abs(dY).astype(np.float64), np.abs(Wt).astype(np.float64), *args, mag)
    assert_within_rounding(out, out_plain, mag, O * KH * KW)
    used = act_ptr[0, T]
    assert (out[used:] == 7.0).all()
    dX = np.empty((T * B, C, c["H"], c["W"]), c["dtype"])
    kconv.conv2d_backward_input(dY, _input_grad_weights(Wt.transpose(3, 0, 1, 2)), c["stride"], c["pad"], KH, KW, 1, dX)
    dense = dX.reshape(T, N1)[np.repeat(np.arange(T), np.diff(act_ptr[0])), act_n[:used]]
    assert_within_rounding(out[:used], dense, mag[:used], 2 * O * KH * KW)


def test_tile_product_equals_matrix_product():
    """_tile_product against the float64 product, to rounding (O terms per entry)."""
    rng = np.random.default_rng(0)
    for O, R, K in [(4, 4, 1), (8, 16, 37), (64, 16, 400)]:
        A, B = rng.standard_normal((O, R)).astype(np.float32), rng.standard_normal((O, K)).astype(np.float32)
        P = np.full((R, K), np.nan, np.float32)
        kconv._tile_product(A, B, P)
        exact = A.T.astype(np.float64) @ B.astype(np.float64)
        assert_within_rounding(P, exact, np.abs(A.T.astype(np.float64)) @ np.abs(B.astype(np.float64)), O)


# ------------------------------------------------------------------------------------------------
# Convolution on spikes, by window patterns

spike_cases = conv_cases.map(lambda c: {**c, "kind": "spikes"})


@given(c=spike_cases)
def test_pattern_table_equals_plain(c):
    """To rounding: the kernel builds each pattern's sum from a smaller pattern's, in another order."""
    _, Wt, _ = _conv_data(c)
    C, KH, KW, O = Wt.shape
    Tab, Tab_plain = (np.full((C, KH, 1 << KW, O), np.nan, c["dtype"]) for _ in range(2))  # (C, KH, 2^KW, O)
    kspike.pattern_table(Wt, Tab)
    kspike.pattern_table_plain(Wt, Tab_plain)
    mag = np.empty(Tab.shape)
    kspike.pattern_table_plain(np.abs(Wt).astype(np.float64), mag)
    assert_within_rounding(Tab, Tab_plain, mag, KW)


@given(c=spike_cases)
def test_spikeconv_forward_equals_plain_convolution(c):
    """To rounding: the kernel adds one table row (a sum of up to KW weights) per pattern, the twin
    one weight per tap; C*KH*KW terms per output."""
    X, Wt, dY = _conv_data(c)
    C, KH, KW, O = Wt.shape
    assert kspike.fits(KW, c["W"], c["pad"])
    Tab = np.empty((C, KH, 1 << KW, O), c["dtype"])  # (C, KH, 2^KW, O)
    kspike.pattern_table(Wt, Tab)
    rows = kconv.out_ranges(c["H"], c["pad"], KH, c["stride"], dY.shape[2])  # (H, 2)
    Y, Y_plain = np.full_like(dY, np.nan), np.full_like(dY, np.nan)  # (N, O, OH, OW)
    kspike.spikeconv_forward(X, Tab, KW, c["stride"], c["pad"], rows, Y)
    kspike.spikeconv_forward_plain(X, Tab, KW, c["stride"], c["pad"], rows, Y_plain)
    mag = np.empty(dY.shape)
    kconv.conv2d_forward_plain(X, np.abs(Wt).astype(np.float64), c["stride"], c["pad"], mag)
    assert_within_rounding(Y, Y_plain, mag, C * KH * KW)


@given(c=spike_cases)
def test_spikeconv_backward_weight_equals_plain(c):
    """Exact: each pattern's gradient adds the same dY values in the twin's order (n, i, j)."""
    X, Wt, dY = _conv_data(c)
    C, KH, KW, O = Wt.shape
    rows = kconv.out_ranges(c["H"], c["pad"], KH, c["stride"], dY.shape[2])  # (H, 2)
    shape = (c["P"], C, KH, 1 << KW, O)  # (P, C, KH, 2^KW, O)
    G, G_plain = np.full(shape, np.nan, c["dtype"]), np.full(shape, np.nan, c["dtype"])
    kspike.spikeconv_backward_weight(X, dY, KW, c["stride"], c["pad"], rows, G)
    kspike.spikeconv_backward_weight_plain(X, dY, KW, c["stride"], c["pad"], rows, G_plain)
    np.testing.assert_array_equal(G, G_plain)


@given(c=spike_cases)
def test_unfold_pattern_grad_equals_plain(c):
    """Exact: each weight adds its patterns' gradients in the same order (m ascending)."""
    _, Wt, _ = _conv_data(c)
    C, KH, KW, O = Wt.shape
    G = np.random.default_rng(c["seed"] + 1).standard_normal((C, KH, 1 << KW, O)).astype(c["dtype"])
    dWt, dWt_plain = np.full_like(Wt, np.nan), np.full_like(Wt, np.nan)  # (C, KH, KW, O)
    kspike.unfold_pattern_grad(G, dWt)
    kspike.unfold_pattern_grad_plain(G, dWt_plain)
    np.testing.assert_array_equal(dWt, dWt_plain)


@given(c=spike_cases)
def test_pattern_weight_gradient_equals_plain_conv_weight_gradient(c):
    """What the pattern trick must equal: unfold(sum_p G_p) = dW of the plain convolution, to rounding
    (the kernel groups the N*OH*OW terms of each dW by pattern first)."""
    X, Wt, dY = _conv_data(c)
    C, KH, KW, O = Wt.shape
    N, OH, OW = dY.shape[0], dY.shape[2], dY.shape[3]
    rows = kconv.out_ranges(c["H"], c["pad"], KH, c["stride"], OH)  # (H, 2)
    G = np.empty((c["P"], C, KH, 1 << KW, O), c["dtype"])  # (P, C, KH, 2^KW, O)
    kspike.spikeconv_backward_weight(X, dY, KW, c["stride"], c["pad"], rows, G)
    dWt = np.empty_like(Wt)  # (C, KH, KW, O)
    kspike.unfold_pattern_grad(G.sum(axis=0), dWt)
    plain = np.empty((1,) + Wt.shape, c["dtype"])  # (1, C, KH, KW, O)
    kconv.conv2d_backward_weight_plain(X, dY, c["stride"], c["pad"], plain)
    mag = np.empty((1,) + Wt.shape)
    kconv.conv2d_backward_weight_plain(X, np.abs(dY).astype(np.float64), c["stride"], c["pad"], mag)
    assert_within_rounding(dWt, plain[0], mag[0], N * OH * OW)


# ------------------------------------------------------------------------------------------------
# Fused convolution + average pooling (layers.fuse_avgpool, unfuse_avgpool_grad)

fuse_cases = st.fixed_dictionaries(dict(
    N=st.integers(1, 2), C=st.integers(1, 2), O=st.integers(1, 3), KH=st.integers(1, 4), KW=st.integers(1, 4),
    k=st.integers(2, 3), pad=st.integers(0, 1), H=st.integers(2, 8), W=st.integers(2, 8),
    seed=st.integers(0, 2**31 - 1), dtype=DTYPES))


def _fuse_data(c):
    """X (N, C, H, W), W (O, C, KH, KW), dY (N, O, OH, OW); the conv output must hold one window."""
    ZH, ZW = c["H"] + 2 * c["pad"] - c["KH"] + 1, c["W"] + 2 * c["pad"] - c["KW"] + 1
    assume(ZH >= c["k"] and ZW >= c["k"])
    rng = np.random.default_rng(c["seed"])
    X = rng.standard_normal((c["N"], c["C"], c["H"], c["W"])).astype(c["dtype"])
    W = rng.standard_normal((c["O"], c["C"], c["KH"], c["KW"])).astype(c["dtype"])
    dY = rng.standard_normal((c["N"], c["O"], ZH // c["k"], ZW // c["k"])).astype(c["dtype"])
    return X, W, dY


def _fused_kernel_weights(W, k):
    """The fused path's weights, as Conv2d prepares them: Wf (O, C, KH+k-1, KW+k-1) channels last."""
    Wf = fuse_avgpool(W, k)
    return Wf, np.ascontiguousarray(Wf.transpose(1, 2, 3, 0))  # (C, KH+k-1, KW+k-1, O)


@given(c=fuse_cases)
def test_fused_conv_pool_forward_equals_conv_then_pool(c):
    """To rounding: k^2*C*KH*KW products per output, grouped differently (Wf pre-sums the weights)."""
    X, W, dY = _fuse_data(c)
    _, Wft = _fused_kernel_weights(W, c["k"])
    Y, Y_plain = np.full_like(dY, np.nan), np.full_like(dY, np.nan)  # (N, O, OH, OW)
    kconv.conv2d_forward(X, Wft, c["k"], c["pad"], Y)
    conv_avgpool_forward_plain(X, W, c["pad"], c["k"], Y_plain)
    mag = np.empty(dY.shape)
    conv_avgpool_forward_plain(np.abs(X).astype(np.float64), np.abs(W).astype(np.float64), c["pad"], c["k"], mag)
    assert_within_rounding(Y, Y_plain, mag, c["k"] ** 2 * c["C"] * c["KH"] * c["KW"])


@given(c=fuse_cases)
def test_fused_conv_pool_weight_gradient_equals_conv_then_pool(c):
    """To rounding: conv2d_backward_weight on the fused conv, then unfuse_avgpool_grad (k^2 taps of
    Wf per weight), against the chain rule through pool and conv; k^2*N*OH*OW terms per weight."""
    X, W, dY = _fuse_data(c)
    k = c["k"]
    _, Wft = _fused_kernel_weights(W, k)
    parts = np.empty((2,) + Wft.shape, c["dtype"])  # (P, C, KH+k-1, KW+k-1, O)
    kconv.conv2d_backward_weight(X, dY, k, c["pad"], parts)
    dW = unfuse_avgpool_grad(parts.sum(axis=0).transpose(3, 0, 1, 2), k, c["KH"], c["KW"])  # (O, C, KH, KW)
    dW_plain = np.full_like(W, np.nan)
    conv_avgpool_backward_weight_plain(X, dY, c["pad"], k, dW_plain)
    mag = np.empty(W.shape)
    conv_avgpool_backward_weight_plain(np.abs(X).astype(np.float64), np.abs(dY).astype(np.float64),
                                       c["pad"], k, mag)
    assert_within_rounding(dW, dW_plain, mag, k ** 2 * dY.shape[0] * dY.shape[2] * dY.shape[3])


@given(c=fuse_cases)
def test_fused_conv_pool_input_gradient_equals_conv_then_pool(c):
    """To rounding: conv2d_backward_input with pool = k (what Conv2d runs when fused) against the chain
    rule through pool and conv; O*KH*KW*k^2 terms."""
    X, W, dY = _fuse_data(c)
    k = c["k"]
    Wm = _input_grad_weights(W)  # (O4, KH*KW*C)
    dX, dX_plain = np.full_like(X, np.nan), np.full_like(X, np.nan)  # (N, C, H, W)
    kconv.conv2d_backward_input(dY, Wm, 1, c["pad"], c["KH"], c["KW"], k, dX)
    conv_avgpool_backward_input_plain(dY, W, c["pad"], k, dX_plain)
    mag = np.empty(X.shape)
    conv_avgpool_backward_input_plain(np.abs(dY).astype(np.float64), np.abs(W).astype(np.float64),
                                      c["pad"], k, mag)
    assert_within_rounding(dX, dX_plain, mag, c["O"] * c["KH"] * c["KW"] * k ** 2)


# ------------------------------------------------------------------------------------------------
# BatchNorm over time

bn_cases = st.fixed_dictionaries(dict(
    TI=st.integers(1, 3), B=st.integers(1, 3), C=st.integers(1, 3), M=st.integers(1, 6),
    eps=st.sampled_from([1e-5, 1e-3, 0.1]), seed=st.integers(0, 2**31 - 1), dtype=DTYPES))


def _bn_data(c):
    """X, dY (TI, B, C, M) with n = B*M >= 2 values per (t, c); gamma, beta (C,)."""
    assume(c["B"] * c["M"] >= 2)
    rng = np.random.default_rng(c["seed"])
    shape = (c["TI"], c["B"], c["C"], c["M"])
    X = (rng.standard_normal(shape) * 2 + 1).astype(c["dtype"])
    dY = rng.standard_normal(shape).astype(c["dtype"])
    gamma = rng.uniform(0.5, 2.0, c["C"]).astype(c["dtype"])
    beta = rng.standard_normal(c["C"]).astype(c["dtype"])
    return X, dY, gamma, beta


def _bn_forward(kernel, X, gamma, beta, eps):
    Y, Xhat = np.full_like(X, np.nan), np.full_like(X, np.nan)  # (TI, B, C, M)
    mean, var = (np.full(X.shape[0:1] + X.shape[2:3], np.nan, X.dtype) for _ in range(2))  # (TI, C)
    kernel(X, gamma, beta, eps, Y, Xhat, mean, var)
    return Y, Xhat, mean, var


@given(c=bn_cases)
def test_batchnorm_forward_equals_plain(c):
    """mean and var to rounding (float64 sums: the kernel per (c, m) lane first, the twin in order); xhat and y to rounding: the
    kernel multiplies by 1/sqrt(var + eps) where the twin divides by sqrt(var + eps), a few float64
    roundings plus one rounding to the output dtype on each side (terms = 1 in the bound)."""
    X, _, gamma, beta = _bn_data(c)
    Y, Xhat, mean, var = _bn_forward(knorm.batchnorm_forward, X, gamma, beta, c["eps"])
    Y_p, Xhat_p, mean_p, var_p = _bn_forward(knorm.batchnorm_forward_plain, X, gamma, beta, c["eps"])
    x64 = np.abs(X.astype(np.float64))
    n = c["B"] * c["M"]
    assert_within_rounding(mean, mean_p, x64.mean(axis=(1, 3)), n)  # float64 sums, other order (lanes)
    assert_within_rounding(var, var_p, ((x64 + np.abs(mean_p)[:, None, :, None]) ** 2).mean(axis=(1, 3)), n)
    # xhat = (x - mean) / std: the means differ by rounding, so measure against (|x| + |mean|) / std
    std = np.sqrt(var_p.astype(np.float64) + c["eps"])[:, None, :, None]
    xhat_mag = (x64 + np.abs(mean_p)[:, None, :, None]) / std
    assert_within_rounding(Xhat, Xhat_p, xhat_mag, n)
    assert_within_rounding(Y, Y_p, np.abs(gamma[:, None]) * xhat_mag + np.abs(beta[:, None]), n)


@given(c=bn_cases)
def test_batchnorm_backward_equals_plain(c):
    """dbeta to rounding (float64 sums in lanes, as the forward). dgamma to rounding (the kernel rounds each
    dy * xhat to the input dtype first). dX to rounding: the twin sums dxhat = gamma * dy where the
    kernel sums dy and multiplies by gamma once; n = B*M terms, measured against
    |k| (n |dxhat| + sum |dxhat| + |xhat| sum |dxhat xhat|), k = 1 / (n sqrt(var + eps))."""
    X, dY, gamma, beta = _bn_data(c)
    _, Xhat, _, var = _bn_forward(knorm.batchnorm_forward, X, gamma, beta, c["eps"])
    TI, B, C, M = X.shape
    n = B * M
    out = []
    for kernel in (knorm.batchnorm_backward, knorm.batchnorm_backward_plain):
        dX = np.full_like(X, np.nan)  # (TI, B, C, M)
        dgamma_t, dbeta_t = (np.full((TI, C), np.nan, X.dtype) for _ in range(2))  # (TI, C)
        kernel(dY, Xhat, gamma, var, c["eps"], dX, dgamma_t, dbeta_t)
        out.append((dX, dgamma_t, dbeta_t))
    (dX, dgamma_t, dbeta_t), (dX_p, dgamma_p, dbeta_p) = out
    assert_within_rounding(dbeta_t, dbeta_p, np.abs(dY.astype(np.float64)).sum(axis=(1, 3)), n)
    dy, xh = np.abs(dY.astype(np.float64)), np.abs(Xhat.astype(np.float64))
    assert_within_rounding(dgamma_t, dgamma_p, (dy * xh).sum(axis=(1, 3)), n)
    dxhat = dy * np.abs(gamma.astype(np.float64))[:, None]
    k = 1.0 / (n * np.sqrt(var.astype(np.float64) + c["eps"]))[:, None, :, None]
    sum_dxhat = dxhat.sum(axis=(1, 3), keepdims=True)
    mag = k * (n * dxhat + sum_dxhat + xh * (dxhat * xh).sum(axis=(1, 3), keepdims=True))
    assert_within_rounding(dX, dX_p, mag, n)


@given(c=bn_cases)
def test_batchnorm_eval_equals_plain(c):
    """To rounding: the kernel folds gamma, the running stats and beta into X * scale + shift,
    a few roundings measured against |gamma| (|x| + |running_mean|) / sqrt(running_var + eps) + |beta|."""
    X, _, gamma, beta = _bn_data(c)
    rng = np.random.default_rng(c["seed"] + 1)
    rm = rng.standard_normal(c["C"]).astype(c["dtype"])
    rv = rng.uniform(0.1, 3.0, c["C"]).astype(c["dtype"])
    Y, Y_plain = np.full_like(X, np.nan), np.full_like(X, np.nan)  # (TI, B, C, M)
    knorm.batchnorm_eval(X, gamma, beta, rm, rv, c["eps"], Y)
    knorm.batchnorm_eval_plain(X, gamma, beta, rm, rv, c["eps"], Y_plain)
    f = np.float64
    mag = (np.abs(gamma.astype(f)) / np.sqrt(rv.astype(f) + c["eps"]))[:, None] * (
        np.abs(X.astype(f)) + np.abs(rm.astype(f))[:, None]) + np.abs(beta.astype(f))[:, None]
    assert_within_rounding(Y, Y_plain, mag, 2)


# ------------------------------------------------------------------------------------------------
# Pooling

pool_cases = st.fixed_dictionaries(dict(
    N=st.integers(1, 3), C=st.integers(1, 3), H=st.integers(1, 7), W=st.integers(1, 7), k=st.integers(1, 3),
    stride=st.integers(1, 3), ties=st.booleans(), seed=st.integers(0, 2**31 - 1), dtype=DTYPES))


def _pool_data(c):
    """X (N, C, H, W) and dY (N, C, OH, OW). ``ties``: X on a coarse integer grid, so that windows
    hold equal maxima (the first one wins)."""
    assume(c["k"] <= min(c["H"], c["W"]))
    OH, OW = (c["H"] - c["k"]) // c["stride"] + 1, (c["W"] - c["k"]) // c["stride"] + 1
    rng = np.random.default_rng(c["seed"])
    shape = (c["N"], c["C"], c["H"], c["W"])
    X = (rng.integers(-2, 3, shape) if c["ties"] else rng.standard_normal(shape)).astype(c["dtype"])
    dY = rng.standard_normal((c["N"], c["C"], OH, OW)).astype(c["dtype"])
    return X, dY


@given(c=pool_cases)
def test_avgpool_forward_equals_plain(c):
    """To rounding: the kernel multiplies by 1/k^2 (and may sum in float64), the twin divides by k^2."""
    X, dY = _pool_data(c)
    Y, Y_plain = np.full_like(dY, np.nan), np.full_like(dY, np.nan)  # (N, C, OH, OW)
    kpool.avgpool_forward(X, c["k"], c["stride"], Y)
    kpool.avgpool_forward_plain(X, c["k"], c["stride"], Y_plain)
    mag = np.empty(dY.shape)
    kpool.avgpool_forward_plain(np.abs(X).astype(np.float64), c["k"], c["stride"], mag)
    assert_within_rounding(Y, Y_plain, mag, c["k"] ** 2)


@given(c=pool_cases)
def test_avgpool_backward_equals_plain(c):
    """To rounding: dY * (1/k^2) against dY / k^2; at most k^2 windows cover an input."""
    X, dY = _pool_data(c)
    dX, dX_plain = np.full_like(X, np.nan), np.full_like(X, np.nan)  # (N, C, H, W)
    kpool.avgpool_backward(dY, c["k"], c["stride"], dX)
    kpool.avgpool_backward_plain(dY, c["k"], c["stride"], dX_plain)
    mag = np.empty(X.shape)
    kpool.avgpool_backward_plain(np.abs(dY).astype(np.float64), c["k"], c["stride"], mag)
    assert_within_rounding(dX, dX_plain, mag, c["k"] ** 2)


def _maxpool(kernel, X, dY, k, stride):
    Y = np.full_like(dY, np.nan)  # (N, C, OH, OW)
    argmax = np.full(dY.shape, -1, np.int32)  # (N, C, OH, OW)
    kernel(X, k, stride, Y, argmax)
    return Y, argmax


@given(c=pool_cases)
def test_maxpool_forward_equals_plain(c):
    """Exact: the same comparisons, the first maximum kept on ties."""
    X, dY = _pool_data(c)
    Y, argmax = _maxpool(kpool.maxpool_forward, X, dY, c["k"], c["stride"])
    Y_plain, argmax_plain = _maxpool(kpool.maxpool_forward_plain, X, dY, c["k"], c["stride"])
    np.testing.assert_array_equal(Y, Y_plain)
    np.testing.assert_array_equal(argmax, argmax_plain)


@given(c=pool_cases)
def test_maxpool_backward_equals_plain(c):
    """Exact: each input adds the dY of the windows whose maximum it is, in the same order (i, j)."""
    X, dY = _pool_data(c)
    _, argmax = _maxpool(kpool.maxpool_forward, X, dY, c["k"], c["stride"])
    dX, dX_plain = np.full_like(X, np.nan), np.full_like(X, np.nan)  # (N, C, H, W)
    kpool.maxpool_backward(dY, argmax, c["k"], c["stride"], dX)
    kpool.maxpool_backward_plain(dY, argmax, c["k"], c["stride"], dX_plain)
    np.testing.assert_array_equal(dX, dX_plain)


# ------------------------------------------------------------------------------------------------
# Linear

lin_cases = st.fixed_dictionaries(dict(
    N=st.integers(1, 5), F=st.integers(1, 8), O=st.integers(1, 5), P=st.integers(1, 3),
    kind=st.sampled_from(["dense", "sparse", "spikes"]), seed=st.integers(0, 2**31 - 1), dtype=DTYPES))


def _lin_data(c):
    """X (N, F), W (O, F) and dY (N, O)."""
    rng = np.random.default_rng(c["seed"])
    X = _values(rng, (c["N"], c["F"]), c["dtype"], c["kind"])
    W = rng.standard_normal((c["O"], c["F"])).astype(c["dtype"])
    dY = rng.standard_normal((c["N"], c["O"])).astype(c["dtype"])
    return X, W, dY


@given(c=lin_cases)
def test_linear_forward_equals_plain(c):
    """Exact: the products added in the order f = 0, 1, ... (the kernel skips zero inputs)."""
    X, W, dY = _lin_data(c)
    Wt = np.ascontiguousarray(W.T)  # (F, O)
    Y, Y_plain = np.full_like(dY, np.nan), np.full_like(dY, np.nan)  # (N, O)
    klinear.linear_forward(X, Wt, Y)
    klinear.linear_forward_plain(X, Wt, Y_plain)
    np.testing.assert_array_equal(Y, Y_plain)


@given(c=lin_cases)
def test_linear_backward_weight_equals_plain(c):
    """Exact, slice by slice: each part adds its samples in the order n = p*N//P, ..."""
    X, W, dY = _lin_data(c)
    shape = (c["P"],) + W.shape  # (P, O, F)
    parts, parts_plain = np.full(shape, np.nan, c["dtype"]), np.full(shape, np.nan, c["dtype"])
    klinear.linear_backward_weight(X, dY, parts)
    klinear.linear_backward_weight_plain(X, dY, parts_plain)
    np.testing.assert_array_equal(parts, parts_plain)


@given(c=lin_cases)
def test_linear_backward_input_equals_plain(c):
    """Exact: the products added in the order o = 0, 1, ..."""
    X, W, dY = _lin_data(c)
    dX, dX_plain = np.full(X.shape, np.nan, c["dtype"]), np.full(X.shape, np.nan, c["dtype"])  # (N, F)
    klinear.linear_backward_input(dY, W, dX)
    klinear.linear_backward_input_plain(dY, W, dX_plain)
    np.testing.assert_array_equal(dX, dX_plain)


# ------------------------------------------------------------------------------------------------
# Convolution on spikes with integer weights (exact narrow lanes)

@given(c=spike_cases, level=st.integers(1, 28))
def test_spikeconv_forward_int_equals_plain(c, level):
    """Bit for bit: the integer sum is exact in int16 (|A| <= C*KH*KW*level < 2^15 here), and both
    sides round scale * A once."""
    X, _, dY = _conv_data(c)
    KH, KW = c["KH"], c["KW"]
    q = np.random.default_rng(c["seed"] + 5).integers(-level, level + 1, (c["C"], KH, KW, c["O"]))
    Tab = np.empty((c["C"], KH, 1 << KW, c["O"]), np.int16)  # (C, KH, 2^KW, O)
    kspike.pattern_table(q.astype(np.int16), Tab)
    rows = kconv.out_ranges(c["H"], c["pad"], KH, c["stride"], dY.shape[2])  # (H, 2)
    scale = np.dtype(c["dtype"]).type(0.0123)
    Y, Y_plain = np.full_like(dY, np.nan), np.full_like(dY, np.nan)  # (N, O, OH, OW)
    kspike.spikeconv_forward_int(X, Tab, KW, c["stride"], c["pad"], rows, scale, Y)
    kspike.spikeconv_forward_int_plain(X, Tab, KW, c["stride"], c["pad"], rows, scale, Y_plain)
    np.testing.assert_array_equal(Y, Y_plain)
    # and it is the convolution with the float weights scale * q, to rounding
    Y_float = np.empty(dY.shape)
    kconv.conv2d_forward_plain(X, q * float(scale), c["stride"], c["pad"], Y_float)
    mag = np.empty(dY.shape)
    kconv.conv2d_forward_plain(X, np.abs(q) * float(scale), c["stride"], c["pad"], mag)
    assert_within_rounding(Y, Y_float.astype(c["dtype"]), mag, 1)


@given(c=spike_cases)
def test_integer_pattern_table_equals_plain(c):
    """Bit for bit on integers (sums of at most KW codes)."""
    q = np.random.default_rng(c["seed"]).integers(-28, 29, (c["C"], c["KH"], c["KW"], c["O"])).astype(np.int16)
    Tab, Tab_plain = (np.zeros((c["C"], c["KH"], 1 << c["KW"], c["O"]), np.int16) for _ in range(2))
    kspike.pattern_table(q, Tab)
    kspike.pattern_table_plain(q, Tab_plain)
    np.testing.assert_array_equal(Tab, Tab_plain)
