"""Reading other tools' NIR graphs with NIR's dynamics (issue 26), checked against tests/nir_witness.py,
a NumPy simulator of NIR's equations that shares no code with mininsnn.

- The three graph shapes of the NIR paper, built with the ``nir`` package from their published
  parameters: Norse's single LIF neuron (4 spikes near steps 460, 510, 710, 760), a CNN of
  Sinabs's form (Conv2d stride 2 padding 1, IF, SumPool2d, Flatten, Affine, IF) and a CubaLIF RNN
  with a recurrent Affine, each written to a .nir file and read back with ``read_nir(path, dt=)``.
- The layouts other writers use: nested subgraphs, flattened 'lif1.lif' names, parameters of one
  value, float32 fields, input types with and without a batch dimension.
- Every layer mininsnn writes reads back with the same spikes, and the file's NIR semantics
  (read without metadata) equal the witness.
- What is refused: one line naming the file, the node and the field.
"""
import h5py
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

nir = pytest.importorskip("nir", reason="the optional package 'nir' is not installed")

from mininsnn.layers import Flatten, Linear, SumPool2d  # noqa: E402
from mininsnn.network import Network  # noqa: E402
from mininsnn.neurons import Leaky, Synaptic  # noqa: E402
from mininsnn.recurrent import RLeaky, RSynaptic  # noqa: E402
from mininsnn.nir import NIRError, from_nir, read_nir, to_nir, write_nir  # noqa: E402

from tests.nir_witness import simulate  # noqa: E402

DT = 1e-4


def _run(net, x, T=None):
    """Output and {layer: membrane compared with theta} of a forward in the network's dtype."""
    out = net.forward(x.astype(net.dtype), num_steps=T, record=("spikes", "membrane"))
    return out, net.recorded


def _margin(recorded, net):
    """Smallest |membrane - theta| over all neurons and steps: above ~1e-9, float64 rounding
    differences between two correct simulators cannot flip a spike."""
    return min(np.abs(m - np.broadcast_to(l.threshold, m.shape[2:])).min()
               for l in net.neurons() for m in [recorded["membrane"][l.name]])


def _write(tmp_path, graph, name="g.nir"):
    nir.write(tmp_path / name, graph)
    return tmp_path / name


def _chain(*named, type_check=False, metadata=None):
    nodes = dict(named)
    names = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(names, names[1:])), type_check=type_check,
                        metadata=metadata or {})


# ------------------------------------------------------------------------------------------------
# (a) Norse's single LIF neuron (NIR paper, paper/01_lif: lif_norse.nir, Affine 1 -> 1 weight 1
# bias 0, then LIF tau = 2.5 ms, r = 1, v_leak = 0, v_threshold = 0.1, run at dt = 0.1 ms)

def _paper_input():
    """The paper's input: spikes after gaps of 6, 15, 4, 3, 0, 2, 1, 2, 0, 1, 0 x 10, 13, 0 x 11,
    5, 0, 14 empty steps, cut to 100 entries, each followed by 9 empty steps: (1000, 1, 1)."""
    gaps = [6, 15, 4, 3, 0, 2, 1, 2, 0, 1] + [0] * 10 + [13] + [0] * 11 + [5, 0, 14]
    entries = np.concatenate([np.r_[np.zeros(g), 1.0] for g in gaps])[:100]
    x = np.zeros((1000, 1, 1))
    x[::10, 0, 0] = entries
    return x


def _norse_lif(batch_dim=False, dtype=np.float64):
    f = lambda v: np.array([v], dtype)   # noqa: E731
    return _chain(("input", nir.Input(input_type=np.array([1, 1] if batch_dim else [1]))),
                  ("0", nir.Affine(weight=np.array([[1.0]], dtype), bias=f(0.0))),
                  ("1", nir.LIF(tau=f(2.5e-3), r=f(1.0), v_leak=f(0.0), v_threshold=f(0.1),
                                v_reset=f(0.0))),
                  ("output", nir.Output(output_type=np.array([1]))))


