"""Every layer's backward against central finite differences (float64, fake loss sum(out * g)),
and the layers' forward against the kernels' plain twins (mininsnn/kernels/*: ``*_plain``; each
kernel against its twin: tests/test_kernels.py)."""

import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from mininsnn.layers import (AvgPool2d, BatchNorm2d, Context, Conv2d, Dropout, Flatten, Linear, MaxPool2d,
                             fuse_avgpool, unfuse_avgpool_grad)
from mininsnn.kernels.conv import conv2d_forward_plain
from mininsnn.kernels.norm import batchnorm_forward_plain
from mininsnn.kernels.pool import avgpool_forward_plain
from tests.gradcheck import assert_close_grad, numeric_grad


def _ctx(T=3, training=True, seed=0):
    return Context(T=T, training=training, rng=np.random.default_rng(seed))


def check_layer(layer, x, ctx, seed=0, reset_rng=None):
    """Compare the layer's input and parameter gradients with finite differences. The fake
    loss's weights g come from a stream of their own: drawn from the stream that made x, g can
    be an affine function of x, which BatchNorm's backward projects out (a near-zero gradient
    that finite differences cannot resolve)."""
    rng = np.random.default_rng((seed, 1))

    def run():
        if reset_rng is not None:
            ctx.rng = np.random.default_rng(reset_rng)
        return layer.forward(x, ctx)

    out = run()
    g = rng.standard_normal(out.shape)
    layer.zero_grad()
    dx = layer.backward(g)

    def loss():
        return float((run() * g).sum())

    assert_close_grad(dx, numeric_grad(loss, x), what=f"{layer.name} input")
    for key, p in layer.params.items():
        assert_close_grad(layer.grads[key], numeric_grad(loss, p), what=f"{layer.name}.{key}")


conv_cases = st.fixed_dictionaries(dict(
    TI=st.integers(1, 2), B=st.integers(1, 2), C=st.integers(1, 3), O=st.integers(1, 4), K=st.integers(1, 4),
    stride=st.integers(1, 3), pad=st.integers(0, 2), H=st.integers(4, 8), W=st.integers(4, 8), bias=st.booleans(),
    seed=st.integers(0, 2**31), sparse=st.booleans()))


def _conv_input(c):
    rng = np.random.default_rng(c["seed"])
    x = rng.standard_normal((c["TI"], c["B"], c["C"], c["H"], c["W"]))
    if c["sparse"]:
        x *= rng.random(x.shape) < 0.3  # exercise the event-driven zero skipping
    return x


@given(c=conv_cases)
def test_conv2d_gradients(c):
    layer = Conv2d(c["C"], c["O"], c["K"], stride=c["stride"], padding=c["pad"], bias=c["bias"],
                   dtype=np.float64, rng=np.random.default_rng(c["seed"]))
    check_layer(layer, _conv_input(c), _ctx(), c["seed"])


@given(c=conv_cases)
def test_conv2d_forward_equals_direct_convolution(c):
    layer = Conv2d(c["C"], c["O"], c["K"], stride=c["stride"], padding=c["pad"], bias=False,
                   dtype=np.float64, rng=np.random.default_rng(c["seed"]))
    x = _conv_input(c)
    y = layer.forward(x, _ctx())
    ref = np.empty((x.shape[0] * x.shape[1],) + y.shape[2:])  # (N, O, OH, OW)
    conv2d_forward_plain(x.reshape(-1, *x.shape[2:]), layer.params["weight"].transpose(1, 2, 3, 0),
                         c["stride"], c["pad"], ref)
    np.testing.assert_allclose(y.reshape(ref.shape), ref, rtol=1e-12, atol=1e-12)


