"""The linear RNN that learns to count ones, forward and backward by hand.

numpy only.  N sequences of K zeros and ones; the target is how many ones each holds::

    S_0 = 0
    S_k = S_{k-1} * w_rec + X_k * w_x        k = 1..K
    y   = S_K
    L   = mean_n (t_n - y_n)^2

w_x = w_rec = 1 makes S_K the count exactly.

Backward: the loss sees only the final state, and each state reaches the next
through w_rec alone::

    dL/dS_K     = 2 (y - t) / N              (the mean over N is in here)
    dL/dS_{k-1} = dL/dS_k * w_rec
    dL/dw_x     = sum_k sum_n dL/dS_k * X_k
    dL/dw_rec   = sum_k sum_n dL/dS_k * S_{k-1}

The original tutorial's per-state "gradient over time" is the per-sample
gradient 2 (y - t), N times dL/dS_k of the mean loss (its parameter gradients
come out right, because it takes the mean later).  ``per_sample_state_grads``
reproduces it so the difference can be shown.
"""
import numpy as np

__all__ = ["make_data", "forward_states", "loss", "backward", "loss_and_grads",
           "per_sample_state_grads"]


def make_data(n_samples=100, length=10, seed=1):
    """(X, t): X (n_samples, length) of random 0/1 floats, t the number of ones per row.

    Drawn as the original does after ``np.random.seed(1)``: ``round(rand(length))`` per row.
    """
    rs = np.random.RandomState(seed)
    X = np.zeros((n_samples, length))
    for row in range(n_samples):
        X[row] = np.round(rs.rand(length))
    return X, X.sum(axis=1)


def _check(X, t=None):
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"count_ones: X must be (samples, steps), got shape {X.shape}")
    if t is not None:
        t = np.asarray(t, dtype=np.float64)
        if t.shape != (X.shape[0],):
            raise ValueError(f"count_ones: targets must have shape {(X.shape[0],)}, got {t.shape}")
    return X, t


def forward_states(X, w_x, w_rec):
    """All states S (N, K + 1), column 0 being S_0 = 0; the output is ``S[:, -1]``."""
    X, _ = _check(X)
    S = np.zeros((X.shape[0], X.shape[1] + 1))
    for k in range(1, X.shape[1] + 1):
        S[:, k] = S[:, k - 1] * w_rec + X[:, k - 1] * w_x
    return S


def loss(X, t, w_x, w_rec):
    """L = mean((t - S_K)^2)."""
    X, t = _check(X, t)
    return float(np.mean((t - forward_states(X, w_x, w_rec)[:, -1]) ** 2))


def backward(X, t, S, w_rec):
    """(dL/dw_x, dL/dw_rec, dS) where dS (N, K + 1) holds dL/dS_k of the mean loss."""
    X, t = _check(X, t)
    N, K = X.shape
    dS = np.zeros((N, K + 1))
    dS[:, K] = 2.0 * (S[:, K] - t) / N                    # the loss reads only the last state
    dw_x = dw_rec = 0.0
    for k in range(K, 0, -1):
        dw_x += np.sum(dS[:, k] * X[:, k - 1])            # both weights are used at every step: sum
        dw_rec += np.sum(dS[:, k] * S[:, k - 1])
        dS[:, k - 1] = dS[:, k] * w_rec                   # S_{k-1} reaches S_k only through w_rec
    return float(dw_x), float(dw_rec), dS


def loss_and_grads(X, t, w_x, w_rec):
    """(L, dL/dw_x, dL/dw_rec)."""
    X, t = _check(X, t)
    S = forward_states(X, w_x, w_rec)
    dw_x, dw_rec, _ = backward(X, t, S, w_rec)
    return float(np.mean((t - S[:, -1]) ** 2)), dw_x, dw_rec


def per_sample_state_grads(X, t, w_x, w_rec):
    """The original's state gradients: 2 (y - t) w_rec^(K-k), without the 1/N of the mean.

    N times the true dL/dS_k; compared with autograd's state gradients they are off by N.
    """
    X, t = _check(X, t)
    S = forward_states(X, w_x, w_rec)
    _, _, dS = backward(X, t, S, w_rec)
    return dS * X.shape[0]
