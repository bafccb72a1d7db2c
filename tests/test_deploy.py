"""mininsnn.deploy: folding, the overflow proof, the NumPy and Numba integer engines, model files.

The float model here is mininsnn's own network in float64 (eval mode). The integer engine is exact
up to the rounding of Theta, Bias and the leak, whose effect on a membrane the converter bounds
(IntLayer.tol, docs/deploy.md): so the first spike that differs between the two must come from a
float membrane within tol of the threshold. That is what the folding tests check, for random small
models with negative and zero BatchNorm gains, both resets, both leaks, bits 2..16 and F < 0.
"""
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mininsnn import surrogate as sg
from mininsnn.deploy import conversion as cv
from mininsnn.deploy import engine as npe
from mininsnn.deploy import modelfile as mf
from mininsnn.deploy import numba_engine as nbe
from mininsnn.layers import fuse_avgpool
from mininsnn.config import ARCHITECTURES as _ARCH
from mininsnn.models import reference_network
from mininsnn.quant import quantize_forward

REPO = Path(__file__).resolve().parents[1]
SHAPE = (1, 16, 16)      # the smallest input two 5x5 conv + 2x2 pool stages accept


def small_model(seed, bits, beta, theta, reset, batchnorm=True, channels=(3, 4), classes=3,
                in_shape=SHAPE, gains="mixed", weight_scale=1.0):
    """A float64 reference network with random weights and BatchNorm (negative and zero gains)."""
    net = reference_network(in_shape, channels, classes, bits=bits, beta=beta, threshold=theta,
                            surrogate=sg.fast_sigmoid(5.0), dropout=0.0, batchnorm=batchnorm,
                            reset=reset, seed=seed, dtype=np.float64)
    rng = np.random.default_rng(seed + 1)
    for k, p in net.params.items():
        if k.endswith(".weight") and p.ndim > 1:
            p[...] = rng.normal(0, weight_scale, p.shape)
    if batchnorm:
        for i, c in ((1, channels[0]), (2, channels[1])):
            g = rng.normal(0, 1.0, c)
            if gains == "mixed":
                g[0] = -abs(g[0])   # a negative gain flips the sign of the accumulator
                g[-1] = 0.0          # gamma = 0: a constant current
            net.params[f"bn{i}.weight"][...] = g
            net.params[f"bn{i}.bias"][...] = rng.normal(0.3, 1.0, c)
            net.buffers[f"bn{i}.running_mean"][...] = rng.normal(0, 2.0, c)
            net.buffers[f"bn{i}.running_var"][...] = rng.uniform(0.5, 20.0, c)
    net.config = {"beta": beta, "threshold": theta, "reset": reset, "bits": bits,
                  "batchnorm": batchnorm, "dataset": "mnist", "num_steps": 20}
    return net.eval()


def float_run(net, x, T, static):
    """Float spikes and membranes (T, B, ...) of every LIF layer."""
    xin = (x / 255.0) if static else x.astype(np.float64)
    net.forward(xin, num_steps=T if static else None, record=("spikes", "membrane"))
    return net.recorded["spikes"], net.recorded["membrane"]


def first_difference_is_near_threshold(model, spikes_f, U, rec_int, theta):
    """At the first step where the first differing layer differs, every differing neuron's float
    membrane is within that layer's tolerance of theta (the inputs agree up to then)."""
    for L, lif in zip(model.layers, ("lif1", "lif2", "lif3")):
        a, b = rec_int[L.name], spikes_f[lif]
        d = a != b
        if not d.any():
            continue
        t0 = int(np.argmax(d.reshape(d.shape[0], -1).any(axis=1)))
        idx = np.argwhere(d[t0])                               # (b, c, ...) of differing neurons
        margin = np.abs(U[lif][t0][d[t0]] - theta)
        tol = L.tol[idx[:, 1]] * (1 + 1e-9) + 1e-12 * theta
        assert (margin <= tol).all(), (L.name, t0, margin.min(), tol.min())
        return L.name
    return None


# ------------------------------------------------------------------------------------------------
# codes and folding

@given(bits=st.integers(2, 16), seed=st.integers(0, 2 ** 16))
def test_quant_codes_are_the_training_quantizer(bits, seed):
    W = np.random.default_rng(seed).normal(0, 0.3, (5, 4, 3, 3)).astype(np.float32)
    q, s = cv.quant_codes(W, bits)
    Wq, scale = quantize_forward(W, bits)
    assert s == scale and np.array_equal((q * np.float32(s)).astype(np.float32), Wq)
    assert np.abs(q).max() == 2 ** (bits - 1) - 1


