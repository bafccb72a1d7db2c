"""Integer deploy of any chain of supported layers (mininsnn.deploy.chain): the paper's networks
give today's integers, other chains follow their float model, unsupported layers are refused."""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mininsnn.deploy import conversion as cv
from mininsnn.deploy import engine as npe
from mininsnn.deploy import modelfile as mf
from mininsnn.deploy import numba_engine as nbe
from mininsnn.deploy.chain import convert_layers, fuse_pool_strided
from mininsnn.layers import (AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d,
                             SumPool2d)
from mininsnn.network import Network
from mininsnn.neurons import Leaky
from tests.test_deploy import SHAPE, small_model


def _bn(c, rng):
    b = BatchNorm2d(c, dtype=np.float64)
    g = rng.normal(1.0, 0.7, c)
    g[0] = -abs(g[0])                                    # a negative gain flips the accumulator
    b.params["weight"][...] = g
    b.params["bias"][...] = rng.normal(0.2, 0.5, c)
    b.buffers["running_mean"][...] = rng.normal(0, 1, c)
    b.buffers["running_var"][...] = rng.uniform(0.5, 3, c)
    return b


def mlp(seed, bits=4, beta=0.9, theta=1.0, reset="subtract", shape=(1, 12, 12), hidden=24,
        classes=5, delay=True, per_neuron=False, beta2=None):
    """Flatten, Linear (bias), Leaky, Linear, Dropout, Leaky; float64, random weights.
    per_neuron: the first Leaky gets a threshold, gain and drive per neuron (NIR's LIF form)."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    kw = {}
    if per_neuron:
        kw = dict(gain=rng.uniform(0.2, 2.0, hidden), drive=rng.normal(0, 0.1, hidden))
        theta1 = rng.uniform(0.5, 1.5, hidden)
    lif1 = Leaky(beta, theta1 if per_neuron else theta, reset=reset, reset_delay=delay, **kw)
    layers = [("flat", Flatten()), ("fc1", Linear(n, hidden, bits=bits, rng=rng, dtype=np.float64)),
              ("lif1", lif1),
              ("fc2", Linear(hidden, classes, bias=False, bits=bits, rng=rng, dtype=np.float64)),
              ("drop", Dropout(0.2)),
              ("lif2", Leaky(beta if beta2 is None else beta2, theta, reset=reset, reset_delay=delay))]
    net = Network(layers, shape, dtype=np.float64).eval()
    for k, p in net.params.items():
        p[...] = rng.normal(0, 0.4 if k.endswith("weight") else 0.3, p.shape)
    return net


def three_conv(seed, bits=4, beta=0.9, theta=1.0, reset="subtract", shape=(1, 16, 16),
               pool="avg"):
    """conv 3x3 pad 1 + pool + BN, conv stride 2 pad 1 (bias) + BN, conv pad 1 + pool, linear."""
    rng = np.random.default_rng(seed)
    P = AvgPool2d if pool == "avg" else SumPool2d
    C, H, W = shape
    h3 = ((H // 2 + 1) // 2) // 2
    w3 = ((W // 2 + 1) // 2) // 2

    def conv(c, o, **kw):
        return Conv2d(c, o, 3, bits=bits, rng=rng, dtype=np.float64, **kw)

    layers = [("c1", conv(C, 4, padding=1)), ("p1", P(2)), ("bn1", _bn(4, rng)),
              ("l1", Leaky(beta, theta, reset=reset)),
              ("c2", conv(4, 6, stride=2, padding=1, bias=True)), ("bn2", _bn(6, rng)),
              ("l2", Leaky(beta, theta, reset=reset)),
              ("c3", conv(6, 8, padding=1)), ("p3", P(2)), ("l3", Leaky(beta, theta, reset=reset)),
              ("flat", Flatten()), ("fc", Linear(8 * h3 * w3, 5, bits=bits, rng=rng,
                                                 dtype=np.float64)),
              ("l4", Leaky(beta, theta, reset=reset))]
    net = Network(layers, shape, dtype=np.float64).eval()
    for k, p in net.params.items():
        if k.endswith("weight") and p.ndim > 1:
            p[...] = rng.normal(0, 0.5, p.shape)
    return net


def follows_float(net, model, x, T, static=True):
    """Integer spikes of every neuron layer equal the float model's, except from a step where a
    differing neuron's float membrane lies within its layer's tolerance of theta."""
    xin = x / 255.0 if static else x.astype(np.float64)
    net.forward(xin, num_steps=T if static else None, record=("spikes", "membrane"))
    _, rec = npe.forward(model, x, T, record=True)
    lifs = [L.name for L in net.neurons()]
    for L, lif in zip(model.layers, lifs):
        a, b = rec[L.name], net.recorded["spikes"][lif]
        d = a != b
        if not d.any():
            continue
        t0 = int(np.argmax(d.reshape(d.shape[0], -1).any(axis=1)))
        idx = np.argwhere(d[t0])
        theta = np.broadcast_to({layer.name: layer for layer in net.layers}[lif].threshold,
                                a.shape[2:])[tuple(idx[:, 1:].T)]
        margin = np.abs(net.recorded["membrane"][lif][t0][d[t0]] - theta)
        assert (margin <= L.tol[idx[:, 1]] * (1 + 1e-9) + 1e-12).all(), (L.name, t0)
        return L.name
    return None


# ------------------------------------------------------------------------------------------------
# the paper's networks: the general path builds today's integers

@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2 ** 16), bits=st.integers(2, 8), reset=st.sampled_from(["subtract", "zero"]),
       batchnorm=st.booleans(), leak=st.sampled_from(["multiply", "shift"]), F=st.sampled_from(["max", 3]))
def test_paper_network_converts_to_today_s_integers(seed, bits, reset, batchnorm, leak, F):
    net = small_model(seed, bits, 0.9, 1.0, reset, batchnorm)
    try:
        old = cv.convert(net.state_dict(), net.config, input_shape=SHAPE, static=True, leak=leak,
                         frac_bits=F)
    except cv.OverflowProofError:
        assume(False)
    new = convert_layers(net, leak=leak, frac_bits=F)
    assert (new.leak, new.reset, new.static, new.input_shape) == \
        (old.leak, old.reset, old.static, old.input_shape)
    for a, b in zip(old.layers, new.layers):
        for f in ("weight", "sign", "bias", "theta"):
            assert np.array_equal(getattr(a, f), getattr(b, f)) and \
                getattr(a, f).dtype == getattr(b, f).dtype, (a.name, f)
        assert (a.name, a.kind, a.stride, a.frac_bits, a.in_shape, a.out_shape, a.acc_bits) == \
            (b.name, b.kind, b.stride, b.frac_bits, b.in_shape, b.out_shape, b.acc_bits)
        assert b.padding == 0 and a.bounds == b.bounds


def test_paper_network_spikes_numpy_general_equal_numba_fast_path():
    net = small_model(2, 4, 0.9, 1.0, "subtract")
    model = convert_layers(net)
    assert nbe.fast_layout(model)
    x = np.random.default_rng(0).integers(0, 256, (7,) + SHAPE).astype(np.uint8)
    spikes, rec = npe.forward(model, x, 15, record=True)
    counts, rec_nb = nbe.forward(model, x, 15, record=True)
    assert np.array_equal(spikes.sum(axis=0), counts)
    for k in rec:
        assert np.array_equal(rec[k], rec_nb[k])
    assert all(r.any() for r in rec.values())      # every layer fires


# ------------------------------------------------------------------------------------------------
# other chains follow their float model

@given(seed=st.integers(0, 2 ** 16), bits=st.integers(2, 8), reset=st.sampled_from(["subtract", "zero"]),
       beta=st.sampled_from([0.5, 0.9, 0.97]), theta=st.floats(0.3, 2.0), static=st.booleans(),
       delay=st.booleans(), per_neuron=st.booleans(), beta2=st.sampled_from([None, 0.8, 1.0]))
@settings(max_examples=20, deadline=None)
def test_mlp_follows_its_float_model(seed, bits, reset, beta, theta, static, delay, per_neuron,
                                     beta2):
    """Either reset, delayed or in the step that fires; per-neuron threshold, gain and drive; a
    second layer with its own beta (its own leak)."""
    net = mlp(seed, bits, beta, theta, reset, delay=delay, per_neuron=per_neuron, beta2=beta2)
    T = 10
    model = convert_layers(net, static=static, num_steps=T)
    assert (model.layers[1].leak is not None) == (beta2 not in (None, beta))
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (4, 1, 12, 12) if static else (T, 4, 1, 12, 12)).astype(np.uint8)
    if not static:
        x[rng.random(x.shape) < 0.8] = 0
    follows_float(net, model, x, T, static)
    assert np.array_equal(nbe.predict(model, x, T), npe.predict(model, x, T))   # numba_general


@given(seed=st.integers(0, 2 ** 16), bits=st.integers(2, 6), reset=st.sampled_from(["subtract", "zero"]),
       pool=st.sampled_from(["avg", "sum"]), H=st.integers(8, 17), W=st.integers(8, 17))
@settings(max_examples=10, deadline=None)
def test_three_conv_network_with_padding_and_stride_follows_its_float_model(seed, bits, reset,
                                                                          pool, H, W):
    net = three_conv(seed, bits, 0.9, 1.0, reset, (2, H, W), pool)
    try:
        model = convert_layers(net)
    except cv.OverflowProofError:
        assume(False)
    x = np.random.default_rng(seed).integers(0, 256, (3, 2, H, W)).astype(np.uint8)
    follows_float(net, model, x, 8)
    counts = nbe.predict(model, x, 8)                   # not the fast layout: numba_general
    assert not nbe.fast_layout(model) and np.array_equal(counts, npe.predict(model, x, 8))


@given(seed=st.integers(0, 2 ** 16), k=st.integers(1, 3), s=st.integers(1, 3), p=st.integers(0, 2))
@settings(max_examples=30, deadline=None)
def test_strided_conv_then_sum_pool_is_one_conv_of_the_summed_codes(seed, k, s, p):
    rng = np.random.default_rng(seed)
    q = rng.integers(-7, 8, (3, 2, 3, 3))
    x = rng.integers(0, 4, (2, 2, 13, 11))
    xp = npe.pad(x, p)
    Y = npe.conv_int_plain(xp, q, s)                              # conv, stride s
    OH, OW = Y.shape[2] // k, Y.shape[3] // k
    assume(OH >= 1 and OW >= 1)
    pooled = Y[:, :, :OH * k, :OW * k].reshape(2, 3, OH, k, OW, k).sum(axis=(3, 5))
    assert np.array_equal(npe.conv_int_plain(xp, fuse_pool_strided(q, k, s), s * k), pooled)
    assert np.array_equal(npe.conv_int(xp, q, s), Y)


def test_general_model_file_round_trip(tmp_path):
    for net in (mlp(1), three_conv(2), mlp(3, delay=False, per_neuron=True, beta2=0.7),
                synaptic_mlp(4)):
        model = convert_layers(net)
        mf.save_integer_model(model, tmp_path / "m.npz")
        back = mf.load_integer_model(tmp_path / "m.npz")
        assert back.delay == model.delay and back.alpha_leak == model.alpha_leak
        assert [L.leak for L in back.layers] == [L.leak for L in model.layers]
        assert [(L.kind, L.padding, L.stride, L.out_shape) for L in back.layers] == \
            [(L.kind, L.padding, L.stride, L.out_shape) for L in model.layers]
        x = np.random.default_rng(0).integers(0, 256, (5,) + net.input_shape).astype(np.uint8)
        assert np.array_equal(npe.predict(back, x, 10), npe.predict(model, x, 10))


# ------------------------------------------------------------------------------------------------
# refusals: one line, naming the layer and the field

def _with(layers, shape=(1, 8, 8)):
    return Network(layers, shape, dtype=np.float64).eval()


@pytest.mark.parametrize("case,match", [
    ("maxpool", r"^p: type MaxPool2d has no integer form"),
    ("gain", r"^l1: gain varies within a channel"),
    ("delay", r"^l2: reset_delay True differs from l1's False"),
    ("v_reset", r"^l1: v_reset must be 0"),
    ("pool_after_linear", r"^p: type AvgPool2d must sit between a Conv2d"),
    ("no_lif_at_end", r"^fc: type the network must end in a Leaky"),
    ("pool_stride", r"^p: stride must equal kernel_size 2"),
    ("array_theta", r"^l1: threshold varies within a channel"),
    ("beta_channels", r"^l1: beta differs between channels"),
])
def test_unsupported_layers_are_refused_in_one_line(case, match):
    rng = np.random.default_rng(0)
    conv = Conv2d(1, 2, 3, bits=4, rng=rng, dtype=np.float64)
    fc = Linear(2 * 3 * 3, 3, bits=4, rng=rng, dtype=np.float64)
    varying = np.linspace(0.5, 1.0, 2 * 3 * 3).reshape(2, 3, 3)
    l1 = {"gain": Leaky(0.9, gain=varying), "delay": Leaky(0.9, reset_delay=False),
          "array_theta": Leaky(0.9, varying), "beta_channels": Leaky(np.array([[[0.9]], [[0.8]]])),
          "v_reset": Leaky(0.9, reset="zero", v_reset=0.1)}.get(case, Leaky(0.9))
    l2 = Leaky(0.9, reset="zero" if case == "v_reset" else "subtract")
    pool = {"maxpool": MaxPool2d(2), "pool_stride": AvgPool2d(2, stride=1)}.get(case, AvgPool2d(2))
    layers = [("c", conv), ("p", pool), ("l1", l1), ("f", Flatten()), ("fc", fc), ("l2", l2)]
    if case == "pool_after_linear":
        layers = [("f", Flatten()), ("fc", Linear(64, 4, bits=4, rng=rng, dtype=np.float64)),
                  ("p", AvgPool2d(2)), ("l1", Leaky(0.9))]
    if case == "no_lif_at_end":
        layers = layers[:-1]
    if case == "pool_stride":
        layers[4] = ("fc", Linear(2 * 5 * 5, 3, bits=4, rng=rng, dtype=np.float64))
    with pytest.raises(cv.ConversionError, match=match) as e:
        convert_layers(_with(layers))
    assert "\n" not in str(e.value)


def pooled_spikes(seed, pool="sum", beta=1.0, bits=6, H=12, delay=False):
    """Sinabs' form: conv stride 2 pad 1 (bias), IF, pool of spikes, conv pad 1, IF, pool of
    spikes, Flatten, Linear (bias), IF; the reset in the step that fires, as NIR's IF."""
    rng = np.random.default_rng(seed)
    P = AvgPool2d if pool == "avg" else SumPool2d
    lif = lambda: Leaky(beta, 1.0, reset="zero", reset_delay=delay)     # noqa: E731
    conv = lambda c, o, **kw: Conv2d(c, o, 3, bits=bits, rng=rng, dtype=np.float64, **kw)  # noqa: E731
    h = (H // 2) // 2 // 2
    layers = [("c1", conv(2, 4, stride=2, padding=1, bias=True)), ("l1", lif()), ("p1", P(2)),
              ("c2", conv(4, 5, padding=1)), ("l2", lif()), ("p2", P(2)), ("flat", Flatten()),
              ("fc", Linear(5 * h * h, 4, bits=bits, rng=rng, dtype=np.float64)), ("l3", lif())]
    net = Network(layers, (2, H, H), dtype=np.float64).eval()
    for k, p in net.params.items():
        p[...] = rng.normal(0.2 if k.endswith("weight") else 0, 0.5, p.shape)
    return net


@given(seed=st.integers(0, 2 ** 16), beta=st.sampled_from([1.0, 0.9]),
       H=st.sampled_from([8, 12, 16]), delay=st.booleans())
@settings(max_examples=12, deadline=None)
def test_pools_of_spikes_fold_into_the_next_synapse(seed, beta, H, delay):
    net = pooled_spikes(seed, "sum", beta, H=H, delay=delay)
    T = 10
    try:
        model = convert_layers(net, static=False, num_steps=T)
    except cv.OverflowProofError:
        assume(False)
    assert [L.kind for L in model.layers] == ["conv", "conv", "linear"]
    assert model.layers[1].padding == 2 and model.layers[1].stride == 2
    x = (np.random.default_rng(seed).random((T, 3, 2, H, H)) < 0.3).astype(np.uint8)
    follows_float(net, model, x, T, static=False)
    assert np.array_equal(nbe.predict(model, x, T), npe.predict(model, x, T))   # numba_general


def test_pool_of_spikes_before_a_conv_must_divide_its_input_and_be_a_sum():
    net = pooled_spikes(0, H=10)         # 10 -> 5 after c1: a 2 x 2 pool does not divide 5
    with pytest.raises(cv.ConversionError, match=r"^p1: kernel_size 2 must divide"):
        convert_layers(net, static=False, num_steps=5)
    with pytest.raises(cv.ConversionError, match=r"^p1: type AvgPool2d of spikes"):
        convert_layers(pooled_spikes(0, "avg"), static=False, num_steps=5)


# ------------------------------------------------------------------------------------------------
# random chains

@st.composite
def chains(draw):
    """A random chain: 0-3 conv stages (kernel 1-4, stride 1-2, padding 0-2, bias or not, an
    average or sum pool, BatchNorm), a Flatten, 1-2 linear stages (bias or not); one Leaky per
    stage with a common beta and reset. Returns (seed, layers spec, input shape, static)."""
    seed = draw(st.integers(0, 2 ** 16))
    H = draw(st.integers(6, 14))
    C = draw(st.integers(1, 3))
    convs = []
    h, c = H, C
    for _ in range(draw(st.integers(0, 3))):
        K, s, p = draw(st.integers(1, 4)), draw(st.integers(1, 2)), draw(st.integers(0, 2))
        oh = (h + 2 * p - K) // s + 1
        pool = draw(st.sampled_from([None, "avg", "sum"])) if oh >= 2 else None
        oh = oh // 2 if pool else oh
        if oh < 1 or K > h + 2 * p:
            break
        o = draw(st.integers(1, 4))
        convs.append((c, o, K, s, p, draw(st.booleans()), pool, draw(st.booleans())))
        h, c = oh, o
    linears = [draw(st.integers(2, 6)) for _ in range(draw(st.integers(1, 2)))]
    neuron = (draw(st.sampled_from([0.5, 0.9, 1.0])), draw(st.sampled_from(["subtract", "zero"])),
              draw(st.booleans()))
    return seed, convs, linears, (C, H, H), neuron, draw(st.booleans())


def build_chain(seed, convs, linears, shape, neuron):
    rng = np.random.default_rng(seed)
    beta, reset, delay = neuron
    layers = []
    for i, (c, o, K, s, p, bias, pool, bn) in enumerate(convs):
        layers.append((f"c{i}", Conv2d(c, o, K, stride=s, padding=p, bias=bias, bits=4, rng=rng,
                                        dtype=np.float64)))
        if pool:
            layers.append((f"p{i}", (AvgPool2d if pool == "avg" else SumPool2d)(2)))
        if bn:
            layers.append((f"bn{i}", _bn(o, rng)))
        layers.append((f"l{i}", Leaky(beta, 1.0, reset=reset, reset_delay=delay)))
    probe = Network(layers + [("flat", Flatten())], shape, dtype=np.float64).eval() if layers \
        else None
    n = int(np.prod(probe.forward(np.zeros((1,) + shape), num_steps=1).shape[2:])) if probe \
        else int(np.prod(shape))
    layers.append(("flat", Flatten()))
    for j, o in enumerate(linears):
        layers.append((f"fc{j}", Linear(n, o, bias=bool(j % 2 == 0), bits=4, rng=rng,
                                        dtype=np.float64)))
        layers.append((f"lf{j}", Leaky(beta, 1.0, reset=reset, reset_delay=delay)))
        n = o
    net = Network(layers, shape, dtype=np.float64).eval()
    for k, p in net.params.items():
        if k.endswith("weight") and p.ndim > 1:
            p[...] = rng.normal(0.1, 0.6, p.shape)
    return net


@given(case=chains())
@settings(max_examples=100, deadline=None)
def test_random_chains_follow_their_float_model(case):
    seed, convs, linears, shape, neuron, static = case
    net = build_chain(seed, convs, linears, shape, neuron)
    T = 8
    try:
        model = convert_layers(net, static=static, num_steps=T)
    except cv.OverflowProofError:
        assume(False)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (3,) + shape if static else (T, 3) + shape).astype(np.uint8)
    follows_float(net, model, x, T, static)
    assert np.array_equal(nbe.predict(model, x, T), npe.predict(model, x, T))   # numba_general


