"""The whole reference network: smooth-twin gradients against finite differences, and the fast paths
(static input, conv + pool fusion, spikes as uint8) against their plain equivalents."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mininsnn import surrogate as sg
from mininsnn.loss import mse_count_loss
from mininsnn.models import build_model, reference_network
from tests.gradcheck import assert_close_grad, numeric_grad


def small_net(seed=0, batchnorm=True, bits=None, dropout=0.2, beta=0.9, theta=0.5, fuse=True, surrogate=None,
              reset="subtract", input_shape=(1, 16, 16), channels=(2, 3), dtype=np.float64, reset_delay=True,
              sparse_grad=None):
    return reference_network(input_shape, channels, 4, bits=bits, beta=beta, threshold=theta,
                             surrogate=surrogate or sg.fast_sigmoid(2.0), dropout=dropout, batchnorm=batchnorm,
                             reset=reset, reset_delay=reset_delay, seed=seed, dtype=dtype, fuse=fuse,
                             sparse_grad=sparse_grad)


def _margin(net, theta):
    return min(np.abs(l.cache[1] - theta).min() for l in net.neurons())


cases = st.fixed_dictionaries(dict(seed=st.integers(0, 2**31), batchnorm=st.booleans(), T=st.integers(2, 4),
                                   static=st.booleans(), fuse=st.booleans(), reset=st.sampled_from(["subtract", "zero"]),
                                   reset_delay=st.booleans(),
                                   surr=st.sampled_from([sg.fast_sigmoid(2.0), sg.sigmoid(3.0), sg.atan(1.5)]),
                                   sparse_grad=st.sampled_from([None, None, 0.3])))


@pytest.mark.slow
@given(c=cases)
def test_every_parameter_gradient_equals_finite_differences_in_smooth_twin(c):
    """With sparse_grad B the first Leaky lists its active entries and conv2 computes its input
    gradient there only (layers.ActiveGrad); the twin clips U - theta to [-B, B] in every Leaky."""
    theta = 0.5
    net = small_net(c["seed"], batchnorm=c["batchnorm"], fuse=c["fuse"], reset=c["reset"], surrogate=c["surr"],
                    theta=theta, reset_delay=c["reset_delay"],
                    sparse_grad=c["sparse_grad"] if c["reset_delay"] else None)
    sparse = c["sparse_grad"] is not None and c["reset_delay"]
    assert ({l.name: l for l in net.layers}["conv2"].grad_at is not None) == sparse
    net.set_smooth(True)
    rng = np.random.default_rng(c["seed"])
    B, T = 3, c["T"]
    x = rng.random((B, 1, 16, 16)) if c["static"] else rng.random((T, B, 1, 16, 16))
    # scale the first layer so currents are O(theta)
    net.params["conv1.weight"][...] *= 3

    def run():
        net.rng = np.random.default_rng(123)  # the same Dropout masks every time
        return net.forward(x, num_steps=T if c["static"] else None)

    out = run()
    assume(_margin(net, theta) > 1e-3)  # the detached hard reset must not flip under perturbation
    if sparse:  # nor an entry cross |U - theta| = B, where the twin has a kink
        assume(min(np.abs(np.abs(l.cache[1] - theta) - c["sparse_grad"]).min() for l in net.neurons()) > 1e-3)
    g = rng.standard_normal(out.shape)
    net.zero_grad()
    net.backward(g)
    for name, p in net.params.items():
        num = numeric_grad(lambda: float((run() * g).sum()), p)
        assert_close_grad(net.grads[name], num, what=name)


@given(seed=st.integers(0, 2**31), static=st.booleans(), bits=st.sampled_from([None, 4]))
def test_fused_and_unfused_networks_agree(seed, static, bits):
    a = small_net(seed, bits=bits, fuse=True, dropout=0.0)
    b = small_net(seed, bits=bits, fuse=False, dropout=0.0)
    a.set_smooth(True)
    b.set_smooth(True)
    rng = np.random.default_rng(seed)
    x = rng.random((2, 1, 16, 16)) if static else rng.random((3, 2, 1, 16, 16))
    ya, yb = a.forward(x, num_steps=3), b.forward(x, num_steps=3)
    np.testing.assert_allclose(ya, yb, rtol=1e-9, atol=1e-12)
    g = rng.standard_normal(ya.shape)
    a.backward(g)
    b.backward(g)
    for k in a.grads:
        np.testing.assert_allclose(a.grads[k], b.grads[k], rtol=1e-8, atol=1e-10, err_msg=k)


@given(seed=st.integers(0, 2**31))
def test_static_input_equals_the_same_frame_at_every_step(seed):
    a, b = small_net(seed, dropout=0.0), small_net(seed, dropout=0.0)
    rng = np.random.default_rng(seed)
    x = rng.random((3, 1, 16, 16)) * 2
    T = 5
    ya = a.forward(x, num_steps=T)
    yb = b.forward(np.repeat(x[None], T, 0))
    np.testing.assert_array_equal(ya, yb)
    g = rng.standard_normal(ya.shape)
    a.backward(g)
    b.backward(g)
    for k in a.grads:
        np.testing.assert_allclose(a.grads[k], b.grads[k], rtol=1e-9, atol=1e-12, err_msg=k)
    for k in a.buffers:
        np.testing.assert_allclose(a.buffers[k], b.buffers[k], rtol=1e-12, err_msg=k)


def test_float32_and_float64_spikes_mostly_agree():
    a = small_net(1, dropout=0.0, dtype=np.float32)
    b = small_net(1, dropout=0.0, dtype=np.float64)
    x = np.random.default_rng(1).random((4, 1, 16, 16))
    sa = a.forward(x.astype(np.float32), num_steps=20)
    sb = b.forward(x, num_steps=20)
    assert sa.dtype == np.uint8 and (sa != sb).mean() < 0.01


def test_mnist_reference_model_shapes_and_names():
    net = build_model("mnist-4bit", seed=0)
    shapes = {k: v.shape for k, v in net.state_dict().items()}
    assert shapes["conv1.weight"] == (16, 1, 5, 5)
    assert shapes["conv2.weight"] == (64, 16, 5, 5)
    assert shapes["fc1.weight"] == (10, 1024)
    assert shapes["bn1.running_var"] == (16,) and shapes["bn2.weight"] == (64,)
    assert "fc1.bias" not in shapes and "fc1.bias" in build_model("mnist-fp").params
    x = np.random.default_rng(0).random((3, 1, 28, 28)).astype(np.float32)
    spk = net.forward(x, num_steps=10)
    assert spk.shape == (10, 3, 10) and spk.dtype == np.uint8
    loss, d = mse_count_loss(spk, np.array([1, 2, 3]))
    net.zero_grad()
    net.backward(d)
    assert all(np.isfinite(g).all() for g in net.grads.values())
    assert np.abs(net.grads["conv1.weight"]).sum() > 0


def test_dvs_reference_model_shapes():
    net = build_model("dvs-4bit", seed=0)
    assert "bn1.weight" not in net.params
    assert net.params["fc1.weight"].shape == (11, 800)
    x = np.random.default_rng(0).poisson(0.3, (6, 2, 2, 32, 32)).astype(np.float32)
    assert net.forward(x).shape == (6, 2, 11)
    assert "bn2.weight" in build_model("dvs-fp").params


def test_pytorch_style_init_bounds():
    net = build_model("mnist-fp", seed=3)
    assert np.abs(net.params["conv1.weight"]).max() <= 1 / 5
    assert np.abs(net.params["conv2.weight"]).max() <= 1 / np.sqrt(400)
    assert np.abs(net.params["fc1.bias"]).max() <= 1 / 32
    np.testing.assert_array_equal(net.params["bn1.weight"], 1)


def test_seed_fixes_weights():
    a, b, c = build_model("mnist-4bit", seed=1), build_model("mnist-4bit", seed=1), build_model("mnist-4bit", seed=2)
    assert np.array_equal(a.params["conv2.weight"], b.params["conv2.weight"])
    assert not np.array_equal(a.params["conv2.weight"], c.params["conv2.weight"])


def test_state_dict_npz_round_trip(tmp_path):
    from mininsnn.network import load_state_dict_file, save_state_dict

    a = build_model("mnist-4bit", seed=0)
    a.forward(np.random.default_rng(0).random((2, 1, 28, 28)).astype(np.float32), num_steps=3)  # moves BN stats
    save_state_dict(a.state_dict(), tmp_path / "w.npz")
    b = build_model("mnist-4bit", seed=9)
    b.load_state_dict(load_state_dict_file(tmp_path / "w.npz"))
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)


def test_load_state_dict_rejects_wrong_keys_and_shapes():
    net = build_model("mnist-4bit")
    state = net.state_dict()
    with pytest.raises(ValueError, match="missing keys"):
        net.load_state_dict({k: v for k, v in state.items() if k != "conv1.weight"})
    state["conv1.weight"] = np.zeros((16, 1, 3, 3))
    with pytest.raises(ValueError, match="conv1.weight"):
        net.load_state_dict(state)


def test_eval_mode_uses_running_stats_and_no_dropout():
    net = build_model("mnist-4bit", seed=0, dropout=0.5)
    x = np.random.default_rng(0).random((4, 1, 28, 28)).astype(np.float32)
    net.eval()
    a = net.forward(x, num_steps=20)
    b = net.forward(x, num_steps=20)
    np.testing.assert_array_equal(a, b)  # deterministic: no dropout, fixed statistics
    np.testing.assert_array_equal(net.buffers["bn1.running_mean"], 0)  # not updated in eval
    np.testing.assert_array_equal(net.forward(x[:1], num_steps=20), a[:, :1])  # per-sample, not per-batch


def test_state_dict_without_num_batches_tracked_loads_and_writes():
    a = build_model("mnist-4bit", seed=0)
    a.forward(np.random.default_rng(0).random((2, 1, 28, 28)).astype(np.float32), num_steps=3)
    torch_style = a.state_dict(num_batches_tracked=False)
    assert not any(k.endswith("num_batches_tracked") for k in torch_style)
    assert set(a.state_dict()) - set(torch_style) == {"bn1.num_batches_tracked",
                                                      "bn2.num_batches_tracked"}
    b = build_model("mnist-4bit", seed=9)
    b.load_state_dict(torch_style)                       # strict, yet the counters may be absent
    for k, v in torch_style.items():
        np.testing.assert_array_equal(b.state_dict()[k], v)
    np.testing.assert_array_equal(b.buffers["bn1.num_batches_tracked"], 0)   # left as it was
    with pytest.raises(ValueError, match="unexpected keys \\['bn9.num_batches_tracked'\\]"):
        b.load_state_dict({**torch_style, "bn9.num_batches_tracked": np.zeros((), np.int64)})


@pytest.mark.parametrize("reset_delay", [True, False])
def test_recorded_membranes_are_the_potentials_that_made_the_spikes(reset_delay):
    net = build_model("mnist-4bit", seed=3, reset_delay=reset_delay)
    assert [l.reset_delay for l in net.neurons()] == [reset_delay] * 3   # the setting reaches every neuron
    net.eval()
    x = np.random.default_rng(1).random((3, 1, 28, 28)).astype(np.float32)
    out = net.forward(x, num_steps=12, record=("spikes", "membrane"))
    spikes, membrane = net.recorded["spikes"], net.recorded["membrane"]
    assert list(spikes) == list(membrane) == ["lif1", "lif2", "lif3"]
    theta = np.float32(net.config["threshold"])
    for name in spikes:
        assert membrane[name].shape == spikes[name].shape and membrane[name].dtype == np.float32
        np.testing.assert_array_equal(spikes[name], membrane[name] > theta)   # S[t] = H(U[t] - theta)
    np.testing.assert_array_equal(spikes["lif3"], out)
    kept = membrane["lif1"].copy()
    net.forward(x[:1], num_steps=12, record="membrane")                       # the copies are ours
    np.testing.assert_array_equal(membrane["lif1"], kept)
    assert list(net.recorded) == ["membrane"]
    net.forward(x, num_steps=12)
    assert net.recorded == {}
    with pytest.raises(ValueError, match="record must be"):
        net.forward(x, num_steps=12, record="voltage")


def test_a_training_step_gives_the_same_bits_with_any_number_of_threads():
    """Weight gradients sum over a fixed number of slices (layers.GRAD_SLICES), so a step's
    gradients, and hence a run, do not depend on NUMBA_NUM_THREADS."""
    import numba
    x = np.random.default_rng(0).random((32, 1, 28, 28)).astype(np.float32)
    y = np.arange(32) % 10
    grads = []
    before = numba.get_num_threads()
    try:
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            net = build_model("mnist-4bit", seed=4)
            net.zero_grad()
            net.backward(mse_count_loss(net.forward(x, num_steps=6), y)[1])
            grads.append({k: g.copy() for k, g in net.grads.items()})
    finally:
        numba.set_num_threads(before)
    for k in grads[0]:
        np.testing.assert_array_equal(grads[0][k], grads[-1][k], err_msg=k)