def test_conv2d_on_uint8_spikes_equals_float():
    rng = np.random.default_rng(0)
    layer = Conv2d(3, 5, 3, dtype=np.float32, rng=rng)
    s = (rng.random((2, 4, 3, 7, 7)) < 0.2).astype(np.uint8)
    from_spikes = layer.forward(s, _ctx()).copy()  # the layer reuses its output buffer
    # the uint8 path sums precomputed pattern rows, the float path one tap at a time: float32 rounding
    np.testing.assert_allclose(from_spikes, layer.forward(s.astype(np.float32), _ctx()), rtol=1e-5, atol=1e-6)


fuse_cases = st.fixed_dictionaries(dict(C=st.integers(1, 3), O=st.integers(1, 3), K=st.integers(1, 5),
                                        k=st.integers(2, 3), H=st.integers(6, 11), pad=st.integers(0, 1),
                                        bits=st.sampled_from([None, 4]), seed=st.integers(0, 2**31)))


@given(c=fuse_cases)
def test_fused_conv_pool_equals_conv_then_pool(c):
    """Conv (stride 1) + k x k average pooling == one (K+k-1) conv with stride k, forward and gradients."""
    rng = np.random.default_rng(c["seed"])
    conv_a = Conv2d(c["C"], c["O"], c["K"], padding=c["pad"], bits=c["bits"], dtype=np.float64, rng=rng)
    conv_b = Conv2d(c["C"], c["O"], c["K"], padding=c["pad"], bits=c["bits"], dtype=np.float64, rng=rng)
    conv_b.params["weight"][...] = conv_a.params["weight"]
    assume(c["H"] + 2 * c["pad"] - c["K"] + 1 >= c["k"])
    pool = AvgPool2d(c["k"])
    conv_b.fused_pool = c["k"]
    x = rng.standard_normal((2, 2, c["C"], c["H"], c["H"]))
    ya = pool.forward(conv_a.forward(x, _ctx()), _ctx())
    yb = conv_b.forward(x, _ctx())
    np.testing.assert_allclose(yb, ya, rtol=1e-10, atol=1e-12)
    g = rng.standard_normal(ya.shape)
    dxa = conv_a.backward(pool.backward(g))
    dxb = conv_b.backward(g)
    np.testing.assert_allclose(dxb, dxa, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(conv_b.grads["weight"], conv_a.grads["weight"], rtol=1e-10, atol=1e-12)


def test_fuse_avgpool_mnist_shapes_and_unfuse_is_adjoint():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((4, 3, 5, 5))
    Wf = fuse_avgpool(W, 2)
    assert Wf.shape == (4, 3, 6, 6)
    G = rng.standard_normal(Wf.shape)
    # <fuse(W), G> == <W, unfuse(G)>: unfuse is the transpose of the linear map fuse
    assert np.sum(Wf * G) == pytest.approx(np.sum(W * unfuse_avgpool_grad(G, 2, 5, 5)), rel=1e-12)


pool_cases = st.fixed_dictionaries(dict(TI=st.integers(1, 2), B=st.integers(1, 2), C=st.integers(1, 3),
                                        H=st.integers(2, 7), W=st.integers(2, 7), k=st.integers(1, 3),
                                        s=st.integers(1, 3), seed=st.integers(0, 2**31)))


@given(c=pool_cases)
def test_avgpool(c):
    assume(c["k"] <= min(c["H"], c["W"]))
    x = np.random.default_rng(c["seed"]).standard_normal((c["TI"], c["B"], c["C"], c["H"], c["W"]))
    layer = AvgPool2d(c["k"], c["s"])
    y = layer.forward(x, _ctx())
    ref = np.empty((x.shape[0] * x.shape[1],) + y.shape[2:])  # (N, C, OH, OW)
    avgpool_forward_plain(x.reshape(-1, *x.shape[2:]), c["k"], c["s"], ref)
    np.testing.assert_allclose(y.reshape(ref.shape), ref, rtol=1e-12)
    check_layer(layer, x, _ctx(), c["seed"])


@given(c=pool_cases)
def test_maxpool(c):
    assume(c["k"] <= min(c["H"], c["W"]))
    rng = np.random.default_rng(c["seed"])
    # distinct values at least 1e-3 apart: max pooling is then differentiable at x
    x = rng.permutation(c["TI"] * c["B"] * c["C"] * c["H"] * c["W"]).astype(np.float64) * 1e-2
    x = x.reshape(c["TI"], c["B"], c["C"], c["H"], c["W"])
    check_layer(MaxPool2d(c["k"], c["s"]), x, _ctx(), c["seed"])


def test_maxpool_ties_go_to_first():
    x = np.ones((1, 1, 1, 2, 2))
    layer = MaxPool2d(2)
    layer.forward(x, _ctx())
    np.testing.assert_array_equal(layer.backward(np.ones((1, 1, 1, 1, 1)))[0, 0, 0], [[1, 0], [0, 0]])


bn_cases = st.fixed_dictionaries(dict(TI=st.integers(1, 3), B=st.integers(2, 3), C=st.integers(1, 3),
                                      H=st.integers(1, 3), seed=st.integers(0, 2**31)))


@given(c=bn_cases)
@example(c={"TI": 1, "B": 2, "C": 1, "H": 2, "seed": 292324571})  # g once came out affine in x
def test_batchnorm_training_gradients(c):
    assume(c["B"] * c["H"] * c["H"] >= 4)  # with 2 values per channel xhat = +-1 whatever x: a flat function
    rng = np.random.default_rng(c["seed"])
    layer = BatchNorm2d(c["C"], dtype=np.float64)
    layer.params["weight"][...] = rng.uniform(0.5, 2, c["C"])
    layer.params["bias"][...] = rng.standard_normal(c["C"])
    x = rng.standard_normal((c["TI"], c["B"], c["C"], c["H"], c["H"])) * 2 + 1
    check_layer(layer, x, _ctx(T=c["TI"]), c["seed"])


@given(c=bn_cases)
def test_batchnorm_eval_gradients(c):
    rng = np.random.default_rng(c["seed"])
    layer = BatchNorm2d(c["C"], dtype=np.float64)
    layer.buffers["running_mean"][...] = rng.standard_normal(c["C"])
    layer.buffers["running_var"][...] = rng.uniform(0.5, 2, c["C"])
    x = rng.standard_normal((c["TI"], c["B"], c["C"], c["H"], c["H"]))
    check_layer(layer, x, _ctx(T=c["TI"], training=False), c["seed"])


@given(c=bn_cases)
def test_batchnorm_uses_per_step_statistics_and_updates_running_stats_per_step(c):
    rng = np.random.default_rng(c["seed"])
    x = rng.standard_normal((c["TI"], c["B"], c["C"], c["H"], c["H"])) * 3 + 2
    layer = BatchNorm2d(c["C"], dtype=np.float64)
    y = layer.forward(x, _ctx(T=c["TI"]))
    X = x.reshape(c["TI"], c["B"], c["C"], -1)  # (TI, B, C, H*W)
    ref, xhat = np.empty_like(X), np.empty_like(X)
    mean, var = np.empty((c["TI"], c["C"])), np.empty((c["TI"], c["C"]))
    batchnorm_forward_plain(X, np.ones(c["C"]), np.zeros(c["C"]), 1e-5, ref, xhat, mean, var)
    np.testing.assert_allclose(y, ref.reshape(x.shape), rtol=1e-10, atol=1e-12)
    rm, rv = np.zeros(c["C"]), np.ones(c["C"])
    n = c["B"] * c["H"] * c["H"]
    for t in range(c["TI"]):
        rm = 0.9 * rm + 0.1 * x[t].mean(axis=(0, 2, 3))
        rv = 0.9 * rv + 0.1 * x[t].var(axis=(0, 2, 3)) * n / (n - 1)
    np.testing.assert_allclose(layer.buffers["running_mean"], rm, rtol=1e-12)
    np.testing.assert_allclose(layer.buffers["running_var"], rv, rtol=1e-12)
    assert int(layer.buffers["num_batches_tracked"]) == c["TI"]


def test_batchnorm_static_input_equals_repeated_steps():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 4, 3, 2, 2))
    a, b = BatchNorm2d(3, dtype=np.float64), BatchNorm2d(3, dtype=np.float64)
    ya = a.forward(x, _ctx(T=7))
    yb = b.forward(np.repeat(x, 7, 0), _ctx(T=7))
    np.testing.assert_allclose(np.repeat(ya, 7, 0), yb, rtol=1e-12)
    np.testing.assert_allclose(a.buffers["running_mean"], b.buffers["running_mean"], rtol=1e-12)
    np.testing.assert_allclose(a.buffers["running_var"], b.buffers["running_var"], rtol=1e-12)
    g = rng.standard_normal((7, 4, 3, 2, 2))
    np.testing.assert_allclose(a.backward(g.sum(0, keepdims=True)), b.backward(g).sum(0, keepdims=True), rtol=1e-10)
    np.testing.assert_allclose(a.grads["weight"], b.grads["weight"], rtol=1e-10)


