"""The LIF neuron: BPTT against finite differences of the smooth twin, hand-computed traces, bad input.

The kernels against their plain twins (kernels/lif.py: lif_forward_plain, lif_backward_plain):
tests/test_kernels.py."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mininsnn import surrogate as sg
from mininsnn.layers import Context, Leaky
from mininsnn.kernels.lif import lif_forward, lif_forward_plain
from tests.gradcheck import assert_close_grad, numeric_grad

SURR = [sg.fast_sigmoid(13.84), sg.sigmoid(5.0), sg.atan(2.0)]
cases = st.fixed_dictionaries(dict(
    T=st.integers(1, 12), N=st.integers(1, 9), static=st.booleans(), seed=st.integers(0, 2**31),
    beta=st.floats(0.0, 1.0), theta=st.floats(0.05, 3.0), zero_reset=st.booleans(), surr=st.sampled_from(SURR),
    sparse_grad=st.sampled_from([None, 0.1, 0.5])))


def _input(c, dtype=np.float64):
    rng = np.random.default_rng(c["seed"])
    TI = 1 if c["static"] else c["T"]
    return (rng.standard_normal((TI, c["N"])) * c["theta"]).astype(dtype)


def _margin_ok(U, theta, margin=1e-4):
    return np.abs(U - theta).min() > margin


@given(c=cases)
def test_bptt_equals_finite_differences_of_smooth_twin(c):
    """Through the Leaky layer in smooth mode and the fake loss sum(S * g). With ``sparse_grad`` B
    the backward uses the truncated surrogate and the twin g(clip(U - theta, -B, B)) is its exact
    primitive, so the check holds away from the kinks at |U - theta| = B too."""
    I = _input(c)
    T = c["T"]
    layer = Leaky(c["beta"], c["theta"], c["surr"], reset="zero" if c["zero_reset"] else "subtract", smooth=True,
                  sparse_grad=c["sparse_grad"])
    ctx = Context(T=T, training=True, rng=np.random.default_rng(0))
    x = I.reshape(I.shape[0], 1, c["N"])
    g = np.random.default_rng(c["seed"] + 2).standard_normal((T, 1, c["N"]))
    layer.forward(x, ctx)
    assume(_margin_ok(layer.cache[1], c["theta"]))  # keep the hard reset away from its jump
    if c["sparse_grad"]:
        assume(_margin_ok(np.abs(layer.cache[1] - c["theta"]), c["sparse_grad"]))  # and the clip's kinks
    dx = layer.backward(g)
    num = numeric_grad(lambda: float((layer.forward(x, ctx) * g).sum()), x)
    assert_close_grad(dx, num, what="Leaky")


@pytest.mark.parametrize("kernel", [lif_forward, lif_forward_plain])
def test_hand_computed_trace(kernel):
    """beta 0.5, theta 1, constant input 0.8: U = 0.8, 1.2 (spike), 0.6+0.8-1 = 0.4, 1.0 (no spike: strict), 1.3."""
    I = np.array([[0.8]])
    U = np.empty((5, 1))
    S = np.empty((5, 1), np.uint8)
    kernel(I, 5, 0.5, 1.0, False, False, 0, 1.0, np.inf, U, S, None, None, None)
    np.testing.assert_allclose(U[:, 0], [0.8, 1.2, 0.4, 1.0, 1.3])
    np.testing.assert_array_equal(S[:, 0], [0, 1, 0, 0, 1])


@pytest.mark.parametrize("kernel", [lif_forward, lif_forward_plain])
def test_zero_reset_trace(kernel):
    I = np.array([[0.8]])
    U = np.empty((4, 1))
    S = np.empty((4, 1), np.uint8)
    kernel(I, 4, 0.5, 1.0, True, False, 0, 1.0, np.inf, U, S, None, None, None)
    np.testing.assert_allclose(U[:, 0], [0.8, 1.2, 0.0, 0.8])
    np.testing.assert_array_equal(S[:, 0], [0, 1, 0, 0])


def test_static_input_equals_repeated_input():
    rng = np.random.default_rng(3)
    I = rng.standard_normal((1, 7)) * 2
    ctx = Context(T=6, training=True, rng=rng)
    a, b = Leaky(0.9, 1.0), Leaky(0.9, 1.0)
    sa = a.forward(I.reshape(1, 1, 7), ctx)
    sb = b.forward(np.repeat(I, 6, 0).reshape(6, 1, 7), ctx)
    np.testing.assert_array_equal(sa, sb)
    g = rng.standard_normal((6, 1, 7))
    np.testing.assert_allclose(a.backward(g)[0], b.backward(g).sum(0), rtol=1e-12)


@pytest.mark.parametrize("kw, msg", [(dict(beta=1.5), "beta"), (dict(beta=-0.1), "beta"),
                                     (dict(beta=float("nan")), "beta"), (dict(threshold=0.0), "threshold"),
                                     (dict(threshold=-1.0), "threshold"), (dict(reset="soft"), "reset")])
def test_bad_hyperparameters(kw, msg):
    args = dict(beta=0.5, threshold=1.0)
    args.update(kw)
    with pytest.raises(ValueError, match=msg):
        Leaky(**args)
