"""The C export of any chain (mininsnn.deploy.cgeneral) compiles with strict flags and gives the
integer engine's spike counts, count for count."""
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings

from mininsnn.deploy import conversion as cv

from mininsnn.deploy import engine as npe
from mininsnn.deploy.cexport import CExportError, c_sizes, export_c
from mininsnn.deploy.chain import convert_layers
from tests.test_deploy_any import build_chain, chains, mlp, synaptic_mlp, three_conv
from tests.test_deploy_c import needs_cc, run_c


@needs_cc
@pytest.mark.parametrize("kind,reset,leak,static", [("mlp", "subtract", "multiply", True),
                                                    ("mlp", "zero", "shift", False),
                                                    ("conv3", "subtract", "multiply", True),
                                                    ("conv3", "zero", "shift", False)])
def test_exported_chain_matches_the_engine_count_for_count(tmp_path, kind, reset, leak, static):
    net = mlp(4, reset=reset) if kind == "mlp" else three_conv(5, reset=reset, pool="avg")
    model = convert_layers(net, leak=leak, static=static)
    T = 12
    rng = np.random.default_rng(2)
    shape = tuple(net.input_shape)
    x = rng.integers(0, 256, (10,) + shape if static else (T, 10) + shape).astype(np.uint8)
    if not static:
        x[rng.random(x.shape) < 0.6] = 0
    size, counts, cls, state = run_c(model, x, T, tmp_path, kind)
    ref = npe.predict(model, x, T)
    assert np.array_equal(counts, ref) and ref.sum() > 0
    assert np.array_equal(cls, ref.argmax(axis=1))
    assert size == state == c_sizes(model)[1]
    code = re.sub(r"/\*.*?\*/", "", (tmp_path / f"{kind}.c").read_text(), flags=re.S)
    assert "malloc" not in code and "double" not in code
    assert "float" not in code.replace("floor_shift", "")


@needs_cc
def test_exported_sum_pool_network_matches_the_engine(tmp_path):
    net = three_conv(9, bits=6, pool="sum", shape=(2, 13, 11))
    model = convert_layers(net)
    x = np.random.default_rng(3).integers(0, 256, (6, 2, 13, 11)).astype(np.uint8)
    _, counts, _, _ = run_c(model, x, 10, tmp_path, "sumpool")
    assert np.array_equal(counts, npe.predict(model, x, 10))


def test_export_refuses_a_chain_that_does_not_end_in_linear(tmp_path):
    model = convert_layers(three_conv(1))
    model.layers = model.layers[:-1]
    with pytest.raises(CExportError, match="^c3: kind must be linear"):
        export_c(model, tmp_path, "m")
    assert list(tmp_path.iterdir()) == []


@needs_cc
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_exported_reset_in_the_step_that_fires_matches_the_engine(tmp_path, reset):
    """NIR's LIF form: the reset in the step that fires, per-neuron threshold, gain and drive."""
    net = mlp(6, reset=reset, delay=False, per_neuron=True, beta2=0.8)   # and a beta per layer
    model = convert_layers(net, static=False)
    assert not model.delay and model.layers[1].leak is not None
    T = 12
    rng = np.random.default_rng(4)
    x = (rng.random((T, 8, 1, 12, 12)) < 0.3).astype(np.uint8) * 200
    _, counts, _, _ = run_c(model, x, T, tmp_path, "nodelay")
    ref = npe.predict(model, x, T)
    assert np.array_equal(counts, ref) and ref.sum() > 0


@needs_cc
@given(case=chains())
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_exported_random_chains_match_the_engine(tmp_path, case):
    seed, convs, linears, shape, neuron, static = case
    net = build_chain(seed, convs, linears, shape, neuron)
    T = 8
    try:
        model = convert_layers(net, static=static, num_steps=T)
    except cv.OverflowProofError:
        assume(False)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (4,) + shape if static else (T, 4) + shape).astype(np.uint8)
    _, counts, _, _ = run_c(model, x, T, tmp_path, "chain")
    assert np.array_equal(counts, npe.predict(model, x, T))


@needs_cc
@pytest.mark.parametrize("reset,delay,leak", [("zero", False, "multiply"), ("subtract", True, "shift")])
def test_exported_synaptic_layers_match_the_engine(tmp_path, reset, delay, leak):
    net = synaptic_mlp(3, reset=reset, delay=delay)
    model = convert_layers(net, leak=leak)
    x = np.random.default_rng(5).integers(0, 256, (8, 1, 6, 6)).astype(np.uint8)
    size, counts, _, state = run_c(model, x, 15, tmp_path, "cuba")
    ref = npe.predict(model, x, 15)
    assert np.array_equal(counts, ref) and ref.sum() > 0
    assert size == state == c_sizes(model)[1]
