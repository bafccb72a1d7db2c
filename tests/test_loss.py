import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mininsnn.loss import accuracy, ce_count_loss, ce_rate_loss, mse_count_loss
from tests.gradcheck import assert_close_grad, numeric_grad

cases = st.fixed_dictionaries(dict(T=st.integers(1, 8), B=st.integers(1, 4), C=st.integers(2, 5),
                                   seed=st.integers(0, 2**31)))


def _data(c):
    rng = np.random.default_rng(c["seed"])
    S = rng.random((c["T"], c["B"], c["C"]))  # real-valued "spikes": the losses are smooth in S
    y = rng.integers(0, c["C"], c["B"])
    return S, y


@pytest.mark.parametrize("fn", [mse_count_loss, ce_rate_loss, ce_count_loss])
@given(c=cases)
def test_gradient_equals_finite_differences(fn, c):
    S, y = _data(c)
    _, dS = fn(S, y)
    assert_close_grad(dS, numeric_grad(lambda: fn(S, y)[0], S), what=fn.__name__)


def test_mse_count_hand_computed():
    # T = 10: targets int(8) for the true class, int(2) otherwise
    S = np.zeros((10, 1, 3), np.uint8)
    S[:5, 0, 0] = 1  # count 5 for class 0 (true), 0 for the others
    loss, d = mse_count_loss(S, np.array([0]))
    assert loss == pytest.approx(((5 - 8) ** 2 + 2 * 2 ** 2) / 3 / 10)
    np.testing.assert_allclose(d[0, 0], [2 * (5 - 8) / 30, 2 * (0 - 2) / 30, 2 * (0 - 2) / 30])
    assert d.dtype == np.float64 and d.shape == S.shape                 # integer spikes: lossless
    np.testing.assert_array_equal(d[0, 0], [2 * (5 - 8) / 30, 2 * (0 - 2) / 30, 2 * (0 - 2) / 30])
    loss32, d32 = mse_count_loss(S, np.array([0]), dtype=np.float32)
    assert loss32 == loss and d32.dtype == np.float32
    np.testing.assert_array_equal(d32, d.astype(np.float32))           # rounded once, from float64
    with pytest.raises(ValueError, match="float32 or float64"):
        mse_count_loss(S, np.array([0]), dtype=np.int32)


def test_mse_count_targets_use_int_truncation():
    S = np.zeros((7, 1, 2), np.uint8)  # int(7 * 0.8) = 5, int(7 * 0.2) = 1
    loss, _ = mse_count_loss(S, np.array([1]))
    assert loss == pytest.approx((1 + 25) / 2 / 7)


def test_accuracy_ties_go_to_lowest_index():
    S = np.zeros((4, 3, 3), np.uint8)
    S[:, 1, 1] = 1
    S[:, 1, 2] = 1  # tie between 1 and 2 -> 1
    # sample 0 and 2: no spikes -> class 0
    assert accuracy(S, np.array([0, 1, 0])) == 1.0
    assert accuracy(S, np.array([1, 2, 0])) == pytest.approx(1 / 3)


@pytest.mark.parametrize("fn", [mse_count_loss, ce_rate_loss, ce_count_loss, accuracy])
def test_bad_inputs(fn):
    S = np.zeros((4, 2, 3))
    with pytest.raises(ValueError, match="shape"):
        fn(S[0], np.array([0, 1]))
    with pytest.raises(ValueError, match="targets"):
        fn(S, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="0..2"):
        fn(S, np.array([0, 3]))
    with pytest.raises(ValueError, match="integer"):
        fn(S, np.array([0.0, 1.0]))
    S[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fn(S, np.array([0, 1]))
