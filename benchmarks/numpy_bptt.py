"""Hand-written numpy BPTT for a token language model: the baseline of the benchmark suite.

    embedding -> tanh RNN -> affine -> softmax cross-entropy (mean over all positions)

written in the layer style of the numpy textbooks (Deep Learning from Scratch 2):
``TimeEmbedding``, ``TimeRNN``, ``TimeAffine`` and ``TimeSoftmaxWithLoss`` each keep
what their hand-derived ``backward`` needs, and an SGD step updates the weights.
Nothing here imports tinygrad_rnn: it is an independent witness, checked against
central finite differences (``gradient_check``) before any timing is trusted.

Weights follow the row-vector convention (``x @ W``, ``W`` shaped (in, out)):
``E`` (V, D), ``Wx`` (D, H), ``Wh`` (H, H), ``b`` (H,), ``Wo`` (H, V), ``bo`` (V,).
Every sequence starts from a zero hidden state.

Efficiency choices (the baseline should be what a careful engineer writes, not a
straw man):

- The layers work time-major, (T, B, ...), so that each step's slice is one
  contiguous block and the per-step products write straight into preallocated
  buffers (``out=``); the token ids are transposed once on the way in.
- The recurrence does the textbook's per-step arithmetic (``x_t @ Wx + h @ Wh + b``
  forward, the same three products backward at every step): the same matrix
  products a cell unrolled step by step performs, so the ratios of the other
  systems to this one measure framework overhead, not a different algorithm.
- The affine layer and the loss work on one (T*B, ...) matrix: one product each way.
- Gradients are written into buffers allocated once; the SGD step scales into a
  scratch buffer so the gradients stay readable after the update.
"""
import numpy as np

PARAM_NAMES = ("E", "Wx", "Wh", "b", "Wo", "bo")


def make_weights(V, D, H, dtype=np.float64, seed=0):
    """Initial weights shared by every system: small embeddings, 1/sqrt(fan-in) matrices, zero biases."""
    rng = np.random.default_rng(seed)
    w = {
        "E": rng.standard_normal((V, D)) * 0.1,
        "Wx": rng.standard_normal((D, H)) / np.sqrt(D),
        "Wh": rng.standard_normal((H, H)) / np.sqrt(H),
        "b": np.zeros(H),
        "Wo": rng.standard_normal((H, V)) / np.sqrt(H),
        "bo": np.zeros(V),
    }
    return {k: v.astype(dtype) for k, v in w.items()}


