"""The "hello" many-to-many RNN, forward and backpropagation through time by hand.

numpy only: this module is a witness that does not share a line with the engine.

The network reads the one-hot characters of "hell" and predicts "ello".  Row
vectors throughout, as the textbooks write it (``x @ W``)::

    a_t = x_t @ Wxh + h_{t-1} @ Whh + Bh        h_{-1} = 0
    h_t = tanh(a_t)
    z_t = h_t @ Wy + By
    p_t = softmax(z_t)
    E   = -sum_t sum_k y_tk log p_tk            (summed over the steps, not averaged)

``Bh`` and ``By`` are (1, 1): one scalar bias broadcast over every unit, as in
the original post.  ``By`` can never learn: softmax ignores a shift, so its
true gradient is exactly 0.

Backward, from the last step to the first (the chain rule, one step at a time)::

    dz_t  = p_t - y_t                       softmax + cross-entropy together
    dWy  += h_t^T dz_t          dBy += sum(dz_t)
    dh_t  = dz_t @ Wy^T + dnext             the output's path plus the future's path
    da_t  = dh_t * (1 - h_t^2)              tanh' = 1 - tanh^2
    dWxh += x_t^T da_t          dWhh += h_{t-1}^T da_t          dBh += sum(da_t)
    dnext = da_t @ Whh^T                    handed to step t-1

Every weight gradient is a sum over the time steps, because the same weight
is used at every step.  Forgetting one of those sums is the classic bug; two
functions below reproduce the original post's mistakes so that a gradient
comparison can show them.
"""
import numpy as np

__all__ = ["CHARS", "PARAM_NAMES", "one_hot", "hello_data", "init_params", "softmax", "forward",
           "loss", "backward", "loss_and_grads", "hidden_grads", "sgd_train", "predict", "decode",
           "grads_single_target_typo", "grads_overwritten_output"]

CHARS = "helo"                      # index order h=0, e=1, l=2, o=3
PARAM_NAMES = ("Wxh", "Whh", "Bh", "Wy", "By")
SEED = 230912


def one_hot(text, chars=CHARS):
    """(len(text), len(chars)) float64 one-hot rows of the characters of ``text``."""
    unknown = sorted(set(text) - set(chars))
    if unknown:
        raise ValueError(f"one_hot: characters {unknown} are not in the alphabet {chars!r}")
    out = np.zeros((len(text), len(chars)))
    out[np.arange(len(text)), [chars.index(c) for c in text]] = 1.0
    return out


def hello_data():
    """Inputs "hell" and targets "ello" as (4, 4) one-hot arrays."""
    return one_hot("hell"), one_hot("ello")


def init_params(hidden_size=3, seed=SEED, vocab_size=len(CHARS)):  # noqa: B008 (an int, computed once)
    """The original's initialisation: ``np.random.seed(seed)`` then ``randn`` in the order
    Wxh (V, H), Whh (H, H), Bh (1, 1), Wy (H, V), By (1, 1).

    ``RandomState(seed)`` draws the same numbers as the global ``np.random.seed``,
    without disturbing anybody else's global random state.
    """
    if hidden_size < 1:
        raise ValueError(f"init_params: hidden_size must be at least 1, got {hidden_size}")
    rs = np.random.RandomState(seed)
    return {"Wxh": rs.randn(vocab_size, hidden_size), "Whh": rs.randn(hidden_size, hidden_size),
            "Bh": rs.randn(1, 1), "Wy": rs.randn(hidden_size, vocab_size), "By": rs.randn(1, 1)}


