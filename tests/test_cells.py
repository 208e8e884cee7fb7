"""RNNCell, LSTMCell and GRUCell: values against their equations in numpy, gradients, dtypes, errors.

Gradient checks: float64 central differences over 3 unrolled steps, through
every weight, bias, input and the initial state, with eps = 1e-6 and an element
passing when |autograd - numeric| <= 1e-7 + 1e-5 |numeric| (tighter than the
gradcheck defaults: these graphs are smooth and well scaled).
"""
import numpy as np
import pytest

import tinygrad_rnn as tg
import tinygrad_rnn.nn as nn
from tinygrad_rnn import Tensor

ATOL, RTOL = 1e-7, 1e-5
D, H, B, T = 3, 4, 2, 3


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


def numpy_step(cell, x, state):
    """One step of each cell written directly from its documented equations."""
    if isinstance(cell, nn.LSTMCell):
        h, c = state
        a = x @ cell.Wx.data + h @ cell.Wh.data + cell.b.data
        i, f, g, o = np.split(a, 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        return sigmoid(o) * np.tanh(c), c
    if isinstance(cell, nn.GRUCell):
        gx = x @ cell.Wx.data + cell.bx.data
        gh = state @ cell.Wh.data + cell.bh.data
        r = sigmoid(gx[:, :H] + gh[:, :H])
        z = sigmoid(gx[:, H:2 * H] + gh[:, H:2 * H])
        n = np.tanh(gx[:, 2 * H:] + r * gh[:, 2 * H:])
        return (1 - z) * n + z * state
    a = x @ cell.Wx.data + state @ cell.Wh.data + cell.b.data
    return np.tanh(a) if cell.nonlinearity == "tanh" else np.maximum(a, 0)


def make(kind, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    cell = {"tanh": lambda: nn.RNNCell(D, H, rng=rng, dtype=dtype),
            "relu": lambda: nn.RNNCell(D, H, "relu", rng=rng, dtype=dtype),
            "lstm": lambda: nn.LSTMCell(D, H, rng=rng, dtype=dtype),
            "gru": lambda: nn.GRUCell(D, H, rng=rng, dtype=dtype)}[kind]()
    for p in cell.parameters():            # non-zero biases, so their gradients are exercised
        if p.ndim == 1:
            p.data[...] = rng.standard_normal(p.shape) * 0.5
    return cell


KINDS = ["tanh", "relu", "lstm", "gru"]


@pytest.mark.parametrize("kind", KINDS)
def test_cell_equals_its_equations(kind):
    cell = make(kind)
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((T, B, D))
    state = cell.initial_state(B)
    ref = tuple(s.data for s in state) if isinstance(state, tuple) else state.data
    for x in xs:
        state = cell(x, state)
        ref = numpy_step(cell, x, ref)
        got = tuple(s.data for s in state) if isinstance(state, tuple) else state.data
        np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("kind", KINDS)
def test_state_none_is_zeros(kind):
    cell = make(kind)
    x = np.random.default_rng(2).standard_normal((B, D))
    a, b = cell(x), cell(x, cell.initial_state(B))
    if kind == "lstm":
        assert isinstance(a, tuple) and len(a) == 2
        assert all(np.array_equal(u.data, v.data) for u, v in zip(a, b))
    else:
        assert np.array_equal(a.data, b.data)
    zero = cell.initial_state(3)
    for z in (zero if kind == "lstm" else (zero,)):
        assert z.shape == (3, H) and z.dtype == np.float64 and not np.any(z.data)


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_unrolled(kind):
    cell = make(kind)
    rng = np.random.default_rng(3)
    xs = [Tensor(rng.standard_normal((B, D)), requires_grad=True) for _ in range(T)]
    if kind == "lstm":
        h0 = Tensor(rng.standard_normal((B, H)) * 0.5, requires_grad=True)
        c0 = Tensor(rng.standard_normal((B, H)) * 0.5, requires_grad=True)
        inits = [h0, c0]
    else:
        inits = [Tensor(rng.standard_normal((B, H)) * 0.5, requires_grad=True)]
    params = cell.parameters()

    def run(*tensors):
        state = tuple(inits) if kind == "lstm" else inits[0]
        outs = []
        for x in xs:
            state = cell(x, state)
            outs.append(state[0] if kind == "lstm" else state)
        # every step's output and, for an LSTM, the final cell state reach the loss
        total = tg.stack(outs)
        return total.sum() + (state[1] * state[1]).sum() if kind == "lstm" else total
    assert tg.gradcheck(run, *params, *xs, *inits, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_catches_a_wrong_cell(kind):
    """The check above can fail: a cell whose recurrent weight is used wrongly is caught."""
    cell = make(kind)
    rng = np.random.default_rng(4)
    x = Tensor(rng.standard_normal((B, D)))
    h = Tensor(rng.standard_normal((B, H)))
    state = (h, h) if kind == "lstm" else h
    if kind == "relu":
        cell.b.data[...] = 3.0                          # keep the relu units active
    Wh = cell.Wh

    def broken(W):
        # same forward value as W, but only half of the gradient flows back to W
        cell.Wh = W.detach() + (W - W.detach()) * 0.5
        try:
            out = cell(x, state)
        finally:
            cell.Wh = Wh
        return out[0] if kind == "lstm" else out
    with pytest.raises(tg.GradcheckError):
        tg.gradcheck(broken, cell.Wh, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("kind", KINDS)
def test_float32_stays_float32(kind):
    cell = make(kind, dtype=np.float32)
    assert all(p.dtype == np.float32 for p in cell.parameters())
    xs = np.random.default_rng(5).standard_normal((T, B, D))   # float64 data takes the cell's dtype
    state = None
    for x in xs:
        state = cell(x, state)
        for s in (state if kind == "lstm" else (state,)):
            assert s.dtype == np.float32
    h = state[0] if kind == "lstm" else state
    (h * h).sum().backward()
    for name, p in cell.named_parameters():
        assert p.grad is not None and p.grad.dtype == np.float32, name


@pytest.mark.parametrize("kind", KINDS)
def test_bad_input_shape(kind):
    cell = make(kind)
    with pytest.raises(ValueError, match=rf"x must have shape \(batch, {D}\), got \(2, 5\)"):
        cell(np.ones((2, 5)))
    with pytest.raises(ValueError, match=r"x must have shape"):
        cell(np.ones(D))


@pytest.mark.parametrize("kind", KINDS)
def test_bad_state_shape(kind):
    cell = make(kind)
    bad = np.ones((2, H + 1))
    with pytest.raises(ValueError, match=rf"must have shape \(2, {H}\).*got \(2, {H + 1}\)"):
        cell(np.ones((2, D)), (bad, bad) if kind == "lstm" else bad)


def test_lstm_state_must_be_a_pair():
    with pytest.raises(ValueError, match=r"pair \(h, c\)"):
        nn.LSTMCell(D, H)(np.ones((2, D)), np.zeros((2, H)))


def test_rnn_nonlinearity_checked():
    with pytest.raises(ValueError, match="'tanh' or 'relu'.*'sigmoid'"):
        nn.RNNCell(D, H, "sigmoid")


def test_relu_cell_is_relu():
    cell = make("relu")
    h = cell(np.random.default_rng(6).standard_normal((8, D)) * 3)
    assert np.all(h.data >= 0) and np.any(h.data == 0)


def test_parameter_layout_and_init():
    lstm = nn.LSTMCell(D, H, rng=0)
    assert [(n, p.shape) for n, p in lstm.named_parameters()] == [
        ("Wx", (D, 4 * H)), ("Wh", (H, 4 * H)), ("b", (4 * H,))]
    gru = nn.GRUCell(D, H, rng=0)
    assert [(n, p.shape) for n, p in gru.named_parameters()] == [
        ("Wx", (D, 3 * H)), ("Wh", (H, 3 * H)), ("bx", (3 * H,)), ("bh", (3 * H,))]
    rnn = nn.RNNCell(D, H, rng=0)
    assert [(n, p.shape) for n, p in rnn.named_parameters()] == [("Wx", (D, H)), ("Wh", (H, H)), ("b", (H,))]
    assert not np.any(lstm.b.data) and not np.any(gru.bx.data) and not np.any(gru.bh.data)
    big = nn.RNNCell(400, 300, rng=0)
    assert abs(big.Wx.data.std() * np.sqrt(400) - 1) < 0.02      # std 1/sqrt(fan_in)
    assert abs(big.Wh.data.std() * np.sqrt(300) - 1) < 0.02
    assert lstm.input_size == D and lstm.hidden_size == H