def synaptic_mlp(seed, bits=6, reset="zero", delay=False, alpha=0.8, beta=0.9):
    """Linear, Synaptic (per-neuron syn_gain, gain, drive, threshold), Linear, Leaky."""
    from mininsnn.neurons import Synaptic
    rng = np.random.default_rng(seed)
    h, k = 10, 4
    syn = Synaptic(alpha, beta, rng.uniform(0.5, 1.5, h), reset=reset, reset_delay=delay,
                   syn_gain=rng.uniform(0.3, 1.0, h), gain=rng.uniform(0.5, 2.0, h),
                   drive=rng.normal(0, 0.05, h))
    layers = [("flat", Flatten()), ("fc1", Linear(36, h, bits=bits, rng=rng, dtype=np.float64)),
              ("syn1", syn), ("fc2", Linear(h, k, bits=bits, rng=rng, dtype=np.float64)),
              ("lif2", Leaky(beta, 1.0, reset=reset, reset_delay=delay))]
    net = Network(layers, (1, 6, 6), dtype=np.float64).eval()
    for kk, p in net.params.items():
        p[...] = rng.normal(0.1, 0.5, p.shape)
    return net


@given(seed=st.integers(0, 2 ** 16), reset=st.sampled_from(["subtract", "zero"]),
       delay=st.booleans(), alpha=st.sampled_from([0.5, 0.8, 0.95]), static=st.booleans())
@settings(max_examples=25, deadline=None)
def test_synaptic_layers_follow_their_float_model(seed, reset, delay, alpha, static):
    net = synaptic_mlp(seed, reset=reset, delay=delay, alpha=alpha)
    model = convert_layers(net, static=static)
    assert model.layers[0].drive is not None and model.layers[1].drive is None
    T = 12
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (4, 1, 6, 6) if static else (T, 4, 1, 6, 6)).astype(np.uint8)
    follows_float(net, model, x, T, static)
    assert np.array_equal(nbe.predict(model, x, T), npe.predict(model, x, T))   # numba_general
