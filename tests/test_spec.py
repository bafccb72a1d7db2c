"""Networks described as data (mininsnn.spec): shapes chain, errors name file/layer/field, and the
paper's network written as a spec is reference_network weight for weight and spike for spike."""
import json
from pathlib import Path

import numpy as np
import pytest

from mininsnn.config import ARCHITECTURES, make_config, model_settings
from mininsnn.models import build_from_config
from mininsnn.neurons import Leaky, Synaptic
from mininsnn.recurrent import RLeaky, RSynaptic
from mininsnn.spec import (BUILTIN, SpecError, as_input, build_network, check_spec, output_size,
                           paper_spec, read_spec, resolve_spec)

MLP = {"name": "mlp", "input_shape": [1, 28, 28],
       "layers": [{"type": "Flatten"}, {"type": "Linear", "out_features": 32},
                  {"type": "Leaky"}, {"type": "Linear", "out_features": 10},
                  {"type": "Leaky", "beta": 0.5}]}
CONV3 = {"name": "conv3", "input_shape": [1, 28, 28],
         "layers": [{"type": "Conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
                    {"type": "BatchNorm2d"}, {"type": "Leaky"},
                    {"type": "Conv2d", "out_channels": 6, "kernel_size": 3, "stride": 2,
                     "padding": 1},
                    {"type": "Leaky"},
                    {"type": "Conv2d", "out_channels": 8, "kernel_size": 3, "stride": 2},
                    {"type": "AvgPool2d", "kernel_size": 2}, {"type": "Leaky"},
                    {"type": "Flatten"}, {"type": "Linear", "out_features": 10},
                    {"type": "Leaky"}]}


@pytest.mark.parametrize("config", ["mnist-4bit", "dvs-4bit", "mnist-fp"])
def test_paper_spec_is_reference_network(config):
    cfg = make_config(config, seed=3, dtype="float64")
    ref = build_from_config(cfg)
    shape, c1, c2, n = ARCHITECTURES[cfg["dataset"]]
    net = build_network(paper_spec(shape, (c1, c2), n, batchnorm=cfg["batchnorm"]),
                        model_settings(cfg), seed=3)
    a, b = ref.state_dict(), net.state_dict()
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    rng = np.random.default_rng(0)
    x = rng.random((2,) + shape) if cfg["dataset"] != "dvsgesture" \
        else (rng.random((5, 2) + shape) < 0.3).astype(np.float64)
    ref.eval(), net.eval()
    np.testing.assert_array_equal(ref.forward(x, num_steps=5), net.forward(x, num_steps=5))


def test_shapes_chain_and_names():
    spec = check_spec(CONV3)
    assert [l["name"] for l in spec["layers"]] == [
        "conv1", "bn1", "lif1", "conv2", "lif2", "conv3", "pool1", "lif3", "flatten1", "fc1",
        "lif4"]
    assert [tuple(l["shape"]) for l in spec["layers"]][:7] == [
        (4, 28, 28), (4, 28, 28), (4, 28, 28), (6, 14, 14), (6, 14, 14), (8, 6, 6), (8, 3, 3)]
    assert output_size(spec) == 10


@pytest.mark.parametrize("spec", [MLP, CONV3], ids=["mlp", "conv3"])
def test_built_network_runs_forward_and_backward(spec):
    net = build_network(spec, {"bits": 4, "dtype": "float64", "threshold": 0.05}, seed=1)
    x = np.random.default_rng(1).random((3, 1, 28, 28))
    out = net.forward(x, num_steps=4)
    assert out.shape == (4, 3, 10)
    net.backward(np.ones(out.shape))
    grads = net.grads
    assert grads and all(np.isfinite(g).all() and g.any() for g in grads.values())


def test_a_layer_field_overrides_the_run_setting_for_that_layer_only():
    net = build_network(MLP, {"beta": 0.7})
    assert [n.beta for n in net.neurons()] == [0.7, 0.5]


def test_read_spec_file(tmp_path):
    p = tmp_path / "mlp.json"
    p.write_text(json.dumps(MLP))
    assert read_spec(p)["layers"][1]["shape"] == (32,)
    p.write_text("{not json")
    with pytest.raises(SpecError, match=r"mlp.json: not JSON"):
        read_spec(p)
    with pytest.raises(SpecError, match=r"missing.json: cannot read"):
        read_spec(tmp_path / "missing.json")


def _with(i, **fields):
    spec = json.loads(json.dumps(MLP))
    spec["layers"][i] = {**spec["layers"][i], **fields}
    return spec


@pytest.mark.parametrize("spec, message", [
    (_with(1, type="Dense"), r"layer 2 \(Dense\): field 'type': unknown layer type 'Dense'"),
    (_with(1, units=3), r"layer 2 \(Linear\): field 'units': not a field of Linear"),
    (_with(1, out_features=0), r"layer 2 \(Linear\): field 'out_features': must be an integer"),
    ({**MLP, "layers": MLP["layers"][1:]},
     r"layer 1 \(Linear\): field 'type': expects a flat input \(put a Flatten"),
    ({**MLP, "layers": MLP["layers"][:-1]}, r"the last layer must be a neuron layer"),
    ({**MLP, "input_shape": [28, 28]}, r"field 'input_shape'"),
    ({**MLP, "layer": []}, r"unknown top-level field 'layer'"),
    ({"input_shape": [1, 4, 4], "layers": [{"type": "Conv2d", "out_channels": 2,
                                            "kernel_size": 5}]},
     r"layer 1 \(Conv2d\): field 'kernel_size': 5 does not fit the input \(1, 4, 4\)"),
    (_with(2, name="fc1"), r"layer 3 \(Leaky\): field 'name': expected a unique name"),
])
def test_bad_specs_are_one_line_errors(spec, message):
    with pytest.raises(SpecError, match=message) as e:
        build_network(spec, where="my.json")
    assert str(e.value).startswith("my.json: ") and "\n" not in str(e.value)


@pytest.mark.parametrize("field, value, message", [
    ("beta", 1.5, r"field 'beta': must be a finite number in \[0, 1\], got 1.5"),
    ("threshold", 0, r"field 'threshold': must be a finite number > 0, got 0"),
    ("reset", "half", r"field 'reset': must be one of subtract, zero, got 'half'"),
    ("learn_beta", 1, r"field 'learn_beta': must be true or false, got 1"),
])
def test_a_setting_out_of_range_names_the_layer_and_field(field, value, message):
    """Checked when the spec is read, before anything is built."""
    with pytest.raises(SpecError, match=r"^my.json: layer 3 \(Leaky\): " + message) as e:
        check_spec(_with(2, **{field: value}), where="my.json")
    assert "\n" not in str(e.value)


SHIPPED = sorted((Path(__file__).resolve().parents[1] / "examples" / "specs").glob("*.json"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_specs_build_and_run(path):
    net = build_network(read_spec(path), seed=0, where=str(path))
    out = net.forward(np.zeros((2,) + net.input_shape, np.float32), num_steps=2)
    assert out.shape == (2, 2, 10)


@pytest.mark.parametrize("config, name", [("mnist-4bit", "qsnn-mnist"), ("dvs-4bit", "qsnn-dvs")])
def test_a_built_in_spec_is_the_paper_network_forward_and_backward(config, name):
    """A run of --model qsnn-mnist builds what the configuration alone builds: same weights,
    spikes and gradients (so the same training bits)."""
    assert name in BUILTIN
    spec, where = resolve_spec(name)
    assert where == f"built-in spec {name}"
    ref = build_from_config(make_config(config, seed=2, dtype="float64"))
    net = build_from_config(make_config(config, seed=2, dtype="float64", model=spec))
    assert net.spec["name"] == name and not hasattr(ref, "spec")
    a, b = ref.state_dict(), net.state_dict()
    assert list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)
    rng = np.random.default_rng(0)
    shape = tuple(spec["input_shape"])
    x = rng.random((2,) + shape) if config != "dvs-4bit" \
        else (rng.random((4, 2) + shape) < 0.3).astype(np.float64)
    out_ref, out = ref.forward(x, num_steps=4), net.forward(x, num_steps=4)
    np.testing.assert_array_equal(out_ref, out)
    dout = rng.standard_normal(out.shape)
    ref.backward(dout), net.backward(dout)
    for k, g in ref.grads.items():
        np.testing.assert_array_equal(g, net.grads[k], err_msg=k)


NEW_LAYERS = {"name": "new", "input_shape": [2, 9, 9],
              "layers": [{"type": "SumPool2d", "kernel_size": 2, "stride": 2, "padding": 1},
                         {"type": "Synaptic", "alpha": 0.9, "learn_beta": True},
                         {"type": "Flatten"}, {"type": "Linear", "out_features": 12},
                         {"type": "RLeaky", "learn_threshold": True, "beta": 0.8},
                         {"type": "Linear", "out_features": 5},
                         {"type": "RSynaptic", "alpha": 0.5, "bias": False,
                          "learn_alpha": True}]}


def test_synaptic_recurrent_and_sum_pooling_layers_in_a_spec():
    spec = check_spec(NEW_LAYERS)
    assert [(l["name"], tuple(l["shape"])) for l in spec["layers"]] == [
        ("pool1", (2, 5, 5)), ("syn1", (2, 5, 5)), ("flatten1", (50,)), ("fc1", (12,)),
        ("rlif1", (12,)), ("fc2", (5,)), ("rsyn1", (5,))]
    net = build_network(spec, {"bits": None, "dtype": "float64", "threshold": 0.3}, seed=0)
    syn, rlif, rsyn = net.layers[1], net.layers[4], net.layers[6]
    assert isinstance(syn, Synaptic) and isinstance(rlif, RLeaky) and isinstance(rsyn, RSynaptic)
    assert net.layers[0].padding == 1 and net.layers[0].stride == 2
    assert float(syn.alpha) == 0.9 and rlif.n == 12 and rsyn.n == 5
    assert float(rlif.beta) == 0.8 and float(rsyn.beta) == 0.9      # the layer's, the setting
    assert {"syn1.beta", "rlif1.threshold", "rlif1.W_rec", "rlif1.b_rec", "rsyn1.alpha",
            "rsyn1.W_rec"} <= set(net.params) and "rsyn1.b_rec" not in net.params
    x = np.random.default_rng(0).random((3, 2, 9, 9))
    out = net.forward(x, num_steps=6)
    assert out.shape == (6, 3, 5)
    net.backward(np.ones(out.shape))
    assert all(np.isfinite(g).all() for g in net.grads.values())
    assert np.abs(net.grads["rsyn1.alpha"]).sum() > 0 or out.sum() == 0


@pytest.mark.parametrize("layer, message", [
    ({"type": "RLeaky"}, r"layer 1 \(RLeaky\): field 'type': expects a flat input"),
    ({"type": "Synaptic"}, r"layer 1 \(Synaptic\): field 'alpha': required"),
    ({"type": "Synaptic", "alpha": 1.5},
     r"layer 1 \(Synaptic\): field 'alpha': must be a finite number in \[0, 1\]"),
    ({"type": "SumPool2d", "kernel_size": 2, "padding": -1},
     r"layer 1 \(SumPool2d\): field 'padding': must be an integer >= 0"),
    ({"type": "RSynaptic", "alpha": 0.5, "sparse_grad": 0.1},
     r"layer 1 \(RSynaptic\): field 'sparse_grad': not a field of RSynaptic"),
])
def test_new_layers_bad_fields(layer, message):
    spec = {"input_shape": [1, 4, 4], "layers": [layer, {"type": "Flatten"},
                                                 {"type": "Linear", "out_features": 2},
                                                 {"type": "Leaky"}]}
    with pytest.raises(SpecError, match=r"^my.json: " + message):
        check_spec(spec, where="my.json")


def test_rows_input_feeds_an_image_row_by_row():
    spec = {"input_shape": [2, 3, 4], "input": "rows",
            "layers": [{"type": "Linear", "out_features": 3}, {"type": "Leaky"}]}
    net = build_network(spec, seed=0)
    assert net.input_shape == (8,) and check_spec(spec)["layers"][0]["shape"] == (3,)
    x = np.arange(5 * 2 * 3 * 4, dtype=np.float32).reshape(5, 2, 3, 4)
    seq = as_input(net, x, 3)
    assert seq.shape == (3, 5, 8)
    for t in range(3):                        # step t: row t of every channel, channel-major
        np.testing.assert_array_equal(seq[t], x[:, :, t, :].reshape(5, 8))
    with pytest.raises(ValueError, match=r"runs 3 steps \(one per row\), not num_steps=7"):
        as_input(net, x, 7)
    plain = build_network(MLP, seed=0)
    assert as_input(plain, x, 7) is x


@pytest.mark.parametrize("spec, message", [
    ({**MLP, "input": "columns"}, r"field 'input': expected one of image, rows"),
    ({**MLP, "input_shape": [784], "layers": MLP["layers"][1:], "input": "rows"},
     r"field 'input': 'rows' reads a \[C, H, W\] image"),
])
def test_bad_input_field(spec, message):
    with pytest.raises(SpecError, match=r"^my.json: " + message):
        check_spec(spec, where="my.json")


def test_spec_of_a_network_rebuilds_it_layer_for_layer():
    from mininsnn.specwriter import spec_of
    net = build_network(NEW_LAYERS, {"bits": None, "dtype": "float64"}, seed=4)
    spec = spec_of(net, "net.nir", name="again")
    assert [l["name"] for l in spec["layers"]] == [l.name for l in net.layers]
    again = build_network(spec, {"bits": None, "dtype": "float64"}, seed=9)
    again.load_state_dict(net.state_dict())
    x = np.random.default_rng(0).random((2, 2, 9, 9))
    np.testing.assert_array_equal(net.forward(x, num_steps=5), again.forward(x, num_steps=5))
    written = spec_of(build_network(CONV3, seed=0))["layers"]
    assert [(l["name"], l["shape"]) for l in written] == \
        [(l["name"], l["shape"]) for l in check_spec(CONV3)["layers"]]
    assert written[3] == {"type": "Conv2d", "name": "conv2", "out_channels": 6, "kernel_size": 3,
                          "stride": 2, "padding": 1, "bias": False, "shape": (6, 14, 14)}


@pytest.mark.parametrize("layer, message", [
    (Leaky(np.array([0.5, 0.6]), 1.0), r"layer lif1 \(Leaky\): field 'beta': differs between"),
    (Leaky(0.5, 1.0, gain=2.0), r"layer lif1 \(Leaky\): field 'gain': must be 1"),
    (Leaky(0.5, 1.0, v_reset=0.5, reset="zero"), r"layer lif1 \(Leaky\): field 'v_reset': must be 0"),
])
def test_spec_of_refuses_what_a_spec_cannot_hold_in_one_line(layer, message):
    from mininsnn.network import Network
    from mininsnn.specwriter import spec_of
    net = Network([("lif1", layer)], (2,))
    with pytest.raises(SpecError, match=r"^g.nir: " + message):
        spec_of(net, "g.nir")
