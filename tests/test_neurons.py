"""The general neuron kernels (kernels/neuron.py) and Leaky with per-neuron parameters, NIR's Euler
terms (gain, drive, v_reset) and learned beta / threshold.

Kernels against their plain twins (spiking mode, exact); the layer's BPTT against central finite
differences of the smooth twin (float64); the general path against the reference kernels of
kernels/lif.py where both apply; hand-computed traces; bad input."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mininsnn import surrogate as sg
from mininsnn.kernels import neuron as kn
from mininsnn.layers import Context
from mininsnn.neurons import Leaky
from tests.gradcheck import assert_close_grad, numeric_grad

SURR = [sg.fast_sigmoid(13.84), sg.sigmoid(5.0), sg.atan(2.0)]
kernel_cases = st.fixed_dictionaries(dict(
    T=st.integers(1, 10), N=st.integers(1, 9), static=st.booleans(), seed=st.integers(0, 2**31),
    zero_reset=st.booleans(), delay=st.booleans(), cuba=st.booleans(), surr=st.sampled_from(SURR),
    dtype=st.sampled_from([np.float32, np.float64])))


def random_par(rng, N, dtype=np.float64):
    """(NPAR, N) per-neuron parameters in their ranges (the rows of kernels/neuron.py)."""
    par = np.empty((kn.NPAR, N))
    par[kn.ALPHA] = rng.uniform(0, 1, N)
    par[kn.SYN_GAIN] = rng.uniform(0.3, 2, N)
    par[kn.BETA] = rng.uniform(0, 1, N)
    par[kn.GAIN] = rng.uniform(0.3, 2, N)
    par[kn.DRIVE] = rng.uniform(-0.2, 0.3, N)
    par[kn.THETA] = rng.uniform(0.2, 1.5, N)
    par[kn.V_RESET] = rng.uniform(-0.3, 0.3, N)
    return par.astype(dtype)


def _run_kernels(c, fwd, bwd, smooth=False):
    rng = np.random.default_rng(c["seed"])
    T, N, d = c["T"], c["N"], np.dtype(c["dtype"])
    X = rng.standard_normal((1 if c["static"] else T, N)).astype(d)
    par = random_par(rng, N, d)
    s = c["surr"]
    mode = (c["zero_reset"], c["delay"], c["cuba"], smooth, s.code, d.type(s.k))
    M, C = np.empty((T, N), d), np.empty((T, N) if c["cuba"] else (0, 0), d)
    S = np.empty((T, N), d if smooth else np.uint8)
    fwd(X, T, par, mode, M, S, C)
    dS = rng.standard_normal((T, N)).astype(d)
    dX, dpar = np.full(X.shape, 7.0, d), np.zeros((kn.NPAR, N), d)
    bwd(dS, X, par, mode, M, C, dX, dpar)
    return M, S, C, dX, dpar


@settings(deadline=None)
@given(c=kernel_cases)
def test_kernels_equal_plain_twins(c):
    """Spiking mode: neuron_forward / neuron_backward equal their plain twins bit for bit (the same
    operations in the same order), every mode, per-neuron parameters, static and dynamic input."""
    fast = _run_kernels(c, kn.neuron_forward, kn.neuron_backward)
    plain = _run_kernels(c, kn.neuron_forward_plain, kn.neuron_backward_plain)
    for a, b, what in zip(fast, plain, ("M", "S", "C", "dX", "dpar")):
        np.testing.assert_array_equal(a, b, err_msg=what)


@settings(deadline=None)
@given(c=kernel_cases)
def test_step_kernels_equal_whole_sequence(c):
    """neuron_forward_step / neuron_backward_step called at every step (the recurrent layers' way)
    give what the whole-sequence kernels give."""
    assume(not c["static"])
    M, S, C, dX, dpar = _run_kernels(c, kn.neuron_forward, kn.neuron_backward)

    def fwd(X, T, par, mode, M, S, C):
        for t in range(T):
            kn.neuron_forward_step(X, t, par, mode, M, S, C)

    def bwd(dS, X, par, mode, M, C, dX, dpar):
        cu, ci = np.zeros(dS.shape[1], dX.dtype), np.zeros(dS.shape[1], dX.dtype)
        if dX.shape[0] == 1:
            dX[...] = 0
        for t in range(dS.shape[0] - 1, -1, -1):
            kn.neuron_backward_step(dS, X, t, par, mode, M, C, cu, ci, dX, dpar)

    for a, b in zip((M, S, C, dX, dpar), _run_kernels(c, fwd, bwd)):
        np.testing.assert_array_equal(a, b)


layer_cases = st.fixed_dictionaries(dict(
    T=st.integers(1, 8), B=st.integers(1, 2), static=st.booleans(), seed=st.integers(0, 2**31),
    zero_reset=st.booleans(), reset_delay=st.booleans(), surr=st.sampled_from(SURR),
    shape=st.sampled_from([(3,), (2, 2, 3)]), per=st.sampled_from(["scalar", "channel", "neuron"]),
    learn_beta=st.booleans(), learn_threshold=st.booleans()))


def _param(rng, c, lo, hi):
    """A value for a parameter of shape: scalar, per channel (C, 1, ...) or per neuron."""
    shape = {"scalar": (), "channel": (c["shape"][0],) + (1,) * (len(c["shape"]) - 1), "neuron": c["shape"]}
    v = rng.uniform(lo, hi, shape[c["per"]])
    return float(v) if v.ndim == 0 else v


def make_leaky(c, rng, smooth=True):
    return Leaky(_param(rng, c, 0.1, 0.95), _param(rng, c, 0.3, 1.2), c["surr"],
                 reset="zero" if c["zero_reset"] else "subtract", smooth=smooth, reset_delay=c["reset_delay"],
                 gain=_param(rng, c, 0.5, 1.5), drive=_param(rng, c, -0.1, 0.2), v_reset=_param(rng, c, -0.2, 0.2),
                 learn_beta=c["learn_beta"], learn_threshold=c["learn_threshold"], dtype=np.float64)


def margin_ok(layer, margin=1e-4):
    """The hard reset (and the spike of the delayed reset's R) is away from its jump."""
    theta = layer.cache[3][kn.THETA]
    return np.abs(layer.cache[1] - theta).min() > margin


def check_neuron_fd(layer, x, ctx, seed):
    """BPTT = central finite differences of the smooth twin through sum(out * g): input and every
    learnable parameter."""
    g = np.random.default_rng((seed, 2)).standard_normal((ctx.T,) + x.shape[1:])
    layer.forward(x, ctx)
    assume(margin_ok(layer))
    layer.zero_grad()
    dx = layer.backward(g)

    def loss():
        return float((layer.forward(x, ctx) * g).sum())

    for what, analytic, p in [("input", dx, x)] + [(k, layer.grads[k], v) for k, v in layer.params.items()]:
        numeric = numeric_grad(loss, p)
        if np.abs(numeric).max() < 1e-4:
            # a gradient this small (a saturated surrogate) is below what the differences of a loss
            # of size ~1 resolve relatively: hold it to their absolute accuracy (~1e-11) instead
            np.testing.assert_allclose(analytic, numeric, rtol=0, atol=1e-9, err_msg=f"{layer.name}.{what}")
        else:
            assert_close_grad(analytic, numeric, what=f"{layer.name}.{what}")


@settings(deadline=None)
@given(c=layer_cases)
def test_leaky_general_bptt_equals_finite_differences(c):
    rng = np.random.default_rng(c["seed"])
    layer = make_leaky(c, rng)
    x = rng.standard_normal((1 if c["static"] else c["T"], c["B"]) + c["shape"])
    check_neuron_fd(layer, x, Context(T=c["T"], training=True, rng=rng), c["seed"])


@settings(deadline=None)
@given(seed=st.integers(0, 2**31), zero=st.booleans(), delay=st.booleans(), static=st.booleans())
def test_general_path_with_reference_values_equals_reference_kernels(seed, zero, delay, static):
    """Leaky with gain 1, drive 0, v_reset 0 given as arrays runs kernels/neuron.py; it gives the
    bits of the reference kernels (kernels/lif.py), forward and backward, float32."""
    rng = np.random.default_rng(seed)
    kw = dict(reset="zero" if zero else "subtract", reset_delay=delay)
    ref, gen = Leaky(0.85, 0.6, **kw), Leaky(0.85, 0.6, gain=np.ones(4), **kw)
    assert gen.general and not ref.general
    x = rng.standard_normal((1 if static else 9, 3, 4)).astype(np.float32)
    ctx = Context(T=9, training=True, rng=rng)
    np.testing.assert_array_equal(ref.forward(x, ctx), gen.forward(x, ctx))
    np.testing.assert_array_equal(ref.membrane(), gen.membrane())
    g = rng.standard_normal((9, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(ref.backward(g), gen.backward(g))


@pytest.mark.parametrize("delay, zero, M, S", [
    # same step, zero to v_reset -0.5: V = 0.9, 0.45+0.9 = 1.35 (spike, U = -0.5), -0.25+0.9 = 0.65, 1.225 (spike)
    (False, True, [0.9, 1.35, 0.65, 1.225], [0, 1, 0, 1]),
    # delayed, zero to -0.5: U = 0.9, 1.35 (spike), -0.5 (reset), -0.25 + 0.9 = 0.65
    (True, True, [0.9, 1.35, -0.5, 0.65], [0, 1, 0, 0]),
    # delayed, subtract: U = 0.9, 1.35 (spike), 0.675 + 0.9 - 1 = 0.575, 0.2875 + 0.9 = 1.1875 (spike)
    (True, False, [0.9, 1.35, 0.575, 1.1875], [0, 1, 0, 1])])
def test_hand_computed_trace_with_gain_drive_v_reset(delay, zero, M, S):
    """beta 0.5, theta 1, input 0.4, gain 2, drive 0.1 (so gain I + drive = 0.9), v_reset -0.5."""
    layer = Leaky(0.5, 1.0, reset="zero" if zero else "subtract", reset_delay=delay, gain=2.0, drive=0.1,
                  v_reset=-0.5)
    s = layer.forward(np.full((1, 1, 1), 0.4), Context(T=4, training=False, rng=None))
    np.testing.assert_allclose(layer.membrane()[:, 0, 0], M, rtol=1e-14)
    np.testing.assert_array_equal(s[:, 0, 0], S)


def test_per_channel_parameters_act_per_channel():
    """A (C, 1, 1) threshold: each channel fires as a layer with that channel's scalar threshold."""
    rng = np.random.default_rng(5)
    theta = np.array([0.5, 1.0, 2.0]).reshape(3, 1, 1)
    x = rng.uniform(0, 1.5, (6, 2, 3, 2, 2))
    ctx = Context(T=6, training=False, rng=rng)
    s = Leaky(0.9, theta, gain=1.0 + 0 * theta).forward(x, ctx)
    for ch in range(3):
        ref = Leaky(0.9, float(theta[ch, 0, 0])).forward(np.ascontiguousarray(x[:, :, ch]), ctx)
        np.testing.assert_array_equal(s[:, :, ch], ref)


@pytest.mark.parametrize("kw, msg", [
    (dict(beta=np.array([0.5, 1.2])), r"beta to be finite numbers in \[0, 1\], got 1.2 at index \(1,\)"),
    (dict(threshold=np.array([1.0, 0.0])), "threshold"),
    (dict(gain=np.array([1.0, np.nan])), "gain"), (dict(drive=float("inf")), "drive"),
    (dict(v_reset="a"), "v_reset"), (dict(learn_beta="yes"), "learn_beta"),
    (dict(threshold=np.ones(2), sparse_grad=0.5), "sparse_grad")])
def test_bad_parameters(kw, msg):
    args = dict(beta=0.5)
    args.update(kw)
    with pytest.raises(ValueError, match=msg):
        Leaky(**args)


def test_parameter_that_does_not_broadcast_is_refused_in_one_line():
    layer = Leaky(np.full(5, 0.5))
    msg = r"^Leaky: beta of shape \(5,\) does not broadcast to the neuron shape \(4,\)$"
    with pytest.raises(ValueError, match=msg):
        layer.forward(np.zeros((2, 1, 4)), Context(T=2, training=False, rng=None))


def test_learned_parameters_in_params_and_clip():
    """learn_beta / learn_threshold: in params (the state dict's '<layer>.beta'); a beta outside
    [0, 1] acts as its clipped value and gets no gradient."""
    layer = Leaky(np.array([0.5, 0.9]), 1.0, learn_beta=True, learn_threshold=True, dtype=np.float64)
    assert set(layer.params) == {"beta", "threshold"} and layer.params["threshold"].shape == ()
    layer.params["beta"][...] = [1.3, 0.9]
    x = np.random.default_rng(0).uniform(0, 1, (5, 2, 2))
    ctx = Context(T=5, training=True, rng=None)
    s = layer.forward(x, ctx)
    np.testing.assert_array_equal(s, Leaky(np.array([1.0, 0.9]), 1.0, gain=1.0 + 0 * x[0, 0]).forward(x, ctx))
    layer.backward(np.ones_like(x))
    assert layer.grads["beta"][0] == 0 and layer.grads["beta"][1] != 0


def test_adam_updates_learned_beta_and_threshold_through_the_network():
    """Learned parameters are network parameters: named '<layer>.beta', updated by Adam, saved and
    loaded with the state dict (a scalar one as a 0-d array, a per-channel one in its shape)."""
    from mininsnn.layers import Linear
    from mininsnn.network import Network
    from mininsnn.optim import Adam

    rng = np.random.default_rng(0)
    net = Network([("fc", Linear(4, 3, rng=rng)),
                   ("lif", Leaky(np.array([0.5, 0.7, 0.9]), 0.5, learn_beta=True, learn_threshold=True))], (4,))
    assert net.params["lif.beta"].shape == (3,) and net.params["lif.threshold"].shape == ()
    before = net.state_dict()
    opt = Adam(net.params, lr=0.01)
    net.zero_grad()
    out = net.forward(rng.uniform(0, 2, (8, 5, 4)).astype(np.float32))
    net.backward(np.ones_like(out, dtype=np.float32))
    assert np.all(net.grads["lif.beta"] != 0) and net.grads["lif.threshold"] != 0
    opt.step(net.grads)
    after = net.state_dict()
    assert np.all(after["lif.beta"] != before["lif.beta"]) and after["lif.threshold"] != before["lif.threshold"]
    net.load_state_dict(before)
    np.testing.assert_array_equal(net.params["lif.beta"], before["lif.beta"])
