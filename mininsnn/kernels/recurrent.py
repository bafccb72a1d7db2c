"""Recurrent neurons: the neurons of kernels/neuron.py whose own spikes feed back with one step delay.

For sample b, neuron i of n (``W`` (n, n) in Linear's (out, in) layout; S[-1] = 0):

    Xin[t, i] = X[t, i] + b_rec[i] + sum_j W[i, j] S[t-1, j]       the neuron's input at step t
    then the neuron of kernels/neuron.py on Xin (current, charge, spike, reset)

The layer writes X + b_rec into Xin; the forward kernel adds the feedback step by step (skipping
the zeros of a spike train) and runs the neuron. BPTT, t = T-1 .. 0: the spikes of step t reach
the loss directly and through the next step's input,

    dS_tot[t, j] = dS[t, j] + sum_i dXin[t+1, i] W[i, j]           (dXin[T] = 0)

then the neuron's backward (kernels/neuron.py) turns dS_tot[t] into dXin[t]; dX = dXin,
db_rec = sum_{t, b} dXin[t], dW[i, j] = sum_{t >= 1, b} dXin[t, i] S[t-1, j] (the layer, one
matrix product). Samples are independent, so each runs its whole time loop in parallel with the
others. Shapes: Xin, M, S, C, dS_tot, dXin (T, B * n), sample b owning columns b*n .. b*n + n - 1;
par (NPAR, B * n); dpar (NPAR, B * n) or (0, B * n). Each kernel is followed by its plain twin.
"""

import numpy as np

from mininsnn._jit import jit, prange
from mininsnn.kernels.neuron import (ALPHA, BETA, DRIVE, GAIN, SYN_GAIN, THETA, V_RESET, _backward_row,
                                     _forward_row)
from mininsnn.surrogate import sg_grad, sg_primitive

GROUP = 8  # samples per parallel work item
CHUNK = 128  # (t, b) pairs per pass of the weight gradient over the rows of dW^T


@jit
def _add_rows(row, A, idx, val, cnt):
    """row += sum_q val[q] A[idx[q]], q = 0 .. cnt-1: each entry of row takes its terms one after
    another in that order (as a plain loop adds them), four rows of A per pass over row."""
    q = 0
    while q + 8 <= cnt:
        a0, a1, a2, a3 = A[idx[q]], A[idx[q + 1]], A[idx[q + 2]], A[idx[q + 3]]
        a4, a5, a6, a7 = A[idx[q + 4]], A[idx[q + 5]], A[idx[q + 6]], A[idx[q + 7]]
        v0, v1, v2, v3 = val[q], val[q + 1], val[q + 2], val[q + 3]
        v4, v5, v6, v7 = val[q + 4], val[q + 5], val[q + 6], val[q + 7]
        for k in range(row.shape[0]):
            r = (((row[k] + v0 * a0[k]) + v1 * a1[k]) + v2 * a2[k]) + v3 * a3[k]
            row[k] = (((r + v4 * a4[k]) + v5 * a5[k]) + v6 * a6[k]) + v7 * a7[k]
        q += 8
    while q + 4 <= cnt:
        a0, a1, a2, a3 = A[idx[q]], A[idx[q + 1]], A[idx[q + 2]], A[idx[q + 3]]
        v0, v1, v2, v3 = val[q], val[q + 1], val[q + 2], val[q + 3]
        for k in range(row.shape[0]):
            row[k] = (((row[k] + v0 * a0[k]) + v1 * a1[k]) + v2 * a2[k]) + v3 * a3[k]
        q += 4
    while q < cnt:
        a, v = A[idx[q]], val[q]
        for k in range(row.shape[0]):
            row[k] += v * a[k]
        q += 1


@jit
def _nonzero(x, idx, val):
    """idx, val <- the positions and values of x's nonzero entries, in order; returns their count."""
    cnt = 0
    for j in range(x.shape[0]):  # written always, kept when nonzero: no branch to mispredict
        idx[cnt], val[cnt] = j, x[j]
        cnt += x[j] != 0
    return cnt


