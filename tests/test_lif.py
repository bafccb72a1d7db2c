"""The LIF neuron: BPTT against finite differences of the smooth twin, hand-computed traces, bad input.

The kernels against their plain twins (kernels/lif.py: lif_forward_plain, lif_backward_plain):
tests/test_kernels.py."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mininsnn import surrogate as sg
from mininsnn.layers import Context
from mininsnn.kernels.lif import (lif_forward, lif_forward_nodelay, lif_forward_nodelay_plain,
                                  lif_forward_plain)
from mininsnn.neurons import Leaky
from tests.gradcheck import assert_close_grad, numeric_grad

SURR = [sg.fast_sigmoid(13.84), sg.sigmoid(5.0), sg.atan(2.0)]
cases = st.fixed_dictionaries(dict(
    T=st.integers(1, 12), N=st.integers(1, 9), static=st.booleans(), seed=st.integers(0, 2**31),
    beta=st.floats(0.0, 1.0), theta=st.floats(0.05, 3.0), zero_reset=st.booleans(), surr=st.sampled_from(SURR),
    reset_delay=st.booleans(), sparse_grad=st.sampled_from([None, 0.1, 0.5])))


def _input(c, dtype=np.float64):
    rng = np.random.default_rng(c["seed"])
    TI = 1 if c["static"] else c["T"]
    return (rng.standard_normal((TI, c["N"])) * c["theta"]).astype(dtype)


def _margin_ok(U, theta, margin=1e-4):
    return np.abs(U - theta).min() > margin


@given(c=cases)
def test_bptt_equals_finite_differences_of_smooth_twin(c):
    """Through the Leaky layer in smooth mode and the fake loss sum(S * g); both reset timings (the
    stored potential is U[t] with the delayed reset and V[t] with the same-step one: the hard reset
    flips where either crosses theta). With ``sparse_grad`` B (delayed reset only) the backward
    uses the truncated surrogate and the twin g(clip(U - theta, -B, B)) is its exact primitive, so
    the check holds away from the kinks at |U - theta| = B too."""
    I = _input(c)
    T = c["T"]
    layer = Leaky(c["beta"], c["theta"], c["surr"], reset="zero" if c["zero_reset"] else "subtract", smooth=True,
                  reset_delay=c["reset_delay"], sparse_grad=c["sparse_grad"] if c["reset_delay"] else None)
    ctx = Context(T=T, training=True, rng=np.random.default_rng(0))
    x = I.reshape(I.shape[0], 1, c["N"])
    g = np.random.default_rng(c["seed"] + 2).standard_normal((T, 1, c["N"]))
    layer.forward(x, ctx)
    assume(_margin_ok(layer.cache[1], c["theta"]))  # keep the hard reset away from its jump
    if c["sparse_grad"] and c["reset_delay"]:
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


@pytest.mark.parametrize("kernel", [lif_forward_nodelay, lif_forward_nodelay_plain])
@pytest.mark.parametrize("zero_reset, V, S", [
    # zero:     V = 0.8, 0.4 + 0.8 = 1.2 (spike, U = 0), 0 + 0.8, 1.2 (spike), 0.8
    (True, [0.8, 1.2, 0.8, 1.2, 0.8], [0, 1, 0, 1, 0]),
    # subtract: V = 0.8, 1.2 (spike, U = 0.2), 0.1 + 0.8 = 0.9, 0.45 + 0.8 = 1.25 (spike, U = 0.25), 0.925
    (False, [0.8, 1.2, 0.9, 1.25, 0.925], [0, 1, 0, 1, 0])])
def test_same_step_reset_trace(kernel, zero_reset, V, S):
    """reset_delay=False, beta 0.5, theta 1, constant input 0.8, by hand: the neuron resets in the step
    it fires, so it charges again from there at once (the delayed zero reset above loses a step)."""
    I = np.array([[0.8]])
    Vk = np.empty((5, 1))
    Sk = np.empty((5, 1), np.uint8)
    kernel(I, 5, 0.5, 1.0, zero_reset, False, 0, 1.0, Vk, Sk)
    np.testing.assert_allclose(Vk[:, 0], V, rtol=1e-15)
    np.testing.assert_array_equal(Sk[:, 0], S)


@given(seed=st.integers(0, 2**31), beta=st.floats(0.0, 1.0), theta=st.floats(0.05, 3.0),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_same_step_zero_reset_is_snntorch_leaky_reset_delay_false(seed, beta, theta, dtype):
    """snnTorch 1.0 ``Leaky(reset_mechanism="zero", reset_delay=False)`` step by step, as its source
    reads (the reset signal of the stored potential, then ``mem = beta * mem + input``, the spike, and
    ``mem = mem - (spk - reset) * mem``), written here in NumPy: the layer's spikes and potentials
    before the reset equal it bit for bit, in the layer's dtype."""
    rng = np.random.default_rng(seed)
    T, N = 12, 7
    d = np.dtype(dtype).type
    x = (rng.standard_normal((T, 1, N)) * theta * 1.5).astype(dtype)
    layer = Leaky(beta, theta, reset="zero", reset_delay=False)
    spikes = layer.forward(x, Context(T=T, training=False, rng=rng))
    mem = np.zeros(N, dtype)
    for t in range(T):
        reset = (mem > d(theta)).astype(dtype)        # detached reset of the stored potential
        mem = (1 - reset) * mem                       # _base_zero: 0 here after a same-step reset
        mem = d(beta) * mem + x[t, 0]                 # beta * mem + input
        np.testing.assert_array_equal(layer.membrane()[t, 0], mem)
        spk = (mem > d(theta)).astype(dtype)
        np.testing.assert_array_equal(spikes[t, 0], spk)
        mem = mem - (spk - reset) * mem               # same-step reset, "avoid double reset"


@pytest.mark.parametrize("kw, msg", [(dict(beta=1.5), "beta"), (dict(beta=-0.1), "beta"),
                                     (dict(beta=float("nan")), "beta"), (dict(threshold=0.0), "threshold"),
                                     (dict(threshold=-1.0), "threshold"), (dict(reset="soft"), "reset"),
                                     (dict(reset_delay="no"), "reset_delay")])
def test_bad_hyperparameters(kw, msg):
    args = dict(beta=0.5, threshold=1.0)
    args.update(kw)
    with pytest.raises(ValueError, match=msg):
        Leaky(**args)