def make_data(V, B, T, seed=1):
    """Input tokens and next-token targets, both int64 arrays of shape (B, T)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, V, size=(B, T + 1))
    return np.ascontiguousarray(tokens[:, :-1]), np.ascontiguousarray(tokens[:, 1:])


class TimeEmbedding:
    """Token ids (B, T) -> rows of ``E``, time-major (T, B, D)."""

    def __init__(self, E):
        self.params = [E]
        self.grads = [np.zeros_like(E)]
        self.flat_idx = None

    def forward(self, idx):
        idx_tm = idx.T                               # (T, B): time-major for the recurrence
        self.flat_idx = idx_tm.reshape(-1)
        return self.params[0][idx_tm]

    def backward(self, dout):
        dE = self.grads[0]
        dE.fill(0)
        # a token used at several positions collects the gradient of every use
        np.add.at(dE, self.flat_idx, dout.reshape(len(self.flat_idx), -1))


class TimeRNN:
    """``h_t = tanh(x_t @ Wx + h_{t-1} @ Wh + b)`` over time-major xs (T, B, D), from ``h_{-1} = 0``."""

    def __init__(self, Wx, Wh, b):
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.xs = self.hs = None
        self._shape = None

    def _buffers(self, T, B):
        """Work buffers, reallocated only when the batch shape changes."""
        if self._shape != (T, B):
            Wx, Wh, _ = self.params
            D, H = Wx.shape
            dt = Wx.dtype
            self.hs = np.empty((T, B, H), dt)
            self.dxs = np.empty((T, B, D), dt)
            self.h0 = np.zeros((B, H), dt)
            self.tmp_bh = np.empty((B, H), dt)
            self.da = np.empty((B, H), dt)
            self.dh = np.empty((B, H), dt)
            self.tmp_dh = np.empty((D, H), dt)
            self.tmp_hh = np.empty((H, H), dt)
            self._shape = (T, B)

    def forward(self, xs):
        Wx, Wh, b = self.params
        T, B, _ = xs.shape
        self._buffers(T, B)
        self.xs = xs
        hs, tmp = self.hs, self.tmp_bh
        h = self.h0
        for t in range(T):
            a = hs[t]
            np.matmul(xs[t], Wx, out=a)
            np.matmul(h, Wh, out=tmp)
            a += tmp
            a += b
            np.tanh(a, out=a)
            h = a
        return hs

    def backward(self, dhs):
        Wx, Wh, _ = self.params
        dWx, dWh, db = self.grads
        xs, hs = self.xs, self.hs
        T = xs.shape[0]
        da, dh, tmp, dxs = self.da, self.dh, self.tmp_bh, self.dxs
        tmp_dh, tmp_hh = self.tmp_dh, self.tmp_hh
        dh.fill(0)                                   # nothing flows back from beyond the last step
        first = True
        for t in range(T - 1, -1, -1):
            h = hs[t]
            h_prev = hs[t - 1] if t > 0 else self.h0
            # the state gets gradient from its output and from step t+1; d tanh(a)/da = 1 - tanh(a)^2
            np.add(dhs[t], dh, out=da)
            np.multiply(h, h, out=tmp)
            np.subtract(1, tmp, out=tmp)
            da *= tmp
            if first:                                # the first step writes, later steps accumulate
                np.sum(da, axis=0, out=db)
                np.matmul(xs[t].T, da, out=dWx)
                np.matmul(h_prev.T, da, out=dWh)
                first = False
            else:
                db += da.sum(axis=0)
                dWx += np.matmul(xs[t].T, da, out=tmp_dh)
                dWh += np.matmul(h_prev.T, da, out=tmp_hh)
            np.matmul(da, Wx.T, out=dxs[t])
            np.matmul(da, Wh.T, out=dh)
        return dxs


class TimeAffine:
    """``y = h @ Wo + bo`` at every position: (T, B, H) -> (T*B, V), one matrix product."""

    def __init__(self, W, b):
        self.params = [W, b]
        self.grads = [np.zeros_like(W), np.zeros_like(b)]
        self.x2 = None
        self.shape = None

    def forward(self, x):
        self.shape = x.shape
        self.x2 = x.reshape(-1, x.shape[-1])
        W, b = self.params
        y = self.x2 @ W
        y += b
        return y

    def backward(self, dout):
        W, _ = self.params
        dW, db = self.grads
        np.matmul(self.x2.T, dout, out=dW)
        np.sum(dout, axis=0, out=db)
        return (dout @ W.T).reshape(self.shape)


class TimeSoftmaxWithLoss:
    """Mean over all N positions of ``-log softmax(x)[target]``; x is (N, V), targets (N,)."""

    def __init__(self):
        self.params, self.grads = [], []
        self.probs = self.ts = None

    def forward(self, x, ts):
        n = x.shape[0]
        rows = np.arange(n)
        x -= x.max(axis=1, keepdims=True)           # shift (in place: x is ours) so exp cannot overflow
        picked = x[rows, ts]
        np.exp(x, out=x)
        s = x.sum(axis=1)
        loss = (np.log(s).sum() - picked.sum()) / n  # log-sum-exp minus the target's shifted logit
        x /= s[:, None]
        self.probs, self.ts, self.rows = x, ts, rows
        return loss

    def backward(self):
        dx = self.probs                              # softmax minus one-hot, over N; reuses the buffer
        dx[self.rows, self.ts] -= 1
        dx *= 1.0 / dx.shape[0]
        self.probs = None
        return dx


class NumpyRNNLM:
    """The whole model; ``step(xs, ts, lr)`` is one training step (forward, backward, SGD update).

    ``weights`` is a dict by ``PARAM_NAMES``; the model keeps its own copies.
    ``xs`` and ``ts`` are integer arrays (B, T).
    """

    def __init__(self, weights):
        w = {k: np.array(weights[k]) for k in PARAM_NAMES}
        self.embed = TimeEmbedding(w["E"])
        self.rnn = TimeRNN(w["Wx"], w["Wh"], w["b"])
        self.affine = TimeAffine(w["Wo"], w["bo"])
        self.loss_layer = TimeSoftmaxWithLoss()
        layers = [self.embed, self.rnn, self.affine]
        self.params = [p for layer in layers for p in layer.params]
        self.grads = [g for layer in layers for g in layer.grads]
        self._scratch = [np.empty_like(p) for p in self.params]

    def forward(self, xs, ts):
        """The mean cross-entropy of predicting ``ts`` from ``xs`` (both (B, T))."""
        x = self.embed.forward(xs)
        hs = self.rnn.forward(x)
        logits = self.affine.forward(hs)
        return self.loss_layer.forward(logits, ts.T.reshape(-1))

    def backward(self):
        """Gradients of the last forward's loss into ``self.grads``."""
        d = self.loss_layer.backward()
        d = self.affine.backward(d)
        d = self.rnn.backward(d)
        self.embed.backward(d)

    def sgd(self, lr):
        for p, g, s in zip(self.params, self.grads, self._scratch):
            np.multiply(g, lr, out=s)
            p -= s

    def step(self, xs, ts, lr):
        loss = self.forward(xs, ts)
        self.backward()
        self.sgd(lr)
        return loss

    def named_params(self):
        return dict(zip(PARAM_NAMES, self.params))

    def named_grads(self):
        """The gradients of the last ``backward``, by parameter name (the model's own buffers)."""
        return dict(zip(PARAM_NAMES, self.grads))


def gradient_check(V=5, D=3, H=4, B=2, T=3, eps=1e-6, rtol=1e-6, atol=1e-9, seed=0):
    """Check every hand-derived gradient against central finite differences, in float64.

    Raises AssertionError naming the parameter, the worst element and both values;
    returns the largest error as a fraction of ``atol + rtol * |numerical|``.
    """
    weights = make_weights(V, D, H, np.float64, seed)
    # move biases and embeddings off their special initial values so that no gradient is trivially zero
    rng = np.random.default_rng(seed + 1)
    weights = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in weights.items()}
    xs, ts = make_data(V, B, T, seed + 2)
    xs[0, :2] = xs[0, 0]                             # a repeated token: the embedding must accumulate
    model = NumpyRNNLM(weights)
    model.forward(xs, ts)
    model.backward()
    grads = [g.copy() for g in model.grads]
    worst = 0.0
    for name, p, g in zip(PARAM_NAMES, model.params, grads):
        num = np.empty_like(p)
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
        if not err[k] <= 1:
            raise AssertionError(f"numpy baseline: gradient of {name}{list(k)} is {g[k]!r}, "
                                 f"central differences give {num[k]!r}")
        worst = max(worst, float(err[k]))
    return worst


if __name__ == "__main__":
    print(f"numpy baseline: gradients match central differences "
          f"(worst error {gradient_check():.3g} of the tolerance)")
