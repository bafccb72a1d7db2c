"""General LIF and current-based LIF neurons with per-neuron parameters: forward over time and BPTT.

One neuron n (every parameter its own per neuron, a row of ``par``; U[-1] = I[-1] = 0):

    I[t] = alpha * I[t-1] + syn_gain * X[t]          synaptic current (``cuba``; else I[t] = X[t])
    Q[t] = beta * U[t-1] + gain * I[t] + drive       charge

delayed reset (``delay``; snnTorch's default):
    R[t] = H(U[t-1] - theta)                         (R[0] = 0; DETACHED: no gradient)
    U[t] = Q[t] - theta * R[t]                       "subtract"
    U[t] = Q[t] * (1 - R[t]) + v_reset * R[t]        "zero"
    S[t] = H(U[t] - theta)                           stored M[t] = U[t]

same-step reset (``not delay``; NIR's LIF / CubaLIF):
    V[t] = Q[t];   S[t] = H(V[t] - theta)            stored M[t] = V[t]
    U[t] = V[t] - theta * S[t]                       "subtract"  (S DETACHED in the reset)
    U[t] = V[t] * (1 - S[t]) + v_reset * S[t]        "zero"      (S DETACHED in the reset)

M[t] is the potential compared with theta; U[t-1] is M[t-1] (delayed) or recomputed from M[t-1]
(same step). Smooth twin: S[t] = g(M[t] - theta), the reset stays hard. With gain 1, drive 0,
v_reset 0 and no current this is the neuron of kernels/lif.py.

BPTT, t = T-1 .. 0, carries cu = dL/dU[t] from step t+1 and ci = dL/dI[t] from step t+1:

    delayed:    dU[t] = dS[t] sg'(M[t] - theta) + cu ;  dQ[t] = dU[t] (1 - R[t]) (zero) or dU[t]
    same step:  dU[t] = cu ;  dQ[t] = dS[t] sg'(M[t] - theta) + dU[t] (1 - S[t]) (zero) or + dU[t]
    dI[t] = gain dQ[t] + ci ;   cu <- beta dQ[t] ;   ci <- alpha dI[t]
    dX[t] = syn_gain dI[t]   (cuba; else dX[t] = gain dQ[t])

and, summed over t into ``dpar`` (rows as in ``par``; only when dpar has rows):

    dbeta += dQ[t] U[t-1]   dgain += dQ[t] I[t]   ddrive += dQ[t]   dalpha += dI[t] I[t-1]
    dsyn_gain += dI[t] X[t]   dtheta += -dS[t] sg'(M[t] - theta) - dU[t] F[t] (subtract)
    dv_reset += dU[t] F[t] (zero)        F[t] = R[t] (delayed) or S[t] (same step)

Shapes: X (TI, N), TI in {1, T} (1: a static input, the same at every step); par (NPAR, N);
M, S, C (= I) (T, N); dX (TI, N); dpar (NPAR, N) or (0, N). ``mode`` is the tuple
(zero_reset, delay, cuba, smooth, sg_code, sg_k). Each kernel is followed by its plain twin.
"""

import numpy as np

from mininsnn._jit import jit, prange
from mininsnn.surrogate import ATAN, FAST_SIGMOID, SIGMOID, sg_grad, sg_primitive

BLOCK = 4096  # neurons per parallel work item
ALPHA, SYN_GAIN, BETA, GAIN, DRIVE, THETA, V_RESET = range(7)  # rows of par and dpar
NPAR = 7


@jit
def _u_prev(M, t, n, theta, v_reset, zero_reset, delay):
    """U[t-1] from the stored M[t-1]: itself (delayed), or after its same-step reset. Reads M[0]
    at t = 0 and then selects 0, so that the loop has no branch around the load (it vectorises)."""
    zero = theta - theta
    m = M[max(t - 1, 0), n]
    u = m if (delay or not m > theta) else (v_reset if zero_reset else m - theta)
    return u if t > 0 else zero  # U[-1] = 0


