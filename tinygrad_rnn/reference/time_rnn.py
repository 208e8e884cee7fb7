"""Deep Learning from Scratch 2, chapter 5, by hand: RNN, TimeRNN and the simple RNN language model.

numpy only.  Every layer keeps ``params`` and ``grads`` lists (the grads are
filled in place by ``backward``) and caches what its backward needs, the way
the book writes them.  Unlike the book's code, every buffer is float64 (the
book allocates ``hs`` and ``dxs`` with ``dtype='f'``, which silently rounds a
float64 computation to float32).

Shapes: N batch, T time steps, D input features, H hidden units, V vocabulary.

One step (``RNN``)::

    h_next = tanh(h_prev @ Wh + x @ Wx + b)

    dt      = dh_next * (1 - h_next^2)
    db      = sum(dt, axis=0)
    dWh     = h_prev^T dt          dh_prev = dt @ Wh^T
    dWx     = x^T dt               dx      = dt @ Wx^T

``TimeRNN`` runs T of them over xs (N, T, D).  Its weights are shared by every
step, so their gradients are the sums of the steps' gradients.  Going backward,
the gradient reaching h_t is the one from above (``dhs[:, t]``) plus the one from
step t+1 (``dh``).  With ``stateful=True`` the last h is kept for the next call
(the forward connection stays) while the backward starts each call with
``dh = 0`` (the backward connection is cut): truncated BPTT.

``LSTM`` and ``TimeLSTM`` do the same for the LSTM, with the book's gate layout
(f, g, i, o); ``book_lstm_to_ifgo`` reorders its weights into the i, f, g, o
layout of ``tinygrad_rnn.nn.LSTMCell`` so the two can be compared.
"""
import numpy as np

__all__ = ["RNN", "TimeRNN", "LSTM", "TimeLSTM", "TimeEmbedding", "TimeAffine", "TimeSoftmaxWithLoss",
           "SimpleRnnlm", "softmax", "sigmoid", "truncated_batches", "book_lstm_to_ifgo", "ifgo_lstm_to_book"]


def softmax(x):
    """Softmax over the last axis, shifted by the maximum so exp cannot overflow."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(x):
    """1 / (1 + exp(-x)), written so that exp never overflows."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


class RNN:
    """One tanh step: ``h_next = tanh(h_prev @ Wh + x @ Wx + b)``."""

    def __init__(self, Wx, Wh, b):
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.cache = None

    def forward(self, x, h_prev):
        Wx, Wh, b = self.params
        h_next = np.tanh(h_prev @ Wh + x @ Wx + b)
        self.cache = (x, h_prev, h_next)
        return h_next

    def backward(self, dh_next):
        Wx, Wh, b = self.params
        x, h_prev, h_next = self.cache
        dt = dh_next * (1.0 - h_next ** 2)                # through tanh
        self.grads[0][...] = x.T @ dt
        self.grads[1][...] = h_prev.T @ dt
        self.grads[2][...] = dt.sum(axis=0)               # b was broadcast over the batch: sum it back
        return dt @ Wx.T, dt @ Wh.T                        # dx, dh_prev


class TimeRNN:
    """T RNN steps over xs (N, T, D) sharing Wx (D, H), Wh (H, H), b (H,)."""

    def __init__(self, Wx, Wh, b, stateful=False):
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.layers = None
        self.h, self.dh = None, None
        self.stateful = stateful

    def set_state(self, h):
        self.h = h

    def reset_state(self):
        self.h = None

    def forward(self, xs):
        Wx, Wh, b = self.params
        N, T, D = xs.shape
        if D != Wx.shape[0]:
            raise ValueError(f"TimeRNN: inputs have {D} features but Wx has shape {Wx.shape}")
        H = Wh.shape[0]
        self.layers = []
        hs = np.empty((N, T, H), dtype=np.float64)        # float64: the book's dtype='f' rounds
        if not self.stateful or self.h is None:
            self.h = np.zeros((N, H))
        for t in range(T):
            layer = RNN(*self.params)
            self.h = layer.forward(xs[:, t, :], self.h)
            hs[:, t, :] = self.h
            self.layers.append(layer)
        return hs

    def backward(self, dhs):
        Wx, Wh, b = self.params
        N, T, H = dhs.shape
        dxs = np.empty((N, T, Wx.shape[0]), dtype=np.float64)
        dh = np.zeros((N, H))                             # truncated: nothing flows in from the next chunk
        grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        for t in reversed(range(T)):
            layer = self.layers[t]
            dx, dh = layer.backward(dhs[:, t, :] + dh)    # from the output above, plus from step t+1
            dxs[:, t, :] = dx
            for i, g in enumerate(layer.grads):
                grads[i] += g                             # shared weights: the steps' gradients add up
        for i, g in enumerate(grads):
            self.grads[i][...] = g
        self.dh = dh                                      # dL/dh of the state this chunk started from
        return dxs