lin_cases = st.fixed_dictionaries(dict(TI=st.integers(1, 3), B=st.integers(1, 3), F=st.integers(1, 6),
                                       O=st.integers(1, 5), bias=st.booleans(), seed=st.integers(0, 2**31)))


@given(c=lin_cases)
def test_linear(c):
    rng = np.random.default_rng(c["seed"])
    layer = Linear(c["F"], c["O"], bias=c["bias"], dtype=np.float64, rng=rng)
    check_layer(layer, rng.standard_normal((c["TI"], c["B"], c["F"])), _ctx(), c["seed"])


@given(c=lin_cases)
def test_flatten(c):
    x = np.random.default_rng(c["seed"]).standard_normal((c["TI"], c["B"], c["F"], 2, 3))
    layer = Flatten()
    y = layer.forward(x, _ctx())
    np.testing.assert_array_equal(y, x.reshape(c["TI"], c["B"], -1))  # C-H-W order, like torch.flatten
    check_layer(layer, x, _ctx(), c["seed"])


@given(c=lin_cases, p=st.floats(0.0, 0.9))
def test_dropout(c, p):
    x = np.random.default_rng(c["seed"]).standard_normal((c["TI"], c["B"], c["F"]))
    T = 3 if c["TI"] == 1 else c["TI"]  # a static input (TI = 1) is expanded to T steps
    check_layer(Dropout(p), x, _ctx(T=T), c["seed"], reset_rng=c["seed"])


