"""2-D convolution (cross-correlation, as in PyTorch) over a batch of N = T*B samples.

    Y[n, o, i, j] = sum_{c, kh, kw} W[o, c, kh, kw] * X[n, c, i*s - p + kh, j*s - p + kw]

(zero outside the input; s = stride, p = padding). The kernels take the weight with output
channels last, Wt[c, kh, kw, o] = W[o, c, kh, kw], so the innermost loops run over contiguous
output channels.

The forward and the weight gradient are *event-driven*: they walk the input and skip zeros, and
each non-zero input element x adds x * W[:, c, kh, kw] to every output it reaches. Spike inputs
are 0/1 and mostly 0, so this does a fraction of the dense work. The input gradient is dense (every
input position needs it): one small matrix product per sample (an own register-blocked loop, not
BLAS), then the rows are scattered back to the input positions they came from.

Below each kernel, ``<kernel>_plain`` is its plain twin: the same arguments and result, one loop per
index of the equation, every term summed (zeros included), not compiled.
"""

import numpy as np

from mininsnn._jit import jit, prange


@jit
def out_ranges(n_in, pad, K, stride, n_out):
    """For every input index y, the output indices i with 0 <= y + pad - i*stride < K, as an
    inclusive range: R[y] = (lo, hi). A table, so that no division runs per input spike."""
    R = np.empty((n_in, 2), dtype=np.int64)
    for y in range(n_in):
        R[y, 0] = max(0, (y + pad - K + stride) // stride)  # ceil((y + pad - K + 1) / stride)
        R[y, 1] = min(n_out - 1, (y + pad) // stride)
    return R


@jit
def sample_channels_last(dY, n, out):
    """out[i, j, o] = dY[n, o, i, j]: sample n of an (N, O, OH, OW) array, channels last (OH, OW, O)."""
    for o in range(dY.shape[1]):
        for i in range(dY.shape[2]):
            for j in range(dY.shape[3]):
                out[i, j, o] = dY[n, o, i, j]


@jit(parallel=True)
def conv2d_forward(X, Wt, stride, pad, Y):
    """X: (N, C, H, W) any real dtype;  Wt: (C, KH, KW, O);  Y: (N, O, OH, OW), written."""
    N, C, H, Wd = X.shape
    _, KH, KW, O = Wt.shape
    OH, OW = Y.shape[2], Y.shape[3]
    rows, cols = out_ranges(H, pad, KH, stride, OH), out_ranges(Wd, pad, KW, stride, OW)
    for n in prange(N):
        acc = np.zeros((OH, OW, O), dtype=Y.dtype)  # Y[n] with channels last
        for c in range(C):
            for y in range(H):
                i_lo, i_hi = rows[y, 0], rows[y, 1]
                for x in range(Wd):
                    v = X[n, c, y, x]
                    if v == 0:
                        continue  # event-driven: a silent input adds nothing
                    j_lo, j_hi = cols[x, 0], cols[x, 1]
                    for i in range(i_lo, i_hi + 1):
                        kh = y + pad - i * stride
                        for j in range(j_lo, j_hi + 1):
                            kw = x + pad - j * stride
                            for o in range(O):
                                acc[i, j, o] += v * Wt[c, kh, kw, o]
        for o in range(O):
            for i in range(OH):
                for j in range(OW):
                    Y[n, o, i, j] = acc[i, j, o]


def conv2d_forward_plain(X, Wt, stride, pad, Y):
    """Plain twin of :func:`conv2d_forward` (same arguments, same result).

        Y[n, o, i, j] = sum_{c, kh, kw} W[o, c, kh, kw] * X[n, c, i*s - p + kh, j*s - p + kw]

    with W[o, c, kh, kw] = Wt[c, kh, kw, o] and X = 0 outside the input (zero padding).
    """
    N, C, H, Wd = X.shape
    _, KH, KW, O = Wt.shape
    OH, OW = Y.shape[2], Y.shape[3]
    for n in range(N):
        for o in range(O):
            for i in range(OH):
                for j in range(OW):
                    acc = Y.dtype.type(0)
                    for c in range(C):
                        for kh in range(KH):
                            for kw in range(KW):
                                y, x = i * stride - pad + kh, j * stride - pad + kw
                                if 0 <= y < H and 0 <= x < Wd:
                                    acc += X[n, c, y, x] * Wt[c, kh, kw, o]
                    Y[n, o, i, j] = acc


@jit(parallel=True)
def conv2d_backward_weight(X, dY, stride, pad, dWt_parts):
    """dW[o, c, kh, kw] = sum_{n, i, j} dY[n, o, i, j] * X[n, c, i*s - p + kh, j*s - p + kw]

    X: (N, C, H, W);  dY: (N, O, OH, OW);
    dWt_parts: (P, C, KH, KW, O), written: partial sums over P slices of the batch (sum them).
    Event-driven like the forward: only non-zero inputs contribute. Each sample's dY is first
    copied channels-last (dYt[i, j, o]) so that the innermost loop runs over contiguous o.
    """
    N, C, H, Wd = X.shape
    P, _, KH, KW, O = dWt_parts.shape
    OH, OW = dY.shape[2], dY.shape[3]
    rows, cols = out_ranges(H, pad, KH, stride, OH), out_ranges(Wd, pad, KW, stride, OW)
    for p in prange(P):
        part = dWt_parts[p]
        part[:] = 0.0
        dYt = np.empty((OH, OW, O), dtype=dY.dtype)  # one sample of dY, channels last
        for n in range(p * N // P, (p + 1) * N // P):
            sample_channels_last(dY, n, dYt)
            for c in range(C):
                for y in range(H):
                    i_lo, i_hi = rows[y, 0], rows[y, 1]
                    for x in range(Wd):
                        v = X[n, c, y, x]
                        if v == 0:
                            continue
                        j_lo, j_hi = cols[x, 0], cols[x, 1]
                        for i in range(i_lo, i_hi + 1):
                            kh = y + pad - i * stride
                            for j in range(j_lo, j_hi + 1):
                                kw = x + pad - j * stride
                                for o in range(O):
                                    part[c, kh, kw, o] += v * dYt[i, j, o]


def conv2d_backward_weight_plain(X, dY, stride, pad, dWt_parts):
    """Plain twin of :func:`conv2d_backward_weight` (same arguments, same result).

        dW[o, c, kh, kw] = sum_{n, i, j} dY[n, o, i, j] * X[n, c, i*s - p + kh, j*s - p + kw]

    written as dWt_parts[p, c, kh, kw, o]: the sum over the samples n of slice p of the batch,
    p*N//P <= n < (p+1)*N//P (the slices the fast kernel runs in parallel; their sum is dW).
    """
    N, C, H, Wd = X.shape
    P, _, KH, KW, O = dWt_parts.shape
    OH, OW = dY.shape[2], dY.shape[3]
    for p in range(P):
        for c in range(C):
            for kh in range(KH):
                for kw in range(KW):
                    for o in range(O):
                        acc = dWt_parts.dtype.type(0)
                        for n in range(p * N // P, (p + 1) * N // P):
                            for i in range(OH):
                                for j in range(OW):
                                    y, x = i * stride - pad + kh, j * stride - pad + kw
                                    if 0 <= y < H and 0 <= x < Wd:
                                        acc += dY[n, o, i, j] * X[n, c, y, x]
                        dWt_parts[p, c, kh, kw, o] = acc


@jit
def _tile_product(A, B, P):
    """P[r, k] = sum_o A[o, r] * B[o, k]   (P = A^T B).   A: (O, R), B: (O, K), P: (R, K), written;
    O and R multiples of 4 (zero-padded by the caller: a zero row adds exact zeros).

    Register-blocked for the compiler's vectoriser, without BLAS: 4 rows of P and 4 values of o per
    pass, so that each loaded B[o, k] is used 4 times and each P[r, k] is loaded and stored once per
    4 products; the innermost loop runs over contiguous k. Per pass the 4 products are summed in
    pairs, (a0 b0 + a1 b1) + (a2 b2 + a3 b3), then added to P.
    """
    O, R = A.shape
    K = B.shape[1]
    P[:] = 0.0
    for o in range(0, O, 4):
        b0, b1, b2, b3 = B[o], B[o + 1], B[o + 2], B[o + 3]
        for r in range(0, R, 4):
            a00, a01, a02, a03 = A[o, r], A[o + 1, r], A[o + 2, r], A[o + 3, r]
            a10, a11, a12, a13 = A[o, r + 1], A[o + 1, r + 1], A[o + 2, r + 1], A[o + 3, r + 1]
            a20, a21, a22, a23 = A[o, r + 2], A[o + 1, r + 2], A[o + 2, r + 2], A[o + 3, r + 2]
            a30, a31, a32, a33 = A[o, r + 3], A[o + 1, r + 3], A[o + 2, r + 3], A[o + 3, r + 3]
            p0, p1, p2, p3 = P[r], P[r + 1], P[r + 2], P[r + 3]
            for k in range(K):
                x0, x1, x2, x3 = b0[k], b1[k], b2[k], b3[k]
                p0[k] += (a00 * x0 + a01 * x1) + (a02 * x2 + a03 * x3)
                p1[k] += (a10 * x0 + a11 * x1) + (a12 * x2 + a13 * x3)
                p2[k] += (a20 * x0 + a21 * x1) + (a22 * x2 + a23 * x3)
                p3[k] += (a30 * x0 + a31 * x1) + (a32 * x2 + a33 * x3)


@jit(parallel=True)
def conv2d_backward_input(dY, Wm, stride, pad, KH, KW, pool, dX):
    """dX of "conv (stride s, padding p), then k x k average pooling with stride k" (k = ``pool``;
    k = 1: the convolution alone):

        Z[n, o, zy, zx] = sum_{c, kh, kw} W[o, c, kh, kw] * X[n, c, zy*s - p + kh, zx*s - p + kw]
        Y[n, o, i, j]   = (1/k^2) * sum_{a, b < k} Z[n, o, k*i + a, k*j + b]
        dX[n, c, y, x]  = (1/k^2) * sum_{o, i, j, a, b} dY[n, o, i, j] * W[o, c, y + p - (k*i + a)*s, x + p - (k*j + b)*s]

    (taps in range). dY: (N, O, OH, OW);  Wm: (O4, KH*KW*C), Wm[o, (kh*KW + kw)*C + c] = W[o, c, kh, kw],
    O4 = O rounded up to a multiple of 4, rows O.. zero;  dX: (N, C, H, W), written.

    The same sum in three steps per sample, with no BLAS (its speed and bits would depend on the
    kernel set OpenBLAS picks):
      1. P[(i, j), (kh, kw, c)] = sum_o dY[n, o, i, j] * W[o, c, kh, kw]       (_tile_product)
      2. Q[y', x', c] = sum of P[(i, j), (kh, kw, c)] over y' = k*s*i + kh, x' = k*s*j + kw
         (each kernel row (kw, c) of a window is one contiguous run of Q, channels last)
      3. dX[c, y, x] = (1/k^2) * sum_{a, b < k} Q[y + p - a*s, x + p - b*s, c]   (k x k box; separable)
    Pooling after the convolution thus costs a box filter instead of a (KH+k-1) x (KW+k-1) kernel:
    k=2, 5x5: 25 instead of 36 products per (o, position).
    """
    N, O, OH, OW = dY.shape
    C, H, Wd = dX.shape[1], dX.shape[2], dX.shape[3]
    O4, KC = Wm.shape[0], Wm.shape[1]
    R4 = (OH * OW + 3) // 4 * 4
    m = (pool - 1) * stride  # margin of Q, so that y + p - a*s + m >= 0
    scale = 1.0 / (pool * pool)
    chunks = min(N, 256)
    for ch in prange(chunks):
        A = np.zeros((O4, R4), dtype=dX.dtype)  # dY[n] as (o, position), zero-padded
        P = np.empty((R4, KC), dtype=dX.dtype)  # (positions, KH*KW*C)
        Q = np.empty((H + 2 * pad + m, (Wd + 2 * pad + m) * C), dtype=dX.dtype)  # (y'+m, (x'+m)*C + c)
        Qx = np.empty((H + 2 * pad + m, Wd * C), dtype=dX.dtype)  # Q boxed along x, (y'+m, x*C + c)
        Z = np.empty((H, Wd * C), dtype=dX.dtype)  # Qx boxed along y, (y, x*C + c)
        for n in range(ch * N // chunks, (ch + 1) * N // chunks):
            for o in range(O):
                for i in range(OH):
                    for j in range(OW):
                        A[o, i * OW + j] = dY[n, o, i, j]
            _tile_product(A, Wm, P)  # 1.
            # 2. and 3. (their tuples are built here: a parallel loop takes no tuple from outside)
            _window_sum(P, (OH, OW, KH, C, KW * C, pool * stride, m), Q)
            _box_sum_xy(Q, (pad, m, stride, pool, C), Qx, Z)
            for c in range(C):  # scaled, channels first: dX[n, c, y, x] = (1/k^2) Z[y, x, c]
                for y in range(H):
                    z = Z[y]
                    for x in range(Wd):
                        dX[n, c, y, x] = z[x * C + c] * scale


@jit
def _window_sum(P, geo, Q):
    """Step 2 of :func:`conv2d_backward_input`, written: Q[y' + m, (x' + m)*C + c] = sum of
    P[(i, j), (kh, kw, c)] over y' = step*i + kh, x' = step*j + kw (step = k*s, margin m).
    geo = (OH, OW, KH, C, L, step, m), L = KW*C: each kernel row (kw, c) of a window is one
    contiguous run of Q, channels last."""
    OH, OW, KH, C, L, step, m = geo
    Q[:] = 0.0
    for i in range(OH):
        for j in range(OW):
            x0 = (j * step + m) * C
            for kh in range(KH):
                src = P[i * OW + j, kh * L:(kh + 1) * L]
                dst = Q[i * step + kh + m, x0:x0 + L]
                for q in range(L):
                    dst[q] += src[q]


@jit
def _box_sum_xy(Q, geo, Qx, Z):
    """Step 3 of :func:`conv2d_backward_input` (unscaled), the k x k box, separable; written:

        Qx[y', x, c] = sum_{b < k} Q[y' + m, x + p - b*s + m, c]      along x
        Z[y, x, c]   = sum_{a < k} Qx[y + p - a*s + m, x, c]          along y

    geo = (pad, m, stride, pool, C);  Z: (H, W*C), Qx: (rows of Q, W*C)."""
    pad, m, stride, pool, C = geo
    WC = Z.shape[1]
    for yq in range(Q.shape[0]):
        row, out = Q[yq], Qx[yq]
        for q in range(WC):
            out[q] = row[(pad + m) * C + q]
        for b in range(1, pool):
            src = row[(pad + m - b * stride) * C:]
            for q in range(WC):
                out[q] += src[q]
    for y in range(Z.shape[0]):
        z, src = Z[y], Qx[y + pad + m]
        for q in range(WC):
            z[q] = src[q]
        for a in range(1, pool):
            src = Qx[y + pad + m - a * stride]
            for q in range(WC):
                z[q] += src[q]


def conv2d_backward_input_plain(dY, Wm, stride, pad, KH, KW, pool, dX):
    """Plain twin of :func:`conv2d_backward_input` (same arguments, same result up to rounding).

        dX[n, c, y, x] = (1/k^2) * sum_{o, i, j, a, b} dY[n, o, i, j] * W[o, c, y + p - (k*i + a)*s, x + p - (k*j + b)*s]

    over the outputs (i, j) and pooling offsets (a, b < k) whose tap (kh, kw) lies in the kernel;
    W[o, c, kh, kw] = Wm[o, (kh*KW + kw)*C + c] (rows of Wm past O are not read).
    """
    N, O, OH, OW = dY.shape
    C, H, Wd = dX.shape[1], dX.shape[2], dX.shape[3]
    k = pool
    for n in range(N):
        for c in range(C):
            for y in range(H):
                for x in range(Wd):
                    acc = dX.dtype.type(0)
                    for o in range(O):
                        for i in range(OH):
                            for j in range(OW):
                                for a in range(k):
                                    for b in range(k):
                                        kh = y + pad - (k * i + a) * stride
                                        kw = x + pad - (k * j + b) * stride
                                        if 0 <= kh < KH and 0 <= kw < KW:
                                            acc += dY[n, o, i, j] * Wm[o, (kh * KW + kw) * C + c]
                    dX[n, c, y, x] = acc / (k * k)


@jit(parallel=True)
def conv2d_backward_input_at(dY, Wt, stride, pad, B, H, W, act_n, act_ptr, block, dX_act):
    """dX at the entries of a LIF layer's active list only (the sparse backward): for each entry
    (t, n) of the list, with n = ((b*C + c)*H + y)*W + x a neuron of the (T, B, C, H, W) input,

        dX_act[e] = dX[t*B + b, c, y, x] = sum_{o, i, j} dY[t*B + b, o, i, j] * W[o, c, y + p - i*s, x + p - j*s]

    (taps in range). dY: (T*B, O, OH, OW);  Wt: (C, KH, KW, O), Wt[c, kh, kw, o] = W[o, c, kh, kw]
    (with fused pooling, the fused kernel);  act_n, act_ptr, block: the list as kernels/lif.py's
    lif_forward writes it;  dX_act: (len(act_n),), written at the listed slots. One entry at a time,
    so a sample's other inputs cost nothing: the list holds the only entries whose surrogate is not
    0, and a LIF layer reads dS nowhere else. Per entry the products are summed over the windows
    for each o (vectorised over contiguous o), then over o in 8 lanes, then the lanes.
    """
    C, KH, KW, O = Wt.shape
    OH, OW = dY.shape[2], dY.shape[3]
    nblk, T = act_ptr.shape[0], act_ptr.shape[1] - 1
    rows, cols = out_ranges(H, pad, KH, stride, OH), out_ranges(W, pad, KW, stride, OW)
    CHW = C * H * W
    cyx = np.empty((CHW, 3), dtype=np.int64)  # (c, y, x) of each neuron of a sample: no division per entry
    for r in range(CHW):
        cyx[r, 0], cyx[r, 1], cyx[r, 2] = r // (H * W), (r // W) % H, r % W
    for blk in prange(nblk):
        base = blk * T * block
        dYt = np.empty((OH, OW, O), dtype=dY.dtype)  # the current sample of dY, channels last
        acc = np.empty(O, dtype=dY.dtype)
        for t in range(T):
            b, start = -1, 0  # the sample in dYt and its first neuron
            for e in range(base + act_ptr[blk, t], base + act_ptr[blk, t + 1]):
                n = act_n[e]
                if b < 0 or n >= start + CHW:  # sorted by n: each sample is copied once per step
                    b = n // CHW
                    start = b * CHW
                    sample_channels_last(dY, t * B + b, dYt)
                c, y, x = cyx[n - start, 0], cyx[n - start, 1], cyx[n - start, 2]
                acc[:] = 0.0
                for i in range(rows[y, 0], rows[y, 1] + 1):
                    kh = y + pad - i * stride
                    for j in range(cols[x, 0], cols[x, 1] + 1):
                        w, d = Wt[c, kh, x + pad - j * stride], dYt[i, j]
                        for o in range(O):
                            acc[o] += d[o] * w[o]
                # sum over o: 8 running lanes first (vectorised; one serial chain of O adds
                # would wait on every add), then the lanes and the O % 8 left over
                L8 = O - O % 8
                for o0 in range(8, L8, 8):
                    for q in range(8):
                        acc[q] += acc[o0 + q]
                total = acc[0] * 0.0
                for q in range(min(8, O)):
                    total += acc[q]
                for o in range(max(L8, 8), O):
                    total += acc[o]
                dX_act[e] = total


def conv2d_backward_input_at_plain(dY, Wt, stride, pad, B, H, W, act_n, act_ptr, block, dX_act):
    """Plain twin of :func:`conv2d_backward_input_at` (same arguments, same result up to rounding):
    for every listed entry, the sum over (o, i, j) as the equation reads, taps checked in range."""
    C, KH, KW, O = Wt.shape
    OH, OW = dY.shape[2], dY.shape[3]
    nblk, T = act_ptr.shape[0], act_ptr.shape[1] - 1
    for blk in range(nblk):
        for t in range(T):
            for e in range(blk * T * block + act_ptr[blk, t], blk * T * block + act_ptr[blk, t + 1]):
                b, rest = divmod(int(act_n[e]), C * H * W)
                c, rest = divmod(rest, H * W)
                y, x = divmod(rest, W)
                acc = dX_act.dtype.type(0)
                for o in range(O):
                    for i in range(OH):
                        for j in range(OW):
                            kh, kw = y + pad - i * stride, x + pad - j * stride
                            if 0 <= kh < KH and 0 <= kw < KW:
                                acc += dY[t * B + b, o, i, j] * Wt[c, kh, kw, o]
                dX_act[e] = acc