@jit(parallel=True)
def recurrent_forward(Wt, par, mode, n, Xin, M, S, C):
    """Wt (n, n) = W^T, rows by input neuron j; Xin (T, N) holds X + b_rec, the feedback is added:
    per sample, the rows of Wt of the neurons that fired at t-1 (event-driven). Samples run in
    groups of GROUP, in parallel."""
    T, N = Xin.shape
    B = N // n
    for grp in prange((B + GROUP - 1) // GROUP):
        b0, b1 = grp * GROUP, min(B, (grp + 1) * GROUP)
        idx, val = np.empty(n, np.int64), np.empty(n, Xin.dtype)  # the spikes of one sample at t-1
        for t in range(T):
            if t > 0:
                for b in range(b0, b1):  # Xin[t] += W S[t-1]: one row of Wt per input neuron that fired
                    cnt = _nonzero(S[t - 1, b * n:b * n + n], idx, val)
                    _add_rows(Xin[t, b * n:b * n + n], Wt, idx, val, cnt)
            for b in range(b0, b1):
                _forward_row(Xin, t, t, par, mode, M, S, C, b * n, b * n + n)


def recurrent_forward_plain(Wt, par, mode, n, Xin, M, S, C):
    """Plain twin of :func:`recurrent_forward`: one sample, one step, one neuron at a time."""
    zero_reset, delay, cuba, smooth, sg_code, sg_k = mode
    T, N = Xin.shape
    par = np.broadcast_to(par, (len(par), N))  # one column: the same values for all
    for b in range(N // n):
        for t in range(T):
            for i in range(n):
                k = b * n + i
                acc = Xin[t, k]
                for j in range(n):  # Xin[t, i] = X[t, i] + b_rec[i] + sum_j W[i, j] S[t-1, j]
                    if t > 0 and S[t - 1, b * n + j] != 0:
                        acc += S[t - 1, b * n + j] * Wt[j, i]
                Xin[t, k] = acc
                th, vr = par[THETA, k], par[V_RESET, k]
                c = par[ALPHA, k] * (C[t - 1, k] if t > 0 else 0 * th) + par[SYN_GAIN, k] * acc if cuba else acc
                if cuba:
                    C[t, k] = c  # I[t] = alpha I[t-1] + syn_gain Xin[t]
                mp = M[t - 1, k] if t > 0 else 0 * th
                fired = t > 0 and mp > th
                u = mp if (delay or not fired) else (vr if zero_reset else mp - th)  # U[t-1]
                m = par[BETA, k] * u + par[GAIN, k] * c + par[DRIVE, k]  # Q[t]
                if delay and fired:  # R[t] = H(U[t-1] - theta)
                    m = vr if zero_reset else m - th
                M[t, k] = m
                S[t, k] = sg_primitive(sg_code, sg_k, m - th) if smooth else (1 if m > th else 0)


@jit(parallel=True)
def recurrent_backward(W, par, mode, n, Xin, M, C, dS_tot, dXin, dpar):
    """BPTT through :func:`recurrent_forward`. W (n, n) rows by output neuron i; dS_tot (T, N)
    holds dL/dS on entry and gets the feedback added; dXin (T, N) written; dpar added to.
    Samples run in groups of GROUP, as in the forward."""
    T, N = dS_tot.shape
    B = N // n
    cu = np.zeros(N, dtype=dXin.dtype)  # dL/dU[t] from step t+1; each sample owns its columns
    ci = np.zeros(N, dtype=dXin.dtype)  # dL/dI[t] from step t+1
    for grp in prange((B + GROUP - 1) // GROUP):
        b0, b1 = grp * GROUP, min(B, (grp + 1) * GROUP)
        g = np.empty(n, dtype=dXin.dtype)  # sg'(M[t] - theta) of one sample
        idx, val = np.empty(n, np.int64), np.empty(n, dXin.dtype)  # the nonzeros of dXin[t+1] of one sample
        if T == 1:
            dXin[0, b0 * n:b1 * n] = 0.0  # one step: the row kernel adds into it
        for t in range(T - 1, -1, -1):
            if t < T - 1:
                # fwd: Xin[t+1, i] = ... + sum_j W[i, j] S[t, j]  =>  dS[t, j] += sum_i dXin[t+1, i] W[i, j]
                for b in range(b0, b1):
                    cnt = _nonzero(dXin[t + 1, b * n:b * n + n], idx, val)
                    _add_rows(dS_tot[t, b * n:b * n + n], W, idx, val, cnt)
            for b in range(b0, b1):
                _backward_row(dS_tot, Xin, t, par, mode, M, C, cu, ci, dXin, dpar, b * n, b * n + n, g)


def recurrent_backward_plain(W, par, mode, n, Xin, M, C, dS_tot, dXin, dpar):
    """Plain twin of :func:`recurrent_backward`: one sample, one step, one neuron at a time."""
    zero_reset, delay, cuba, smooth, sg_code, sg_k = mode
    T, N = dS_tot.shape
    d = dXin.dtype.type
    par = np.broadcast_to(par, (len(par), N))  # one column: the same values for all
    for b in range(N // n):
        cu, ci = np.zeros(n, dXin.dtype), np.zeros(n, dXin.dtype)  # carries from step t+1
        for t in range(T - 1, -1, -1):
            for j in range(n):  # dS[t, j] += sum_i dXin[t+1, i] W[i, j]
                for i in range(n):
                    if t < T - 1 and dXin[t + 1, b * n + i] != 0:
                        dS_tot[t, b * n + j] += dXin[t + 1, b * n + i] * W[i, j]
            for i in range(n):
                k = b * n + i
                th, vr, m = par[THETA, k], par[V_RESET, k], M[t, k]
                ds_sg = dS_tot[t, k] * d(sg_grad(sg_code, sg_k, m - th))  # S[t] = H(M[t] - theta)
                mp = M[t - 1, k] if t > 0 else d(0)
                fired_prev = t > 0 and mp > th
                u_prev = mp if (delay or not fired_prev) else (vr if zero_reset else mp - th)
                f = fired_prev if delay else m > th  # R[t] or S[t], detached in the reset
                dU = ds_sg + cu[i] if delay else cu[i]
                dQ = (d(0) if zero_reset and f else dU) if delay else ds_sg + (d(0) if zero_reset and f else dU)
                dI = par[GAIN, k] * dQ + ci[i]  # Q[t] = beta U[t-1] + gain I[t] + drive
                cu[i] = par[BETA, k] * dQ
                dXin[t, k] = par[SYN_GAIN, k] * dI if cuba else dI  # I[t] = alpha I[t-1] + syn_gain Xin[t]
                ci[i] = par[ALPHA, k] * dI if cuba else d(0)
                if dpar.shape[0] > 0:
                    x = Xin[t, k]
                    dUf = dU if f else d(0)
                    dpar[BETA, k] += dQ * u_prev
                    dpar[GAIN, k] += dQ * (C[t, k] if cuba else x)
                    dpar[DRIVE, k] += dQ
                    dpar[THETA, k] += -ds_sg - (d(0) if zero_reset else dUf)
                    dpar[V_RESET, k] += dUf if zero_reset else d(0)
                    if cuba:
                        dpar[ALPHA, k] += dI * (C[t - 1, k] if t > 0 else d(0))
                        dpar[SYN_GAIN, k] += dI * x


@jit(parallel=True)
def recurrent_backward_weight(dXin, S, n, parts):
    """fwd: Xin[t, i] = ... + sum_j W[i, j] S[t-1, j]  =>  dW[i, j] = sum_{t >= 1, b} dXin[t, i] S[t-1, j],
    collected transposed, by the spikes that fired: G[j, :] += S[t-1, j] dXin[t, :] (G = dW^T).

    dXin: (T, N);  S: (T, N) spikes (uint8) or the smooth twin's floats;  parts: (P, n, n), written:
    the partial sums of G over P fixed slices of the (t, b) pairs, summed by the caller (a count
    that does not depend on the threads, so neither do the bits)."""
    T, N = dXin.shape
    B = N // n
    P = parts.shape[0]
    pairs = (T - 1) * B  # (t, b) with t >= 1, as r = (t - 1) * B + b
    D = dXin.reshape(T * B, n)[B:]  # row r: dXin[t] of sample b, r = (t - 1) * B + b
    Sp = S.reshape(T * B, n)  # row r: S[t-1] of sample b
    for p in prange(P):
        G = parts[p]
        G[...] = 0.0
        idx, val = np.empty(CHUNK, np.int64), np.empty(CHUNK, parts.dtype)  # the pairs that fired at j
        r1 = (p + 1) * pairs // P
        for r0 in range(p * pairs // P, r1, CHUNK):  # CHUNK pairs at a time (their rows of D stay in cache)
            for j in range(n):  # G[j] += S[t-1, j] dXin[t] over the pairs of the chunk that fired at j, in order
                cnt = 0
                for r in range(r0, min(r0 + CHUNK, r1)):
                    if Sp[r, j] != 0:
                        idx[cnt], val[cnt] = r, Sp[r, j]
                        cnt += 1
                _add_rows(G[j], D, idx, val, cnt)


def recurrent_backward_weight_plain(dXin, S, n, parts):
    """Plain twin of :func:`recurrent_backward_weight`: the whole sum in slice 0, one entry at a time.

        G[j, i] = sum_{t >= 1, b} S[t-1, b, j] dXin[t, b, i]      (G = dW^T)
    """
    T, N = dXin.shape
    parts[...] = 0
    for t in range(1, T):
        for b in range(N // n):
            for j in range(n):
                for i in range(n):
                    parts[0, j, i] += S[t - 1, b * n + j] * dXin[t, b * n + i]
