import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mininsnn.layers import Context, Conv2d, Linear
from mininsnn.quant import check_bits, quant_levels, quantize_backward, quantize_forward
from tests.gradcheck import assert_close_grad, numeric_grad

weights = hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=4, max_side=5),
                     elements=st.floats(-2, 2, allow_subnormal=False))


@given(W=weights, bits=st.integers(2, 16))
def test_values_follow_the_formula(W, bits):
    Wq, s = quantize_forward(W, bits)
    L = 2 ** (bits - 1) - 1
    if np.abs(W).max() == 0:
        assert (Wq == 0).all()
        return
    assert s == np.abs(W).max() / L
    q = Wq / s
    np.testing.assert_allclose(q, np.round(q), atol=1e-9)  # integer levels
    assert np.abs(np.round(q)).max() <= L
    # each weight goes to the nearest level (ties are handled below)
    assert (np.abs(Wq - W) <= s / 2 + 1e-12).all()


def test_round_half_to_even_exact_values():
    # s = 7/7 = 1: W/s hits exact halves
    W = np.array([7.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.49])
    Wq, s = quantize_forward(W, 4)
    assert s == 1.0
    np.testing.assert_array_equal(Wq, [7, 0, 2, 2, -0, -2, -2, 3])


def test_4bit_has_15_levels():
    W = np.linspace(-1, 1, 1001)
    Wq, s = quantize_forward(W, 4)
    assert len(np.unique(np.round(Wq / s))) == 15 and quant_levels(4) == 7


def test_dtype_is_kept():
    W = np.random.default_rng(0).standard_normal(50).astype(np.float32)
    assert quantize_forward(W, 4)[0].dtype == np.float32


def test_full_precision_is_identity():
    W = np.random.default_rng(0).standard_normal(10)
    assert quantize_forward(W, None)[0] is W


def test_ste_is_identity():
    g = np.random.default_rng(1).standard_normal((3, 4))
    np.testing.assert_array_equal(quantize_backward(g), g)


@pytest.mark.parametrize("bits", [1, 17, 0, -4, 4.0, "4", True])
def test_bits_out_of_range(bits):
    with pytest.raises(ValueError, match="2..16"):
        check_bits(bits, "Conv2d")
    with pytest.raises(ValueError, match="Conv2d"):
        Conv2d(1, 2, 3, bits=bits)


@given(seed=st.integers(0, 1000), bits=st.integers(2, 8))
def test_layer_weight_gradient_is_straight_through(seed, bits):
    """A quantized layer's dL/dW equals the full-precision layer's dL/dW evaluated at Wq (STE)."""
    rng = np.random.default_rng(seed)
    ctx = Context(T=2, training=True, rng=rng)
    q = Linear(6, 3, bias=False, bits=bits, dtype=np.float64, rng=rng, quant_grad="ste")
    fp = Linear(6, 3, bias=False, bits=None, dtype=np.float64, rng=rng)
    fp.params["weight"][...] = quantize_forward(q.params["weight"], bits)[0]
    x = rng.standard_normal((2, 4, 6))
    g = rng.standard_normal((2, 4, 3))
    np.testing.assert_allclose(q.forward(x, ctx), fp.forward(x, ctx), rtol=1e-12)
    q.backward(g)
    fp.backward(g)
    np.testing.assert_allclose(q.grads["weight"], fp.grads["weight"], rtol=1e-12)


# -- "ste+scale": the gradient also flows through s = max|W| / L (what Brevitas computes) ---------

def scale_twin(W0, bits):
    """A smooth function whose exact derivative at W0 is the "ste+scale" backward: with the
    rounding offsets c = round(W0/s0) - W0/s0 frozen, q(W) = s(W) * (W / s(W) + c) = W + s(W) c,
    i.e. round() replaced by a unit-slope function through the same points, s(W) = max|W| / L
    left free."""
    L = quant_levels(bits)
    s0 = np.abs(W0).max() / L
    c = np.clip(np.round(W0 / s0), -L, L) - W0 / s0
    return lambda W: W + np.abs(W).max() / L * c


@given(W=hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=4, max_side=5),
                    elements=st.floats(-2, 2, allow_subnormal=False)),
       bits=st.integers(2, 8), seed=st.integers(0, 2**31))
def test_scale_gradient_matches_finite_differences_of_its_twin(W, bits, seed):
    W = W.copy()
    flat = W.reshape(-1)
    i = np.argmax(np.abs(flat))          # make the max unique, 0.5 above the rest: s(W) is then
    flat[i] = (1.0 if flat[i] >= 0 else -1.0) * (np.abs(flat).max() + 0.5)   # smooth near W
    G = np.random.default_rng(seed).standard_normal(W.shape)
    twin = scale_twin(W.copy(), bits)
    # the twin's value is the quantizer's value at W0 (same forward)
    np.testing.assert_allclose(twin(W), quantize_forward(W, bits)[0], rtol=1e-12, atol=1e-12)
    numeric = numeric_grad(lambda: float(np.sum(G * twin(W))), W)
    assert_close_grad(quantize_backward(G, W, bits, "ste+scale"), numeric, what="ste+scale")
    # plain STE differs from it only at the argmax element
    diff = quantize_backward(G, W, bits, "ste+scale") - quantize_backward(G, W, bits, "ste")
    m = np.unravel_index(np.argmax(np.abs(W)), W.shape)
    diff[m] = 0.0
    assert not diff.any()


@pytest.mark.parametrize("make", [
    lambda qg, rng: Linear(6, 3, bias=False, bits=4, dtype=np.float64, rng=rng, quant_grad=qg),
    lambda qg, rng: Conv2d(2, 3, 3, bits=4, dtype=np.float64, rng=rng, quant_grad=qg)])
def test_layers_apply_the_scale_gradient_to_their_weights(make):
    rng = np.random.default_rng(3)
    a, b = make("ste", np.random.default_rng(1)), make("ste+scale", np.random.default_rng(1))
    shape = (2, 4, 6) if isinstance(a, Linear) else (2, 4, 2, 5, 5)
    x = rng.standard_normal(shape)
    for layer in (a, b):
        y = layer.forward(x, Context(T=2, training=True, rng=rng))
    g = rng.standard_normal(y.shape)
    a.backward(g)
    b.backward(g)
    W = a.params["weight"]
    np.testing.assert_allclose(b.grads["weight"],
                               quantize_backward(a.grads["weight"], W, 4, "ste+scale"), rtol=1e-12)
    assert not np.array_equal(a.grads["weight"], b.grads["weight"])
    with pytest.raises(ValueError, match="quant_grad"):
        make("brevitas", rng)


@given(seed=st.integers(0, 2**31), bits=st.integers(2, 16), dtype=st.sampled_from([np.float32, np.float64]))
def test_latent_weights_from_codes_quantize_back_to_the_same_codes_and_scale(seed, bits, dtype):
    """What a pretrained or NIR file stores (codes, scale, max|W|) gives back latent weights whose
    quantization is the original's bit for bit, also where fl(L * s) != max|W|."""
    from mininsnn.quant import latent_from_codes
    rng = np.random.default_rng(seed)
    W = (rng.standard_normal((5, 7)) * rng.uniform(0.01, 3)).astype(dtype)
    Wq, s = quantize_forward(W, bits)
    q = np.round(Wq / s).astype(np.int64)
    W2 = latent_from_codes(q, s, np.abs(W).max(), dtype)
    Wq2, s2 = quantize_forward(W2, bits)
    assert W2.dtype == dtype and s2 == s and np.array_equal(Wq2, Wq)
    assert np.abs(W2).max() == np.abs(W).max()
