"""Learning-rate schedules (mininsnn.schedule) against their closed forms and PyTorch's stepping."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mininsnn.schedule import (HalveOnRise, constant, cosine, cosine_warm_restarts,
                               make_schedule)

lrs = st.floats(1e-3, 1.0)            # above every eta_min below
eta_mins = st.sampled_from([0.0, 1e-6, 1e-4])


def closed_cosine(k, lr0, T, eta_min):
    return eta_min + (lr0 - eta_min) * (1 + math.cos(math.pi * k / T)) / 2


def pytorch_cosine_recursive(n_steps, lr0, T, eta_min):
    """CosineAnnealingLR's chainable (recursive) update, stepped once per batch, never reset."""
    out = [lr0]
    for k in range(1, n_steps):
        prev = out[-1]
        if (k - 1 - T) % (2 * T) == 0:           # just past a trough: 1 + cos(pi*(k-1)/T) == 0
            out.append(prev + (lr0 - eta_min) * (1 - math.cos(math.pi / T)) / 2)
        else:
            out.append(eta_min + (prev - eta_min) * (1 + math.cos(math.pi * k / T))
                       / (1 + math.cos(math.pi * (k - 1) / T)))
    return out


def pytorch_sgdr_stepping(n_steps, lr0, T_0, T_mult, eta_min):
    """CosineAnnealingWarmRestarts stepped once per batch: T_cur counts up, restarts at T_i."""
    out, T_cur, T_i = [], 0, T_0
    for _ in range(n_steps):
        out.append(eta_min + (lr0 - eta_min) * (1 + math.cos(math.pi * T_cur / T_i)) / 2)
        T_cur += 1
        if T_cur >= T_i:
            T_cur -= T_i
            T_i *= T_mult
    return out


@settings(deadline=None, max_examples=60)
@given(lr0=lrs, T=st.integers(1, 10_000), eta_min=eta_mins, j=st.integers(0, 3),
       off=st.integers(-2, 2))
def test_cosine_closed_form_around_boundaries(lr0, T, eta_min, j, off):
    k = max(0, j * T + off)
    assert cosine(k, lr0, T, eta_min) == pytest.approx(closed_cosine(k, lr0, T, eta_min), rel=1e-15)


@settings(deadline=None, max_examples=40)
@given(lr0=lrs, T=st.integers(2, 5000), eta_min=eta_mins)
def test_cosine_keeps_going_past_T_max(lr0, T, eta_min):
    lr = lambda k: cosine(k, lr0, T, eta_min)  # noqa: E731
    assert lr(0) == lr0
    assert lr(T) == pytest.approx(eta_min, abs=1e-15)                        # trough at T_max
    assert lr(T + 1) == pytest.approx(lr(T - 1), rel=1e-9, abs=1e-15)        # climbs back up
    assert lr(T + 1) > lr(T)
    assert lr(2 * T) == pytest.approx(lr0, rel=1e-12)                         # not reset, periodic
    assert lr(2 * T + 1) == pytest.approx(lr(1), rel=1e-9)
    assert lr(3 * T) == pytest.approx(eta_min, abs=1e-15)


@pytest.mark.parametrize("T", [1, 2, 5, 17])
def test_cosine_equals_pytorch_recursive_stepping(T):
    lr0, eta_min = 5.4e-3, 1e-5
    rec = pytorch_cosine_recursive(4 * T + 3, lr0, T, eta_min)
    for k, r in enumerate(rec):
        assert cosine(k, lr0, T, eta_min) == pytest.approx(r, rel=1e-9, abs=1e-15), k


def test_reference_T_max_values():
    # the MNIST configs: T_max = 4690 = 10 epochs of 469 batches
    lr0 = 5.4e-3
    assert cosine(469, lr0, 4690) == pytest.approx(lr0 * (1 + math.cos(math.pi / 10)) / 2)
    assert cosine(4690, lr0, 4690) == pytest.approx(0.0, abs=1e-18)
    assert cosine(9380, lr0, 4690) == pytest.approx(lr0)


@settings(deadline=None, max_examples=60)
@given(lr0=lrs, T_0=st.integers(1, 12), T_mult=st.integers(1, 3), eta_min=eta_mins)
def test_warm_restarts_equals_pytorch_stepping(lr0, T_0, T_mult, eta_min):
    n = 200
    ref = pytorch_sgdr_stepping(n, lr0, T_0, T_mult, eta_min)
    got = [cosine_warm_restarts(k, lr0, T_0, T_mult, eta_min) for k in range(n)]
    assert got == ref                         # same integers -> same floats, exactly


