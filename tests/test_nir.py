"""NIR export and import (mininsnn/nir.py).

- Round trip: every configuration of mininsnn.config.CONFIGS, with each reset (subtract, zero) and
  each reset timing (delayed, same step), exported and read back: the same layers, weights and
  buffers bit for bit, the same spikes in every spiking layer.
- Semantics: the exported graph, run by an independent NumPy simulator of NIR's equations (below,
  from the nodes' fields alone), gives the spikes of the mininsnn network with the same-step zero
  reset; so a network trained with that neuron reads correctly in any tool that follows NIR, and a
  paper network (subtract, delayed) reads as that neuron.
- Files from other tools (no mininsnn metadata), and every kind of bad input: one-line errors.

Skipped without the optional package ``nir`` (pip install 'mininsnn[nir]').
"""
import json
import os
import sys

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

nir = pytest.importorskip("nir", reason="the optional package 'nir' is not installed "
                                        "(pip install 'mininsnn[nir]')")

from mininsnn.checkpoint import save_checkpoint  # noqa: E402
from mininsnn.config import CONFIGS, ConfigError, make_config  # noqa: E402
from mininsnn.layers import Conv2d, Flatten, Linear, MaxPool2d  # noqa: E402
from mininsnn.neurons import Leaky  # noqa: E402
from mininsnn.models import build_from_config, reference_network  # noqa: E402
from mininsnn.network import Network  # noqa: E402
from mininsnn.nir import (DEFAULT_DT, NIRError, from_nir, read_nir,  # noqa: E402
                          reconstruct_latent_weight, to_nir, write_nir)
from mininsnn.quant import quantize_forward  # noqa: E402
from mininsnn.train import Trainer  # noqa: E402

NEURONS = [("subtract", True), ("zero", True), ("subtract", False), ("zero", False)]


def _busy(net, seed):
    """Random parameters and BatchNorm statistics (instead of the initial 1s and 0s), scaled so
    that every spiking layer fires: a round trip of defaults would prove little."""
    rng = np.random.default_rng(seed)
    for k, v in net.params.items():
        if v.ndim > 1:                                  # conv and linear weights
            v[...] = rng.uniform(-1, 1, v.shape) * 6 / np.sqrt(v[0].size)
        elif k.startswith("bn") and k.endswith(".weight"):   # BatchNorm gains, a few negative
            v[...] = rng.uniform(0.5, 1.5, v.shape) * rng.choice([-1, 1, 1, 1], v.shape)
        else:                                           # biases
            v[...] = rng.normal(0.3, 0.5, v.shape)
    for k, v in net.buffers.items():
        if k.endswith("running_var"):
            v[...] = rng.uniform(0.2, 2.0, v.shape)
        elif k.endswith("running_mean"):
            v[...] = rng.normal(0, 0.3, v.shape)
        else:
            v[...] = rng.integers(0, 10**6)
    return net


def _batch(net, T, B=3, seed=0):
    """A static image batch (B, C, H, W) for image configs, event frames (T, B, C, H, W) for DVS."""
    rng = np.random.default_rng(seed)
    if net.config["dataset"] == "dvsgesture":
        return rng.poisson(0.3, (T, B) + net.input_shape).astype(net.dtype)
    return rng.random((B,) + net.input_shape).astype(net.dtype)


def _bits(a):
    """The bytes of an array: equal bit patterns, not just equal values (-0.0 != 0.0 here)."""
    return a.dtype.str, a.shape, np.ascontiguousarray(a).tobytes()


def _effective_weights(net):
    return {l.name: quantize_forward(l.params["weight"], l.bits)[0] for l in net.layers
            if isinstance(l, (Conv2d, Linear))}


# ------------------------------------------------------------------------------------------------
# round trip

