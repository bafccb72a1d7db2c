"""Losses on output spike trains S of shape (T, B, C); each returns (loss, dL/dS).

mse_count_loss (the paper's, snnTorch ``mse_count_loss``):
    count[b, c] = sum_t S[t, b, c]
    y[b, c]     = int(T * correct_rate) if c == target[b] else int(T * incorrect_rate)
    L           = mean_{b,c} (count - y)^2 / T
    dL/dS[t, b, c] = 2 (count[b, c] - y[b, c]) / (T B C)          (the same for every t)

ce_rate_loss:  L = (1/T) sum_t mean_b CE(softmax(S[t, b]), target[b])
    dL/dS[t, b] = (softmax(S[t, b]) - onehot(target[b])) / (T B)
ce_count_loss: L = mean_b CE(softmax(count[b]), target[b])
    dL/dS[t, b] = (softmax(count[b]) - onehot(target[b])) / B     (the same for every t)

accuracy: argmax over classes of the spike count, ties to the lowest index (no spikes -> class 0).

dL/dS comes in the spikes' float dtype. For 0/1 spikes stored as integers (what a Network
returns) it comes in ``dtype``, by default float64, so that it loses nothing whatever the
network's dtype: ``Network.backward`` rounds it once to its own dtype (for a float32 network
the same bits as computing it in float32 directly, since the gradient is computed in float64
either way).
"""

import numpy as np

__all__ = ["mse_count_loss", "ce_rate_loss", "ce_count_loss", "accuracy", "predict", "LOSSES"]


def _check(spikes, targets, where, dtype=None):
    S = np.asarray(spikes)
    if S.ndim != 3:
        raise ValueError(f"{where}: expected spikes of shape (T, B, C), got {S.shape}")
    T, B, C = S.shape
    if T < 1 or B < 1 or C < 1:
        raise ValueError(f"{where}: expected non-empty spikes (T, B, C), got {S.shape}")
    y = np.asarray(targets)
    if y.shape != (B,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{where}: expected integer targets of shape ({B},), got {y.dtype} {y.shape}")
    if y.min() < 0 or y.max() >= C:
        raise ValueError(f"{where}: targets must lie in 0..{C - 1}, got values in {y.min()}..{y.max()}")
    if np.issubdtype(S.dtype, np.floating) and not np.isfinite(S).all():
        raise ValueError(f"{where}: spikes contain NaN or inf")
    if S.dtype in (np.float32, np.float64):
        return S, y, S.dtype
    dtype = np.dtype(np.float64 if dtype is None else dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"{where}: expected dtype float32 or float64, got {dtype}")
    return S, y, dtype


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def mse_count_loss(spikes, targets, correct_rate=0.8, incorrect_rate=0.2, dtype=None):
    S, y, dtype = _check(spikes, targets, "mse_count_loss", dtype)
    for name, r in (("correct_rate", correct_rate), ("incorrect_rate", incorrect_rate)):
        if not (np.isfinite(r) and 0 <= r <= 1):
            raise ValueError(f"mse_count_loss: expected {name} in [0, 1], got {r!r}")
    T, B, C = S.shape
    count = S.sum(axis=0, dtype=np.float64)  # (B, C)
    target = np.full((B, C), int(T * incorrect_rate), dtype=np.float64)
    target[np.arange(B), y] = int(T * correct_rate)
    diff = count - target
    loss = float((diff ** 2).mean() / T)
    # fwd: L = (1/(T B C)) sum (count - y)^2,  count = sum_t S[t]  =>  dL/dS[t] = 2 (count - y) / (T B C)
    g = (2.0 * diff / (T * B * C)).astype(dtype)
    return loss, np.broadcast_to(g, S.shape).copy()


def ce_rate_loss(spikes, targets, dtype=None):
    S, y, dtype = _check(spikes, targets, "ce_rate_loss", dtype)
    T, B, C = S.shape
    logp = _log_softmax(S.astype(np.float64))  # (T, B, C)
    loss = float(-logp[:, np.arange(B), y].mean())
    # fwd: L = -(1/(T B)) sum_{t,b} log softmax(S[t,b])[y_b]  =>  dL/dS[t,b] = (softmax - onehot) / (T B)
    g = np.exp(logp)
    g[:, np.arange(B), y] -= 1.0
    return loss, (g / (T * B)).astype(dtype)


def ce_count_loss(spikes, targets, dtype=None):
    S, y, dtype = _check(spikes, targets, "ce_count_loss", dtype)
    T, B, C = S.shape
    logp = _log_softmax(S.sum(axis=0, dtype=np.float64))  # (B, C)
    loss = float(-logp[np.arange(B), y].mean())
    # fwd: L = -(1/B) sum_b log softmax(count[b])[y_b], count = sum_t S[t]  =>  dL/dS[t,b] = (softmax - onehot) / B
    g = np.exp(logp)
    g[np.arange(B), y] -= 1.0
    return loss, np.broadcast_to((g / B).astype(dtype), S.shape).copy()


def predict(spikes):
    """Class with the most spikes; ties to the lowest index (np.argmax's rule)."""
    S = np.asarray(spikes)
    if S.ndim != 3:
        raise ValueError(f"predict: expected spikes of shape (T, B, C), got {S.shape}")
    return S.sum(axis=0, dtype=np.float64).argmax(axis=1)


def accuracy(spikes, targets):
    """Fraction of samples whose spike-count argmax equals the target."""
    S, y, _ = _check(spikes, targets, "accuracy")
    return float((predict(S) == y).mean())


LOSSES = {"mse_count": mse_count_loss, "ce_rate": ce_rate_loss, "ce_count": ce_count_loss}
