"""Leaky integrate-and-fire neuron: forward over all time steps and its BPTT.

Notation (SpikingJelly-style charge / fire / reset), for one neuron:

    R[t] = H(U[t-1] - theta)                  reset signal = previous spike; DETACHED (no gradient)
    U[t] = beta * U[t-1] + I[t] - theta * R[t]          "subtract" reset (the paper's)
    U[t] = (beta * U[t-1] + I[t]) * (1 - R[t])          "zero" reset (option)
    S[t] = H(U[t] - theta)                    spike, strict step; smooth twin: S[t] = g(U[t] - theta)
    U[-1] = 0, R[0] = 0

BPTT uses the surrogate sg'(U[t] - theta) for dS[t]/dU[t]. With a sparse-gradient bound B
(``bound``; ``inf`` for the exact surrogate) it is truncated (Perez-Nieves & Goodman, NeurIPS 2021):

    sg_B'(x) = sg'(x) if |x| <= B else 0;    smooth twin: g_B(x) = g(clip(x, -B, B)), so g_B' = sg_B'

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


@jit
def _clip(x, bound):
    """clip(x, -bound, bound); x itself when bound is inf."""
    return min(max(x, -bound), bound)


@jit
def _list_active_row(U_t, lo, theta, sg_code, sg_k, bound, act_n, act_g, w):
    """Append the entries of one row with |U - theta| <= bound to the active list from slot w:
    act_n = neuron index lo + n, act_g = sg'(U - theta). Returns the next free slot."""
    for n in range(U_t.shape[0]):
        x = U_t[n] - theta
        if abs(x) <= bound:
            act_n[w] = lo + n
            act_g[w] = sg_grad(sg_code, sg_k, x)
            w += 1
    return w