@pytest.mark.parametrize("reset, reset_delay", NEURONS)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_round_trip_is_exact_for_every_config(tmp_path, name, reset, reset_delay):
    T = 16
    cfg = make_config(name, reset=reset, reset_delay=reset_delay, seed=3)
    net = _busy(build_from_config(cfg), seed=len(name)).eval()
    latent = reset_delay          # half of the cases also carry the latent weights
    path = write_nir(tmp_path / "m.nir", net, latent_weights=latent)
    back = read_nir(path)
    assert repr(back) == repr(net) and back.config == net.config and back.dtype == net.dtype
    assert back.input_shape == net.input_shape and not back.training
    ours, theirs = net.state_dict(), back.state_dict()
    assert list(ours) == list(theirs)
    for k in ours:   # latent weights: bit for bit if stored, else they quantize to the same Wq
        if latent or not (k.endswith(".weight") and ours[k].ndim > 1 and cfg["bits"] is not None):
            assert _bits(ours[k]) == _bits(theirs[k]), k
    for k, w in _effective_weights(net).items():
        assert _bits(w) == _bits(_effective_weights(back)[k]), k
    x = _batch(net, T)
    out = net.forward(x, num_steps=T, record=True)
    assert _bits(back.forward(x, num_steps=T, record=True)) == _bits(out)
    for k, s in net.recorded["spikes"].items():
        assert s.any(), f"{k} never fires: the comparison would prove little"
        np.testing.assert_array_equal(back.recorded["spikes"][k], s)


def test_round_trip_keeps_beta_one_and_zero_and_float64(tmp_path):
    """beta = 1 (no leak) exports as an IF node, beta = 0 as a LIF with tau = dt."""
    for beta in (1.0, 0.0):
        cfg = make_config("mnist-fp", beta=beta, dtype="float64", reset="zero", reset_delay=False)
        net = _busy(build_from_config(cfg), 5).eval()
        graph = to_nir(net)
        assert isinstance(graph.nodes["lif1"], nir.IF if beta == 1 else nir.LIF)
        back = read_nir(write_nir(tmp_path / f"b{beta}.nir", net))
        x = _batch(net, 8)
        np.testing.assert_array_equal(back.forward(x, num_steps=8), net.forward(x, num_steps=8))
        assert [l.beta for l in back.neurons()] == [beta] * 3


@given(seed=st.integers(0, 2**31), bits=st.integers(2, 16), dtype=st.sampled_from([np.float32, np.float64]),
       scale=st.floats(1e-6, 1e3), n=st.integers(1, 300))
def test_latent_weights_rebuilt_from_wq_quantize_to_wq_bit_for_bit(seed, bits, dtype, scale, n):
    rng = np.random.default_rng(seed)
    W = (rng.standard_normal(n) * scale).astype(dtype)
    W[rng.random(n) < 0.2] = 0
    Wq, s = quantize_forward(W, bits)
    W2 = reconstruct_latent_weight(Wq, bits, s, np.abs(W).max())
    assert _bits(quantize_forward(W2, bits)[0]) == _bits(Wq)
    q = np.round(Wq / s) if s else np.zeros_like(Wq)
    assert _bits((q * s).astype(dtype) if s else q) == _bits(Wq)   # codes q = round(Wq / s) exactly


def test_sources_state_dict_checkpoint_tree_and_run_folder(tmp_path):
    cfg = make_config("mnist-4bit", seed=1)
    net = _busy(build_from_config(cfg), 1).eval()
    tree = {**Trainer(cfg, None, None).state(), "model": net.state_dict()}   # a training checkpoint
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run / "best.h5", tree)
    x = _batch(net, 6)
    want = net.forward(x, num_steps=6)
    for i, src in enumerate([net.state_dict(), tree, run, run / "best.h5"]):
        path = write_nir(tmp_path / "out" / f"{i}.nir", src, cfg if i == 0 else None)
        np.testing.assert_array_equal(read_nir(path).forward(x, num_steps=6), want)
    assert sorted(os.listdir(tmp_path / "out")) == ["0.nir", "1.nir", "2.nir", "3.nir"]
    from mininsnn import pretrained
    shipped = pretrained.load("mnist-4bit")
    back = read_nir(write_nir(tmp_path / "p.nir", "mnist-4bit"))   # a pretrained model by name
    np.testing.assert_array_equal(back.forward(x, num_steps=6), shipped.forward(x, num_steps=6))


