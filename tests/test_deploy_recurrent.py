"""Integer deploy of recurrent layers (RLeaky): W_rec quantized per tensor like a Linear's weight,
b_rec folded like a bias, the feedback W_r S[t-1] added to the integer current one step late."""
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mininsnn.cli import main
from mininsnn.deploy import conversion as cv
from mininsnn.deploy import engine as npe
from mininsnn.deploy import modelfile as mf
from mininsnn.deploy import numba_engine as nbe
from mininsnn.deploy.chain import agreement, convert_layers, quantized_w_rec
from mininsnn.layers import Conv2d, Flatten, Linear
from mininsnn.network import Network
from mininsnn.neurons import Leaky
from mininsnn.recurrent import RLeaky, RSynaptic
from mininsnn.spec import as_input, build_network, read_spec
from mininsnn.deploy.cexport import c_sizes
from tests.test_deploy_any import follows_float
from tests.test_deploy_c import needs_cc, run_c


def rec_mlp(seed, bits=4, beta=0.9, reset="subtract", delay=True, h=10, k=4, bias=True,
            alpha=None):
    """Flatten, Linear, RLeaky (RSynaptic with ``alpha``), Linear, Leaky on (1, 6, 6); float64
    with W_rec set to the value the integer model follows (quantized per tensor to ``bits``)."""
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0.5, 1.5, h)
    kw = dict(reset=reset, reset_delay=delay, bias=bias, gain=rng.uniform(0.5, 2.0, h),
              drive=rng.normal(0, 0.05, h), dtype=np.float64, rng=rng)
    if alpha is None:
        rl = RLeaky(h, beta, theta, **kw)
    else:
        rl = RSynaptic(h, alpha, beta, theta, syn_gain=rng.uniform(0.3, 1.0, h), **kw)
    layers = [("flat", Flatten()), ("fc1", Linear(36, h, bits=bits, rng=rng, dtype=np.float64)),
              ("rec1", rl), ("fc2", Linear(h, k, bits=bits, rng=rng, dtype=np.float64)),
              ("lif2", Leaky(beta, 1.0, reset=reset, reset_delay=delay))]
    net = Network(layers, (1, 6, 6), dtype=np.float64).eval()
    for p in net.params.values():
        p[...] = rng.normal(0.1, 0.5, p.shape)
    rl.params["W_rec"][...] = quantized_w_rec(rl, bits)
    return net


def _inputs(seed, T, static, B=6):
    rng = np.random.default_rng(seed + 1)
    return rng.integers(0, 256, (B, 1, 6, 6) if static else (T, B, 1, 6, 6)).astype(np.uint8)


@given(seed=st.integers(0, 2 ** 16), reset=st.sampled_from(["subtract", "zero"]),
       delay=st.booleans(), static=st.booleans(), bits=st.integers(2, 8),
       beta=st.sampled_from([0.5, 0.8, 0.95]), bias=st.booleans())
@settings(max_examples=30, deadline=None)
def test_rleaky_network_follows_its_float_model(seed, reset, delay, static, bits, beta, bias):
    net = rec_mlp(seed, bits=bits, beta=beta, reset=reset, delay=delay, bias=bias)
    model = convert_layers(net, static=static)
    L = model.layers[0]
    assert L.rec is not None and L.rec.shape == (10, 10) and model.layers[1].rec is None
    T = 16
    follows_float(net, model, _inputs(seed, T, static), T, static)


def test_rleaky_spike_counts_agree_with_the_float_model():
    """The share of samples whose output counts equal the float twin's (the >= 99 % standard)."""
    same = total = 0
    for seed in range(4):
        net = rec_mlp(seed, bits=8)
        model = convert_layers(net, static=True)
        x = _inputs(seed, 20, True, B=100)
        out = net.forward(x / 255.0, num_steps=20)
        fc = np.asarray(out).sum(axis=0)
        ic = npe.predict(model, x, 20)
        same += int((fc == ic).all(axis=1).sum())
        total += len(x)
    assert same / total >= 0.99, same / total


def test_the_feedback_changes_the_spikes_and_enters_the_proof():
    """W_rec matters (zeroing W_r changes the spikes) and the proof bounds I + W_r S."""
    net = rec_mlp(3, bits=8)
    model = convert_layers(net, static=True)
    x = _inputs(3, 20, True, B=40)
    a = npe.forward(model, x, 20)
    model.layers[0].rec = np.zeros_like(model.layers[0].rec)
    assert not np.array_equal(a, npe.forward(model, x, 20))
    L = convert_layers(net, static=True).layers[0]
    pos = np.where(L.rec > 0, L.rec, 0).sum(axis=1)
    assert L.bounds["input"] >= int((np.abs(L.bias) + pos).max())