@pytest.mark.parametrize("batch_dim", [False, True])
def test_norse_single_lif_neuron_fires_where_the_papers_simulators_do(tmp_path, batch_dim):
    x = _paper_input()
    assert x.sum() == 34 and x.shape == (1000, 1, 1)
    graph = _norse_lif(batch_dim)
    net = read_nir(_write(tmp_path, graph), dt=DT)
    lif = net.neurons()[0]
    assert net.input_shape == (1,) and net.dtype == np.float64
    np.testing.assert_allclose([lif.beta, lif.value("gain"), lif.value("drive")], [0.96, 0.04, 0.0], rtol=1e-12)
    out, rec = _run(net, x)
    steps = np.flatnonzero(out[:, 0, 0])
    assert len(steps) == 4
    assert all(min(abs(s - p) for p in (460, 510, 710, 760)) <= 1 for s in steps), steps
    np.testing.assert_array_equal(out, simulate(graph, x, DT))
    assert _margin(rec, net) > 1e-9


def test_the_step_is_the_users_dt(tmp_path):
    """At dt = 1 ms the same neuron leaks 0.4 per step and gets 0.4 of each input spike."""
    path = _write(tmp_path, _norse_lif())
    lif = read_nir(path, dt=1e-3).neurons()[0]
    np.testing.assert_allclose([lif.beta, lif.value("gain")], [0.6, 0.4], rtol=1e-12)
    with pytest.raises(NIRError, match=r"g.nir: node '1': tau = 0.0025 is shorter than the step "
                                       r"dt = 0.01"):
        read_nir(path, dt=1e-2)


# ------------------------------------------------------------------------------------------------
# (b) a small CNN of Sinabs's form: Conv2d stride 2 padding 1, IF, SumPool2d, Flatten, Affine, IF

def _sinabs_cnn(rng, batch_dim=False, one_value=False, dtype=np.float64):
    """batch_dim: a batch dimension of 1 in the Input's type and in the IF parameters (Sinabs
    sizes them like its membrane state), and Flatten as Sinabs writes it (start_dim 1 counting the
    batch, input_type [0, 0, 0, 0])."""
    C, O, H = 2, 4, 8
    shape1, n_out = (O, H // 2, H // 2), 5
    lead = (1,) if batch_dim else ()
    per = (lambda s, v: np.full((1,), v, dtype)) if one_value else \
        (lambda s, v: np.full(lead + s, v, dtype) * rng.uniform(0.8, 1.2, lead + s).astype(dtype))
    return _chain(
        ("input", nir.Input(input_type=np.array(([1] if batch_dim else []) + [C, H, H]))),
        ("conv", nir.Conv2d(input_shape=(H, H), weight=rng.normal(0.3, 0.6, (O, C, 3, 3)).astype(dtype),
                            stride=np.array([2, 2]), padding=np.array([1, 1]), dilation=np.array([1, 1]),
                            groups=1, bias=rng.normal(0, 0.1, O).astype(dtype))),
        ("if1", nir.IF(r=per(shape1, 1.0), v_threshold=per(shape1, 1.0), v_reset=per(shape1, 0.0) * 0)),
        ("pool", nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                               padding=np.array([0, 0]))),
        ("flat", nir.Flatten(input_type={"input": np.array([0, 0, 0, 0] if batch_dim else [O, 2, 2])},
                             start_dim=1 if batch_dim else 0, end_dim=-1)),
        ("fc", nir.Affine(weight=rng.normal(0.2, 0.5, (n_out, O * 4)).astype(dtype),
                          bias=rng.normal(0, 0.1, n_out).astype(dtype))),
        ("if2", nir.IF(r=per((n_out,), 1.0), v_threshold=per((n_out,), 1.5), v_reset=per((n_out,), 0.0) * 0)),
        ("output", nir.Output(output_type=np.array([n_out]))))


@pytest.mark.parametrize("batch_dim, one_value", [(False, False), (True, False), (False, True)])
def test_sinabs_style_cnn_matches_the_witness(tmp_path, batch_dim, one_value):
    rng = np.random.default_rng(7)
    graph = _sinabs_cnn(rng, batch_dim, one_value)
    net = read_nir(_write(tmp_path, graph))
    assert [type(l).__name__ for l in net.layers] == ["Conv2d", "Leaky", "SumPool2d", "Flatten",
                                                      "Linear", "Leaky"]
    x = (rng.random((30, 3, 2, 8, 8)) < 0.3).astype(np.float64)
    out, rec = _run(net, x)
    want, spikes = simulate(graph, x, DT, record=True)
    assert _margin(rec, net) > 1e-9
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(rec["spikes"]["if1"], spikes["if1"])
    assert 0 < out.mean() < 1 and 0 < spikes["if1"].mean() < 1


