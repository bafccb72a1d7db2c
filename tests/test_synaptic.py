"""Synaptic (current-based LIF; snnTorch Synaptic, NIR CubaLIF): BPTT against finite differences of
the smooth twin, the forward against a step-by-step NumPy model, a hand trace, the accessors.
Its kernels against their plain twins: tests/test_neurons.py (``cuba``)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mininsnn.layers import Context
from mininsnn.network import Network
from mininsnn.neurons import Synaptic
from tests.test_neurons import SURR, _param, check_neuron_fd

cases = st.fixed_dictionaries(dict(
    T=st.integers(1, 8), B=st.integers(1, 2), static=st.booleans(), seed=st.integers(0, 2**31),
    zero_reset=st.booleans(), reset_delay=st.booleans(), surr=st.sampled_from(SURR),
    shape=st.sampled_from([(3,), (2, 2, 3)]), per=st.sampled_from(["scalar", "channel", "neuron"]),
    learn_alpha=st.booleans(), learn_beta=st.booleans(), learn_threshold=st.booleans()))


def make_synaptic(c, rng, smooth=True):
    return Synaptic(_param(rng, c, 0.1, 0.9), _param(rng, c, 0.1, 0.95), _param(rng, c, 0.3, 1.2), c["surr"],
                    reset="zero" if c["zero_reset"] else "subtract", smooth=smooth, reset_delay=c["reset_delay"],
                    syn_gain=_param(rng, c, 0.5, 1.5), gain=_param(rng, c, 0.5, 1.5),
                    drive=_param(rng, c, -0.1, 0.2), v_reset=_param(rng, c, -0.2, 0.2),
                    learn_alpha=c["learn_alpha"], learn_beta=c["learn_beta"],
                    learn_threshold=c["learn_threshold"], dtype=np.float64)


@settings(deadline=None)
@given(c=cases)
def test_synaptic_bptt_equals_finite_differences(c):
    """Through both recursions (current and membrane): the input and every learned parameter."""
    rng = np.random.default_rng(c["seed"])
    layer = make_synaptic(c, rng)
    x = rng.standard_normal((1 if c["static"] else c["T"], c["B"]) + c["shape"])
    check_neuron_fd(layer, x, Context(T=c["T"], training=True, rng=rng), c["seed"])


@settings(deadline=None)
@given(seed=st.integers(0, 2**31), zero=st.booleans(), delay=st.booleans())
def test_forward_equals_step_by_step_model(seed, zero, delay):
    """The equations of the class docstring, one step at a time in NumPy (per-neuron values)."""
    rng = np.random.default_rng(seed)
    T, N = 15, 6
    a, b, th, sgain, gain, drive, vr = (rng.uniform(0.2, 0.9, N), rng.uniform(0.2, 0.95, N), rng.uniform(0.3, 1, N),
                                        rng.uniform(0.5, 1.5, N), rng.uniform(0.5, 1.5, N),
                                        rng.uniform(-0.1, 0.1, N), rng.uniform(-0.2, 0.2, N))
    x = rng.uniform(-0.5, 1.0, (T, 1, N))
    layer = Synaptic(a, b, th, reset="zero" if zero else "subtract", reset_delay=delay, syn_gain=sgain, gain=gain,
                     drive=drive, v_reset=vr, dtype=np.float64)
    s = layer.forward(x, Context(T=T, training=False, rng=None))
    i, u = np.zeros(N), np.zeros(N)
    for t in range(T):
        i = a * i + sgain * x[t, 0]
        q = b * u + gain * i + drive
        if delay:
            r = u > th if t > 0 else np.zeros(N, bool)
            u = np.where(r, vr if zero else q - th, q)
            m = u
        else:
            m = q
            u = np.where(m > th, vr if zero else m - th, m)
        np.testing.assert_allclose(layer.current()[t, 0], i, rtol=1e-13)
        np.testing.assert_allclose(layer.membrane()[t, 0], m, rtol=1e-13, atol=1e-15)
        np.testing.assert_array_equal(s[t, 0], m > th)


def test_hand_computed_trace():
    """alpha 0.5, beta 0.5, theta 1, input 0.6, subtract, delayed: I = 0.6, 0.9, 1.05, 1.125;
    U = 0.6, 1.2 (spike), 0.6 + 1.05 - 1 = 0.65, 0.325 + 1.125 = 1.45 (spike)."""
    layer = Synaptic(0.5, 0.5, 1.0)
    s = layer.forward(np.full((1, 1, 1), 0.6), Context(T=4, training=False, rng=None))
    np.testing.assert_allclose(layer.current()[:, 0, 0], [0.6, 0.9, 1.05, 1.125], rtol=1e-14)
    np.testing.assert_allclose(layer.membrane()[:, 0, 0], [0.6, 1.2, 0.65, 1.45], rtol=1e-14)
    np.testing.assert_array_equal(s[:, 0, 0], [0, 1, 0, 1])


def test_learned_parameters_in_network_state_dict():
    net = Network([("syn", Synaptic(np.full(4, 0.5), 0.9, learn_alpha=True, learn_beta=True))], (4,))
    assert set(net.state_dict()) == {"syn.alpha", "syn.beta"}
    assert net.state_dict()["syn.alpha"].shape == (4,) and net.state_dict()["syn.beta"].shape == ()
    assert "syn" in net.firing_rates()


@pytest.mark.parametrize("kw, msg", [(dict(alpha=1.5), "alpha"), (dict(alpha=np.array([0.5, -0.1])), "alpha"),
                                     (dict(syn_gain=np.nan), "syn_gain"), (dict(reset="soft"), "reset"),
                                     (dict(learn_alpha=1), "learn_alpha")])
def test_bad_parameters(kw, msg):
    args = dict(alpha=0.5, beta=0.5)
    args.update(kw)
    with pytest.raises(ValueError, match=msg):
        Synaptic(**args)