class LSTM:
    """One LSTM step with the book's gate layout: the column blocks of Wx (D, 4H), Wh (H, 4H)
    and b (4H,) are f, g, i, o (forget, candidate, input, output), in that order.

    Forward::

        A      = x @ Wx + h_prev @ Wh + b           split into four (N, H) blocks
        f, g, i, o = sigmoid(A_f), tanh(A_g), sigmoid(A_i), sigmoid(A_o)
        c_next = f * c_prev + g * i
        h_next = o * tanh(c_next)

    Backward: c_next is reached both directly (dc_next, from step t+1) and through
    h_next, so its gradient is the sum ``ds`` below; each gate then gets ds (or
    dh_next) times what it multiplies, and the derivative of its nonlinearity::

        ds      = dc_next + dh_next * o * (1 - tanh(c_next)^2)
        dc_prev = ds * f
        df = ds * c_prev * f (1 - f)      dg = ds * i * (1 - g^2)
        di = ds * g * i (1 - i)           do = dh_next * tanh(c_next) * o (1 - o)
        dA = [df, dg, di, do]             then as in the RNN step: dWx = x^T dA, ...
    """

    def __init__(self, Wx, Wh, b):
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.cache = None

    def forward(self, x, h_prev, c_prev):
        Wx, Wh, b = self.params
        H = h_prev.shape[1]
        A = x @ Wx + h_prev @ Wh + b
        f, g = sigmoid(A[:, :H]), np.tanh(A[:, H:2 * H])
        i, o = sigmoid(A[:, 2 * H:3 * H]), sigmoid(A[:, 3 * H:])
        c_next = f * c_prev + g * i
        tanh_c = np.tanh(c_next)
        h_next = o * tanh_c
        self.cache = (x, h_prev, c_prev, f, g, i, o, tanh_c)
        return h_next, c_next

    def backward(self, dh_next, dc_next):
        Wx, Wh, b = self.params
        x, h_prev, c_prev, f, g, i, o, tanh_c = self.cache
        ds = dc_next + dh_next * o * (1.0 - tanh_c ** 2)  # both paths into c_next
        dc_prev = ds * f
        df = ds * c_prev * f * (1.0 - f)
        dg = ds * i * (1.0 - g ** 2)
        di = ds * g * i * (1.0 - i)
        do = dh_next * tanh_c * o * (1.0 - o)
        dA = np.hstack((df, dg, di, do))                  # the same block order as the weights
        self.grads[0][...] = x.T @ dA
        self.grads[1][...] = h_prev.T @ dA
        self.grads[2][...] = dA.sum(axis=0)
        return dA @ Wx.T, dA @ Wh.T, dc_prev              # dx, dh_prev, dc_prev