# ------------------------------------------------------------------------------------------------
# semantics: an independent NumPy simulator of NIR's equations, from the nodes' fields alone

def _conv(x, W, b, stride, pad):
    """y[n, o, i, j] = sum_{c, u, v} W[o, c, u, v] x[n, c, i s - p + u, j s - p + v] + b[o]."""
    x = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    win = np.lib.stride_tricks.sliding_window_view(x, W.shape[2:], axis=(2, 3))
    win = win[:, :, ::stride[0], ::stride[1]]                       # (N, C, OH, OW, KH, KW)
    return np.einsum("ncijuv,ocuv->noij", win, W) + b[None, :, None, None]


def nir_simulate(graph, frames, dt):
    """Spikes of each neuron node and the output, stepping NIR's ODEs with forward Euler:
    LIF  v <- v + dt/tau (v_leak - v) + dt r/tau I;  IF  v <- v + dt r I;  z = v > v_threshold;
    v <- v_reset where z. frames: (T, B, *input shape), float64."""
    order, node = ["input"], "input"
    succ = dict(graph.edges)
    while node in succ:
        node = succ[node]
        order.append(node)
    v, spikes, out = {}, {}, []
    for x in frames:
        h = x
        for name in order[1:-1]:
            n = graph.nodes[name]
            if isinstance(n, nir.Conv2d):
                h = _conv(h, n.weight.astype(np.float64), n.bias.astype(np.float64), n.stride, n.padding)
            elif isinstance(n, nir.AvgPool2d):
                k, s = n.kernel_size, n.stride
                win = np.lib.stride_tricks.sliding_window_view(h, tuple(k), axis=(2, 3))[:, :, ::s[0], ::s[1]]
                h = win.mean(axis=(4, 5))
            elif isinstance(n, nir.Flatten):
                h = h.reshape(h.shape[0], -1)
            elif isinstance(n, (nir.Affine, nir.Linear)):
                h = h @ n.weight.astype(np.float64).T + (n.bias if isinstance(n, nir.Affine) else 0)
            elif isinstance(n, (nir.LIF, nir.IF)):
                u = v.get(name, np.zeros_like(h))
                if isinstance(n, nir.LIF):
                    u = u + dt / n.tau * (n.v_leak - u) + dt * n.r / n.tau * h
                else:
                    u = u + dt * n.r * h
                z = u > n.v_threshold
                v[name] = np.where(z, n.v_reset, u)
                h = z.astype(np.float64)
                spikes.setdefault(name, []).append(h)
            else:
                raise AssertionError(f"no rule for {type(n).__name__}")
        out.append(h)
    return np.array(out), {k: np.array(s) for k, s in spikes.items()}


def _potential_margin(net, theta):
    return min(np.abs(l.membrane() - theta).min() for l in net.neurons())


@given(seed=st.integers(0, 2**31), reset=st.sampled_from(["subtract", "zero"]), reset_delay=st.booleans(),
       batchnorm=st.booleans(), bits=st.sampled_from([None, 4]), static=st.booleans())