@jit
def _forward_loop(X, ti, t, par, M, S, C, lo, hi, zero_reset, delay, cuba, smooth, sg_code, sg_k):
    """Step t of neurons lo..hi-1 (the module's equations); writes M[t], S[t] and C[t] (cuba).
    :func:`_forward_row` calls it with the flags as constants, so that their branches leave the loop."""
    w = 1 if par.shape[1] > 1 else 0  # par: a column per neuron, or one for all
    tp = max(t - 1, 0)  # the previous step's row (read at t = 0 too, then not used)
    for n in range(lo, hi):
        k = n * w  # the neuron's column of par
        theta, v_reset = par[THETA, k], par[V_RESET, k]
        zero = theta - theta
        c = X[ti, n]
        if cuba:
            c_prev = C[tp, n] if t > 0 else zero
            c = par[ALPHA, k] * c_prev + par[SYN_GAIN, k] * c  # I[t] = alpha I[t-1] + syn_gain X[t]
            C[t, n] = c
        u_prev = _u_prev(M, t, n, theta, v_reset, zero_reset, delay)
        m = par[BETA, k] * u_prev + par[GAIN, k] * c + par[DRIVE, k]  # Q[t] = beta U[t-1] + gain I[t] + drive
        if delay:
            fired = t > 0 and u_prev > theta  # R[t] = 1
            m = (v_reset if zero_reset else m - theta) if fired else m
        M[t, n] = m
        if smooth:
            S[t, n] = sg_primitive(sg_code, sg_k, m - theta)  # S[t] = g(M[t] - theta)
        else:
            S[t, n] = m > theta  # S[t] = H(M[t] - theta)


@jit
def _forward_row(X, ti, t, par, mode, M, S, C, lo, hi):
    """Step t of neurons lo..hi-1: :func:`_forward_loop` specialised. In spiking mode the reset,
    delay and current flags reach it as constants (one compiled loop per combination, no branch
    on them inside); the smooth twin (gradient checks) runs the general loop."""
    zr, dl, cb, smooth, code, k = mode
    if smooth:
        _forward_loop(X, ti, t, par, M, S, C, lo, hi, zr, dl, cb, True, code, k)
    elif zr and dl and cb:
        _forward_loop(X, ti, t, par, M, S, C, lo, hi, True, True, True, False, code, k)
    elif zr and dl:
        _forward_loop(X, ti, t, par, M, S, C, lo, hi, True, True, False, False, code, k)
    elif zr and cb:
        _forward_loop(X, ti, t, par, M, S, C, lo, hi, True, False, True, False, code, k)
    elif zr:
        _forward_loop(X, ti, t, par, M, S, C, lo, hi, True, False, False, False, code, k)
    elif dl and cb:
        _forward_loop(X, ti, t, par, M, S, C, lo, hi, False, True, True, False, code, k)
    elif dl:
        _forward_loop(X, ti, t, par, M, S, C, lo, hi, False, True, False, False, code, k)
    elif cb:
        _forward_loop(X, ti, t, par, M, S, C, lo, hi, False, False, True, False, code, k)
    else:
        _forward_loop(X, ti, t, par, M, S, C, lo, hi, False, False, False, False, code, k)


