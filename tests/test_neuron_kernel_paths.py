"""The specialised paths of kernels/neuron.py and kernels/recurrent.py: at sizes that reach them
against the plain twins (the recurrent feedback adds 8 and 4 rows per pass: more than 8 spikes or
nonzero gradients per sample), and with par in one column (every neuron the same values) against
the same values in a column per neuron. Every combination of the flags runs its own loop."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mininsnn.kernels import neuron as kn
from mininsnn.kernels import recurrent as krec
from tests.test_neurons import SURR, random_par
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


one_column_cases = st.fixed_dictionaries(dict(
    T=st.integers(1, 6), N=st.integers(2, 40), B=st.integers(1, 3), static=st.booleans(), seed=st.integers(0, 2**31),
    zero_reset=st.booleans(), delay=st.booleans(), cuba=st.booleans(), smooth=st.booleans(), learn=st.booleans(),
    surr=st.sampled_from(SURR), dtype=st.sampled_from([np.float32, np.float64])))


@settings(deadline=None, max_examples=60)
@given(c=one_column_cases)
def test_one_column_par_equals_the_same_values_per_neuron(c):
    """neuron_forward / neuron_backward and the recurrent kernels with par (NPAR, 1), as the layers
    pass it when every parameter is one number, equal them with those values repeated in every
    column, bit for bit (dpar too, which stays per neuron)."""
    rng = np.random.default_rng(c["seed"])
    T, N, d, s = c["T"], c["N"], np.dtype(c["dtype"]), c["surr"]
    mode = (c["zero_reset"], c["delay"], c["cuba"], c["smooth"], s.code, d.type(s.k))
    par1 = random_par(rng, 1, d)  # (NPAR, 1)
    X = rng.standard_normal((1 if c["static"] else T, N)).astype(d)
    dS = rng.standard_normal((T, N)).astype(d)

    def run_neuron(par):
        M, S = np.empty((T, N), d), np.empty((T, N), d if c["smooth"] else np.uint8)
        C = np.empty((T, N) if c["cuba"] else (0, 0), d)
        kn.neuron_forward(X, T, par, mode, M, S, C)
        dX, dpar = np.full(X.shape, 7.0, d), np.zeros((kn.NPAR if c["learn"] else 0, N), d)
        kn.neuron_backward(dS, X, par, mode, M, C, dX, dpar)
        return M, S, C, dX, dpar

    for a, b in zip(run_neuron(par1), run_neuron(np.ascontiguousarray(np.repeat(par1, N, axis=1)))):
        np.testing.assert_array_equal(a, b)
    n, NB = N, c["B"] * N
    W = (rng.standard_normal((n, n)) * 0.8).astype(d)
    Xin0 = rng.uniform(-0.3, 1.0, (T, NB)).astype(d)
    dS0 = rng.standard_normal((T, NB)).astype(d)

    def run_recurrent(par):
        Xin, M = Xin0.copy(), np.empty((T, NB), d)
        S, C = np.empty((T, NB), d if c["smooth"] else np.uint8), np.empty((T, NB) if c["cuba"] else (0, 0), d)
        krec.recurrent_forward(np.ascontiguousarray(W.T), par, mode, n, Xin, M, S, C)
        dS_tot, dXin = dS0.copy(), np.full((T, NB), 5.0, d)
        dpar = np.zeros((kn.NPAR if c["learn"] else 0, NB), d)
        krec.recurrent_backward(W, par, mode, n, Xin, M, C, dS_tot, dXin, dpar)
        return Xin, M, S, C, dS_tot, dXin, dpar

    for a, b in zip(run_recurrent(par1), run_recurrent(np.ascontiguousarray(np.repeat(par1, NB, axis=1)))):
        np.testing.assert_array_equal(a, b)