class TimeLSTM:
    """T LSTM steps over xs (N, T, D); the state (h, c) is carried like TimeRNN's h.

    With ``stateful=True`` both h and c are kept between calls, and the backward
    starts each call with ``dh = dc = 0``: truncated BPTT.  ``dh`` and ``dc`` after
    backward are the gradients of the state the call started from.
    """

    def __init__(self, Wx, Wh, b, stateful=False):
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.layers = None
        self.h = self.c = self.dh = self.dc = None
        self.stateful = stateful

    def set_state(self, h, c=None):
        self.h, self.c = h, c

    def reset_state(self):
        self.h = self.c = None

    def forward(self, xs):
        Wx, Wh, b = self.params
        N, T, D = xs.shape
        if D != Wx.shape[0]:
            raise ValueError(f"TimeLSTM: inputs have {D} features but Wx has shape {Wx.shape}")
        H = Wh.shape[0]
        if not self.stateful or self.h is None:
            self.h = np.zeros((N, H))
        if not self.stateful or self.c is None:
            self.c = np.zeros((N, H))
        hs = np.empty((N, T, H), dtype=np.float64)
        self.layers = []
        for t in range(T):
            layer = LSTM(*self.params)
            self.h, self.c = layer.forward(xs[:, t, :], self.h, self.c)
            hs[:, t, :] = self.h
            self.layers.append(layer)
        return hs

    def backward(self, dhs):
        Wx, Wh, b = self.params
        N, T, H = dhs.shape
        dxs = np.empty((N, T, Wx.shape[0]), dtype=np.float64)
        dh, dc = np.zeros((N, H)), np.zeros((N, H))       # truncated: nothing from the next chunk
        grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        for t in reversed(range(T)):
            layer = self.layers[t]
            dx, dh, dc = layer.backward(dhs[:, t, :] + dh, dc)
            dxs[:, t, :] = dx
            for k, g in enumerate(layer.grads):
                grads[k] += g
        for k, g in enumerate(grads):
            self.grads[k][...] = g
        self.dh, self.dc = dh, dc
        return dxs


def _reorder_blocks(a, order):
    H = a.shape[-1] // 4
    blocks = [a[..., k * H:(k + 1) * H] for k in range(4)]
    return np.concatenate([blocks[k] for k in order], axis=-1)


def book_lstm_to_ifgo(Wx, Wh, b):
    """The book's LSTM weights (gate blocks f, g, i, o) in the order i, f, g, o of
    ``tinygrad_rnn.nn.LSTMCell`` (and PyTorch, transposed).  Returns new arrays."""
    return tuple(_reorder_blocks(a, (2, 0, 1, 3)) for a in (Wx, Wh, b))


def ifgo_lstm_to_book(Wx, Wh, b):
    """The inverse of ``book_lstm_to_ifgo``: blocks i, f, g, o back to f, g, i, o."""
    return tuple(_reorder_blocks(a, (1, 2, 0, 3)) for a in (Wx, Wh, b))


class TimeEmbedding:
    """Row lookup W[idx] for integer idx (N, T) -> (N, T, D)."""

    def __init__(self, W):
        self.params = [W]
        self.grads = [np.zeros_like(W)]
        self.idx = None

    def forward(self, idx):
        self.idx = np.asarray(idx)
        return self.params[0][self.idx]

    def backward(self, dout):
        dW = self.grads[0]
        dW[...] = 0.0
        np.add.at(dW, self.idx, dout)                     # a word seen twice collects both gradients
        return None


class TimeAffine:
    """x @ W + b applied at every time step: (N, T, H) -> (N, T, V)."""

    def __init__(self, W, b):
        self.params = [W, b]
        self.grads = [np.zeros_like(W), np.zeros_like(b)]
        self.x = None

    def forward(self, x):
        W, b = self.params
        self.x = x
        return x @ W + b

    def backward(self, dout):
        W, b = self.params
        N, T, V = dout.shape
        flat_x = self.x.reshape(N * T, -1)                # every step is one more row of the batch
        flat_d = dout.reshape(N * T, V)
        self.grads[0][...] = flat_x.T @ flat_d
        self.grads[1][...] = flat_d.sum(axis=0)
        return (flat_d @ W.T).reshape(*self.x.shape)


class TimeSoftmaxWithLoss:
    """Softmax cross-entropy against integer targets (N, T), averaged over all N*T positions."""

    def __init__(self):
        self.params, self.grads = [], []
        self.cache = None

    def forward(self, xs, ts):
        N, T, V = xs.shape
        ts = np.asarray(ts)
        if ts.shape != (N, T):
            raise ValueError(f"TimeSoftmaxWithLoss: targets must have shape {(N, T)}, got {ts.shape}")
        ys = softmax(xs.reshape(N * T, V))
        flat_t = ts.reshape(N * T)
        loss = -np.log(ys[np.arange(N * T), flat_t]).mean()
        self.cache = (flat_t, ys, (N, T, V))
        return float(loss)

    def backward(self, dout=1.0):
        flat_t, ys, (N, T, V) = self.cache
        dx = ys.copy()
        dx[np.arange(N * T), flat_t] -= 1.0               # softmax + cross-entropy: p - y
        dx *= dout / (N * T)                              # the mean over N*T positions
        return dx.reshape(N, T, V)