@given(seed=st.integers(0, 2 ** 16))
def test_fused_codes_are_the_fused_average_pool_times_four(seed):
    q = np.random.default_rng(seed).integers(-7, 8, (3, 2, 5, 5))
    assert np.array_equal(cv.fuse_pool_codes(q), fuse_avgpool(q.astype(np.float64), 2) * 4)
    assert np.abs(cv.fuse_pool_codes(np.full((1, 1, 5, 5), 7))).max() == 28   # |qf| <= 4L


def test_input_shapes_match_the_models():
    for name, (shape, *_rest) in _ARCH.items():
        assert cv.INPUT_SHAPES[name] == shape


CASES = st.fixed_dictionaries({
    "seed": st.integers(0, 2 ** 16), "bits": st.integers(2, 16),
    "beta": st.sampled_from([0.0, 0.5, 0.9, 0.97, 1.0]), "theta": st.floats(0.2, 3.0),
    "reset": st.sampled_from(["subtract", "zero"]), "leak": st.sampled_from(["multiply", "shift"]),
    "batchnorm": st.booleans(), "static": st.booleans()})


@settings(max_examples=25)
@given(case=CASES)
def test_integer_engine_follows_the_float_model(case):
    """Spikes equal the float64 model's except where a float membrane lies within the proven
    tolerance of the threshold (and then only from that step on)."""
    beta, leak, shift = case["beta"], case["leak"], None
    if leak == "shift":     # the float model gets the leak the shifts implement exactly
        shift = {0.0: 1, 0.5: 1, 0.9: 3, 0.97: 5, 1.0: 8}[beta]
        beta = 1 - 2.0 ** -shift
    net = small_model(case["seed"], case["bits"], beta, case["theta"], case["reset"],
                      case["batchnorm"])
    T = 12
    try:
        model = cv.convert(net.state_dict(), net.config, leak=leak, shift=shift, num_steps=T,
                           input_shape=SHAPE, static=case["static"], input_max=255)
    except cv.OverflowProofError:
        assume(False)   # (wide weights and beta = 1 may not fit int32 even at F = -16)
    rng = np.random.default_rng(case["seed"])
    x = rng.integers(0, 256, (3,) + SHAPE if case["static"] else (T, 3) + SHAPE).astype(np.uint8)
    if not case["static"]:
        x[rng.random(x.shape) < 0.7] = 0       # sparse event counts
    spikes_f, U = float_run(net, x, T, case["static"])
    _, rec = npe.forward(model, x, T, record=True)
    first_difference_is_near_threshold(model, spikes_f, U, rec, case["theta"])


def test_negative_and_zero_gains_are_folded_into_sign_and_bias():
    net = small_model(3, 4, 0.9, 1.0, "subtract")
    model = cv.convert(net.state_dict(), net.config, input_shape=SHAPE, static=True)
    for L, bn in zip(model.layers[:2], ("bn1", "bn2")):
        g = net.params[f"{bn}.weight"]
        assert np.array_equal(L.sign, np.sign(g).astype(np.int8))
        assert L.sign[0] == -1 and L.sign[-1] == 0
        # gamma = 0: current b_c in units max(theta, |b_c|) / 2^20
        b = net.params[f"{bn}.bias"][-1]
        u = max(1.0, abs(b)) / 2 ** cv.ZERO_GAIN_BITS
        assert L.bias[-1] == round(b / u) and L.theta[-1] == round(1.0 / u)


@given(seed=st.integers(0, 2 ** 16), F=st.integers(-4, 12), bits=st.integers(2, 8))
def test_theta_bias_and_sign_are_the_folded_float_parameters(seed, F, bits):
    """Theta_c = rint(theta / u_c), Bias_c = rint(b_c / u_c), u_c = |k_c| / 2^F, from scratch."""
    net = small_model(seed, bits, 0.5, 1.3, "subtract", gains="any")
    try:
        model = cv.convert(net.state_dict(), net.config, frac_bits=F, input_shape=SHAPE, static=True)
    except cv.OverflowProofError:
        assume(False)
    p, b = net.params, net.buffers
    for L, conv, bn, scale in ((model.layers[0], "conv1", "bn1", 1 / (255 * 4)),
                               (model.layers[1], "conv2", "bn2", 1 / 4)):
        _, s = quantize_forward(p[f"{conv}.weight"], bits)
        g = p[f"{bn}.weight"] / np.sqrt(b[f"{bn}.running_var"] + 1e-5)
        k = g * s * scale
        bc = p[f"{bn}.bias"] - g * b[f"{bn}.running_mean"]
        u = np.abs(k) / 2.0 ** F
        assert np.array_equal(L.sign, np.sign(k))
        assert np.array_equal(L.theta, np.rint(1.3 / u)) and np.array_equal(L.bias, np.rint(bc / u))
    _, s3 = quantize_forward(p["fc1.weight"], bits)
    assert np.array_equal(model.layers[2].theta, np.rint(np.full(3, 1.3 / (s3 / 2.0 ** F))))