def test_dropout_fresh_mask_per_step_and_scaling():
    layer = Dropout(0.5)
    x = np.ones((1, 64, 256))  # static: expanded to T steps, each with its own mask
    y = layer.forward(x, _ctx(T=4))
    assert y.shape == (4, 64, 256)
    assert set(np.unique(y)) <= {0.0, 2.0}
    assert not np.array_equal(y[0], y[1])
    assert abs(y.mean() - 1.0) < 0.02


def test_dropout_off_in_eval():
    x = np.random.default_rng(0).standard_normal((3, 3, 4))
    assert Dropout(0.5).forward(x, _ctx(T=3, training=False)) is x


spike_cases = st.fixed_dictionaries(dict(
    TI=st.integers(1, 2), B=st.integers(1, 3), C=st.integers(1, 3), O=st.integers(1, 5), K=st.integers(1, 5),
    stride=st.integers(1, 3), pad=st.integers(0, 2), H=st.integers(5, 12), W=st.integers(5, 12),
    fuse=st.sampled_from([None, 2]), rate=st.floats(0.0, 1.0), seed=st.integers(0, 2**31)))


@given(c=spike_cases)
def test_spike_pattern_kernels_equal_plain_kernels(c):
    """uint8 0/1 input takes the window-pattern kernels (kernels/spikeconv.py); the same spikes as
    float take the plain event-driven kernels. Forward and weight gradient must agree."""
    if c["fuse"]:
        assume(c["stride"] == 1 and (c["H"] + 2 * c["pad"] - c["K"] + 1) >= 2 and (c["W"] + 2 * c["pad"] - c["K"] + 1) >= 2)
    assume(c["H"] + 2 * c["pad"] >= c["K"] and c["W"] + 2 * c["pad"] >= c["K"])
    rng = np.random.default_rng(c["seed"])
    layer = Conv2d(c["C"], c["O"], c["K"], stride=c["stride"], padding=c["pad"], dtype=np.float64, rng=rng)
    layer.fused_pool = c["fuse"]
    s = (rng.random((c["TI"], c["B"], c["C"], c["H"], c["W"])) < c["rate"]).astype(np.uint8)
    y_spk = layer.forward(s, _ctx()).copy()
    assert layer.path == "spike"  # the pattern path was taken
    g = rng.standard_normal(y_spk.shape)
    layer.backward(g)
    dw_spk = layer.grads["weight"].copy()
    layer.zero_grad()
    y_plain = layer.forward(s.astype(np.float64), _ctx())
    assert layer.path == "plain"
    layer.backward(g)
    np.testing.assert_allclose(y_spk, y_plain, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw_spk, layer.grads["weight"], rtol=1e-12, atol=1e-12)


