"""Convolution forward and weight gradient for 0/1 spike inputs, by window patterns.

The same maths as ``conv.conv2d_forward`` / ``conv.conv2d_backward_weight`` (the plain forms, used
for any other input), organised around what a spike input allows: for one input channel c, one
kernel row kh and one output position (i, j), the KW inputs under that kernel row are a KW-bit
pattern m (bit kw set if X[n, c, i*s - p + kh, j*s - p + kw] = 1), so

    forward:  Y[n, :, i, j] += Tab[c, kh, m, :],      Tab[c, kh, m, :] = sum_{kw in m} W[:, c, kh, kw]
    backward: G[c, kh, m, :] += dY[n, :, i, j]   ...   dW[:, c, kh, kw] = sum_{m containing kw} G[c, kh, m, :]

One 64-wide add per (c, kh, i, j) with a non-empty pattern, in loops of fixed length, instead of
one per (spike, tap) in loops whose length depends on the data. The patterns come from one
bit mask per input row (``_row_mask``). Needs KW <= 8 and W + pad <= 62 (``fits``).
"""

import numpy as np

from mininsnn._jit import jit, prange
from mininsnn.kernels.conv import sample_channels_last


def fits(KW, W, pad):
    """Whether the pattern kernels handle this shape (else use the plain kernels)."""
    return KW <= 8 and W + pad <= 62


@jit
def _row_mask(X, n, c, y, pad):
    """Bit x + pad set where X[n, c, y, x] != 0 (so a window starting at column x0 - pad is >> x0)."""
    M = 0
    for x in range(X.shape[3]):
        M |= (X[n, c, y, x] != 0) << (x + pad)
    return M


@jit
def pattern_table(Wt, Tab):
    """Tab[c, kh, m, :] = sum of Wt[c, kh, kw, :] over the bits kw of m.   Wt: (C, KH, KW, O);
    Tab: (C, KH, 2^KW, O), written. Each pattern is the one without its lowest bit plus that bit's row."""
    C, KH, KW, O = Wt.shape
    for c in range(C):
        for kh in range(KH):
            Tab[c, kh, 0] = 0.0
            for m in range(1, 1 << KW):
                low = m & (-m)
                kw = 0
                while (1 << kw) != low:
                    kw += 1
                for o in range(O):
                    Tab[c, kh, m, o] = Tab[c, kh, m ^ low, o] + Wt[c, kh, kw, o]


@jit(parallel=True)
def spikeconv_forward(X, Tab, KW, stride, pad, rows, Y):
    """Y[n, o, i, j] = sum_{c, kh, kw} W[o, c, kh, kw] X[n, c, i*s - p + kh, j*s - p + kw], X in {0, 1}.

    X: (N, C, H, W) uint8 spikes;  Tab: (C, KH, 2^KW, O) from pattern_table;
    rows: (H, 2) output rows (lo, hi) each input row reaches;  Y: (N, O, OH, OW), written.
    """
    N, C, H, Wd = X.shape
    O = Tab.shape[3]
    OH, OW = Y.shape[2], Y.shape[3]
    full = (1 << KW) - 1
    for n in prange(N):
        acc = np.zeros((OH, OW, O), dtype=Y.dtype)  # Y[n] with channels last
        for c in range(C):
            for y in range(H):
                M = _row_mask(X, n, c, y, pad)
                if M == 0:
                    continue
                for i in range(rows[y, 0], rows[y, 1] + 1):
                    kh = y + pad - i * stride
                    for j in range(OW):
                        m = (M >> (j * stride)) & full  # the spikes under kernel row kh at (i, j)
                        if m == 0:
                            continue
                        for o in range(O):
                            acc[i, j, o] += Tab[c, kh, m, o]
        for o in range(O):
            for i in range(OH):
                for j in range(OW):
                    Y[n, o, i, j] = acc[i, j, o]


@jit(parallel=True)
def spikeconv_backward_weight(X, dY, KW, stride, pad, rows, G_parts):
    """G[c, kh, m, :] = sum over (n, i, j) whose kernel row kh sees pattern m of dY[n, :, i, j].

    X: (N, C, H, W) uint8 spikes;  dY: (N, O, OH, OW);  rows as in spikeconv_forward;
    G_parts: (P, C, KH, 2^KW, O), written: partial sums over P slices of the batch. Then
    dW[:, c, kh, kw] = sum over m with bit kw of G[c, kh, m, :]  (unfold_pattern_grad).
    """
    N, C, H, Wd = X.shape
    P = G_parts.shape[0]
    O, OH, OW = dY.shape[1], dY.shape[2], dY.shape[3]
    full = (1 << KW) - 1
    for p in prange(P):
        G = G_parts[p]
        G[:] = 0.0
        dYt = np.empty((OH, OW, O), dtype=dY.dtype)  # one sample of dY, channels last
        for n in range(p * N // P, (p + 1) * N // P):
            sample_channels_last(dY, n, dYt)
            for c in range(C):
                for y in range(H):
                    M = _row_mask(X, n, c, y, pad)
                    if M == 0:
                        continue
                    for i in range(rows[y, 0], rows[y, 1] + 1):
                        kh = y + pad - i * stride
                        for j in range(OW):
                            m = (M >> (j * stride)) & full
                            if m == 0:
                                continue
                            for o in range(O):
                                G[c, kh, m, o] += dYt[i, j, o]


@jit
def unfold_pattern_grad(G, dWt):
    """dWt[c, kh, kw, :] = sum over patterns m with bit kw of G[c, kh, m, :].   G: (C, KH, 2^KW, O);
    dWt: (C, KH, KW, O), written."""
    C, KH, KW, O = dWt.shape
    dWt[:] = 0.0
    for c in range(C):
        for kh in range(KH):
            for m in range(1, 1 << KW):
                for kw in range(KW):
                    if (m >> kw) & 1:
                        for o in range(O):
                            dWt[c, kh, kw, o] += G[c, kh, m, o]
