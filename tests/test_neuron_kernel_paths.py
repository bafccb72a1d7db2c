"""The specialised paths of kernels/neuron.py and kernels/recurrent.py against their plain twins,
at sizes that reach them: the recurrent feedback adds 8 and 4 rows per pass (more than 8 spikes or
nonzero gradients per sample), and every combination of the reset, delay and current flags runs
its own compiled loop."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mininsnn.kernels import recurrent as krec
from tests.test_neurons import SURR
from tests.test_recurrent import _run

wide_cases = st.fixed_dictionaries(dict(
    T=st.integers(2, 5), B=st.integers(1, 3), n=st.integers(9, 40), seed=st.integers(0, 2**31),
    zero_reset=st.booleans(), delay=st.booleans(), cuba=st.booleans(),
    surr=st.sampled_from(SURR),
    dtype=st.sampled_from([np.float32, np.float64])))


@settings(deadline=None, max_examples=40)
@given(c=wide_cases)
def test_wide_recurrent_kernels_equal_plain_twins(c):
    """Spiking mode, bit for bit, with enough spikes per sample for the unrolled feedback passes."""
    for a, b, what in zip(_run(c, krec.recurrent_forward, krec.recurrent_backward),
                          _run(c, krec.recurrent_forward_plain, krec.recurrent_backward_plain),
                          ("Xin", "M", "S", "C", "dS_tot", "dXin", "dpar")):
        np.testing.assert_array_equal(a, b, err_msg=what)


@settings(deadline=None, max_examples=60)
@given(n=st.integers(1, 40), seed=st.integers(0, 2**31), dtype=st.sampled_from([np.float32, np.float64]))
def test_add_rows_adds_in_order(n, seed, dtype):
    """_add_rows equals one row at a time, in the listed order, bit for bit (1 to 40 rows: the
    passes of 8, of 4 and the rest)."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, n)).astype(dtype)
    cnt = int(rng.integers(0, n + 1))
    idx = rng.permutation(n).astype(np.int64)
    val = rng.standard_normal(n).astype(dtype)
    row = rng.standard_normal(n).astype(dtype)
    want = row.copy()
    for q in range(cnt):
        for k in range(n):
            want[k] += val[q] * A[idx[q], k]
    krec._add_rows(row, A, idx, val, cnt)
    np.testing.assert_array_equal(row, want)