def test_uint8_input_must_be_spikes():
    with pytest.raises(ValueError, match="0/1 spikes"):
        Conv2d(1, 2, 3).forward(np.full((1, 1, 1, 5, 5), 2, np.uint8), _ctx())


@pytest.mark.slow
@given(seed=st.integers(0, 2**31), bits=st.integers(2, 4), fuse=st.booleans(), rate=st.sampled_from([0.1, 0.5, 1.0]),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_quantized_spike_conv_takes_exact_integer_lanes(seed, bits, fuse, rate, dtype):
    """n-bit weights on 0/1 spikes run on int16 lanes ("spike-int") and give (scale / k^2) * A with the
    exact integer sum A: compared with the float pattern kernels to rounding, and with the exact
    integer convolution in float64 to one rounding. rate = 1 (every input 1) reaches large sums."""
    from mininsnn.layers import box_sum, integer_lanes
    from mininsnn.quant import quantize_forward
    rng = np.random.default_rng(seed)
    layer = Conv2d(16, 8, 5, bits=bits, dtype=dtype, rng=rng)
    layer.fused_pool = 2 if fuse else None
    s = (rng.random((2, 3, 16, 12, 12)) < rate).astype(np.uint8)
    y = layer.forward(s, _ctx()).copy()
    assert integer_lanes(bits, 16, 5, 2 if fuse else 1) == np.int16 and layer.path == "spike-int"
    Wq, scale = quantize_forward(layer.params["weight"], bits)
    k = 2 if fuse else 1
    qf = box_sum(np.rint(Wq.astype(np.float64) / scale), k)  # integer codes of the fused kernel
    A = np.empty((6, 8) + y.shape[3:])
    from mininsnn.kernels.conv import conv2d_forward_plain
    conv2d_forward_plain(s.reshape(6, 16, 12, 12), qf.transpose(1, 2, 3, 0), k, 0, A)
    assert np.array_equal(A, np.rint(A))  # integers
    want = (np.float64(dtype(scale) / dtype(k * k)) * A).astype(dtype)
    np.testing.assert_array_equal(y.reshape(A.shape), want)
    # the float pattern kernels, to rounding
    y_float = layer.forward(s.astype(dtype), _ctx())
    np.testing.assert_allclose(y, y_float, rtol=0, atol=64 * np.finfo(dtype).eps * np.abs(A).max() * scale)


def test_integer_lanes_bound():
    from mininsnn.layers import integer_lanes
    assert integer_lanes(4, 16, 5, 2) == np.int16      # 16*25*4*7 = 11200
    assert integer_lanes(4, 64, 5, 2) is None          # 44800 > 32767: float kernels
    assert integer_lanes(8, 16, 5, 2) is None
    assert integer_lanes(None, 16, 5, 2) is None
