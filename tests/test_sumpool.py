"""SumPool2d (zero padding): backward against finite differences, kernels against plain twins,
spikes in, a hand-computed case, bad input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mininsnn.kernels import pool as kpool
from mininsnn.layers import Context, SumPool2d
from tests.test_layers import check_layer

cases = st.fixed_dictionaries(dict(
    TI=st.integers(1, 2), B=st.integers(1, 2), C=st.integers(1, 3), k=st.integers(1, 3), s=st.integers(1, 3),
    p=st.integers(0, 2), H=st.integers(3, 7), W=st.integers(3, 7), seed=st.integers(0, 2**31)))


def _ctx():
    return Context(T=2, training=True, rng=np.random.default_rng(0))


@settings(deadline=None)
@given(c=cases)
def test_sumpool_gradients(c):
    layer = SumPool2d(c["k"], c["s"], c["p"])
    x = np.random.default_rng(c["seed"]).standard_normal((c["TI"], c["B"], c["C"], c["H"], c["W"]))
    check_layer(layer, x, _ctx(), c["seed"])


@settings(deadline=None)
@given(c=cases, dtype=st.sampled_from([np.float32, np.float64]))
def test_sumpool_kernels_equal_plain_twins(c, dtype):
    """Forward: the same additions in the same order, bit for bit; backward (scatter vs gather):
    within rounding."""
    rng = np.random.default_rng(c["seed"])
    k, s, p = c["k"], c["s"], c["p"]
    X = rng.standard_normal((c["B"], c["C"], c["H"], c["W"])).astype(dtype)
    OH, OW = (c["H"] + 2 * p - k) // s + 1, (c["W"] + 2 * p - k) // s + 1
    Y, Yp = np.empty((c["B"], c["C"], OH, OW), dtype), np.empty((c["B"], c["C"], OH, OW), dtype)
    kpool.sumpool_forward(X, k, s, p, Y)
    kpool.sumpool_forward_plain(X, k, s, p, Yp)
    np.testing.assert_array_equal(Y, Yp)
    dY = rng.standard_normal(Y.shape).astype(dtype)
    dX, dXp = np.full(X.shape, 3.0, dtype), np.empty(X.shape, dtype)
    kpool.sumpool_backward(dY, k, s, p, dX)
    kpool.sumpool_backward_plain(dY, k, s, p, dXp)
    np.testing.assert_allclose(dX, dXp, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)


def test_hand_computed_padding_and_spikes():
    """3x3 ones, k 2, stride 2, padding 1: windows cover 1, 2, 2, 4 input ones; uint8 spikes in, float32 out."""
    x = np.ones((1, 1, 1, 3, 3), np.uint8)
    y = SumPool2d(2, 2, 1).forward(x, Context(T=1, training=False, rng=None))
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y[0, 0, 0], [[1, 2], [2, 4]])


@pytest.mark.parametrize("kw, msg", [(dict(kernel_size=0), "kernel_size"), (dict(kernel_size=2, stride=0), "stride"),
                                     (dict(kernel_size=2, padding=-1), "padding"),
                                     (dict(kernel_size=2, padding=True), "padding")])
def test_bad_hyperparameters(kw, msg):
    with pytest.raises(ValueError, match=msg):
        SumPool2d(**kw)


def test_window_larger_than_padded_input_is_refused():
    with pytest.raises(ValueError, match="smaller than the 5x5 window"):
        SumPool2d(5, padding=1).forward(np.zeros((1, 1, 1, 2, 2)), _ctx())