def test_rleaky_after_a_conv_is_refused_in_one_line():
    rng = np.random.default_rng(0)
    net = Network([("c", Conv2d(1, 2, 3, rng=rng, dtype=np.float64)), ("r", RLeaky(8, 0.9)),
                   ], (1, 4, 4), dtype=np.float64)
    with pytest.raises(cv.ConversionError, match=r"^r: n 8 does not match"):
        convert_layers(net)


def test_bad_w_rec_is_refused():
    net = rec_mlp(0)
    net.layers[2].params["W_rec"][0, 0] = np.nan
    with pytest.raises(cv.ConversionError, match=r"rec1: W_rec must be finite"):
        convert_layers(net)


def test_rleaky_model_file_round_trip_and_the_numba_engine(tmp_path):
    """The feedback is saved, its proof redone at load; the Numba kernel gives the same counts."""
    net = rec_mlp(5, bits=6, reset="zero")
    model = convert_layers(net, static=False)
    path = tmp_path / "rec.npz"
    mf.save_integer_model(model, path)
    back = mf.load_integer_model(path)
    assert np.array_equal(back.layers[0].rec, model.layers[0].rec)
    x = _inputs(5, 15, False)
    assert np.array_equal(npe.predict(back, x, 15), npe.predict(model, x, 15))
    assert np.array_equal(nbe.predict(model, x, 15), npe.predict(model, x, 15))
    arrays, meta = mf.model_arrays_meta(model)
    arrays["fc1.rec"] = arrays["fc1.rec"][:, :3]
    with pytest.raises(mf.ModelFileError, match=r"fc1.rec inconsistent"):
        mf.model_from_arrays(arrays, meta)


@needs_cc
@pytest.mark.parametrize("reset,delay,leak,static", [("subtract", True, "multiply", True),
                                                     ("zero", False, "shift", False),
                                                     ("subtract", False, "multiply", False)])
def test_exported_rleaky_network_matches_the_engine_count_for_count(tmp_path, reset, delay, leak,
                                                                    static):
    """cc -std=c99 -Wall -Wextra -Werror -pedantic (tests.test_deploy_c.run_c), count for count."""
    net = rec_mlp(7, bits=6, reset=reset, delay=delay)
    model = convert_layers(net, leak=leak, static=static)
    T = 14
    x = _inputs(7, T, static, B=12)
    if not static:      # sparse frames, as a sensor stream (dense 0..255 frames saturate)
        x[np.random.default_rng(8).random(x.shape) < 0.8] = 0
    size, counts, cls, state = run_c(model, x, T, tmp_path, "recmlp")
    ref = npe.predict(model, x, T)
    assert np.array_equal(counts, ref) and ref.sum() > 0
    assert np.array_equal(cls, ref.argmax(axis=1))
    assert size == state == c_sizes(model)[1]
    model.layers[0].rec = np.zeros_like(model.layers[0].rec)    # the feedback is in the C code
    assert not np.array_equal(counts, npe.predict(model, x, T))


def test_agreement_runs_the_float_twin_with_the_quantized_w_rec():
    """chain.agreement swaps in the quantized W_rec for the float run and puts the float one back."""
    rng = np.random.default_rng(11)
    net = rec_mlp(11, bits=3)
    W = rng.normal(0, 0.5, (10, 10))
    net.layers[2].params["W_rec"][...] = W
    model = convert_layers(net, static=True)
    x = _inputs(11, 20, True, B=200)
    same, cls = agreement(net, model, x, 20)
    assert np.array_equal(net.layers[2].params["W_rec"], W)
    assert same >= 0.99 and cls >= 0.99, (same, cls)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_spec_read_row_by_row_converts_with_frames_of_pixels(seed):
    """examples/specs/rows-mnist.json (Linear, RLeaky, Linear, Leaky; an image read row by row):
    the integer model takes the H rows as H frames of C * W pixels (frame_scale 1/255) and gives
    the float network's counts (its W_rec quantized) on >= 99 % of the images."""
    spec = read_spec(Path(__file__).resolve().parents[1] / "examples/specs/rows-mnist.json")
    net = build_network(spec, {"dtype": "float64", "bits": 6}, seed=seed).eval()
    rng = np.random.default_rng(seed)
    for p in net.params.values():        # weights that make both layers fire
        p[...] = rng.normal(0.05, 0.3, p.shape)
    model = convert_layers(net, static=False, frame_scale=1.0 / 255)
    assert model.input_shape == (28,) and model.layers[0].rec is not None
    rec = next(L for L in net.layers if type(L).__name__ == "RLeaky")
    rec.params["W_rec"][...] = quantized_w_rec(rec, model.meta["rec_bits"][rec.name])
    img = rng.integers(0, 256, (200, 1, 28, 28)).astype(np.uint8)
    img[rng.random(img.shape) < 0.7] = 0
    fc = np.asarray(net.forward(as_input(net, img / 255.0, 28), num_steps=None)).sum(axis=0)
    frames = np.ascontiguousarray(img.transpose(2, 0, 1, 3).reshape(28, 200, 28))
    ic = npe.predict(model, frames, 28)
    assert ic.sum() > 0
    assert (fc == ic).all(axis=1).mean() >= 0.99, (fc == ic).all(axis=1).mean()