@jit(parallel=True)
def lif_forward(I, T, beta, theta, zero_reset, smooth, sg_code, sg_k, bound, U, S, act_n, act_g, act_ptr):
    """Run the neuron over T steps.

    I: (TI, N) input current, TI in {1, T}
    U: (T, N) membrane potential, written
    S: (T, N) spikes, written (uint8 0/1; with ``smooth``, float g(clip(U - theta, -bound, bound))
    instead of H: the smooth twin of the (truncated) surrogate)
    beta, theta, bound: scalars of I's dtype (bound = inf: no truncation).

    act_n, act_g, act_ptr: None, or the *active list* written for the sparse backward: the entries
    (t, n) with |U[t, n] - theta| <= bound, the only ones whose surrogate is not 0. Block b of
    neurons (n in [b*BLOCK, (b+1)*BLOCK)) owns the slots from b*T*BLOCK on; its entries of step t
    are the slots b*T*BLOCK + act_ptr[b, t] ... b*T*BLOCK + act_ptr[b, t+1] - 1, n ascending:
    act_n (int32) the neuron, act_g (I's dtype) sg'(U[t, n] - theta).  act_n, act_g: (nblocks*T*BLOCK,);
    act_ptr: (nblocks, T + 1) int64. Each row is listed right after it is computed, while in cache.
    """
    TI, N = I.shape
    zero = theta - theta  # 0 in the input's dtype
    for blk in prange((N + BLOCK - 1) // BLOCK):
        lo = blk * BLOCK
        hi = min(N, lo + BLOCK)
        if act_n is not None:
            act_ptr[blk, 0] = 0
        for t in range(T):
            # one row of the block at a time, each mode its own branch-free loop (so it vectorises)
            It, Ut = I[t if TI > 1 else 0, lo:hi], U[t, lo:hi]
            if t == 0:
                for n in range(hi - lo):
                    Ut[n] = beta * zero + It[n]  # U[-1] = 0, R[0] = 0
            elif zero_reset:
                Up = U[t - 1, lo:hi]
                for n in range(hi - lo):
                    # U[t] = (beta * U[t-1] + I[t]) * (1 - R[t]),  R[t] = H(U[t-1] - theta)
                    u = beta * Up[n] + It[n]
                    Ut[n] = zero if Up[n] > theta else u
            else:
                Up = U[t - 1, lo:hi]
                for n in range(hi - lo):
                    # U[t] = beta * U[t-1] + I[t] - theta * R[t],  R[t] = H(U[t-1] - theta)
                    u = beta * Up[n] + It[n]
                    Ut[n] = u - theta if Up[n] > theta else u
            if smooth:
                for n in range(hi - lo):
                    S[t, lo + n] = sg_primitive(sg_code, sg_k, _clip(Ut[n] - theta, bound))  # S[t] = g_B(U[t] - theta)
            else:
                St = S[t, lo:hi]
                for n in range(hi - lo):
                    St[n] = Ut[n] > theta  # S[t] = H(U[t] - theta)
            if act_n is not None:
                base = blk * T * BLOCK
                w = _list_active_row(U[t, lo:hi], lo, theta, sg_code, sg_k, bound, act_n, act_g,
                                     base + act_ptr[blk, t])
                act_ptr[blk, t + 1] = w - base


def lif_forward_plain(I, T, beta, theta, zero_reset, smooth, sg_code, sg_k, bound, U, S, act_n, act_g, act_ptr):
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
                # S[t] = g_B(U[t] - theta) = g(clip(U[t] - theta, -B, B))
                S[t, n] = sg_primitive(sg_code, sg_k, min(max(u - theta, -bound), bound))
            else:
                S[t, n] = 1 if u > theta else 0  # S[t] = H(U[t] - theta)
            u_prev = u
    if act_n is not None:  # the active list, in the layout lif_forward documents
        for blk in range((N + BLOCK - 1) // BLOCK):
            base, w = blk * T * BLOCK, 0
            act_ptr[blk, 0] = 0
            for t in range(T):
                for n in range(blk * BLOCK, min(N, (blk + 1) * BLOCK)):
                    x = U[t, n] - theta
                    if abs(x) <= bound:  # sg_B'(x) != 0 only here
                        act_n[base + w] = n
                        act_g[base + w] = sg_grad(sg_code, sg_k, x)
                        w += 1
                act_ptr[blk, t + 1] = w


@jit
def _surrogate_grad_row(sg_code, sg_k, U_t, theta, bound, g):
    """g[n] = sg_B'(U_t[n] - theta) for one time step of a block (0 where |U - theta| > bound). The
    choice of surrogate is made once per row, outside the loop, so that the loop vectorises."""
    zero = theta - theta
    if sg_code == FAST_SIGMOID:
        for n in range(g.shape[0]):
            x = U_t[n] - theta
            g[n] = sg_grad(FAST_SIGMOID, sg_k, x) if abs(x) <= bound else zero
    elif sg_code == SIGMOID:
        for n in range(g.shape[0]):
            x = U_t[n] - theta
            g[n] = sg_grad(SIGMOID, sg_k, x) if abs(x) <= bound else zero
    else:
        for n in range(g.shape[0]):
            x = U_t[n] - theta
            g[n] = sg_grad(ATAN, sg_k, x) if abs(x) <= bound else zero


@jit(parallel=True)
def lif_backward(dS, U, beta, theta, zero_reset, sg_code, sg_k, bound, dI):
    """BPTT through the neuron.

    dS: (T, N) dL/dS[t]
    U:  (T, N) membrane potential from the forward
    dI: (TI, N) dL/dI, written; with TI == 1 (static input) the sum over t of dL/dI[t]
    bound: the sparse-gradient bound B (inf: the exact surrogate)

        dU[t] = dS[t] * sg_B'(U[t] - theta) + dU[t+1] * dU[t+1]/dU[t]
        dI[t] = dU[t] * dU[t]/dI[t]
    """
    T, N = dS.shape
    TI = dI.shape[0]
    zero = theta - theta  # 0 in the input's dtype
    for blk in prange((N + BLOCK - 1) // BLOCK):
        lo = blk * BLOCK
        hi = min(N, lo + BLOCK)
        carry = np.zeros(hi - lo, dtype=dI.dtype)  # dL/dU[t+1] * dU[t+1]/dU[t], then dU[t]
        sg = np.empty(hi - lo, dtype=dI.dtype)  # sg'(U[t] - theta) of this block
        if TI == 1:
            dI[0, lo:hi] = 0.0
        for t in range(T - 1, -1, -1):
            # fwd: S[t] = H(U[t] - theta)
            # =>   dS[t]/dU[t] = sg_B'(U[t] - theta)   (surrogate; true derivative is a Dirac delta)
            _surrogate_grad_row(sg_code, sg_k, U[t, lo:hi], theta, bound, sg)
            dSt = dS[t, lo:hi]
            for n in range(hi - lo):  # carry becomes dU[t] (a branch-free loop per mode: it vectorises)
                carry[n] = dSt[n] * sg[n] + carry[n]
            if zero_reset and t > 0:
                # fwd: U[t] = (beta * U[t-1] + I[t]) * (1 - R[t]),  R[t] = H(U[t-1] - theta) detached
                # =>   dU[t]/dI[t] = 1 - R[t] ;  dU[t]/dU[t-1] = beta * (1 - R[t])
                Up = U[t - 1, lo:hi]
                for n in range(hi - lo):
                    carry[n] = zero if Up[n] > theta else carry[n]
            # fwd: U[t] = beta * U[t-1] + I[t] - theta * R[t]   (R detached)
            # =>   dU[t]/dI[t] = 1 ;  dU[t]/dU[t-1] = beta
            dIt = dI[0 if TI == 1 else t, lo:hi]
            if TI == 1:
                for n in range(hi - lo):
                    dIt[n] += carry[n]  # static input: I[t] = I for every t, so dI = sum_t dU[t]
                    carry[n] = beta * carry[n]
            else:
                for n in range(hi - lo):
                    dIt[n] = carry[n]
                    carry[n] = beta * carry[n]


def lif_backward_plain(dS, U, beta, theta, zero_reset, sg_code, sg_k, bound, dI):
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
            # fwd: S[t] = H(U[t] - theta)  =>  dS[t]/dU[t] = sg_B'(U[t] - theta)   (surrogate, truncated)
            # fwd: U[t+1] = beta * U[t] + I[t+1] - theta * R[t+1]  (R detached)  =>  dU[t+1]/dU[t] = beta
            x = U[t, n] - theta
            sg = d(sg_grad(sg_code, sg_k, x)) if abs(x) <= bound else d(0)
            dU = dS[t, n] * sg + beta * dU_next
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


@jit(parallel=True)
def lif_backward_active(dS_act, act_n, act_g, act_ptr, beta, theta, zero_reset, U, dI):
    """BPTT through the neuron with the truncated surrogate, reading dS only where it matters.

    dS_act: dL/dS[t, n] at the entries of the active list (act_n, act_g, act_ptr, as lif_forward
    writes it), in its order;  U: (T, N) the forward's membrane potential (read only by the zero
    reset, for R[t] = H(U[t-1] - theta));  dI: (TI, N) dL/dI, written, TI in {1, T}.

        dU[t] = dS[t] * sg_B'(U[t] - theta) + beta * dU[t+1]         (sg_B' = act_g at listed entries, else 0)

    the recursion of lif_backward with the same operations, so the result is the same bits as
    lif_backward on a dense dS that equals dS_act at the listed entries (0 * dS adds nothing).
    """
    T, N = U.shape
    TI = dI.shape[0]
    zero = beta - beta
    for blk in prange((N + BLOCK - 1) // BLOCK):
        lo = blk * BLOCK
        hi = min(N, lo + BLOCK)
        base = blk * T * BLOCK
        dU = np.zeros(hi - lo, dtype=dI.dtype)  # beta * dU[t+1], then dU[t]
        if TI == 1:
            dI[0, lo:hi] = 0.0
        for t in range(T - 1, -1, -1):
            # fwd: S[t] = H(U[t] - theta)  =>  dS[t]/dU[t] = sg_B'(U[t] - theta), 0 off the list
            for e in range(base + act_ptr[blk, t], base + act_ptr[blk, t + 1]):
                n = act_n[e] - lo
                dU[n] = dS_act[e] * act_g[e] + dU[n]
            if zero_reset and t > 0:
                # fwd: U[t] = (beta * U[t-1] + I[t]) * (1 - R[t]),  R[t] = H(U[t-1] - theta)  =>  dU[t] = 0 where R[t] = 1
                for n in range(lo, hi):
                    dU[n - lo] = zero if U[t - 1, n] > theta else dU[n - lo]
            for n in range(lo, hi):
                # fwd: U[t] = beta * U[t-1] + I[t] - theta * R[t]  =>  dU[t]/dI[t] = 1 ; dU[t]/dU[t-1] = beta
                if TI == 1:
                    dI[0, n] += dU[n - lo]  # static input: dI = sum_t dU[t]
                else:
                    dI[t, n] = dU[n - lo]
                dU[n - lo] = beta * dU[n - lo]


def lif_backward_active_plain(dS_act, act_n, act_g, act_ptr, beta, theta, zero_reset, U, dI):
    """Plain twin of :func:`lif_backward_active` (same arguments, same result): the active list
    spread into a dense dS * sg_B' first, then the recursion one neuron at a time."""
    T, N = U.shape
    TI = dI.shape[0]
    d = dI.dtype.type
    g = np.zeros((T, N), dtype=dI.dtype)  # dS[t, n] * sg_B'(U[t, n] - theta), 0 off the list
    for blk in range(act_ptr.shape[0]):
        for t in range(T):
            for e in range(blk * T * BLOCK + act_ptr[blk, t], blk * T * BLOCK + act_ptr[blk, t + 1]):
                g[t, act_n[e]] = dS_act[e] * act_g[e]
    for n in range(N):
        if TI == 1:
            dI[0, n] = 0
        dU_next = d(0)
        for t in range(T - 1, -1, -1):
            dU = g[t, n] + beta * dU_next  # dU[t] = dS[t] sg_B'(U[t] - theta) + beta dU[t+1]
            if zero_reset and t > 0 and U[t - 1, n] > theta:
                dU = d(0)  # R[t] = 1: U[t] does not depend on U[t-1] or I[t]
            if TI == 1:
                dI[0, n] += dU
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
            _surrogate_grad_row(sg_code, sg_k, V[t, lo:hi], theta, np.inf, sg)  # no truncation
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