class SimpleRnnlm:
    """TimeEmbedding -> TimeRNN -> TimeAffine -> TimeSoftmaxWithLoss, initialised as the book does.

    ``E = randn(V, D) / 100``, ``Wx = randn(D, H) / sqrt(D)``, ``Wh = randn(H, H) / sqrt(H)``,
    ``b = 0``, affine ``W = randn(H, V) / sqrt(H)``, ``b = 0``; draws come from
    ``RandomState(seed)`` in that order unless ``weights`` (a dict with the names
    of ``NAMES``) is given.
    """

    NAMES = ("embed.W", "rnn.Wx", "rnn.Wh", "rnn.b", "affine.W", "affine.b")

    def __init__(self, vocab_size, wordvec_size, hidden_size, seed=0, weights=None):
        V, D, H = vocab_size, wordvec_size, hidden_size
        if weights is None:
            rs = np.random.RandomState(seed)
            weights = {"embed.W": rs.randn(V, D) / 100, "rnn.Wx": rs.randn(D, H) / np.sqrt(D),
                       "rnn.Wh": rs.randn(H, H) / np.sqrt(H), "rnn.b": np.zeros(H),
                       "affine.W": rs.randn(H, V) / np.sqrt(H), "affine.b": np.zeros(V)}
        missing = [k for k in self.NAMES if k not in weights]
        if missing:
            raise KeyError(f"SimpleRnnlm: weights {missing} are missing; expected {list(self.NAMES)}")
        w = {k: np.array(weights[k], dtype=np.float64) for k in self.NAMES}
        self.embed = TimeEmbedding(w["embed.W"])
        self.rnn = TimeRNN(w["rnn.Wx"], w["rnn.Wh"], w["rnn.b"], stateful=True)
        self.affine = TimeAffine(w["affine.W"], w["affine.b"])
        self.loss_layer = TimeSoftmaxWithLoss()
        self.layers = [self.embed, self.rnn, self.affine]
        self.params = [p for layer in self.layers for p in layer.params]
        self.grads = [g for layer in self.layers for g in layer.grads]

    def named_params(self):
        """Parameter arrays by name (the arrays themselves: updating them updates the model)."""
        return dict(zip(self.NAMES, self.params))

    def named_grads(self):
        """Copies of the gradients from the last backward, by name."""
        return {k: g.copy() for k, g in zip(self.NAMES, self.grads)}

    def forward(self, xs, ts):
        """Mean cross-entropy of predicting ``ts`` (N, T) from word ids ``xs`` (N, T)."""
        h = self.affine.forward(self.rnn.forward(self.embed.forward(xs)))
        return self.loss_layer.forward(h, ts)

    def backward(self, dout=1.0):
        d = self.loss_layer.backward(dout)
        for layer in reversed(self.layers):
            d = layer.backward(d)

    def reset_state(self):
        self.rnn.reset_state()


def truncated_batches(corpus, batch_size, time_size):
    """The book's batching for truncated BPTT, one epoch: yields (xs, ts), each (N, T) integers.

    Row i reads the corpus from its own offset ``i * (len(corpus) - 1) // batch_size``;
    the read position advances once per time step (the slide's loop advances it
    once per batch row, which is the trap noted in the textbook notes).
    """
    corpus = np.asarray(corpus)
    xs, ts = corpus[:-1], corpus[1:]
    size = len(xs)
    if size < batch_size * time_size:
        raise ValueError(f"truncated_batches: a corpus of {len(corpus)} tokens is too short for "
                         f"batch {batch_size} x time {time_size}")
    jump = size // batch_size
    offsets = [i * jump for i in range(batch_size)]
    time_idx = 0
    for _ in range(size // (batch_size * time_size)):
        bx = np.empty((batch_size, time_size), dtype=np.int64)
        bt = np.empty((batch_size, time_size), dtype=np.int64)
        for t in range(time_size):
            for i, off in enumerate(offsets):
                bx[i, t] = xs[(off + time_idx) % size]
                bt[i, t] = ts[(off + time_idx) % size]
            time_idx += 1                                 # once per time step, not per row
        yield bx, bt
