"""The one place where Numba JIT flags are set.

Every kernel in ``mininsnn.kernels`` is decorated with :func:`jit`. Kernels are cached on disk
(``cache=True``) so that the compile cost is paid once per machine, not once per process.
No ``fastmath``: results must match each kernel's plain twin (``<kernel>_plain``, right below
it) exactly where both add the same terms in the same order (tests/test_kernels.py).
With ``NUMBA_DISABLE_JIT=1`` every kernel runs as plain Python (study mode, docs/bptt.md).
``error_model="numpy"``: a float division by zero gives inf/nan as in NumPy instead of a Python
ZeroDivisionError check on every division, which would keep loops with a division from
vectorising (the layers validate their inputs, so no kernel divides by zero).
"""

import numba

__all__ = ["jit", "prange"]

prange = numba.prange


def jit(fn=None, *, parallel=False):
    """``numba.njit`` with mininsnn's defaults (cached, nogil, optional ``parallel``)."""
    decorator = numba.njit(cache=True, nogil=True, parallel=parallel, error_model="numpy")
    return decorator if fn is None else decorator(fn)