def test_nir_semantics_are_the_same_step_zero_reset(seed, reset, reset_delay, batchnorm, bits, static):
    """What any tool following NIR computes from the file = mininsnn with reset "zero" and no delay,
    whatever neuron the network was trained with (that one is in the metadata only)."""
    T, theta = 6, 0.7
    kw = dict(bits=bits, beta=0.8, threshold=theta, dropout=0.1, batchnorm=batchnorm, seed=seed,
              dtype=np.float64)
    net = _busy(reference_network((1, 16, 16), (2, 3), 4, reset=reset, reset_delay=reset_delay, **kw),
                seed).eval()
    graph = to_nir(net)
    nir_reading = _busy(reference_network((1, 16, 16), (2, 3), 4, reset="zero", reset_delay=False, **kw),
                        seed).eval()
    rng = np.random.default_rng(seed)
    x = rng.random((3, 1, 16, 16)) if static else rng.random((T, 3, 1, 16, 16))
    frames = np.broadcast_to(x, (T,) + x.shape) if static else x
    out = nir_reading.forward(x, num_steps=T if static else None, record=True)
    assume(_potential_margin(nir_reading, theta) > 1e-9)   # rounding (1e-15) cannot flip a spike
    sim_out, sim_spikes = nir_simulate(graph, frames, DEFAULT_DT)
    np.testing.assert_array_equal(sim_out, out)
    for name, s in sim_spikes.items():
        np.testing.assert_array_equal(s, nir_reading.recorded["spikes"][name])
    # mininsnn reading the file as another tool would (no metadata) gives the same spikes
    other = from_nir(graph, use_metadata=False)
    np.testing.assert_array_equal(other.forward(x, num_steps=T if static else None), out)
    lifs = [graph.nodes[k] for k in ("lif1", "lif2", "lif3")]
    assert all(m.metadata["nir_exact"] == (reset == "zero" and not reset_delay) for m in lifs)
    assert all(m.metadata["reset"] == reset and m.metadata["reset_delay"] == reset_delay for m in lifs)


def test_node_fields_follow_the_stated_mapping():
    cfg = make_config("fmnist-4bit", reset="zero", reset_delay=False)
    net = _busy(build_from_config(cfg), 2).eval()
    g = to_nir(net, dt=1e-3)
    lif = g.nodes["lif2"]
    beta, dt = cfg["beta"], 1e-3
    np.testing.assert_allclose(lif.tau, dt / (1 - beta), rtol=1e-15)                 # tau = dt / (1 - beta)
    np.testing.assert_allclose(1 - dt / lif.tau, beta, rtol=1e-14)                    # Euler leak
    np.testing.assert_allclose(lif.r * dt / lif.tau, 1.0, rtol=1e-14)                 # input gain 1
    assert (lif.v_leak == 0).all() and (lif.v_reset == 0).all() and (lif.v_threshold == cfg["threshold"]).all()
    assert lif.tau.shape == (64, 4, 4) and g.metadata["dt"] == dt == lif.metadata["dt"]
    conv = g.nodes["conv2"]
    assert conv.metadata["bits"] == 4 and conv.metadata["quant_grad"] == "ste+scale"
    q = np.round(conv.weight / conv.metadata["scale"])                                # the integer codes
    np.testing.assert_array_equal(q * conv.metadata["scale"], conv.weight)            # Wq = s * q exactly
    assert np.abs(q).max() == 7 and conv.weight.dtype == np.float32                   # codes -7..7
    assert isinstance(g.nodes["pool1"], nir.AvgPool2d) and isinstance(g.nodes["fc1"], nir.Linear)
    assert "dropout" not in g.nodes and json.loads(g.metadata["omitted"])[0]["p"] == cfg["dropout"]
    bn = g.nodes["bn1"]
    a = np.diagonal(bn.weight[:, :, 0, 0])
    np.testing.assert_array_equal(bn.weight[:, :, 0, 0], np.diag(a))                  # per-channel only
    gamma, rv, rm = net.params["bn1.weight"], net.buffers["bn1.running_var"], net.buffers["bn1.running_mean"]
    np.testing.assert_allclose(a, gamma / np.sqrt(rv.astype(np.float64) + 1e-5), rtol=1e-6)
    np.testing.assert_allclose(bn.bias, net.params["bn1.bias"] - rm * a, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# files from other tools

def _foreign_mlp(beta=0.9, theta=1.0, dt=1e-4, seed=0, flatten_start=0, **lif_changes):
    """A graph as snnTorch's export_to_nir writes one (no metadata): Flatten, Affine, LIF, Linear, LIF;
    LIF tau = dt / (1 - beta), r = tau / dt, v_leak = v_reset = 0."""
    rng = np.random.default_rng(seed)

    def lif(n):
        tau = np.full(n, dt / (1 - beta))
        f = dict(tau=tau, r=tau / dt, v_leak=np.zeros(n), v_threshold=np.full(n, theta), v_reset=np.zeros(n))
        f.update({k: np.full(n, v) for k, v in lif_changes.items()})
        return nir.LIF(**f)
    nodes = {"input": nir.Input(input_type=np.array([2, 3, 3])),
             "flat": nir.Flatten(input_type={"input": np.array([2, 3, 3])}, start_dim=flatten_start),
             "fc1": nir.Affine(weight=rng.normal(0, 0.8, (7, 18)).astype(np.float32),
                               bias=rng.normal(0, 0.2, 7).astype(np.float32)),
             "lif1": lif(7), "fc2": nir.Linear(weight=rng.normal(0, 1, (4, 7)).astype(np.float32)),
             "lif2": lif(4), "output": nir.Output(output_type=np.array([4]))}
    names = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(names, names[1:])), type_check=False)


