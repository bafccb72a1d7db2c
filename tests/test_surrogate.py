import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mininsnn import surrogate as sg

SURROGATES = [sg.fast_sigmoid(13.84), sg.fast_sigmoid(0.5), sg.sigmoid(5.0), sg.sigmoid(25.0), sg.atan(2.0), sg.atan(0.3)]


@pytest.mark.parametrize("s", SURROGATES, ids=repr)
@given(x=st.floats(-5, 5).filter(lambda v: abs(v) > 1e-3))
def test_derivative_is_finite_difference_of_primitive(s, x):
    eps = 1e-6
    fd = (s.primitive(x + eps) - s.primitive(x - eps)) / (2 * eps)
    assert abs(s.grad(x) - fd) <= 1e-6 * max(1.0, abs(fd))


@pytest.mark.parametrize("s", SURROGATES, ids=repr)
@given(x=st.floats(-50, 50))
def test_numba_and_numpy_forms_agree(s, x):
    assert sg.sg_grad(s.code, s.k, x) == pytest.approx(float(s.grad(x)), rel=1e-12, abs=1e-300)
    assert sg.sg_primitive(s.code, s.k, x) == pytest.approx(float(s.primitive(x)), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("s", SURROGATES, ids=repr)
def test_forward_is_strict_step(s):
    x = np.array([-1.0, -1e-12, 0.0, 1e-12, 3.0])
    np.testing.assert_array_equal(s.forward(x), [0, 0, 0, 1, 1])


def test_fast_sigmoid_matches_reference_formula():
    k, x = 13.84, np.linspace(-2, 2, 11)
    np.testing.assert_allclose(sg.fast_sigmoid(k).grad(x), 1 / (k * np.abs(x) + 1) ** 2, rtol=1e-15)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_parameter_is_value_error(bad):
    with pytest.raises(ValueError, match="fast_sigmoid"):
        sg.fast_sigmoid(bad)


def test_unknown_name_is_value_error():
    with pytest.raises(ValueError, match="surrogate"):
        sg.make_surrogate("relu")
