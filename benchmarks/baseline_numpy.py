"""Hand-written numpy BPTT for a token language model: the benchmark baseline.

embedding -> tanh RNN -> affine -> softmax cross-entropy, in the layer style of
the numpy textbooks (Deep Learning from Scratch 2): each ``Time*`` layer has a
``forward`` that keeps what its ``backward`` needs, and a ``backward`` derived
by hand.  Nothing here imports tinygrad_rnn: this is the independent baseline
every other system is timed against, and it is checked against central finite
differences (``gradient_check``) before it is trusted.

Weights use the row-vector convention (``x @ W``, ``W`` shaped (in, out)):
``E`` (V, D), ``Wx`` (D, H), ``Wh`` (H, H), ``b`` (H,), ``Wo`` (H, V), ``bo`` (V,).
The loss is the mean cross-entropy over all batch*time positions, and every
sequence starts from a zero hidden state.
"""
import numpy as np

PARAM_NAMES = ("E", "Wx", "Wh", "b", "Wo", "bo")


def make_weights(V, D, H, dtype=np.float64, seed=0):
    """Weights shared by every system: small embeddings, 1/sqrt(fan-in) matrices, zero biases."""
    rng = np.random.default_rng(seed)
    w = {
        "E": rng.standard_normal((V, D)) * 0.01,
        "Wx": rng.standard_normal((D, H)) / np.sqrt(D),
        "Wh": rng.standard_normal((H, H)) / np.sqrt(H),
        "b": np.zeros(H),
        "Wo": rng.standard_normal((H, V)) / np.sqrt(H),
        "bo": np.zeros(V),
    }
    return {k: v.astype(dtype) for k, v in w.items()}