def test_if_reads_as_v_plus_r_i_per_step_whatever_dt():
    """IF: v[t] = v + r I[t]; r = 2 doubles the input, and dt plays no part."""
    rng = np.random.default_rng(3)
    graph = _sinabs_cnn(rng)
    graph.nodes["if2"].r = np.full(5, 2.0)
    for dt in (1e-4, 1e-3):
        lif = from_nir(graph, dt=dt).layers[-1]
        assert np.all(np.asarray(lif.beta) == 1) and np.all(np.asarray(lif.value("gain")) == 2.0)


# ------------------------------------------------------------------------------------------------
# (c) a CubaLIF RNN: Affine in, CubaLIF with a recurrent Affine back to itself, Affine readout

def _cuba(rng, n, dtype=np.float64):
    u = lambda lo, hi: rng.uniform(lo, hi, n).astype(dtype)   # noqa: E731
    return nir.CubaLIF(tau_syn=u(2e-4, 8e-4), tau_mem=u(3e-4, 2e-3), r=u(0.8, 1.5),
                       v_leak=u(-0.1, 0.2), v_threshold=u(0.5, 1.0), v_reset=u(-0.2, 0.1),
                       w_in=u(0.5, 2.0))


def _lif(rng, n, dtype=np.float64):
    u = lambda lo, hi: rng.uniform(lo, hi, n).astype(dtype)   # noqa: E731
    return nir.LIF(tau=u(2e-4, 2e-3), r=u(0.8, 1.5), v_leak=u(-0.1, 0.2), v_threshold=u(0.5, 1.0),
                   v_reset=u(-0.2, 0.1))


def _rnn(rng, layout, neuron=_cuba, bias=True, dtype=np.float64):
    """Input (6) -> Affine -> neuron (5) <-> Affine w_rec, -> Affine readout (3) -> Output, in one
    of three layouts: 'flat' (nodes 'lif', 'w_rec'), 'nested' (a subgraph 'lif1' with nodes input,
    lif, w_rec, output, as snnTorch writes it) or 'dotted' (flat nodes 'lif1.lif', 'lif1.w_rec')."""
    n_in, n, n_out = 6, 5, 3
    w = lambda *s: rng.normal(0, 1, s).astype(dtype)   # noqa: E731
    fc = nir.Affine(weight=w(n, n_in) * 1.5, bias=w(n) * 0.2)
    cell = neuron(rng, n, dtype)
    rec = nir.Affine(weight=w(n, n) * 0.6, bias=w(n) * 0.1) if bias else nir.Linear(weight=w(n, n) * 0.6)
    out = nir.Affine(weight=w(n_out, n), bias=w(n_out))
    io = {"input": nir.Input(input_type=np.array([n_in])), "fc": fc,
          "readout": out, "output": nir.Output(output_type=np.array([n_out]))}
    if layout == "nested":
        sub = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([n])), "lif": cell, "w_rec": rec,
                                  "output": nir.Output(output_type=np.array([n]))},
                           edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")],
                           type_check=False)
        nodes, a, b = {**io, "lif1": sub}, "lif1", "lif1"
        edges = []
    else:
        a = "lif" if layout == "flat" else "lif1.lif"
        rname = "w_rec" if layout == "flat" else "lif1.w_rec"
        nodes, b = {**io, a: cell, rname: rec}, a
        edges = [(a, rname), (rname, a)]
    edges += [("input", "fc"), ("fc", a), (b, "readout"), ("readout", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


@pytest.mark.parametrize("layout", ["flat", "nested", "dotted"])
@pytest.mark.parametrize("neuron, kind", [(_cuba, "RSynaptic"), (_lif, "RLeaky")])
def test_recurrent_graphs_match_the_witness(tmp_path, layout, neuron, kind):
    rng = np.random.default_rng(11)
    graph = _rnn(rng, layout, neuron)
    net = read_nir(_write(tmp_path, graph), dt=DT)
    assert [type(l).__name__ for l in net.layers] == ["Linear", kind, "Linear"]
    assert net.layers[1].name == ("lif" if layout == "flat" else "lif1")
    x = rng.random((40, 4, 6)) * 2
    out, rec = _run(net, x)
    want, spikes = simulate(graph, x, DT, record=True)
    assert _margin(rec, net) > 1e-9
    (name,) = [l.name for l in net.neurons()]
    (spk,) = spikes.values()
    np.testing.assert_array_equal(rec["spikes"][name], spk)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    assert 0.05 < spk.mean() < 0.95


def test_recurrent_edge_delivers_the_previous_steps_spikes():
    """One neuron that excites itself: driven once above threshold at step 0, its own spike
    arrives at step 1 (weight 2 > threshold), and so on: it fires at every step from then on.
    With the loop cut it fires once."""
    one = np.ones(1)
    cell = nir.LIF(tau=one * 1e-4, r=one, v_leak=0 * one, v_threshold=one * 0.5, v_reset=0 * one)
    x = np.zeros((6, 1, 1))
    x[0] = 1.0
    for w, want in ((2.0, [1] * 6), (0.0, [1, 0, 0, 0, 0, 0])):
        graph = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([1])), "lif": cell,
                                    "w_rec": nir.Linear(weight=np.array([[w]])),
                                    "output": nir.Output(output_type=np.array([1]))},
                             edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"),
                                    ("lif", "output")], type_check=False)
        out, _ = _run(from_nir(graph, dt=1e-4), x)
        assert out[:, 0, 0].tolist() == want
        np.testing.assert_array_equal(out, simulate(graph, x, 1e-4))