@pytest.mark.parametrize("flatten_start", [0, 1])
def test_foreign_graph_reads_with_nir_semantics(tmp_path, flatten_start):
    """snnTorch-style file: read as Leaky(reset zero, same step), beta = 1 - dt/tau; start_dim 1
    (torch.nn.Flatten counting the batch) is read as flattening everything, like start_dim 0."""
    graph = _foreign_mlp(beta=0.85, theta=0.6, flatten_start=flatten_start)
    nir.write(tmp_path / "f.nir", graph)
    net = read_nir(tmp_path / "f.nir")
    assert [type(l).__name__ for l in net.layers] == ["Flatten", "Linear", "Leaky", "Linear", "Leaky"]
    assert net.dtype == np.float32 and not hasattr(net, "config")
    lif = net.neurons()[0]
    assert (lif.reset, lif.reset_delay) == ("zero", False) and abs(lif.beta - 0.85) < 1e-12
    x = np.random.default_rng(1).normal(0.5, 1.0, (16, 5, 2, 3, 3)).astype(np.float32)
    out = net.forward(x, record="membrane")
    margin = min(np.abs(m - 0.6).min() for m in net.recorded["membrane"].values())
    assert margin > 1e-5          # fixed seed: far enough from theta for float32 rounding
    sim, _ = nir_simulate(graph, x.astype(np.float64), 1e-4)
    np.testing.assert_array_equal(out, sim)
    assert out.any()


def test_foreign_dt_is_tau_over_r_unless_given():
    graph = _foreign_mlp(beta=0.9, dt=1e-3)          # r = tau / dt names dt = 1e-3
    assert abs(from_nir(graph).neurons()[0].beta - 0.9) < 1e-12
    with pytest.raises(NIRError, match=r"node 'lif1': input gain r\*dt/tau = 0.1 at dt = 0.0001"):
        from_nir(graph, dt=1e-4)


@pytest.mark.parametrize("change, msg", [
    (dict(v_leak=0.1), "node 'lif1': v_leak is not 0"),
    (dict(v_reset=-0.5), "node 'lif1': v_reset is not 0"),
    (dict(v_threshold=-1.0), "v_threshold -1 must be > 0"),
])
def test_foreign_neurons_mininsnn_cannot_run(change, msg):
    with pytest.raises(NIRError, match=msg):
        from_nir(_foreign_mlp(**change), where="x.nir")