def test_real_model_agrees_on_a_few_images():
    """The shipped MNIST model (float32 engine vs integer engine) on 16 test images."""
    from mininsnn import pretrained
    from mininsnn.data import load_mnist

    net = pretrained.load("mnist-4bit")
    model = pretrained.load_integer("mnist-4bit")
    x = load_mnist("test").images[:16][:, None]
    f = net.forward((x / np.float32(255)).astype(np.float32), num_steps=100)
    counts = nbe.predict(model, x, 100)
    assert np.array_equal(counts.argmax(axis=1), f.sum(axis=0).argmax(axis=1))
    assert np.abs(counts - f.sum(axis=0)).sum() <= 2


# ------------------------------------------------------------------------------------------------
# the overflow proof

@given(M=st.integers(0, 10 ** 6), theta=st.integers(0, 10 ** 6), Q=st.integers(4, 30),
       beta=st.floats(0.0, 0.999), reset=st.sampled_from(["subtract", "zero"]),
       leak=st.sampled_from(["multiply", "shift"]), seed=st.integers(0, 2 ** 16))
def test_membrane_bound_holds_for_adversarial_inputs(M, theta, Q, beta, reset, leak, seed):
    """|V[t]| <= membrane_bound for inputs at the extremes and at random within |I| <= M."""
    if leak == "multiply":
        bq = round(beta * 2 ** Q)
        lk, b_eff, e = (lambda v: (v * bq + 2 ** (Q - 1)) >> Q), Fraction(bq, 2 ** Q), 0.5
    else:
        k = max(1, min(30, Q // 3))
        lk, b_eff, e = (lambda v: v - (v >> k)), 1 - Fraction(1, 2 ** k), 1.0
    B = cv.membrane_bound(M, theta, float(b_eff), e, reset, num_steps=300)   # (beta_eff may be 1)
    rng = np.random.default_rng(seed)
    for inputs in (np.full(300, M), np.full(300, -M), np.resize([M, -M], 300),
                   np.resize([M] * 5 + [-M] * 5, 300), rng.integers(-M, M + 1, 300)):
        v, r = 0, False
        for i in inputs:
            v = lk(v) + int(i)
            if r:
                v = 0 if reset == "zero" else v - theta
            assert abs(v) <= B
            r = v > theta


def test_converter_refuses_an_overflowing_model_with_the_numbers():
    net = small_model(0, 8, 0.99, 1.0, "subtract")
    with pytest.raises(cv.OverflowProofError, match=r"conv1: the .* can reach \d+ > 2147483647 "
                                                r"\(int32\) with F=20"):
        cv.convert(net.state_dict(), net.config, frac_bits=20, input_shape=SHAPE, static=True)
    model = cv.convert(net.state_dict(), net.config, input_shape=SHAPE, static=True)  # F = max
    for L in model.layers:
        assert L.bounds["membrane"] <= 2 ** 31 - 1
        with pytest.raises(cv.OverflowProofError):
            cv.convert(net.state_dict(), net.config, frac_bits=[L.frac_bits + (L.name == "conv1"),
                                                                 model.layers[1].frac_bits + 1,
                                                                 model.layers[2].frac_bits + 1],
                       input_shape=SHAPE, static=True)


def test_beta_one_needs_num_steps_and_the_engine_enforces_it():
    net = small_model(1, 4, 1.0, 1.0, "subtract")
    with pytest.raises(cv.OverflowProofError, match="pass num_steps"):
        cv.convert(net.state_dict(), net.config, input_shape=SHAPE, static=True)
    model = cv.convert(net.state_dict(), net.config, num_steps=50, input_shape=SHAPE, static=True)
    with pytest.raises(npe.InputError, match="T <= 50"):
        npe.forward(model, np.zeros((1,) + SHAPE, np.uint8), 51)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_post_training_quantization_folds_the_fc_bias(seed):
    """A full-precision model (fc1 has a bias) converted with bits=4 follows the float model whose
    weights are those 4-bit weights."""
    net = small_model(seed, None, 0.9, 1.0, "subtract")
    for k in ("conv1.weight", "conv2.weight", "fc1.weight"):
        net.params[k][...] = quantize_forward(net.params[k], 4)[0]
    net.params["fc1.bias"][...] = np.random.default_rng(seed).normal(0, 2.0, 3)
    model = cv.convert(net.state_dict(), net.config, bits=4, input_shape=SHAPE, static=True)
    assert model.layers[2].bias.any()
    x = np.random.default_rng(seed).integers(0, 256, (4,) + SHAPE).astype(np.uint8)
    spikes_f, U = float_run(net, x, 20, True)
    _, rec = npe.forward(model, x, 20, record=True)
    first_difference_is_near_threshold(model, spikes_f, U, rec, 1.0)
    assert rec["fc1"].any()


def test_full_precision_needs_bits():
    cfg = {"beta": 0.9, "threshold": 1.0, "reset": "subtract", "bits": None, "batchnorm": True,
           "dataset": "mnist"}
    net = small_model(0, None, 0.9, 1.0, "subtract")
    with pytest.raises(cv.ConversionError, match="full-precision model: pass bits"):
        cv.convert(net.state_dict(), cfg, input_shape=SHAPE)
    cv.convert(net.state_dict(), cfg, bits=8, input_shape=SHAPE)    # fc1.bias folded


# ------------------------------------------------------------------------------------------------
# the engines

@given(seed=st.integers(0, 2 ** 16), C=st.integers(1, 3), O=st.integers(1, 5),
       K=st.integers(1, 6), stride=st.integers(1, 3), rate=st.floats(0.0, 1.0))
def test_conv_on_spikes_equals_the_dense_conv(seed, C, O, K, stride, rate):
    rng = np.random.default_rng(seed)
    H = K + stride * rng.integers(0, 4)
    S = (rng.random((4, C, H, H + 1)) < rate).astype(np.uint8)
    w = rng.integers(-28, 29, (O, C, K, K)).astype(np.int8)
    ref = npe.conv_int_plain(S, w, stride)
    OH, OW = ref.shape[2:]
    got = npe.conv_spikes(S, npe.pattern_table(w, np.int16), K, K, stride, (OH, OW))
    assert np.array_equal(got, ref)
    assert np.array_equal(npe.conv_int(S, w, stride), ref)
    F = C * H * (H + 1)
    w2 = rng.integers(-7, 8, (O, F)).astype(np.int8)
    flat = S.reshape(4, F)
    assert np.array_equal(npe.linear_spikes(flat, npe.byte_table(w2, np.int32)),
                          flat.astype(np.int64) @ w2.T.astype(np.int64))


ENGINE_CASES = st.fixed_dictionaries({
    "seed": st.integers(0, 2 ** 16), "bits": st.integers(2, 8),
    "frac_bits": st.one_of(st.just("max"), st.integers(-3, 6)),
    "beta": st.sampled_from([0.0, 0.6, 0.95]), "reset": st.sampled_from(["subtract", "zero"]),
    "leak": st.sampled_from(["multiply", "shift"]), "static": st.booleans(),
    "leak_bits": st.integers(4, 30), "channels": st.tuples(st.integers(1, 4), st.integers(1, 5))})


@settings(max_examples=25)
@given(case=ENGINE_CASES)
def test_numpy_and_numba_engines_give_identical_spikes(case):
    net = small_model(case["seed"], case["bits"], case["beta"], 1.0, case["reset"],
                      channels=case["channels"])
    try:
        model = cv.convert(net.state_dict(), net.config, frac_bits=case["frac_bits"],
                           leak=case["leak"], leak_bits=case["leak_bits"], input_shape=SHAPE,
                           static=case["static"])
    except cv.OverflowProofError:
        assume(False)
    rng = np.random.default_rng(case["seed"])
    T = 9
    x = rng.integers(0, 256, (5,) + SHAPE if case["static"] else (T, 5) + SHAPE).astype(np.uint8)
    out, rec = npe.forward(model, x, T, record=True)
    counts, rec2 = nbe.forward(model, x, T, record=True)
    for k in rec:
        assert np.array_equal(rec[k], rec2[k]), k
    assert np.array_equal(counts, out.sum(axis=0))


@pytest.mark.parametrize("width", [32, 64])
@pytest.mark.parametrize("static", [True, False])
def test_numba_engine_s_fixed_width_rows_give_the_numpy_engine_s_spikes(width, static):
    # conv2 widths 32 and 64 (the paper's networks) take their own constant-length row loops
    net = small_model(width, 4, 0.9, 1.0, "subtract", channels=(3, width), gains="random")
    model = cv.convert(net.state_dict(), net.config, input_shape=SHAPE, static=static)
    rng = np.random.default_rng(width)
    T = 12
    x = rng.integers(0, 256, (6,) + SHAPE if static else (T, 6) + SHAPE).astype(np.uint8)
    out, rec = npe.forward(model, x, T, record=True)
    counts, rec2 = nbe.forward(model, x, T, record=True)
    assert rec["conv1"].any() and rec["conv2"].any()        # spikes reach conv2's rows
    for k in rec:
        assert np.array_equal(rec[k], rec2[k]), k
    assert np.array_equal(counts, out.sum(axis=0))


def test_engines_reject_bad_input_in_one_line():
    from mininsnn import pretrained
    model = pretrained.load_integer("mnist-4bit")
    for x, msg in ((np.zeros((2, 28, 28), np.uint8), r"shape \(B, 1, 28, 28\)"),
                   (np.zeros((2, 1, 28, 28), np.float32), "integer input"),
                   (np.full((2, 1, 28, 28), 300, np.int32), r"0\.\.255, got 300\.\.300"),
                   (np.full((2, 1, 28, 28), -1, np.int16), "0..255")):
        for engine in (npe, nbe):
            with pytest.raises(npe.InputError, match=msg) as e:
                engine.predict(model, x, 10)
            assert "\n" not in str(e.value)


def test_numpy_engine_runs_without_numba(tmp_path):
    """mininsnn.deploy, the model files and the pretrained models work where Numba is absent."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text("import sys\nsys.modules['numba'] = None\n")
    code = textwrap.dedent("""
        import sys
        import numpy as np
        try:
            import numba
        except ImportError:
            pass
        else:
            raise SystemExit("numba is importable")
        from mininsnn import pretrained
        from mininsnn.deploy import predict, load_integer_model, save_integer_model
        from mininsnn.deploy.cexport import export_c
        from mininsnn.data import load_mnist
        model = pretrained.load_integer("mnist-4bit")
        save_integer_model(model, sys.argv[1] + "/m.npz")
        model = load_integer_model(sys.argv[1] + "/m.npz")
        export_c(model, sys.argv[1], "m")
        counts = predict(model, load_mnist("test").images[:4][:, None], num_steps=20)
        print(counts.argmax(axis=1).tolist())
        assert not any(m == "numba" or m.startswith("numba.") for m in sys.modules
                       if sys.modules[m] is not None)
    """)
    env = {"PYTHONPATH": f"{shim}:{REPO}", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[7, 2, 1, 0]"


# ------------------------------------------------------------------------------------------------
# model files

def test_integer_model_file_round_trip_and_damage(tmp_path):
    net = small_model(5, 4, 0.9, 1.0, "zero")
    model = cv.convert(net.state_dict(), net.config, leak="shift", frac_bits=[-2, 3, 5],
                       input_shape=SHAPE, static=False)
    path = tmp_path / "m.npz"
    mf.save_integer_model(model, path)
    back = mf.load_integer_model(path)
    x = np.random.default_rng(0).integers(0, 4, (6, 2) + SHAPE).astype(np.uint8)
    assert np.array_equal(npe.predict(back, x), npe.predict(model, x))
    assert [L.frac_bits for L in back.layers] == [-2, 3, 5] and back.leak == model.leak
    raw = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    flipped = bytearray(raw)
    flipped[len(raw) // 3] ^= 0xFF
    (tmp_path / "flip.npz").write_bytes(bytes(flipped))
    (tmp_path / "other.npz").write_bytes(b"hello")
    for name in ("cut.npz", "flip.npz", "other.npz", "missing.npz"):
        with pytest.raises(mf.ModelFileError, match=name) as e:
            mf.load_integer_model(tmp_path / name)
        assert "\n" not in str(e.value)


def test_edited_thresholds_that_would_overflow_are_refused(tmp_path):
    net = small_model(5, 4, 0.9, 1.0, "subtract")
    model = cv.convert(net.state_dict(), net.config, input_shape=SHAPE, static=True)
    arrays, meta = mf.model_arrays_meta(model)
    arrays["conv2.bias"] = np.full_like(arrays["conv2.bias"], 2 ** 30)
    (tmp_path / "edit.npz").write_bytes(mf.npz_bytes(arrays, meta))
    with pytest.raises(mf.ModelFileError, match=r"edit.npz: conv2: the .* can reach \d+ > 2147483647"):
        mf.load_integer_model(tmp_path / "edit.npz")