def test_float32_fields_read_as_a_float32_network(tmp_path):
    rng = np.random.default_rng(5)
    graph = _rnn(rng, "nested", _cuba, dtype=np.float32)
    net = read_nir(_write(tmp_path, graph))
    assert net.dtype == np.float32
    x = (rng.random((30, 2, 6)) * 2).astype(np.float32)
    out, rec = _run(net, x)
    want, spikes = simulate(graph, x.astype(np.float64), DT, record=True)
    assert _margin(rec, net) > 1e-4   # fixed seed: float32 rounding cannot flip a spike this far away
    np.testing.assert_array_equal(rec["spikes"][net.neurons()[0].name], spikes["lif1.lif"])
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------------
# what mininsnn writes: every layer reads back with the same spikes, and the file's NIR semantics
# are the network's own (same-step zero reset) or, for other neurons, recorded in the metadata

def _per_neuron(rng, n, lo, hi):
    return rng.uniform(lo, hi, n)


def _neuron_layer(kind, rng, n, reset="zero", reset_delay=False):
    kw = dict(beta=_per_neuron(rng, n, 0.5, 0.95), threshold=_per_neuron(rng, n, 0.6, 1.2),
              reset=reset, reset_delay=reset_delay, gain=_per_neuron(rng, n, 0.5, 1.5),
              drive=_per_neuron(rng, n, -0.05, 0.1), v_reset=_per_neuron(rng, n, -0.2, 0.1))
    if kind in ("Synaptic", "RSynaptic"):
        kw.update(alpha=_per_neuron(rng, n, 0.3, 0.9), syn_gain=_per_neuron(rng, n, 0.5, 1.5))
    if kind in ("Leaky", "Synaptic"):
        return {"Leaky": Leaky, "Synaptic": Synaptic}[kind](**kw)
    layer = {"RLeaky": RLeaky, "RSynaptic": RSynaptic}[kind](n, **kw, dtype=np.float64)
    layer.params["W_rec"][...] = rng.normal(0, 0.7, (n, n))
    if layer.params.get("b_rec") is not None:
        layer.params["b_rec"][...] = rng.normal(0, 0.1, n)
    return layer


def _mlp(kind, seed, **neuron_kw):
    rng = np.random.default_rng(seed)
    fc = Linear(6, 5, dtype=np.float64, rng=rng)
    fc.params["weight"][...] *= 3
    out = Linear(5, 3, bias=False, dtype=np.float64, rng=rng)
    return Network([("fc", fc), ("lif", _neuron_layer(kind, rng, 5, **neuron_kw)), ("readout", out)],
                   (6,), dtype=np.float64).eval()