def test_foreign_neurons_with_different_taus_are_refused():
    graph = _foreign_mlp()
    graph.nodes["lif1"].tau = graph.nodes["lif1"].tau * np.linspace(1, 2, 7)
    with pytest.raises(NIRError, match="node 'lif1': tau differs between neurons"):
        from_nir(graph, where="x.nir")


# ------------------------------------------------------------------------------------------------
# bad input: one line, naming the file and the node

def _one_line(excinfo):
    text = str(excinfo.value)
    assert "\n" not in text, text
    return text


def test_missing_truncated_and_foreign_files(tmp_path):
    net = build_from_config(make_config("mnist-4bit"))
    good = write_nir(tmp_path / "m.nir", net)
    data = good.read_bytes()
    cases = {"missing.nir": None, "truncated.nir": data[: len(data) // 2], "garbage.nir": b"not hdf5 at all",
             "empty.nir": b""}
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(NIRError) as e:
            read_nir(tmp_path / name)
        assert _one_line(e).startswith(str(tmp_path / name) + ": ")
    import h5py
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(NIRError, match="other.h5: not a readable NIR file") as e:
        read_nir(tmp_path / "other.h5")
    _one_line(e)


def _write_graph(tmp_path, nodes, edges):
    path = tmp_path / "g.nir"
    nir.write(path, nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    return path


def test_nodes_mininsnn_cannot_run(tmp_path):
    n = 4
    cuba = nir.CubaLIF(tau_syn=np.ones(n), tau_mem=np.ones(n), r=np.ones(n), v_leak=np.zeros(n),
                       v_threshold=np.ones(n))
    for node, kind in [(cuba, "CubaLIF"), (nir.Scale(scale=np.ones(n)), "Scale"),
                       (nir.Delay(delay=np.ones(n)), "Delay")]:
        path = _write_graph(tmp_path, {"input": nir.Input(input_type=np.array([n])), "x": node,
                                       "output": nir.Output(output_type=np.array([n]))},
                            [("input", "x"), ("x", "output")])
        with pytest.raises(NIRError, match=f"g.nir: node 'x': {kind} nodes cannot run in mininsnn") as e:
            read_nir(path)
        _one_line(e)
    pool = nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))
    path = _write_graph(tmp_path, {"input": nir.Input(input_type=np.array([1, 4, 4])), "sum": pool,
                                   "output": nir.Output(output_type=np.array([1, 2, 2]))},
                        [("input", "sum"), ("sum", "output")])
    with pytest.raises(NIRError, match="node 'sum': SumPool2d nodes cannot run"):
        read_nir(path)


def test_graphs_that_are_not_one_chain(tmp_path):
    g = _foreign_mlp()
    cases = [
        (g.edges + [("lif1", "output")], "node 'lif1' feeds both 'fc2' and 'output'"),
        (g.edges + [("lif2", "fc2")], "node 'lif2' feeds both 'output' and 'fc2'"),
        ([e for e in g.edges if e != ("fc2", "lif2")], "node 'fc2' leads nowhere"),
        ([e for e in g.edges if e != ("lif2", "output")] + [("lif2", "fc1")], "two inputs"),
    ]
    for edges, msg in cases:
        path = _write_graph(tmp_path, dict(g.nodes), edges)
        with pytest.raises(NIRError, match=msg) as e:
            read_nir(path)
        _one_line(e)
    sub = nir.NIRGraph(nodes={"i": nir.Input(input_type=np.array([4])), "o": nir.Output(output_type=np.array([4]))},
                       edges=[("i", "o")], type_check=False)
    path = _write_graph(tmp_path, {"input": nir.Input(input_type=np.array([4])), "rnn": sub,
                                   "output": nir.Output(output_type=np.array([4]))},
                        [("input", "rnn"), ("rnn", "output")])
    with pytest.raises(NIRError, match="node 'rnn' is a subgraph"):
        read_nir(path)


