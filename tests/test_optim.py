"""Adam, gradient-norm clipping and weight clipping (mininsnn.optim)."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mininsnn.optim import Adam, clip_grad_norm, clip_weights


def adam_textbook(p, grads, lr, betas=(0.9, 0.999), eps=1e-8, wd=0.0):
    """Loop-per-equation reference (Kingma & Ba, bias-corrected, eps on sqrt(vhat)), float64,
    one scalar at a time. Returns the parameter after each step."""
    b1, b2 = betas
    p = np.array(p, dtype=np.float64).ravel().copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    out = []
    for n, g in enumerate(grads, start=1):
        g = np.array(g, dtype=np.float64).ravel()
        for i in range(p.size):
            gi = g[i] + wd * p[i]
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            mhat = m[i] / (1 - b1 ** n)
            vhat = v[i] / (1 - b2 ** n)
            p[i] = p[i] - lr * mhat / (math.sqrt(vhat) + eps)
        out.append(p.copy())
    return out


def test_two_steps_by_hand():
    # p0 = 1, g1 = 0.5, g2 = -0.25, lr = 0.1, eps = 0 (so every number below is exact arithmetic)
    # step 1: m = 0.05, v = 0.00025, mhat = 0.5, vhat = 0.25 -> p = 1 - 0.1 * 0.5/0.5 = 0.9
    # step 2: m = 0.045 - 0.025 = 0.02, v = 0.00024975 + 0.0000625 = 0.00031225
    #         mhat = 0.02/0.19, vhat = 0.00031225/0.001999 -> p = 0.9 - 0.1*mhat/sqrt(vhat)
    p = np.array([1.0])
    opt = Adam({"w": p}, lr=0.1, eps=0.0)
    opt.step({"w": np.array([0.5])})
    assert p[0] == pytest.approx(0.9, abs=1e-15)
    opt.step({"w": np.array([-0.25])})
    expected = 0.9 - 0.1 * (0.02 / 0.19) / math.sqrt(0.00031225 / 0.001999)
    assert p[0] == pytest.approx(expected, rel=1e-13)
    assert opt.step_count == 2


def test_first_step_moves_every_weight_by_lr():
    # with eps = 0 the first bias-corrected step is exactly lr * sign(g)
    rng = np.random.default_rng(0)
    p = rng.normal(size=(4, 5))
    p0 = p.copy()
    g = rng.normal(size=(4, 5))
    Adam({"w": p}, lr=0.01, eps=0.0).step({"w": g})
    np.testing.assert_allclose(p0 - p, 0.01 * np.sign(g), rtol=1e-12)


@settings(deadline=None, max_examples=40)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
       steps=st.integers(1, 6), seed=st.integers(0, 2 ** 16),
       lr=st.floats(1e-4, 1.0), wd=st.sampled_from([0.0, 1e-2]),
       eps=st.sampled_from([1e-8, 1e-3, 0.5]))
def test_matches_textbook_reference(shape, steps, seed, lr, wd, eps):
    # eps = 0.5 tells "eps on sqrt(vhat)" (PyTorch, here) apart from eps on sqrt(v) (paper's Alg. 1 tail)
    rng = np.random.default_rng(seed)
    p = rng.normal(size=shape)
    grads = [rng.normal(size=shape) * 10.0 ** rng.uniform(-3, 1) for _ in range(steps)]
    expected = adam_textbook(p, grads, lr, eps=eps, wd=wd)
    opt = Adam({"w": p}, lr=lr, eps=eps, weight_decay=wd)
    for n, g in enumerate(grads):
        opt.step({"w": g})
        np.testing.assert_allclose(p.ravel(), expected[n], rtol=1e-11, atol=1e-13)


def test_updates_live_views_in_place_and_keeps_float32():
    buf = np.zeros(30, dtype=np.float32)
    params = {"a": buf[:20].reshape(4, 5), "b": buf[20:]}
    grads = {"a": np.ones((4, 5), np.float32), "b": -np.ones(10, np.float32)}
    opt = Adam(params, lr=1e-3)
    opt.step(grads)
    assert params["a"].base is buf and params["a"].dtype == np.float32
    assert params["b"].dtype == np.float32
    assert np.all(buf[:20] < 0) and np.all(buf[20:] > 0)
    assert opt.exp_avg["a"].dtype == np.float32 and opt.exp_avg_sq["b"].dtype == np.float32


def test_float32_follows_pytorch_operation_order():
    # the float32 update equals PyTorch's sequence of float32 ops with float64-computed scalars
    rng = np.random.default_rng(1)
    p = rng.normal(size=50).astype(np.float32)
    g = rng.normal(size=50).astype(np.float32)
    ref = p.copy()
    opt = Adam({"w": p}, lr=3e-3)
    f = np.float32
    m = np.zeros(50, f)
    v = np.zeros(50, f)
    for n in (1, 2, 3):
        m = m * f(0.9) + f(1 - 0.9) * g
        v = v * f(0.999) + (f(1 - 0.999) * g) * g
        denom = np.sqrt(v) / f(math.sqrt(1 - 0.999 ** n)) + f(1e-8)
        ref = ref + (f(-3e-3 / (1 - 0.9 ** n)) * m) / denom
        opt.step({"w": g})
        np.testing.assert_array_equal(p, ref)


def test_lr_argument_overrides_and_is_kept():
    p = np.array([0.0])
    opt = Adam({"w": p}, lr=1.0, eps=0.0)
    opt.step({"w": np.array([1.0])}, lr=0.25)
    assert p[0] == pytest.approx(-0.25)
    assert opt.lr == 0.25


def test_state_dict_round_trip_is_bit_identical():
    rng = np.random.default_rng(2)
    init = {"a": rng.normal(size=(3, 3)).astype(np.float32), "b": rng.normal(size=4).astype(np.float32)}
    grads = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in init.items()} for _ in range(5)]
    straight = {k: v.copy() for k, v in init.items()}
    opt = Adam(straight, lr=1e-2)
    for g in grads:
        opt.step(g)
    first = {k: v.copy() for k, v in init.items()}
    opt1 = Adam(first, lr=1e-2)
    for g in grads[:2]:
        opt1.step(g)
    state = opt1.state_dict()
    assert not np.shares_memory(state["exp_avg"]["a"], opt1.exp_avg["a"])   # copies, not views
    resumed = {k: v.copy() for k, v in first.items()}
    opt2 = Adam(resumed, lr=123.0)
    opt2.load_state_dict(state)
    assert opt2.step_count == 2 and opt2.lr == 1e-2
    for g in grads[2:]:
        opt2.step(g)
    for k in init:
        np.testing.assert_array_equal(resumed[k], straight[k])
    assert isinstance(state["step"], int)
    assert all(isinstance(a, np.ndarray) for a in state["exp_avg_sq"].values())


def test_bad_grads_and_lr_name_the_parameter():
    opt = Adam({"conv1.weight": np.zeros((2, 2)), "fc1.weight": np.zeros(3)}, lr=1e-3)
    with pytest.raises(ValueError, match="fc1.weight"):
        opt.step({"conv1.weight": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="bogus"):
        opt.step({"conv1.weight": np.zeros((2, 2)), "fc1.weight": np.zeros(3), "bogus": np.zeros(1)})
    with pytest.raises(ValueError, match="conv1.weight"):
        opt.step({"conv1.weight": np.zeros((2, 3)), "fc1.weight": np.zeros(3)})
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="learning rate"):
            opt.step({"conv1.weight": np.zeros((2, 2)), "fc1.weight": np.zeros(3)}, lr=bad)
    assert opt.step_count == 0
    with pytest.raises(ValueError, match="fc1.weight"):
        bad_state = opt.state_dict()
        bad_state["exp_avg_sq"]["fc1.weight"] = np.zeros(4)
        opt.load_state_dict(bad_state)


@settings(deadline=None, max_examples=50)
@given(seed=st.integers(0, 2 ** 16), scale=st.floats(1e-3, 1e3), max_norm=st.floats(0.1, 10.0))
def test_clip_grad_norm(seed, scale, max_norm):
    rng = np.random.default_rng(seed)
    grads = {"a": (rng.normal(size=(3, 4)) * scale), "b": (rng.normal(size=5) * scale)}
    before = {k: v.copy() for k, v in grads.items()}
    norm = clip_grad_norm(grads, max_norm)
    expected = math.sqrt(sum(float((v ** 2).sum()) for v in before.values()))
    assert norm == pytest.approx(expected, rel=1e-12)
    coef = max_norm / (expected + 1e-6)
    for k in grads:
        if coef < 1:
            np.testing.assert_allclose(grads[k], before[k] * coef, rtol=1e-12)
        else:
            np.testing.assert_array_equal(grads[k], before[k])
    after = math.sqrt(sum(float((v ** 2).sum()) for v in grads.values()))
    assert after <= max_norm * (1 + 1e-9)


def test_clip_grad_norm_keeps_float32_in_place():
    g = np.full(4, 10.0, dtype=np.float32)
    grads = {"w": g}
    assert clip_grad_norm(grads, 1.0) == pytest.approx(20.0)
    assert grads["w"] is g and g.dtype == np.float32
    np.testing.assert_allclose(g, 0.5, rtol=1e-6)


def test_clip_weights_in_place():
    p = np.array([-3.0, -0.5, 0.0, 0.999, 2.0], dtype=np.float32)
    params = {"w": p}
    clip_weights(params)
    assert params["w"] is p
    np.testing.assert_array_equal(p, np.array([-1.0, -0.5, 0.0, 0.999, 1.0], np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_adam_refuses_a_non_finite_gradient_and_changes_nothing(bad):
    p = {"a": np.ones(3, np.float32), "b": np.ones((2, 2), np.float32)}
    opt = Adam(p, lr=0.1)
    opt.step({"a": np.full(3, 0.5, np.float32), "b": np.full((2, 2), 0.5, np.float32)})
    before = ({k: v.copy() for k, v in p.items()}, {k: v.copy() for k, v in opt.exp_avg.items()},
              {k: v.copy() for k, v in opt.exp_avg_sq.items()}, opt.step_count)
    g = {"a": np.zeros(3, np.float32), "b": np.zeros((2, 2), np.float32)}
    g["b"][1, 0] = bad
    with pytest.raises(ValueError, match=r"Adam.step: the gradient of parameter 'b' holds NaN or inf; nothing was updated"):
        opt.step(g)
    for got, want in zip(({**p}, opt.exp_avg, opt.exp_avg_sq), before[:3]):
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    assert opt.step_count == before[3]


def test_adam_check_finite_false_lets_nan_through():
    p = {"a": np.ones(2)}
    opt = Adam(p, lr=0.1, check_finite=False)
    opt.step({"a": np.array([np.nan, 1.0])})
    assert np.isnan(p["a"][0]) and np.isfinite(p["a"][1]) and opt.step_count == 1


def test_adam_finite_check_accepts_huge_finite_gradients():
    p = {"a": np.zeros(4, np.float32)}
    Adam(p, lr=0.1).step({"a": np.full(4, 3e38, np.float32)})
    assert np.isfinite(p["a"]).all()


def test_adam_state_with_nan_is_refused():
    p = {"a": np.ones(2)}
    state = Adam(p, lr=0.1).state_dict()
    state["exp_avg_sq"]["a"][1] = np.inf
    with pytest.raises(ValueError, match="exp_avg_sq of parameter 'a' holds NaN or inf"):
        Adam(p, lr=0.1).load_state_dict(state)


@settings(deadline=None)
@given(n=st.integers(1, 50), where=st.integers(0, 49), bad=st.sampled_from([np.nan, np.inf, -np.inf, None]),
       dtype=st.sampled_from([np.float32, np.float64]), scale=st.sampled_from([1.0, 1e20, 1e200]))
def test_find_nonfinite_names_exactly_the_arrays_with_nan_or_inf(n, where, bad, dtype, scale):
    from mininsnn.optim import find_nonfinite
    with np.errstate(over="ignore"):
        a = (np.linspace(-1, 1, n) * scale).astype(dtype)   # float32 * 1e200 -> inf: counted
    if bad is not None:
        a[where % n] = bad
    arrays = {"ok": np.ones(3, dtype), "int": np.arange(3), "a": a}
    expect = None if np.isfinite(a).all() else "a"
    assert find_nonfinite(arrays) == expect
