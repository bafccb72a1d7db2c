"""Central finite differences through the fake loss L = sum(out * g)."""

import numpy as np


def numeric_grad(f, x, eps=2e-5):
    """dL/dx of the scalar function f() w.r.t. the array x (modified in place and restored).

    Central differences with one Richardson step, (4 D(eps/2) - D(eps)) / 3, whose error is
    O(eps^4): eps can then be large enough that rounding in f (whose value may be much larger
    than its gradient) does not swamp the difference.
    """
    grad = np.zeros_like(x, dtype=np.float64)
    flat, gflat = x.reshape(-1), grad.reshape(-1)

    def central(i, h):
        old = flat[i]
        flat[i] = old + h
        fp = f()
        flat[i] = old - h
        fm = f()
        flat[i] = old
        return (fp - fm) / (2 * h)

    for i in range(flat.size):
        gflat[i] = (4 * central(i, eps / 2) - central(i, eps)) / 3
    return grad


def rel_error(a, b):
    """max |a - b| / max(|a|, |b|) over all elements (0 when both are all zero)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0))
    return 0.0 if scale == 0 else float(np.abs(a - b).max() / scale)


MAX_SEEN = {"error": 0.0}


def assert_close_grad(analytic, numeric, tol=1e-6, what=""):
    err = rel_error(analytic, numeric)
    MAX_SEEN["error"] = max(MAX_SEEN["error"], err)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.0e}"
