"""The LIF kernels: spiking mode against the slow twin; BPTT against finite differences of the smooth twin."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mininsnn import surrogate as sg
from mininsnn.layers import Context, Leaky
from mininsnn.kernels.lif import lif_backward, lif_forward
from tests.gradcheck import assert_close_grad, numeric_grad
from tests.reference import lif_backward_ref, lif_forward_ref

SURR = [sg.fast_sigmoid(13.84), sg.sigmoid(5.0), sg.atan(2.0)]
cases = st.fixed_dictionaries(dict(
    T=st.integers(1, 12), N=st.integers(1, 9), static=st.booleans(), seed=st.integers(0, 2**31),
    beta=st.floats(0.0, 1.0), theta=st.floats(0.05, 3.0), zero_reset=st.booleans(), surr=st.sampled_from(SURR)))


def _input(c, dtype=np.float64):
    rng = np.random.default_rng(c["seed"])
    TI = 1 if c["static"] else c["T"]
    return (rng.standard_normal((TI, c["N"])) * c["theta"]).astype(dtype)


def _margin_ok(U, theta, margin=1e-4):
    return np.abs(U - theta).min() > margin


@given(c=cases, dtype=st.sampled_from([np.float32, np.float64]))
def test_forward_equals_slow_twin(c, dtype):
    I = _input(c, dtype)
    d = np.dtype(dtype).type
    U = np.empty((c["T"], c["N"]), dtype)
    S = np.empty((c["T"], c["N"]), np.uint8)
    lif_forward(I, c["T"], d(c["beta"]), d(c["theta"]), c["zero_reset"], False, 0, d(1.0), U, S)
    U_ref, S_ref = lif_forward_ref(I, c["T"], d(c["beta"]), d(c["theta"]), c["zero_reset"])
    np.testing.assert_array_equal(S, S_ref)
    np.testing.assert_array_equal(U, U_ref)


@given(c=cases)
def test_backward_equals_slow_twin(c):
    I = _input(c)
    T, N = c["T"], c["N"]
    s = c["surr"]
    U = np.empty((T, N))
    S = np.empty((T, N), np.uint8)
    lif_forward(I, T, c["beta"], c["theta"], c["zero_reset"], False, s.code, s.k, U, S)
    dS = np.random.default_rng(c["seed"] + 1).standard_normal((T, N))
    dI = np.empty_like(I)
    lif_backward(dS, U, c["beta"], c["theta"], c["zero_reset"], s.code, s.k, dI)
    ref = lif_backward_ref(dS, U, c["beta"], c["theta"], lambda x: float(s.grad(x)), I.shape[0], c["zero_reset"])
    np.testing.assert_allclose(dI, ref, rtol=1e-12, atol=1e-14)


@given(c=cases)
def test_bptt_equals_finite_differences_of_smooth_twin(c):
    """Through the Leaky layer in smooth mode and the fake loss sum(S * g)."""
    I = _input(c)
    T = c["T"]
    layer = Leaky(c["beta"], c["theta"], c["surr"], reset="zero" if c["zero_reset"] else "subtract", smooth=True)
    ctx = Context(T=T, training=True, rng=np.random.default_rng(0))
    x = I.reshape(I.shape[0], 1, c["N"])
    g = np.random.default_rng(c["seed"] + 2).standard_normal((T, 1, c["N"]))
    layer.forward(x, ctx)
    assume(_margin_ok(layer.cache[1], c["theta"]))  # keep the hard reset away from its jump
    dx = layer.backward(g)
    num = numeric_grad(lambda: float((layer.forward(x, ctx) * g).sum()), x)
    assert_close_grad(dx, num, what="Leaky")


def test_hand_computed_trace():
    """beta 0.5, theta 1, constant input 0.8: U = 0.8, 1.2 (spike), 0.6+0.8-1 = 0.4, 1.0 (no spike: strict), 1.3."""
    I = np.array([[0.8]])
    U = np.empty((5, 1))
    S = np.empty((5, 1), np.uint8)
    lif_forward(I, 5, 0.5, 1.0, False, False, 0, 1.0, U, S)
    np.testing.assert_allclose(U[:, 0], [0.8, 1.2, 0.4, 1.0, 1.3])
    np.testing.assert_array_equal(S[:, 0], [0, 1, 0, 0, 1])


def test_zero_reset_trace():
    I = np.array([[0.8]])
    U = np.empty((4, 1))
    S = np.empty((4, 1), np.uint8)
    lif_forward(I, 4, 0.5, 1.0, True, False, 0, 1.0, U, S)
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
