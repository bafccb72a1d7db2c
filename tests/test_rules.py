"""mininsnn.rules: each rule stated once, NumPy only, and every owner checks with it."""
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mininsnn import rules
from mininsnn.config import DEFAULTS, SETTINGS, ConfigError, make_config


def test_rules_config_and_the_deploy_path_import_no_numba():
    code = ("import sys\n"
            "import mininsnn.rules, mininsnn.config\n"
            "mininsnn.config.make_config('mnist-4bit', beta=0.5, surrogate='atan', quant_grad='ste')\n"
            "import mininsnn.deploy.conversion, mininsnn.deploy.modelfile, mininsnn.deploy.engine\n"
            "print('numba' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@settings(deadline=None)
@given(v=st.floats(allow_nan=True, allow_infinity=True))
def test_beta_rule_is_the_interval_and_one_line(v):
    ok = math.isfinite(v) and 0 <= v <= 1
    if ok:
        assert rules.check_beta("Leaky", v) == v
    else:
        with pytest.raises(ValueError) as e:
            rules.check_beta("Leaky", v)
        assert str(e.value) == f"Leaky: expected beta to be a finite number in [0, 1], got {v!r}"


@settings(deadline=None)
@given(v=st.floats(allow_nan=True, allow_infinity=True))
def test_the_settings_table_and_the_checkers_apply_the_same_rule(v):
    """validate_config (through SETTINGS) refuses a beta / threshold exactly when the checker does."""
    for key, checker in (("beta", rules.check_beta), ("threshold", rules.check_threshold)):
        try:
            checker("owner", v)
            refused = False
        except ValueError:
            refused = True
        if refused:
            with pytest.raises(ConfigError, match=f"^{key} must be a finite number"):
                make_config("mnist-4bit", **{key: v})
        else:
            assert make_config("mnist-4bit", **{key: v})[key] == v


def test_per_neuron_arrays_are_checked_elementwise():
    beta = np.array([[0.0, 0.5], [1.0, 0.25]], np.float32)
    got = rules.check_beta("Leaky", beta)
    assert got.dtype == np.float64 and np.array_equal(got, beta)
    assert np.array_equal(rules.check_threshold("Leaky", np.array([1, 2])), [1.0, 2.0])
    with pytest.raises(ValueError, match=r"^Leaky: expected beta to be finite numbers in \[0, 1\], "
                                         r"got 1\.5 at index \(1, 0\)$"):
        rules.check_beta("Leaky", np.array([[0.5, 0.5], [1.5, 0.5]]))
    with pytest.raises(ValueError, match=r"threshold .* got nan at index \(2,\)"):
        rules.check_threshold("Leaky", np.array([1.0, 2.0, np.nan]))
    with pytest.raises(ValueError, match="threshold"):
        rules.check_threshold("Leaky", np.array([1.0, 0.0]))


@pytest.mark.parametrize("checker, good, bad", [
    (rules.check_reset, ["subtract", "zero"], ["Zero", None, 0]),
    (rules.check_bits, [None, 2, 16, np.int64(4)], [1, 17, 4.0, True, "4"]),
    (rules.check_quant_grad, ["ste", "ste+scale"], ["STE", None]),
    (rules.check_surrogate, ["fast_sigmoid", "sigmoid", "atan"], ["relu", None]),
    (rules.check_slope, [0.1, 25], [0, -1.0, math.inf, math.nan, True]),
    (rules.check_sparse_grad, [None, 0.5], [0.0, -0.5, math.inf]),
])
def test_checkers_accept_the_rule_and_name_owner_and_field(checker, good, bad):
    for v in good:
        checker("Owner", v)
    field = checker.__name__[len("check_"):]
    for v in bad:
        with pytest.raises(ValueError) as e:
            checker("Owner", v)
        msg = str(e.value)
        assert msg.startswith(f"Owner: expected {field} to be ") and "\n" not in msg


def test_positive_int_and_ranges():
    assert rules.check_positive_int("Conv2d", "stride", np.int32(2)) == 2
    for bad in (0, -1, 2.0, True, None):
        with pytest.raises(ValueError, match="^Conv2d: expected stride to be an integer >= 1, got"):
            rules.check_positive_int("Conv2d", "stride", bad)
    assert rules.check_int_range("x", "padding", 0, 0) == 0
    with pytest.raises(ValueError, match=r"^x: expected input_max to be an integer in 1\.\.255, got 256$"):
        rules.check_int_range("x", "input_max", 256, 1, 255)


def test_the_table_uses_the_rules_and_its_names():
    """The settings of the network check with the rules of this module (not a copy), and the
    choice settings offer the rules' names."""
    by_key = {s.key: s for s in SETTINGS}
    for key, rule in (("beta", rules.BETA), ("threshold", rules.THRESHOLD), ("reset", rules.RESET),
                      ("bits", rules.BITS), ("quant_grad", rules.QUANT_GRAD),
                      ("surrogate", rules.SURROGATE), ("slope", rules.SLOPE),
                      ("sparse_grad", rules.SPARSE_GRAD), ("dropout", rules.DROPOUT)):
        assert by_key[key].check is rule
        rule(DEFAULTS[key])                     # each default obeys its own rule
    assert by_key["surrogate"].check.choices() == rules.SURROGATES


def test_defaults_are_read_only():
    with pytest.raises(TypeError):
        DEFAULTS["slope"] = 1.0
