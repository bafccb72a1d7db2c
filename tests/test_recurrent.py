"""RLeaky and RSynaptic (recurrent feedback with one step delay): the kernels against their plain
twins, BPTT through the loop against finite differences of the smooth twin (input, W_rec, b_rec,
learned neuron parameters), the forward against a step-by-step NumPy model."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mininsnn.kernels import recurrent as krec
from mininsnn.layers import Context
from mininsnn.network import Network
from mininsnn.neurons import Leaky
from mininsnn.recurrent import RLeaky, RSynaptic
from mininsnn.kernels.neuron import THETA as kn_THETA
from tests.gradcheck import assert_close_grad, numeric_grad
from tests.test_neurons import SURR, check_neuron_fd, random_par

kernel_cases = st.fixed_dictionaries(dict(
    T=st.integers(1, 8), B=st.integers(1, 3), n=st.integers(1, 6), seed=st.integers(0, 2**31),
    zero_reset=st.booleans(), delay=st.booleans(), cuba=st.booleans(), surr=st.sampled_from(SURR),
    dtype=st.sampled_from([np.float32, np.float64])))


def _run(c, fwd, bwd):
    rng = np.random.default_rng(c["seed"])
    T, n, d = c["T"], c["n"], np.dtype(c["dtype"])
    N = c["B"] * n
    W = (rng.standard_normal((n, n)) * 0.8).astype(d)
    Xin = rng.uniform(-0.3, 1.0, (T, N)).astype(d)
    par = random_par(rng, N, d)
    s = c["surr"]
    mode = (c["zero_reset"], c["delay"], c["cuba"], False, s.code, d.type(s.k))
    M, S, C = np.empty((T, N), d), np.empty((T, N), np.uint8), np.empty((T, N) if c["cuba"] else (0, 0), d)
    fwd(np.ascontiguousarray(W.T), par, mode, n, Xin, M, S, C)
    dS = rng.standard_normal((T, N)).astype(d)
    dXin, dpar = np.full((T, N), 5.0, d), np.zeros((len(par), N), d)
    bwd(W, par, mode, n, Xin, M, C, dS, dXin, dpar)
    return Xin, M, S, C, dS, dXin, dpar


@settings(deadline=None)
@given(c=kernel_cases)
def test_kernels_equal_plain_twins(c):
    """Spiking mode, bit for bit: the same additions in the same order."""
    for a, b, what in zip(_run(c, krec.recurrent_forward, krec.recurrent_backward),
                          _run(c, krec.recurrent_forward_plain, krec.recurrent_backward_plain),
                          ("Xin", "M", "S", "C", "dS_tot", "dXin", "dpar")):
        np.testing.assert_array_equal(a, b, err_msg=what)


layer_cases = st.fixed_dictionaries(dict(
    T=st.integers(1, 7), B=st.integers(1, 2), n=st.integers(1, 4), static=st.booleans(), seed=st.integers(0, 2**31),
    zero_reset=st.booleans(), reset_delay=st.booleans(), surr=st.sampled_from(SURR), cuba=st.booleans(),
    bias=st.booleans(), per_neuron=st.booleans(), learn=st.booleans()))


def make_layer(c, rng, smooth=True):
    n = c["n"]

    def v(lo, hi):
        return rng.uniform(lo, hi, n) if c["per_neuron"] else float(rng.uniform(lo, hi))

    kw = dict(reset="zero" if c["zero_reset"] else "subtract", smooth=smooth, reset_delay=c["reset_delay"],
              bias=c["bias"], gain=v(0.5, 1.5), drive=v(-0.1, 0.2), v_reset=v(-0.2, 0.2), learn_beta=c["learn"],
              learn_threshold=c["learn"], dtype=np.float64, rng=rng)
    if c["cuba"]:
        return RSynaptic(n, v(0.1, 0.9), v(0.1, 0.95), v(0.3, 1.2), c["surr"], syn_gain=v(0.5, 1.5),
                         learn_alpha=c["learn"], **kw)
    return RLeaky(n, v(0.1, 0.95), v(0.3, 1.2), c["surr"], **kw)


@settings(deadline=None)
@given(c=layer_cases)
def test_bptt_through_the_loop_equals_finite_differences(c):
    """Input, W_rec, b_rec and the learned alpha / beta / threshold."""
    rng = np.random.default_rng(c["seed"])
    layer = make_layer(c, rng)
    layer.params["W_rec"][...] *= 2  # a loop strong enough to matter
    x = rng.standard_normal((1 if c["static"] else c["T"], c["B"], c["n"]))
    check_neuron_fd(layer, x, Context(T=c["T"], training=True, rng=rng), c["seed"])


@settings(deadline=None)
@given(seed=st.integers(0, 2**31), zero=st.booleans(), delay=st.booleans(), cuba=st.booleans())
def test_forward_equals_step_by_step_model(seed, zero, delay, cuba):
    rng = np.random.default_rng(seed)
    T, B, n = 12, 2, 5
    c = dict(n=n, zero_reset=zero, reset_delay=delay, cuba=cuba, bias=True, per_neuron=True, learn=False,
             surr=SURR[0])
    layer = make_layer(c, rng, smooth=False)
    x = rng.uniform(-0.3, 1.0, (T, B, n))
    s = layer.forward(x, Context(T=T, training=False, rng=None))
    W, b = layer.W_rec, layer.b_rec
    v = {k: np.broadcast_to(layer.value(k), (n,)) for k in ("beta", "threshold", "gain", "drive", "v_reset")}
    a, sg_ = (layer.value("alpha"), layer.value("syn_gain")) if cuba else (0.0, 1.0)
    i, u, spk = np.zeros((B, n)), np.zeros((B, n)), np.zeros((B, n))
    th = v["threshold"]
    for t in range(T):
        xin = x[t] + spk @ W.T + b
        i = a * i + sg_ * xin if cuba else xin
        q = v["beta"] * u + v["gain"] * i + v["drive"]
        if delay:
            r = u > th if t > 0 else np.zeros((B, n), bool)
            u = np.where(r, v["v_reset"] if zero else q - th, q)
            m = u
        else:
            m = q
            u = np.where(m > th, v["v_reset"] if zero else m - th, m)
        np.testing.assert_allclose(layer.membrane()[t], m, rtol=1e-12, atol=1e-14)
        spk = (m > th).astype(float)
        np.testing.assert_array_equal(s[t], spk)


def test_without_feedback_it_is_the_plain_neuron():
    """W_rec = 0, no bias: RLeaky = Leaky (general path), bit for bit, forward and backward."""
    rng = np.random.default_rng(1)
    r = RLeaky(4, 0.8, 0.6, bias=False, gain=1.0, rng=rng)
    r.params["W_rec"][...] = 0
    ref = Leaky(0.8, 0.6, gain=np.ones(4))
    x = rng.standard_normal((6, 3, 4)).astype(np.float32)
    ctx = Context(T=6, training=True, rng=rng)
    np.testing.assert_array_equal(r.forward(x, ctx), ref.forward(x, ctx))
    g = rng.standard_normal((6, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(r.backward(g), ref.backward(g))


def test_parameter_names_in_state_dict():
    net = Network([("rlif", RSynaptic(3, 0.5, 0.9, learn_beta=True, rng=np.random.default_rng(0)))], (3,))
    assert set(net.state_dict()) == {"rlif.W_rec", "rlif.b_rec", "rlif.beta"}
    assert net.state_dict()["rlif.W_rec"].shape == (3, 3)
    out = net.forward(np.ones((4, 2, 3), np.float32))
    assert out.shape == (4, 2, 3) and net.neurons()[0].name == "rlif"


@pytest.mark.parametrize("make, msg", [(lambda: RLeaky(0, 0.5), "n"), (lambda: RLeaky(3, 0.5, bias=1), "bias"),
                                       (lambda: RSynaptic(3, 2.0, 0.5), "alpha")])
def test_bad_hyperparameters(make, msg):
    with pytest.raises(ValueError, match=msg):
        make()


def test_wrong_width_is_refused():
    with pytest.raises(ValueError, match=r"RLeaky: expected input of shape \(T, B, 3\)"):
        RLeaky(3, 0.5).forward(np.zeros((2, 1, 4), np.float32), Context(T=2, training=False, rng=None))


@settings(deadline=None)
@given(c=kernel_cases, P=st.integers(1, 4), smooth=st.booleans())
def test_weight_gradient_kernel_equals_plain_twin(c, P, smooth):
    """dW_rec^T by the spikes that fired, in P slices, = the plain triple sum (within rounding:
    the slices add in another order)."""
    rng = np.random.default_rng(c["seed"])
    T, N, d = c["T"], c["B"] * c["n"], np.dtype(c["dtype"])
    dXin = rng.standard_normal((T, N)).astype(d)
    S = rng.random((T, N)).astype(d) if smooth else (rng.random((T, N)) < 0.3).astype(np.uint8)
    parts, ref = np.full((P, c["n"], c["n"]), 9.0, d), np.empty((1, c["n"], c["n"]), d)
    krec.recurrent_backward_weight(dXin, S, c["n"], parts)
    krec.recurrent_backward_weight_plain(dXin, S, c["n"], ref)
    np.testing.assert_allclose(parts.sum(axis=0), ref[0], rtol=1e-5 if d == np.float32 else 1e-12, atol=1e-5)


@settings(deadline=None)
@given(seed=st.integers(0, 2**31), delay=st.booleans(), zero=st.booleans())
def test_network_of_new_layers_gradients_equal_finite_differences(seed, delay, zero):
    """A whole network in smooth-twin mode, the graph of the issue's CNN and RNN shapes: Conv2d ->
    Synaptic (per channel, learned beta) -> SumPool2d (padding) -> Flatten -> Linear -> RSynaptic
    -> Linear -> Leaky (learned threshold); every parameter against finite differences."""
    from mininsnn.layers import Conv2d, Flatten, Linear, SumPool2d
    from mininsnn.neurons import Synaptic

    rng = np.random.default_rng(seed)
    kw = dict(reset="zero" if zero else "subtract", reset_delay=delay, dtype=np.float64)
    net = Network([
        ("conv", Conv2d(1, 2, 3, padding=1, dtype=np.float64, rng=rng)),
        ("syn1", Synaptic(0.5, np.array([0.7, 0.9]).reshape(2, 1, 1), 0.4, learn_beta=True, **kw)),
        ("pool", SumPool2d(2, padding=1)),
        ("flat", Flatten()),
        ("fc1", Linear(18, 4, dtype=np.float64, rng=rng)),
        ("rsyn", RSynaptic(4, 0.6, 0.8, 0.5, rng=rng, **kw)),
        ("fc2", Linear(4, 3, dtype=np.float64, rng=rng)),
        ("lif", Leaky(0.9, 0.5, learn_threshold=True, **kw)),
    ], (1, 4, 4), dtype=np.float64)
    net.set_smooth(True)
    x = rng.uniform(0, 1.5, (4, 2, 1, 4, 4))
    out = net.forward(x)
    assume(all(np.abs(l.cache[1] - l.cache[3][kn_THETA]).min() > 1e-4 for l in net.neurons() if l.general))
    g = rng.standard_normal(out.shape)
    net.zero_grad()
    net.backward(g)

    def loss():
        return float((net.forward(x) * g).sum())

    for name, p in net.params.items():
        numeric = numeric_grad(loss, p)
        if np.abs(numeric).max() < 1e-4:
            np.testing.assert_allclose(net.grads[name], numeric, rtol=0, atol=1e-9, err_msg=name)
        else:
            assert_close_grad(net.grads[name], numeric, what=name)
