"""Leaky integrate-and-fire neuron: forward over all time steps and its BPTT.

Notation (SpikingJelly-style charge / fire / reset), for one neuron:

    R[t] = H(U[t-1] - theta)                  reset signal = previous spike; DETACHED (no gradient)
    U[t] = beta * U[t-1] + I[t] - theta * R[t]          "subtract" reset (the paper's)
    U[t] = (beta * U[t-1] + I[t]) * (1 - R[t])          "zero" reset (option)
    S[t] = H(U[t] - theta)                    spike, strict step; smooth twin: S[t] = g(U[t] - theta)
    U[-1] = 0, R[0] = 0

Shapes: I is (TI, N) with TI == T (dynamic input) or TI == 1 (static input: the same current at
every step, stored once). U and S are (T, N); N is everything but time (batch * features).

Same-step reset (``reset_delay=False``; the neuron NIR's LIF and snnTorch's ``import_from_nir``,
``Leaky(reset_mechanism="zero", reset_delay=False)``, assume): the neuron resets in the step it fires.

    V[t] = beta * U[t-1] + I[t]               charge; U[-1] = 0
    S[t] = H(V[t] - theta)                    fire; smooth twin: S[t] = g(V[t] - theta)
    U[t] = V[t] * (1 - S[t])                  "zero" reset, S DETACHED (no gradient)
    U[t] = V[t] - theta * S[t]                "subtract" reset, S DETACHED

Its kernels (``lif_forward_nodelay``, ``lif_backward_nodelay``, the last section of this file) store
V[t], the potential before the reset, i.e. the one compared with theta; that is also what the
delayed kernels store (there U[t] is compared with theta). See lif_forward_nodelay for why.

Neurons are split into blocks that run in parallel; inside a block the time loop is outermost, so
each step reads and writes contiguous rows. Below each kernel, ``<kernel>_plain`` is its plain twin:
the same signature and result, one neuron at a time, one line per equation, not compiled (the tests
hold each kernel equal to its twin).
"""

import numpy as np

from mininsnn._jit import jit, prange
from mininsnn.surrogate import ATAN, FAST_SIGMOID, SIGMOID, sg_grad, sg_primitive

BLOCK = 4096  # neurons per parallel work item