@pytest.mark.parametrize("T_0", [1, 3, 10])
def test_warm_restarts_boundaries_T_mult_2(T_0):
    lr0, eta_min = 1.0, 0.0
    lr = lambda k: cosine_warm_restarts(k, lr0, T_0, 2, eta_min)  # noqa: E731
    starts = [T_0 * (2 ** i - 1) for i in range(6)]    # 0, T_0, 3 T_0, 7 T_0, ...
    for i, s in enumerate(starts):
        T_i = T_0 * 2 ** i
        assert lr(s) == lr0                                         # hard restart
        if s > 0:
            T_prev = T_i // 2                                       # last batch of previous cycle
            assert lr(s - 1) == pytest.approx((1 + math.cos(math.pi * (T_prev - 1) / T_prev)) / 2)
            if T_prev > 1:
                assert lr(s - 1) < lr(s)
        if T_i > 1:
            assert lr(s + 1) == pytest.approx((1 + math.cos(math.pi / T_i)) / 2)


def test_warm_restarts_huge_k_is_exact_at_restart():
    # a float log() would misplace this restart; the integer form must not
    T_0, T_mult = 3, 2
    s = T_0 * (T_mult ** 40 - 1) // (T_mult - 1)
    assert cosine_warm_restarts(s, 1.0, T_0, T_mult) == 1.0
    assert cosine_warm_restarts(s - 1, 1.0, T_0, T_mult) < 1e-20


@settings(deadline=None, max_examples=20)
@given(lr0=lrs, k=st.integers(0, 10 ** 9))
def test_constant(lr0, k):
    assert constant(k, lr0) == lr0
    assert make_schedule("constant", lr0).lr(k) == lr0


def test_halve_on_rise_sequence_and_state():
    s = make_schedule("halve_on_rise", 0.08)
    assert isinstance(s, HalveOnRise)
    seen = []
    for loss in [1.0, 0.9, 0.95, 0.97, 0.5, 0.5, 0.6]:
        seen.append(s.lr(123))
        s.end_epoch(loss)
    #           e0    e1    e2 (0.9<1) e3 (0.95>0.9) e4 (0.97>0.95) e5 (0.5<) e6 (0.5 == 0.5)
    assert seen == [0.08, 0.08, 0.08, 0.04, 0.02, 0.02, 0.02]
    assert s.lr(0) == 0.01                                  # 0.6 > 0.5 halved once more
    state = s.state_dict()
    t = make_schedule("halve_on_rise", 0.08)
    t.load_state_dict(state)
    assert t.lr(0) == 0.01 and t.prev_loss == 0.6
    t.end_epoch(0.7)
    assert t.lr_at(5) == 0.005


@settings(deadline=None, max_examples=30)
@given(name=st.sampled_from(["cosine", "warm_restarts", "constant"]), k=st.integers(0, 10 ** 6))
def test_pure_schedules_ignore_losses_and_round_trip(name, k):
    kw = {"cosine": {"T_max": 100}, "warm_restarts": {"T_0": 7, "T_mult": 2}, "constant": {}}[name]
    s = make_schedule(name, 1e-3, **kw)
    before = s.lr(k)
    s.end_epoch(1.0)
    s.end_epoch(2.0)
    assert s.lr(k) == before
    t = make_schedule(name, 1e-3, **kw)
    t.load_state_dict(s.state_dict())
    assert t.lr(k) == before


def test_bad_input():
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule("step", 1e-3)
    with pytest.raises(ValueError, match="cosine"):
        make_schedule("cosine", 1e-3, T_max=10, gamma=0.5)
    for bad in (0, -3, 2.5, float("nan")):
        with pytest.raises(ValueError, match="T_max"):
            make_schedule("cosine", 1e-3, T_max=bad)
    with pytest.raises(ValueError, match="T_mult"):
        make_schedule("warm_restarts", 1e-3, T_0=5, T_mult=0)
    with pytest.raises(ValueError, match="lr0"):
        make_schedule("constant", float("inf"))
    with pytest.raises(ValueError, match="batch index"):
        cosine(-1, 1e-3, 10)
    with pytest.raises(ValueError, match="batch index"):
        make_schedule("constant", 1e-3).lr(1.5)
    with pytest.raises(ValueError, match="differs"):
        make_schedule("cosine", 1e-3, T_max=10).load_state_dict(
            make_schedule("cosine", 1e-3, T_max=20).state_dict())
    assert cosine(np.int64(5), 1.0, 10) == pytest.approx(0.5)