def softmax(z):
    """Row-wise softmax with the max subtracted first (the original omits the shift and overflows
    for logits above about 709)."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _check(params, X, Y=None):
    missing = [k for k in PARAM_NAMES if k not in params]
    if missing:
        raise KeyError(f"hello_rnn: parameters {missing} are missing; expected {list(PARAM_NAMES)}")
    V, H = params["Wxh"].shape
    if X.ndim != 2 or X.shape[1] != V:
        raise ValueError(f"hello_rnn: inputs must be (T, {V}) one-hot rows, got shape {X.shape}")
    if Y is not None and Y.shape != (X.shape[0], params["Wy"].shape[1]):
        raise ValueError(f"hello_rnn: targets must have shape {(X.shape[0], params['Wy'].shape[1])}, "
                         f"got {Y.shape}")


def forward(params, X):
    """Run the network over the rows of ``X``; returns (hs, ps): hidden states (T, H) and
    output probabilities (T, V)."""
    _check(params, X)
    Wxh, Whh, Bh, Wy, By = (params[k] for k in PARAM_NAMES)
    T, H = X.shape[0], Whh.shape[0]
    hs = np.zeros((T, H))
    ps = np.zeros((T, Wy.shape[1]))
    h = np.zeros((1, H))                                  # h_{-1} = 0
    for t in range(T):
        h = np.tanh(X[t:t + 1] @ Wxh + h @ Whh + Bh)
        hs[t] = h[0]
        ps[t] = softmax(h @ Wy + By)[0]
    return hs, ps


def loss(params, X, Y):
    """The summed cross-entropy E = -sum_t sum_k y_tk log p_tk."""
    _check(params, X, Y)
    _, ps = forward(params, X)
    return float(-np.sum(Y * np.log(ps)))


def backward(params, X, Y, hs, ps, steps=None):
    """Hand-derived BPTT: the gradients of E with respect to every parameter (a dict).

    If ``steps`` is a dict, ``steps[t]`` is set to what step t computes on the way:
    ``h`` and ``a`` (dE/dh_t and dE/da_t, each (1, H)) and the step's term of every
    parameter's gradient (``Wxh``, ``Whh``, ``Bh``, ``Wy``, ``By``; the gradients are
    their sums over the steps), for ``tinygrad_rnn.compare_bptt``.
    """
    Wxh, Whh, Bh, Wy, By = (params[k] for k in PARAM_NAMES)
    grads = {k: np.zeros_like(params[k]) for k in PARAM_NAMES}
    dnext = np.zeros((1, Whh.shape[0]))                   # nothing flows in from after the last step
    for t in reversed(range(X.shape[0])):
        x, h = X[t:t + 1], hs[t:t + 1]
        h_prev = hs[t - 1:t] if t > 0 else np.zeros_like(h)
        dz = ps[t:t + 1] - Y[t:t + 1]                     # dE/dz_t for softmax + cross-entropy
        dh = dz @ Wy.T + dnext                            # two paths reach h_t: the output and step t+1
        da = dh * (1.0 - h ** 2)
        term = {"Wxh": x.T @ da, "Whh": h_prev.T @ da, "Bh": np.full((1, 1), da.sum()),
                "Wy": h.T @ dz, "By": np.full((1, 1), dz.sum())}   # a scalar bias sums over units
        for k in PARAM_NAMES:
            grads[k] += term[k]                           # every weight is used at every step: add
        if steps is not None:
            steps[t] = {"h": dh, "a": da, **term}
        dnext = da @ Whh.T
    return grads


def loss_and_grads(params, X, Y):
    """(E, gradients) in one call: forward, then the hand-derived backward."""
    _check(params, X, Y)
    hs, ps = forward(params, X)
    return float(-np.sum(Y * np.log(ps))), backward(params, X, Y, hs, ps)


def hidden_grads(params, X, Y):
    """dE/dh_t for every step, (T, H): the ``dh_t`` of the backward pass, output path plus future path.

    Its norm per step shows how much of the loss's gradient reaches each time step
    (it fades going back in time when ``Whh`` is small: vanishing gradients).
    """
    _check(params, X, Y)
    hs, ps = forward(params, X)
    Wy, Whh = params["Wy"], params["Whh"]
    out = np.zeros_like(hs)
    dnext = np.zeros((1, Whh.shape[0]))
    for t in reversed(range(X.shape[0])):
        dh = (ps[t:t + 1] - Y[t:t + 1]) @ Wy.T + dnext
        out[t] = dh[0]
        dnext = (dh * (1.0 - hs[t:t + 1] ** 2)) @ Whh.T
    return out


def grads_single_target_typo(params, X, Y):
    """The original's first training run: ``target[0]`` passed where ``targets[0]`` belongs.

    The backward then reads ``targets[t]`` from a single one-hot row (that of 'e'),
    so step t is given the scalar ``Y[0, t]`` as its "target" and subtracts it from
    every probability.  This is the gradient of a different function: descending it
    makes every prediction uniform and the loss stalls at T ln V (5.545 for hello).
    """
    _check(params, X, Y)
    hs, ps = forward(params, X)
    row = Y[0]                                            # the typo: one row, not the matrix
    wrong = np.stack([np.full(Y.shape[1], row[t]) for t in range(X.shape[0])])
    return backward(params, X, wrong, hs, ps)


def grads_overwritten_output(params, X, Y):
    """The original's second version: ``dWy`` and ``dBy`` assigned (``=``) at every step, not added.

    The loop runs from the last step to the first, so what survives is the first
    step's term only.  The hidden weights still get the full BPTT gradient.
    """
    _check(params, X, Y)
    hs, ps = forward(params, X)
    grads = backward(params, X, Y, hs, ps)
    dz0 = ps[0:1] - Y[0:1]
    grads["Wy"] = hs[0:1].T @ dz0                         # the last assignment made is that of t = 0
    grads["By"] = np.full((1, 1), dz0.sum())
    return grads


def sgd_train(params, X, Y, lr=0.005, steps=2000, grad_fn=None):
    """Full-batch SGD on a copy of ``params``; returns (params, losses).

    ``losses[i]`` is the true loss E before update i, and ``losses[steps]`` the loss
    after the last update.  ``grad_fn(params, X, Y) -> grads`` defaults to the
    correct BPTT; pass one of the original's mistakes to see where it leads.
    """
    params = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    losses = []
    _check(params, X, Y)
    for _ in range(steps):
        hs, ps = forward(params, X)
        losses.append(float(-np.sum(Y * np.log(ps))))
        grads = backward(params, X, Y, hs, ps) if grad_fn is None else grad_fn(params, X, Y)
        for k in PARAM_NAMES:
            params[k] -= lr * grads[k]
    losses.append(loss(params, X, Y))
    return params, losses


def predict(params, X, chars=CHARS):
    """The argmax character at every step, as a string."""
    _, ps = forward(params, X)
    return decode(ps, chars)


def decode(ps, chars=CHARS):
    """Rows of probabilities (or scores) to the string of their argmax characters."""
    return "".join(chars[i] for i in np.argmax(ps, axis=-1))