def test_shapes_that_do_not_chain(tmp_path):
    g = _foreign_mlp()
    g.nodes["fc2"] = nir.Linear(weight=np.ones((4, 9), np.float32))
    with pytest.raises(NIRError, match="g.nir: node 'fc2': Linear expects 9 inputs, the previous node "
                                       r"gives \(7,\): shapes do not chain") as e:
        read_nir(_write_graph(tmp_path, g.nodes, g.edges))
    _one_line(e)
    g = _foreign_mlp()
    g.nodes["output"] = nir.Output(output_type=np.array([5]))
    with pytest.raises(NIRError, match=r"output node declares shape \(5,\), the last node gives \(4,\)"):
        read_nir(_write_graph(tmp_path, g.nodes, g.edges))
    net = build_from_config(make_config("mnist-4bit"))
    graph = to_nir(net)
    graph.nodes["input"] = nir.Input(input_type=np.array([2, 28, 28]))
    with pytest.raises(NIRError, match=r"node 'conv1': Conv2d expects \(1, H, W\) inputs, the previous "
                                       r"node gives \(2, 28, 28\)"):
        read_nir(_write_graph(tmp_path, graph.nodes, graph.edges))


def test_changed_quantized_weights_are_refused(tmp_path):
    net = build_from_config(make_config("mnist-4bit"))
    graph = to_nir(net)
    graph.nodes["fc1"].weight[0, 0] += 1e-3
    nir.write(tmp_path / "t.nir", graph)
    with pytest.raises(NIRError, match="t.nir: node 'fc1': its weights are not 4-bit codes times the stored "
                                       "scale; the file was changed after export"):
        read_nir(tmp_path / "t.nir")


def test_bad_graph_metadata_is_one_line(tmp_path):
    graph = to_nir(build_from_config(make_config("mnist-4bit")))
    graph.metadata["config"] = json.dumps({**json.loads(graph.metadata["config"]), "lr": -1})
    nir.write(tmp_path / "c.nir", graph)
    with pytest.raises(NIRError, match="c.nir: ConfigError: lr must be a finite number") as e:
        read_nir(tmp_path / "c.nir")
    _one_line(e)
    graph.metadata["omitted"] = '[{"name": "dropout", "kind": "Dropout", "p": 0.1, "after": "nowhere"}]'
    nir.write(tmp_path / "o.nir", graph)
    with pytest.raises(NIRError, match="o.nir: bad 'omitted' graph metadata"):
        read_nir(tmp_path / "o.nir")
    assert read_nir(tmp_path / "o.nir", use_metadata=False).layers[-1].reset_delay is False


def test_export_refusals_and_nothing_half_written(tmp_path, monkeypatch):
    net = Network([("c", Conv2d(1, 2, 3)), ("m", MaxPool2d(2)), ("f", Flatten()), ("l", Leaky(0.9))], (1, 8, 8))
    with pytest.raises(NIRError, match=r"layer 'm' \(MaxPool2d\) has no NIR node") as e:
        to_nir(net)
    _one_line(e)
    with pytest.raises(NIRError, match="dt must be a finite number"):
        to_nir(net, dt=0)
    with pytest.raises(NIRError, match="is a folder"):
        write_nir(tmp_path, net)
    with pytest.raises(ConfigError, match="does not exist"):   # NIRError is a ConfigError
        write_nir(tmp_path / "x.nir", tmp_path / "no-such-run")
    good = build_from_config(make_config("mnist-4bit"))
    path = write_nir(tmp_path / "keep.nir", good)
    before = path.read_bytes()

    def broken_write(filename, graph, **kw):
        with open(filename, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")
    monkeypatch.setattr(nir, "write", broken_write)
    with pytest.raises(OSError, match="disk full"):
        write_nir(path, good)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["keep.nir"]


def test_missing_nir_package_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "nir", None)          # import nir now raises ImportError
    with pytest.raises(NIRError, match=r"need the optional package 'nir': pip install 'mininsnn\[nir\]'") as e:
        read_nir("whatever.nir")
    _one_line(e)