@jit(parallel=True)
def neuron_forward(X, T, par, mode, M, S, C):
    """Run the neurons over T steps (module docstring); blocks of neurons in parallel."""
    N = X.shape[1]
    for blk in prange((N + BLOCK - 1) // BLOCK):
        lo, hi = blk * BLOCK, min(N, (blk + 1) * BLOCK)
        for t in range(T):
            _forward_row(X, t if X.shape[0] > 1 else 0, t, par, mode, M, S, C, lo, hi)


@jit(parallel=True)
def neuron_forward_step(X, t, par, mode, M, S, C):
    """Step t only, every neuron (the recurrent layers call it once per step): X (T, N) the input."""
    N = X.shape[1]
    for blk in prange((N + BLOCK - 1) // BLOCK):
        _forward_row(X, t, t, par, mode, M, S, C, blk * BLOCK, min(N, (blk + 1) * BLOCK))


def neuron_forward_plain(X, T, par, mode, M, S, C):
    """Plain twin of :func:`neuron_forward`: one neuron at a time, one line per equation."""
    zero_reset, delay, cuba, smooth, sg_code, sg_k = mode
    alpha, syn_gain, beta, gain, drive, theta, v_reset = np.broadcast_to(par, (NPAR, M.shape[1]))  # one column: all
    for n in range(X.shape[1]):
        u, i, r = theta[n] - theta[n], theta[n] - theta[n], False  # U[-1] = I[-1] = 0, R[0] = 0
        for t in range(T):
            x = X[t if X.shape[0] > 1 else 0, n]
            i = alpha[n] * i + syn_gain[n] * x if cuba else x  # I[t]
            if cuba:
                C[t, n] = i
            q = beta[n] * u + gain[n] * i + drive[n]  # Q[t]
            if delay:
                u = (v_reset[n] if zero_reset else q - theta[n]) if r else q  # U[t]
                m = u
            else:
                m = q  # V[t]
                fired = m > theta[n]
                u = (v_reset[n] if zero_reset else m - theta[n]) if fired else m  # U[t] after the reset
            M[t, n] = m
            S[t, n] = sg_primitive(sg_code, sg_k, m - theta[n]) if smooth else (1 if m > theta[n] else 0)
            r = m > theta[n]  # R[t+1] = H(U[t] - theta) (delayed)


@jit
def _sg_row(sg_code, sg_k, M, t, par, lo, hi, g):
    """g[n - lo] = sg'(M[t, n] - theta[n]) for n in lo..hi-1, rounded to g's dtype (sg_grad may
    widen). The surrogate is chosen once per row, outside the loop, so that the loop vectorises."""
    w = 1 if par.shape[1] > 1 else 0  # par: a column per neuron, or one for all
    if sg_code == FAST_SIGMOID:
        for n in range(lo, hi):
            g[n - lo] = sg_grad(FAST_SIGMOID, sg_k, M[t, n] - par[THETA, n * w])
    elif sg_code == SIGMOID:
        for n in range(lo, hi):
            g[n - lo] = sg_grad(SIGMOID, sg_k, M[t, n] - par[THETA, n * w])
    else:
        for n in range(lo, hi):
            g[n - lo] = sg_grad(ATAN, sg_k, M[t, n] - par[THETA, n * w])


@jit
def _backward_loop(dS, X, t, par, M, C, cu, ci, dX, dpar, lo, hi, g, zero_reset, delay, cuba, sg_code, sg_k):
    """BPTT step t of neurons lo..hi-1 (module docstring): reads carries cu, ci (from step t+1),
    leaves those of step t; writes dX[t] (or adds to dX[0] for a static input); adds to dpar.
    g: scratch of at least hi - lo entries in dX's dtype. :func:`_backward_row` calls it with the
    flags as constants."""
    static, learn = dX.shape[0] == 1, dpar.shape[0] > 0
    ti = 0 if static else t
    w = 1 if par.shape[1] > 1 else 0  # par: a column per neuron, or one for all
    tp = max(t - 1, 0)  # the previous step's row (read at t = 0 too, then not used)
    # fwd: S[t] = H(M[t] - theta)  =>  dS[t]/dM[t] = sg'(M[t] - theta)   (surrogate; true: Dirac delta)
    _sg_row(sg_code, sg_k, M, t, par, lo, hi, g)
    for n in range(lo, hi):
        k = n * w  # the neuron's column of par
        theta = par[THETA, k]
        zero = theta - theta
        ds_sg = dS[t, n] * g[n - lo]
        if delay:
            fired = t > 0 and M[tp, n] > theta  # F = R[t] = H(U[t-1] - theta), detached
            dU = ds_sg + cu[n]  # fwd: M[t] = U[t]
            # fwd: U[t] = Q[t] (1 - R[t]) + v_reset R[t]  or  Q[t] - theta R[t]
            dQ = zero if (zero_reset and fired) else dU
        else:
            fired = M[t, n] > theta  # F = S[t], detached in the reset
            dU = cu[n]
            # fwd: U[t] = V[t] (1 - S[t]) + v_reset S[t]  or  V[t] - theta S[t];  M[t] = V[t] = Q[t]
            dQ = ds_sg + (zero if (zero_reset and fired) else dU)
        # fwd: Q[t] = beta U[t-1] + gain I[t] + drive  =>  dI[t] = gain dQ[t] (+ alpha dI[t+1])
        dI = par[GAIN, k] * dQ + ci[n]
        cu[n] = par[BETA, k] * dQ
        dx = par[SYN_GAIN, k] * dI if cuba else dI  # fwd: I[t] = alpha I[t-1] + syn_gain X[t]
        if static:
            dX[0, n] += dx
        else:
            dX[t, n] = dx
        if cuba:
            ci[n] = par[ALPHA, k] * dI
        if learn:
            x = X[ti, n]
            dpar[BETA, n] += dQ * _u_prev(M, t, n, theta, par[V_RESET, k], zero_reset, delay)
            dpar[GAIN, n] += dQ * (C[t, n] if cuba else x)
            dpar[DRIVE, n] += dQ
            dUf = dU if fired else zero  # dU[t] F[t]
            dpar[THETA, n] += -ds_sg - (zero if zero_reset else dUf)
            dpar[V_RESET, n] += dUf if zero_reset else zero
            if cuba:
                dpar[ALPHA, n] += dI * (C[tp, n] if t > 0 else zero)
                dpar[SYN_GAIN, n] += dI * x


@jit
def _backward_row(dS, X, t, par, mode, M, C, cu, ci, dX, dpar, lo, hi, g):
    """BPTT step t of neurons lo..hi-1: :func:`_backward_loop` with the reset, delay and current
    flags as constants (one compiled loop per combination, no branch on them inside)."""
    zr, dl, cb, _, code, k = mode
    if zr and dl and cb:
        _backward_loop(dS, X, t, par, M, C, cu, ci, dX, dpar, lo, hi, g, True, True, True, code, k)
    elif zr and dl:
        _backward_loop(dS, X, t, par, M, C, cu, ci, dX, dpar, lo, hi, g, True, True, False, code, k)
    elif zr and cb:
        _backward_loop(dS, X, t, par, M, C, cu, ci, dX, dpar, lo, hi, g, True, False, True, code, k)
    elif zr:
        _backward_loop(dS, X, t, par, M, C, cu, ci, dX, dpar, lo, hi, g, True, False, False, code, k)
    elif dl and cb:
        _backward_loop(dS, X, t, par, M, C, cu, ci, dX, dpar, lo, hi, g, False, True, True, code, k)
    elif dl:
        _backward_loop(dS, X, t, par, M, C, cu, ci, dX, dpar, lo, hi, g, False, True, False, code, k)
    elif cb:
        _backward_loop(dS, X, t, par, M, C, cu, ci, dX, dpar, lo, hi, g, False, False, True, code, k)
    else:
        _backward_loop(dS, X, t, par, M, C, cu, ci, dX, dpar, lo, hi, g, False, False, False, code, k)


@jit(parallel=True)
def neuron_backward(dS, X, par, mode, M, C, dX, dpar):
    """BPTT through :func:`neuron_forward`: dS (T, N) dL/dS; writes dX (TI, N); adds to dpar."""
    T, N = dS.shape
    cu = np.zeros(N, dtype=dX.dtype)  # dL/dU[t] from step t+1; each block owns its range
    ci = np.zeros(N, dtype=dX.dtype)  # dL/dI[t] from step t+1
    for blk in prange((N + BLOCK - 1) // BLOCK):
        lo, hi = blk * BLOCK, min(N, (blk + 1) * BLOCK)
        g = np.empty(hi - lo, dtype=dX.dtype)  # sg'(M[t] - theta) of this block
        if dX.shape[0] == 1:
            dX[0, lo:hi] = 0.0
        for t in range(T - 1, -1, -1):
            _backward_row(dS, X, t, par, mode, M, C, cu, ci, dX, dpar, lo, hi, g)


@jit(parallel=True)
def neuron_backward_step(dS, X, t, par, mode, M, C, cu, ci, dX, dpar):
    """BPTT step t only, every neuron (the recurrent layers): carries cu, ci (N,) in and out."""
    N = dS.shape[1]
    for blk in prange((N + BLOCK - 1) // BLOCK):
        lo, hi = blk * BLOCK, min(N, (blk + 1) * BLOCK)
        _backward_row(dS, X, t, par, mode, M, C, cu, ci, dX, dpar, lo, hi, np.empty(hi - lo, dtype=dX.dtype))


def neuron_backward_plain(dS, X, par, mode, M, C, dX, dpar):
    """Plain twin of :func:`neuron_backward`: one neuron at a time, t from T-1 down to 0, every
    forward line restated above its derivative."""
    zero_reset, delay, cuba, smooth, sg_code, sg_k = mode
    alpha, syn_gain, beta, gain, drive, theta, v_reset = np.broadcast_to(par, (NPAR, dS.shape[1]))  # one column: all
    T, N = dS.shape
    d = dX.dtype.type
    for n in range(N):
        if dX.shape[0] == 1:
            dX[0, n] = 0
        cu, ci = d(0), d(0)  # dL/dU[t], dL/dI[t] through step t+1; zero past the last step
        for t in range(T - 1, -1, -1):
            m, th = M[t, n], theta[n]
            # U[t-1]: the stored M[t-1] (delayed), or M[t-1] after its same-step reset
            mp = M[t - 1, n] if t > 0 else d(0)
            fired_prev = t > 0 and mp > th
            u_prev = mp if (delay or not fired_prev) else (v_reset[n] if zero_reset else mp - th)
            # S[t] = H(M[t] - theta)  =>  dM[t] gets dS[t] sg'(M[t] - theta)   (surrogate)
            ds_sg = dS[t, n] * d(sg_grad(sg_code, sg_k, m - th))
            if delay:
                # U[t] = Q[t] - theta R[t]  or  Q[t] (1 - R[t]) + v_reset R[t];  M[t] = U[t]
                f = fired_prev
                dU = ds_sg + cu
                dQ = d(0) if (zero_reset and f) else dU
            else:
                # V[t] = Q[t] = M[t];  U[t] = V[t] - theta S[t]  or  V[t] (1 - S[t]) + v_reset S[t]
                f = m > th
                dU = cu
                dQ = ds_sg + (d(0) if (zero_reset and f) else dU)
            x = X[t if X.shape[0] > 1 else 0, n]
            i = C[t, n] if cuba else x
            # Q[t] = beta U[t-1] + gain I[t] + drive
            dI = gain[n] * dQ + ci
            cu = beta[n] * dQ
            # I[t] = alpha I[t-1] + syn_gain X[t]
            dx = syn_gain[n] * dI if cuba else dI
            if dX.shape[0] > 1:
                dX[t, n] = dx
            else:
                dX[0, n] += dx
            ci = alpha[n] * dI if cuba else d(0)
            if dpar.shape[0] > 0:
                dpar[BETA, n] += dQ * u_prev
                dpar[GAIN, n] += dQ * i
                dpar[DRIVE, n] += dQ
                dUf = dU if f else d(0)  # dU[t] F[t]
                dpar[THETA, n] += -ds_sg - (d(0) if zero_reset else dUf)
                dpar[V_RESET, n] += dUf if zero_reset else d(0)
                if cuba:
                    dpar[ALPHA, n] += dI * (C[t - 1, n] if t > 0 else d(0))
                    dpar[SYN_GAIN, n] += dI * x