KINDS = ["Leaky", "Synaptic", "RLeaky", "RSynaptic"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_neuron_round_trips_and_its_file_follows_nir(tmp_path, kind):
    net = _mlp(kind, seed=KINDS.index(kind))
    x = np.random.default_rng(1).random((30, 4, 6)) * 2
    out, rec = _run(net, x)
    spikes = rec["spikes"]["lif"]
    assert 0.05 < spikes.mean() < 0.95
    path = write_nir(tmp_path / "m.nir", net)
    back = read_nir(path)
    assert repr(back) == repr(net)
    out2, rec2 = _run(back, x)
    np.testing.assert_array_equal(out2, out)                      # with metadata: bit for bit
    graph = nir.read(path)
    assert _margin(rec, net) > 1e-9
    np.testing.assert_allclose(simulate(graph, x, DT), out, rtol=1e-12, atol=1e-12)
    other, rec3 = _run(read_nir(path, use_metadata=False), x)     # as another tool reads it
    np.testing.assert_array_equal(rec3["spikes"]["lif"], spikes)
    np.testing.assert_allclose(other, out, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_other_resets_round_trip_through_the_metadata(tmp_path, kind):
    net = _mlp(kind, seed=5, reset="subtract", reset_delay=True)
    x = np.random.default_rng(2).random((20, 3, 6)) * 2
    out, _ = _run(net, x)
    back = read_nir(write_nir(tmp_path / "m.nir", net))
    np.testing.assert_array_equal(_run(back, x)[0], out)
    meta = to_nir(net).nodes["lif"]
    meta = (meta.nodes["lif"] if isinstance(meta, nir.NIRGraph) else meta).metadata
    assert meta["nir_exact"] is False and meta["reset"] == "subtract"


def test_recurrent_layer_is_written_as_snntorchs_subgraph():
    g = to_nir(_mlp("RSynaptic", seed=3))
    sub = g.nodes["lif"]
    assert isinstance(sub, nir.NIRGraph) and isinstance(sub.nodes["lif"], nir.CubaLIF)
    assert sorted(sub.edges) == sorted([("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"),
                                        ("lif", "output")])
    assert isinstance(sub.nodes["w_rec"], nir.Affine) and sub.nodes["w_rec"].weight.shape == (5, 5)


def test_sumpool_and_if_written_as_sinabs_writes_them(tmp_path):
    """SumPool2d -> SumPool2d; beta = 1 -> IF with r = gain (1: v += I per step; snnTorch's
    importer accepts only r = 1), not the r = 1/dt of mininsnn before."""
    from mininsnn.layers import Conv2d
    rng = np.random.default_rng(4)
    conv = Conv2d(2, 3, 3, stride=2, padding=1, dtype=np.float64, rng=rng)
    conv.params["weight"][...] = rng.normal(0.1, 0.5, conv.params["weight"].shape)
    net = Network([("conv", conv), ("if1", Leaky(1.0, 2.5, reset="zero", reset_delay=False)),
                   ("pool", SumPool2d(2)), ("flat", Flatten())], (2, 8, 8), dtype=np.float64).eval()
    g = to_nir(net)
    assert isinstance(g.nodes["pool"], nir.SumPool2d) and isinstance(g.nodes["if1"], nir.IF)
    assert np.all(g.nodes["if1"].r == 1.0) and g.nodes["if1"].r.shape == (3, 4, 4)
    x = (rng.random((12, 2, 2, 8, 8)) < 0.4).astype(np.float64)
    out, _ = _run(net, x)
    path = write_nir(tmp_path / "c.nir", net)
    np.testing.assert_array_equal(_run(read_nir(path), x)[0], out)
    np.testing.assert_array_equal(_run(read_nir(path, use_metadata=False), x)[0], out)
    np.testing.assert_array_equal(simulate(nir.read(path), x, DT), out)
    assert 0 < (out > 0).mean() < 1


# ------------------------------------------------------------------------------------------------
# refused: one line naming the file, the node and the field; nothing half built

def _refused(path_or_graph, msg, **kw):
    with pytest.raises(NIRError, match=msg) as e:
        if isinstance(path_or_graph, nir.NIRGraph):
            from_nir(path_or_graph, where="x.nir", **kw)
        else:
            read_nir(path_or_graph, **kw)
    assert "\n" not in str(e.value)


def test_bad_parameters_are_refused():
    rng = np.random.default_rng(0)
    g = _rnn(rng, "flat")
    g.nodes["lif"].tau_syn[2] = 0.0
    _refused(g, r"x.nir: node 'lif': tau_syn must be > 0, got 0")
    g = _rnn(rng, "nested")
    g.nodes["lif1"].nodes["lif"].v_threshold[0] = np.nan
    _refused(g, r"x.nir: node 'lif1.lif': v_threshold is not a finite numeric array")
    g = _rnn(rng, "flat")
    g.nodes["lif"].r = np.ones(4)
    _refused(g, r"x.nir: node 'lif': r has shape \(4,\), the layer \(5,\): shapes do not chain")
    g = _rnn(rng, "flat")
    g.nodes["w_rec"] = nir.Linear(weight=np.ones((5, 4)))
    _refused(g, r"x.nir: node 'w_rec': a recurrent weight must be \(5, 5\) on a layer of 5 neurons")
    _refused(_rnn(rng, "flat"), "x.nir: dt must be a finite number of seconds > 0", dt=float("nan"))


def test_convolutions_mininsnn_cannot_run_are_refused():
    rng = np.random.default_rng(0)
    for field, value, msg in (("dilation", np.array([2, 2]), "dilation != 1"),
                              ("groups", 2, "groups != 1"),
                              ("stride", np.array([1, 2]), "stride")):
        g = _sinabs_cnn(rng)
        setattr(g.nodes["conv"], field, value)
        _refused(g, f"x.nir: node 'conv': .*{msg}")


def test_unknown_node_types_and_fields_in_files(tmp_path):
    path = _write(tmp_path, _norse_lif())
    with h5py.File(path, "a") as f:
        f["node/nodes/1/refractory"] = np.ones(1)
    _refused(path, r"g.nir: node '1': unknown field 'refractory' of a LIF node; mininsnn would ignore it")
    path = _write(tmp_path, _rnn(np.random.default_rng(0), "nested"), "n.nir")
    with h5py.File(path, "a") as f:
        del f["node/nodes/lif1/nodes/lif/type"]
        f["node/nodes/lif1/nodes/lif/type"] = "AdExLIF"
    _refused(path, r"n.nir: node 'lif1.lif': unknown node type 'AdExLIF'")
    data = (tmp_path / "g.nir").read_bytes()
    (tmp_path / "t.nir").write_bytes(data[: len(data) // 3])
    _refused(tmp_path / "t.nir", r"t.nir: not a readable NIR file")


def test_a_branch_is_refused_not_half_run():
    rng = np.random.default_rng(0)
    g = _rnn(rng, "flat")
    g.edges.append(("fc", "readout"))
    _refused(g, "x.nir: node 'fc' feeds both")


def test_recurrent_layer_without_bias_round_trips(tmp_path):
    rng = np.random.default_rng(8)
    lif = RLeaky(4, 0.8, 0.7, reset="zero", reset_delay=False, bias=False, dtype=np.float64, rng=rng)
    lif.params["W_rec"][...] *= 2
    net = Network([("fc", Linear(3, 4, dtype=np.float64, rng=rng)), ("lif", lif)], (3,),
                  dtype=np.float64).eval()
    x = rng.random((25, 2, 3)) * 3
    out, _ = _run(net, x)
    path = write_nir(tmp_path / "r.nir", net)
    for use in (True, False):
        back = read_nir(path, use_metadata=use)   # without metadata: an Affine with bias 0
        assert "b_rec" not in back.layers[1].params if use else not back.layers[1].params["b_rec"].any()
        np.testing.assert_array_equal(_run(back, x)[0], out)
    np.testing.assert_array_equal(simulate(nir.read(path), x, DT), out)
    assert 0 < out.mean() < 1


def test_optional_fields_take_nirs_defaults():
    """A LIF without v_reset resets to 0; a CubaLIF without w_in weighs its input by 1."""
    g = _norse_lif()
    g.nodes["1"].v_reset = None
    lif = from_nir(g).neurons()[0]
    assert lif.value("v_reset") == 0.0
    g = _rnn(np.random.default_rng(0), "flat")
    g.nodes["lif"].w_in = None
    np.testing.assert_allclose(from_nir(g).neurons()[0].value("syn_gain"), DT / g.nodes["lif"].tau_syn)


def test_dtype_can_be_asked_for(tmp_path):
    path = _write(tmp_path, _norse_lif())
    assert read_nir(path).dtype == np.float64                     # the file's weights
    net = read_nir(path, dtype="float32")
    out, _ = _run(net, _paper_input())
    assert net.dtype == np.float32 and np.flatnonzero(out[:, 0, 0]).tolist() == [460, 510, 710, 760]
    _refused(path, "g.nir: dtype must be float32 or float64, got 'int8'", dtype="int8")


def test_learned_per_channel_parameters_round_trip(tmp_path):
    """A learned per-channel beta and threshold (C, 1, 1): the same state dict (names and bits)
    and spikes through the metadata, the same spikes through the file's NIR semantics."""
    from mininsnn.layers import Conv2d
    rng = np.random.default_rng(9)
    conv = Conv2d(1, 3, 3, padding=1, dtype=np.float64, rng=rng)
    conv.params["weight"][...] = rng.normal(0.3, 0.5, conv.params["weight"].shape)
    lif = Leaky(rng.uniform(0.5, 0.9, (3, 1, 1)), rng.uniform(0.8, 1.2, (3, 1, 1)), reset="zero",
                reset_delay=False, learn_beta=True, learn_threshold=True, dtype=np.float64)
    net = Network([("conv", conv), ("lif", lif)], (1, 6, 6), dtype=np.float64).eval()
    x = rng.random((15, 2, 1, 6, 6)) * 2
    out, rec = _run(net, x)
    path = write_nir(tmp_path / "l.nir", net)
    back = read_nir(path)
    assert list(back.state_dict()) == list(net.state_dict()) == ["conv.weight", "lif.beta", "lif.threshold"]
    for k, v in net.state_dict().items():
        assert back.state_dict()[k].tobytes() == v.tobytes() and back.state_dict()[k].shape == v.shape, k
    np.testing.assert_array_equal(_run(back, x)[0], out)
    assert _margin(rec, net) > 1e-9
    np.testing.assert_array_equal(_run(read_nir(path, use_metadata=False), x)[0], out)
    np.testing.assert_array_equal(simulate(nir.read(path), x, DT), out)
    assert 0 < out.mean() < 1


@settings(deadline=None, max_examples=40)
@given(seed=st.integers(0, 2**31), kind=st.sampled_from(["LIF", "IF", "CubaLIF"]), recurrent=st.booleans(),
       dt=st.sampled_from([1e-4, 1e-3, 5e-4]), uniform=st.booleans())
def test_any_parameters_match_the_witness(seed, kind, recurrent, dt, uniform):
    """Random parameters (per neuron or one value), any step dt: the reader's network and the
    witness give the same spikes."""
    rng = np.random.default_rng(seed)
    n = 4
    u = (lambda lo, hi: np.full(n, rng.uniform(lo, hi))) if uniform else (lambda lo, hi: rng.uniform(lo, hi, n))
    common = dict(v_threshold=u(0.3, 1.5), v_reset=u(-0.3, 0.2))
    if kind == "IF":
        cell = nir.IF(r=u(0.3, 2.0), **common)
    elif kind == "LIF":
        cell = nir.LIF(tau=dt * u(1.0, 20.0), r=u(0.3, 3.0), v_leak=u(-0.5, 0.5), **common)
    else:
        cell = nir.CubaLIF(tau_syn=dt * u(1.0, 10.0), tau_mem=dt * u(1.0, 20.0), r=u(0.3, 3.0),
                           v_leak=u(-0.5, 0.5), w_in=u(0.3, 3.0), **common)
    nodes = {"input": nir.Input(input_type=np.array([3])),
             "fc": nir.Affine(weight=rng.normal(0, 1.5, (n, 3)), bias=rng.normal(0, 0.3, n)),
             "cell": cell, "output": nir.Output(output_type=np.array([n]))}
    edges = [("input", "fc"), ("fc", "cell"), ("cell", "output")]
    if recurrent:
        nodes["w_rec"] = nir.Affine(weight=rng.normal(0, 0.8, (n, n)), bias=rng.normal(0, 0.2, n))
        edges += [("cell", "w_rec"), ("w_rec", "cell")]
    graph = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    net = from_nir(graph, dt=dt)
    x = rng.random((25, 2, 3)) * 2
    out, rec = _run(net, x)
    assume(_margin(rec, net) > 1e-9)
    np.testing.assert_array_equal(out, simulate(graph, x, dt))