def test_a_trained_rleaky_rows_spec_exports_and_runs_on_the_integer_engine(tmp_path, capsys):
    """train -> export --format npz / c -> infer --engine int on (N, 28, 28) images, which a model
    read row by row takes as 28 frames of 28 pixels."""
    spec = {"name": "tiny-rows", "input_shape": [1, 28, 28], "input": "rows",
            "layers": [{"type": "Linear", "out_features": 12}, {"type": "RLeaky"},
                       {"type": "Linear", "out_features": 10}, {"type": "Leaky"}]}
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(spec))
    run = tmp_path / "run"
    tiny = ["--subset", "32", "--test-subset", "16", "--batch-size", "16", "--num-steps", "28"]
    assert main(["train", "--model", str(path), *tiny, "--out", str(run)]) == 0
    assert main(["export", str(run), "--format", "npz", "--out", str(tmp_path / "m"),
                 "--name", "rows"]) == 0
    model = mf.load_integer_model(tmp_path / "m" / "rows.npz")
    assert not model.static and model.input_shape == (28,) and model.layers[0].rec is not None
    assert main(["export", str(run), "--format", "c", "--out", str(tmp_path / "c"),
                 "--name", "rows"]) == 0
    assert (tmp_path / "c" / "rows.c").read_text().count("rec_add(") == 2
    x = np.random.default_rng(0).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    capsys.readouterr()
    assert main(["infer", str(tmp_path / "m" / "rows.npz"), "--input", str(tmp_path / "x.npy"),
                 "--engine", "int"]) == 0
    assert "5 samples, T=28, engine int" in capsys.readouterr().out


@given(seed=st.integers(0, 2 ** 16), reset=st.sampled_from(["subtract", "zero"]),
       delay=st.booleans(), static=st.booleans(), alpha=st.sampled_from([0.5, 0.8, 0.95]))
@settings(max_examples=25, deadline=None)
def test_rsynaptic_network_follows_its_float_model(seed, reset, delay, static, alpha):
    """The feedback enters the synaptic current: J[t] = leak_alpha(J[t-1]) + I[t] + W_r S[t-1]."""
    net = rec_mlp(seed, bits=6, reset=reset, delay=delay, alpha=alpha)
    model = convert_layers(net, static=static)
    L = model.layers[0]
    assert L.rec is not None and L.drive is not None
    T = 16
    follows_float(net, model, _inputs(seed, T, static), T, static)


def test_rsynaptic_spike_counts_agree_and_the_feedback_matters():
    same = total = 0
    for seed in range(4):
        net = rec_mlp(seed, bits=8, alpha=0.8)
        model = convert_layers(net, static=True)
        x = _inputs(seed, 20, True, B=100)
        fc = np.asarray(net.forward(x / 255.0, num_steps=20)).sum(axis=0)
        ic = npe.predict(model, x, 20)
        same += int((fc == ic).all(axis=1).sum())
        total += len(x)
    assert same / total >= 0.99, same / total
    model.layers[0].rec = np.zeros_like(model.layers[0].rec)
    assert not np.array_equal(ic, npe.predict(model, x, 20))


@needs_cc
@pytest.mark.parametrize("reset,delay,leak,static", [("subtract", True, "multiply", True),
                                                     ("zero", False, "shift", False)])
def test_exported_rsynaptic_network_matches_the_engine_count_for_count(tmp_path, reset, delay,
                                                                       leak, static):
    net = rec_mlp(9, bits=6, reset=reset, delay=delay, alpha=0.8)
    model = convert_layers(net, leak=leak, static=static)
    T = 14
    x = _inputs(9, T, static, B=12)
    if not static:
        x[np.random.default_rng(8).random(x.shape) < 0.8] = 0
    size, counts, _, state = run_c(model, x, T, tmp_path, "rsyn")
    ref = npe.predict(model, x, T)
    assert np.array_equal(counts, ref) and ref.sum() > 0
    assert size == state == c_sizes(model)[1]
    model.layers[0].rec = np.zeros_like(model.layers[0].rec)
    assert not np.array_equal(counts, npe.predict(model, x, T))


@pytest.mark.parametrize("alpha", [None, 0.8])
@pytest.mark.parametrize("static,delay,reset", [(True, True, "subtract"), (False, False, "zero")])
def test_numba_general_kernel_runs_the_feedback_spike_for_spike(alpha, static, delay, reset):
    """numba_general's kernel adds W_r S[t-1] (_feedback): its counts equal the NumPy engine's."""
    net = rec_mlp(13, bits=6, reset=reset, delay=delay, alpha=alpha)
    model = convert_layers(net, static=static)
    x = _inputs(13, 18, static, B=40)
    ref = npe.predict(model, x, 18)
    assert ref.sum() > 0
    assert np.array_equal(nbe.predict(model, x, 18), ref)