def make_data(V, B, T, seed=1):
    """Input tokens and next-token targets, both integer arrays of shape (B, T)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, V, size=(B, T + 1))
    return tokens[:, :-1].copy(), tokens[:, 1:].copy()


class TimeEmbedding:
    """Rows of ``E`` picked by token ids (B, T) -> (B, T, D)."""

    def __init__(self, E):
        self.params = [E]
        self.grads = [np.zeros_like(E)]
        self.idx = None

    def forward(self, idx):
        self.idx = idx
        return self.params[0][idx]

    def backward(self, dout):
        dE = self.grads[0]
        dE[...] = 0
        # a token used several times collects the gradient of every use
        np.add.at(dE, self.idx, dout)
        return None


class TimeRNN:
    """``h_t = tanh(x_t @ Wx + h_{t-1} @ Wh + b)`` for t = 0..T-1, from ``h_{-1} = 0``."""

    def __init__(self, Wx, Wh, b):
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.xs = self.hs = None

    def forward(self, xs):
        Wx, Wh, b = self.params
        B, T, _ = xs.shape
        H = Wh.shape[0]
        hs = np.empty((B, T, H), dtype=Wx.dtype)
        h = np.zeros((B, H), dtype=Wx.dtype)
        for t in range(T):
            h = np.tanh(xs[:, t, :] @ Wx + h @ Wh + b)
            hs[:, t, :] = h
        self.xs, self.hs = xs, hs
        return hs

    def backward(self, dhs):
        Wx, Wh, _ = self.params
        dWx, dWh, db = self.grads
        dWx[...] = 0
        dWh[...] = 0
        db[...] = 0
        xs, hs = self.xs, self.hs
        B, T, _ = xs.shape
        dxs = np.empty_like(xs)
        dh_next = np.zeros_like(hs[:, 0, :])
        zero = np.zeros_like(dh_next)
        for t in reversed(range(T)):
            h = hs[:, t, :]
            h_prev = hs[:, t - 1, :] if t > 0 else zero
            # d tanh(a) / da = 1 - tanh(a)^2; the state gets gradient from the output and from step t+1
            da = (dhs[:, t, :] + dh_next) * (1 - h * h)
            db += da.sum(axis=0)
            dWx += xs[:, t, :].T @ da
            dWh += h_prev.T @ da
            dxs[:, t, :] = da @ Wx.T
            dh_next = da @ Wh.T
        return dxs


class TimeAffine:
    """``y = x @ Wo + bo`` applied at every (batch, time) position."""

    def __init__(self, W, b):
        self.params = [W, b]
        self.grads = [np.zeros_like(W), np.zeros_like(b)]
        self.x = None

    def forward(self, x):
        B, T, _ = x.shape
        W, b = self.params
        self.x = x
        return (x.reshape(B * T, -1) @ W + b).reshape(B, T, -1)

    def backward(self, dout):
        W, _ = self.params
        B, T, _ = self.x.shape
        x = self.x.reshape(B * T, -1)
        dout = dout.reshape(B * T, -1)
        self.grads[0][...] = x.T @ dout
        self.grads[1][...] = dout.sum(axis=0)
        return (dout @ W.T).reshape(B, T, -1)


class TimeSoftmaxWithLoss:
    """Mean over all (batch, time) positions of ``-log softmax(x)[target]``."""

    def __init__(self):
        self.params, self.grads = [], []
        self.probs = self.ts = None

    def forward(self, xs, ts):
        B, T, V = xs.shape
        x = xs.reshape(B * T, V)
        t = ts.reshape(B * T)
        z = x - x.max(axis=1, keepdims=True)   # shifted so exp cannot overflow
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        rows = np.arange(B * T)
        loss = np.mean(np.log(s[:, 0]) - z[rows, t])
        self.probs, self.ts = e / s, t
        return loss

    def backward(self, dout=1.0):
        n, V = self.probs.shape
        dx = self.probs.copy()
        dx[np.arange(n), self.ts] -= 1       # softmax minus one-hot
        dx *= dout / n
        return dx


class NumpyRnnlm:
    """The whole model; ``step(xs, ts, lr)`` is one training step (forward, backward, SGD update)."""

    def __init__(self, weights):
        w = {k: np.array(v) for k, v in weights.items()}   # own copies: updates must not leak out
        self.embed = TimeEmbedding(w["E"])
        self.rnn = TimeRNN(w["Wx"], w["Wh"], w["b"])
        self.affine = TimeAffine(w["Wo"], w["bo"])
        self.loss_layer = TimeSoftmaxWithLoss()
        self.layers = [self.embed, self.rnn, self.affine]
        self.params, self.grads = [], []
        for layer in self.layers:
            self.params += layer.params
            self.grads += layer.grads

    def forward(self, xs, ts):
        self.shape = xs.shape
        x = self.embed.forward(xs)
        hs = self.rnn.forward(x)
        logits = self.affine.forward(hs)
        return self.loss_layer.forward(logits, ts)

    def backward(self):
        d = self.loss_layer.backward()
        d = self.affine.backward(d.reshape(*self.shape, -1))
        d = self.rnn.backward(d)
        self.embed.backward(d)

    def sgd(self, lr):
        for p, g in zip(self.params, self.grads):
            p -= lr * g

    def step(self, xs, ts, lr):
        loss = self.forward(xs, ts)
        self.backward()
        self.sgd(lr)
        return loss

    def named_params(self):
        return dict(zip(PARAM_NAMES, self.params))

    def named_grads(self):
        """The gradients of the last ``backward``, by parameter name."""
        return dict(zip(PARAM_NAMES, self.grads))


def gradient_check(V=5, D=3, H=4, B=2, T=3, eps=1e-6, rtol=1e-6, atol=1e-9, seed=0):
    """Check every hand-derived gradient against central finite differences in float64.

    Raises AssertionError naming the parameter and the worst element; returns the
    largest error relative to ``atol + rtol * |numerical|`` (below 1 when it passes).
    """
    weights = make_weights(V, D, H, np.float64, seed)
    # lift the biases and embeddings off their special initial values so no gradient is trivially zero
    rng = np.random.default_rng(seed + 1)
    for k in weights:
        weights[k] = weights[k] + 0.3 * rng.standard_normal(weights[k].shape)
    xs, ts = make_data(V, B, T, seed + 2)
    model = NumpyRnnlm(weights)
    model.forward(xs, ts)
    model.backward()
    worst = 0.0
    for name, p, g in zip(PARAM_NAMES, model.params, model.grads):
        num = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + eps
            up = model.forward(xs, ts)
            p[i] = old - eps
            down = model.forward(xs, ts)
            p[i] = old
            num[i] = (up - down) / (2 * eps)
        err = np.abs(g - num) / (atol + rtol * np.abs(num))
        k = np.unravel_index(np.argmax(err), err.shape)
        if err[k] > 1:
            raise AssertionError(f"numpy baseline: gradient of {name} at {k} is {g[k]!r}, "
                                 f"central differences give {num[k]!r}")
        worst = max(worst, float(err[k]))
    return worst


if __name__ == "__main__":
    print(f"numpy baseline gradient check passed (worst error / tolerance = {gradient_check():.3g})")