@jit(parallel=True)
def lif_forward(I, T, beta, theta, zero_reset, smooth, sg_code, sg_k, U, S):
    """Run the neuron over T steps.

    I: (TI, N) input current, TI in {1, T}
    U: (T, N) membrane potential, written
    S: (T, N) spikes, written (uint8 0/1; with ``smooth``, float g(U - theta) instead of H)
    beta, theta: scalars of I's dtype.
    """
    TI, N = I.shape
    zero = theta - theta  # 0 in the input's dtype
    for blk in prange((N + BLOCK - 1) // BLOCK):
        lo = blk * BLOCK
        hi = min(N, lo + BLOCK)
        for t in range(T):
            ti = t if TI > 1 else 0
            tp = t - 1 if t > 0 else 0
            for n in range(lo, hi):
                u_prev = U[tp, n] if t > 0 else zero
                fired = u_prev > theta  # R[t] = H(U[t-1] - theta); False at t = 0 since U[-1] = 0
                u = beta * u_prev + I[ti, n]
                if zero_reset:
                    u = zero if fired else u  # U[t] = (beta * U[t-1] + I[t]) * (1 - R[t])
                else:
                    u = u - theta if fired else u  # U[t] = beta * U[t-1] + I[t] - theta * R[t]
                U[t, n] = u
                if smooth:
                    S[t, n] = sg_primitive(sg_code, sg_k, u - theta)  # S[t] = g(U[t] - theta)
                else:
                    S[t, n] = u > theta  # S[t] = H(U[t] - theta)


def lif_forward_plain(I, T, beta, theta, zero_reset, smooth, sg_code, sg_k, U, S):
    """Plain twin of :func:`lif_forward` (same arguments, same result): one neuron at a time."""
    TI, N = I.shape
    zero = theta - theta  # 0 in the input's dtype
    for n in range(N):
        u_prev = zero  # U[-1] = 0
        for t in range(T):
            i_t = I[t if TI > 1 else 0, n]  # a static input is the same current at every step
            # R[t] = H(U[t-1] - theta)   (strict: a potential exactly at theta does not fire)
            r = t > 0 and u_prev > theta
            if zero_reset:
                # U[t] = (beta * U[t-1] + I[t]) * (1 - R[t])
                u = zero if r else beta * u_prev + i_t
            else:
                # U[t] = beta * U[t-1] + I[t] - theta * R[t]
                u = beta * u_prev + i_t
                if r:
                    u = u - theta
            U[t, n] = u
            if smooth:
                S[t, n] = sg_primitive(sg_code, sg_k, u - theta)  # S[t] = g(U[t] - theta)
            else:
                S[t, n] = 1 if u > theta else 0  # S[t] = H(U[t] - theta)
            u_prev = u


@jit
def _surrogate_grad_row(sg_code, sg_k, U_t, theta, g):
    """g[n] = sg'(U_t[n] - theta) for one time step of a block. The choice of surrogate is made once
    per row, outside the loop, so that the loop vectorises."""
    if sg_code == FAST_SIGMOID:
        for n in range(g.shape[0]):
            g[n] = sg_grad(FAST_SIGMOID, sg_k, U_t[n] - theta)
    elif sg_code == SIGMOID:
        for n in range(g.shape[0]):
            g[n] = sg_grad(SIGMOID, sg_k, U_t[n] - theta)
    else:
        for n in range(g.shape[0]):
            g[n] = sg_grad(ATAN, sg_k, U_t[n] - theta)


@jit(parallel=True)
def lif_backward(dS, U, beta, theta, zero_reset, sg_code, sg_k, dI):
    """BPTT through the neuron.

    dS: (T, N) dL/dS[t]
    U:  (T, N) membrane potential from the forward
    dI: (TI, N) dL/dI, written; with TI == 1 (static input) the sum over t of dL/dI[t]

        dU[t] = dS[t] * sg'(U[t] - theta) + dU[t+1] * dU[t+1]/dU[t]
        dI[t] = dU[t] * dU[t]/dI[t]
    """
    T, N = dS.shape
    TI = dI.shape[0]
    zero = theta - theta  # 0 in the input's dtype
    for blk in prange((N + BLOCK - 1) // BLOCK):
        lo = blk * BLOCK
        hi = min(N, lo + BLOCK)
        carry = np.zeros(hi - lo, dtype=dI.dtype)  # dL/dU[t+1] * dU[t+1]/dU[t]
        sg = np.empty(hi - lo, dtype=dI.dtype)  # sg'(U[t] - theta) of this block
        if TI == 1:
            dI[0, lo:hi] = 0.0
        for t in range(T - 1, -1, -1):
            # fwd: S[t] = H(U[t] - theta)
            # =>   dS[t]/dU[t] = sg'(U[t] - theta)   (surrogate; true derivative is a Dirac delta)
            _surrogate_grad_row(sg_code, sg_k, U[t, lo:hi], theta, sg)
            tp = t - 1 if t > 0 else 0
            for n in range(lo, hi):
                dU = dS[t, n] * sg[n - lo] + carry[n - lo]
                if zero_reset:
                    # fwd: U[t] = (beta * U[t-1] + I[t]) * (1 - R[t]),  R[t] = H(U[t-1] - theta) detached
                    # =>   dU[t]/dI[t] = 1 - R[t] ;  dU[t]/dU[t-1] = beta * (1 - R[t])
                    dU = zero if (t > 0 and U[tp, n] > theta) else dU
                # fwd: U[t] = beta * U[t-1] + I[t] - theta * R[t]   (R detached)
                # =>   dU[t]/dI[t] = 1 ;  dU[t]/dU[t-1] = beta
                carry[n - lo] = beta * dU
                if TI == 1:
                    dI[0, n] += dU  # static input: I[t] = I for every t, so dI = sum_t dU[t]
                else:
                    dI[t, n] = dU


def lif_backward_plain(dS, U, beta, theta, zero_reset, sg_code, sg_k, dI):
    """Plain twin of :func:`lif_backward` (same arguments, same result): one neuron at a time,
    t from T-1 down to 0, with dU[T] = 0."""
    T, N = dS.shape
    TI = dI.shape[0]
    d = dI.dtype.type  # the gradient's dtype
    for n in range(N):
        if TI == 1:
            dI[0, n] = 0
        dU_next = d(0)  # dL/dU[t+1], zero past the last step
        for t in range(T - 1, -1, -1):
            # fwd: S[t] = H(U[t] - theta)  =>  dS[t]/dU[t] = sg'(U[t] - theta)   (surrogate)
            # fwd: U[t+1] = beta * U[t] + I[t+1] - theta * R[t+1]  (R detached)  =>  dU[t+1]/dU[t] = beta
            dU = dS[t, n] * d(sg_grad(sg_code, sg_k, U[t, n] - theta)) + beta * dU_next
            if zero_reset and t > 0 and U[t - 1, n] > theta:
                # fwd: U[t] = (beta * U[t-1] + I[t]) * (1 - R[t])  =>  dU[t]/dI[t] = 0 when R[t] = 1,
                # and nothing flows on to U[t-1]
                dU = d(0)
            # fwd: U[t] = beta * U[t-1] + I[t] - ...  =>  dU[t]/dI[t] = 1
            if TI == 1:
                dI[0, n] += dU  # static input: I[t] = I at every step, so dI = sum_t dU[t]
            else:
                dI[t, n] = dU
            dU_next = dU


# ================================================================================================
# Same-step reset (reset_delay=False): the neuron of NIR's LIF and of snnTorch's import_from_nir.
# These four functions are independent of the delayed-reset kernels above.

@jit(parallel=True)
def lif_forward_nodelay(I, T, beta, theta, zero_reset, smooth, sg_code, sg_k, V, S):
    """Run the neuron with a same-step reset over T steps.

        V[t] = beta * U[t-1] + I[t]                  U[-1] = 0
        S[t] = H(V[t] - theta)
        U[t] = V[t] * (1 - S[t])       zero_reset    (S detached)
        U[t] = V[t] - theta * S[t]     otherwise     (S detached)

    I: (TI, N) input current, TI in {1, T}
    V: (T, N) written: V[t], the potential BEFORE the reset (the one compared with theta). The
       backward needs exactly this: sg'(V[t] - theta) and S[t] = H(V[t] - theta) both come from it,
       while U[t] would not do (after a zero reset it is 0 whatever V[t] was). U[t-1] is
       recomputed from V[t-1] at the next step, so U is never stored.
    S: (T, N) spikes, written (uint8 0/1; with ``smooth``, float g(V[t] - theta) instead of H)
    beta, theta: scalars of I's dtype, theta > 0.
    """
    TI, N = I.shape
    zero = theta - theta  # 0 in the input's dtype
    for blk in prange((N + BLOCK - 1) // BLOCK):
        lo = blk * BLOCK
        hi = min(N, lo + BLOCK)
        for t in range(T):
            ti = t if TI > 1 else 0
            tp = t - 1 if t > 0 else 0
            for n in range(lo, hi):
                v_prev = V[tp, n] if t > 0 else zero  # V[-1] = 0 gives U[-1] = 0
                fired = v_prev > theta  # S[t-1] = H(V[t-1] - theta)
                if zero_reset:
                    u_prev = zero if fired else v_prev  # U[t-1] = V[t-1] * (1 - S[t-1])
                else:
                    u_prev = v_prev - theta if fired else v_prev  # U[t-1] = V[t-1] - theta * S[t-1]
                v = beta * u_prev + I[ti, n]  # V[t] = beta * U[t-1] + I[t]
                V[t, n] = v
                if smooth:
                    S[t, n] = sg_primitive(sg_code, sg_k, v - theta)  # S[t] = g(V[t] - theta)
                else:
                    S[t, n] = v > theta  # S[t] = H(V[t] - theta)


def lif_forward_nodelay_plain(I, T, beta, theta, zero_reset, smooth, sg_code, sg_k, V, S):
    """Plain twin of :func:`lif_forward_nodelay` (same arguments, same result): one neuron at a time."""
    TI, N = I.shape
    zero = theta - theta  # 0 in the input's dtype
    for n in range(N):
        u_prev = zero  # U[-1] = 0
        for t in range(T):
            i_t = I[t if TI > 1 else 0, n]  # a static input is the same current at every step
            # V[t] = beta * U[t-1] + I[t]
            v = beta * u_prev + i_t
            V[t, n] = v
            # S[t] = H(V[t] - theta)   (strict: a potential exactly at theta does not fire)
            s = v > theta
            if smooth:
                S[t, n] = sg_primitive(sg_code, sg_k, v - theta)  # S[t] = g(V[t] - theta)
            else:
                S[t, n] = 1 if s else 0
            if zero_reset:
                # U[t] = V[t] * (1 - S[t])
                u_prev = zero if s else v
            else:
                # U[t] = V[t] - theta * S[t]
                u_prev = v - theta if s else v


@jit(parallel=True)
def lif_backward_nodelay(dS, V, beta, theta, zero_reset, sg_code, sg_k, dI):
    """BPTT through the same-step-reset neuron of :func:`lif_forward_nodelay`.

    dS: (T, N) dL/dS[t]
    V:  (T, N) potentials before the reset, from the forward
    dI: (TI, N) dL/dI, written; with TI == 1 (static input) the sum over t of dL/dI[t]

        dU[t] = beta * dV[t+1]                          (dU[T-1] = 0)
        dV[t] = dS[t] * sg'(V[t] - theta) + dU[t] * dU[t]/dV[t]
        dI[t] = dV[t]
    with dU[t]/dV[t] = 1 - S[t] (zero reset) or 1 (subtract reset), S detached.
    """
    T, N = dS.shape
    TI = dI.shape[0]
    zero = theta - theta  # 0 in the input's dtype
    for blk in prange((N + BLOCK - 1) // BLOCK):
        lo = blk * BLOCK
        hi = min(N, lo + BLOCK)
        carry = np.zeros(hi - lo, dtype=dI.dtype)  # dL/dU[t] = beta * dL/dV[t+1]
        sg = np.empty(hi - lo, dtype=dI.dtype)  # sg'(V[t] - theta) of this block
        if TI == 1:
            dI[0, lo:hi] = 0.0
        for t in range(T - 1, -1, -1):
            # fwd: S[t] = H(V[t] - theta)
            # =>   dS[t]/dV[t] = sg'(V[t] - theta)   (surrogate; true derivative is a Dirac delta)
            _surrogate_grad_row(sg_code, sg_k, V[t, lo:hi], theta, sg)
            for n in range(lo, hi):
                dU = carry[n - lo]
                if zero_reset:
                    # fwd: U[t] = V[t] * (1 - S[t])   (S detached)
                    # =>   dU[t]/dV[t] = 1 - S[t]
                    dU = zero if V[t, n] > theta else dU
                # fwd: U[t] = V[t] - theta * S[t]   (S detached)  =>  dU[t]/dV[t] = 1
                dV = dS[t, n] * sg[n - lo] + dU
                # fwd: V[t] = beta * U[t-1] + I[t]
                # =>   dV[t]/dU[t-1] = beta ;  dV[t]/dI[t] = 1
                carry[n - lo] = beta * dV
                if TI == 1:
                    dI[0, n] += dV  # static input: I[t] = I for every t, so dI = sum_t dV[t]
                else:
                    dI[t, n] = dV


def lif_backward_nodelay_plain(dS, V, beta, theta, zero_reset, sg_code, sg_k, dI):
    """Plain twin of :func:`lif_backward_nodelay` (same arguments, same result): one neuron at a
    time, t from T-1 down to 0, with dV[T] = 0."""
    T, N = dS.shape
    TI = dI.shape[0]
    d = dI.dtype.type  # the gradient's dtype
    for n in range(N):
        if TI == 1:
            dI[0, n] = 0
        dV_next = d(0)  # dL/dV[t+1], zero past the last step
        for t in range(T - 1, -1, -1):
            # fwd: V[t+1] = beta * U[t] + I[t+1]  =>  dU[t] = beta * dV[t+1]
            dU = beta * dV_next
            if zero_reset and V[t, n] > theta:
                # fwd: U[t] = V[t] * (1 - S[t])  (S detached)  =>  dU[t]/dV[t] = 0 when S[t] = 1
                dU = d(0)
            # fwd: S[t] = H(V[t] - theta)  =>  dS[t]/dV[t] = sg'(V[t] - theta)   (surrogate)
            dV = dS[t, n] * d(sg_grad(sg_code, sg_k, V[t, n] - theta)) + dU
            # fwd: V[t] = beta * U[t-1] + I[t]  =>  dV[t]/dI[t] = 1
            if TI == 1:
                dI[0, n] += dV  # static input: I[t] = I at every step, so dI = sum_t dV[t]
            else:
                dI[t, n] = dV
            dV_next = dV
