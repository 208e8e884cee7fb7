"""RNNCell, LSTMCell, GRUCell and plain-function cells: values against their equations in numpy,
gradients, dtypes, errors.

Gradient checks are float64 central differences over several unrolled steps, through every
weight, bias, input and the initial state: eps = 1e-6 and an element passes when
|autograd - numeric| <= 1e-7 + 1e-5 * |numeric| (tighter than the gradcheck defaults: truncation
error ~eps^2 and rounding ~1e-16/eps are both far below it for these smooth, well-scaled graphs).
"""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import tinygrad_rnn as tg
from tinygrad_rnn import Tensor, concat, gradcheck, gradcheck_report, nn
from tinygrad_rnn import functional as F

TOL = dict(eps=1e-6, atol=1e-7, rtol=1e-5)
D, H, B, T = 3, 4, 2, 3


# ---------------------------------------------------------------- values, dtypes, errors
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


# ---------------------------------------------------------------- gradients
def _randomise(cell, rng, scale=0.5):
    """Non-zero biases too, so that their gradients are not checked at a special point."""
    for p in cell.parameters():
        p.data[...] = rng.standard_normal(p.shape) * scale


def _inputs(rng, batch, steps, features, hidden, pairs=1):
    xs = Tensor(rng.standard_normal((batch, steps, features)), requires_grad=True, name="xs")
    states = [Tensor(rng.standard_normal((batch, hidden)) * 0.5, requires_grad=True, name=f"s{i}")
              for i in range(pairs)]
    return xs, states


def _flat(*tensors):
    return concat([t.reshape(-1) for t in tensors])


def check_rnn(batch, steps, features, hidden, nonlinearity, seed, guard=assume):
    rng = np.random.default_rng(seed)
    cell = nn.RNNCell(features, hidden, nonlinearity, rng=rng)
    _randomise(cell, rng)
    xs, (h0,) = _inputs(rng, batch, steps, features, hidden)
    if nonlinearity == "relu":
        # relu has a kink at 0: finite differences are only meaningful away from it
        h, margin = h0.data, np.inf
        for t in range(steps):
            a = xs.data[:, t] @ cell.Wx.data + h @ cell.Wh.data + cell.b.data
            margin = min(margin, np.abs(a).min())
            h = np.maximum(a, 0)
        guard(margin > 1e-3)

    def fn(xs, h0):
        hs, last = nn.unroll(cell, xs, h0)
        return _flat(hs, last)
    return gradcheck(fn, xs, h0, params=dict(cell.named_parameters()), **TOL)


def check_lstm(batch, steps, features, hidden, seed):
    rng = np.random.default_rng(seed)
    cell = nn.LSTMCell(features, hidden, rng=rng)
    _randomise(cell, rng)
    xs, (h0, c0) = _inputs(rng, batch, steps, features, hidden, pairs=2)

    def fn(xs, h0, c0):
        hs, (h, c) = nn.unroll(cell, xs, (h0, c0))
        return _flat(hs, c)           # the final cell state takes part as well
    return gradcheck(fn, xs, h0, c0, params=dict(cell.named_parameters()), **TOL)


def check_gru(batch, steps, features, hidden, seed):
    rng = np.random.default_rng(seed)
    cell = nn.GRUCell(features, hidden, rng=rng)
    _randomise(cell, rng)
    xs, (h0,) = _inputs(rng, batch, steps, features, hidden)

    def fn(xs, h0):
        hs, last = nn.unroll(cell, xs, h0)
        return hs
    return gradcheck(fn, xs, h0, params=dict(cell.named_parameters()), **TOL)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_cell_gradients_over_five_steps(nonlinearity):
    seed = 0 if nonlinearity == "tanh" else 4
    def must_hold(condition):
        assert condition, "the fixed example must stay away from relu's kink"
    assert check_rnn(batch=2, steps=5, features=3, hidden=4, nonlinearity=nonlinearity, seed=seed,
                     guard=must_hold)


def test_lstm_cell_gradients_over_five_steps():
    assert check_lstm(batch=2, steps=5, features=3, hidden=4, seed=1)


def test_gru_cell_gradients_over_five_steps():
    assert check_gru(batch=2, steps=5, features=3, hidden=4, seed=2)


def test_the_report_covers_every_parameter_input_and_state():
    rng = np.random.default_rng(0)
    cell = nn.LSTMCell(2, 3, rng=rng)
    _randomise(cell, rng)
    xs, (h0, c0) = _inputs(rng, 1, 3, 2, 3, pairs=2)
    report = gradcheck_report(lambda xs, h0, c0: nn.unroll(cell, xs, (h0, c0))[0], xs, h0, c0,
                              params=dict(cell.named_parameters()), **TOL)
    assert report.passed
    for name in ["xs", "s0", "s1", "Wx", "Wh", "b"]:
        assert report[name] is not None


def test_a_wrong_gradient_is_caught():
    # the check itself must be able to fail: a cell whose backward is deliberately wrong
    rng = np.random.default_rng(0)
    cell = nn.RNNCell(2, 3, rng=rng)
    _randomise(cell, rng)
    xs, (h0,) = _inputs(rng, 1, 3, 2, 3)

    def wrong_cell(x, h):
        a = x @ cell.Wx + h @ cell.Wh + cell.b
        # forward is tanh(a); the detached term makes autograd miss d/d(a) of 0.01 * a^2
        return F.tanh(a) + 0.01 * a.detach() * a - 0.01 * (a * a).detach()
    report = gradcheck_report(lambda xs, h0: nn.unroll(wrong_cell, xs, h0)[0], xs, h0,
                              params=dict(cell.named_parameters()), **TOL)
    assert not report.passed


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_catches_a_wrong_cell(kind):
    """The gradient checks can fail: a cell whose recurrent weight is used wrongly is caught."""
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
        gradcheck(broken, cell.Wh, **TOL)


sizes = dict(batch=st.integers(1, 2), steps=st.integers(1, 3), features=st.integers(1, 3),
             hidden=st.integers(1, 3), seed=st.integers(0, 2 ** 16))


@given(**sizes, nonlinearity=st.sampled_from(["tanh", "relu"]))
def test_rnn_cell_gradients_property(batch, steps, features, hidden, seed, nonlinearity):
    assert check_rnn(batch, steps, features, hidden, nonlinearity, seed)


@given(**sizes)
def test_lstm_cell_gradients_property(batch, steps, features, hidden, seed):
    assert check_lstm(batch, steps, features, hidden, seed)


@given(**sizes)
def test_gru_cell_gradients_property(batch, steps, features, hidden, seed):
    assert check_gru(batch, steps, features, hidden, seed)


# ---------------------------------------------------------------- cells written as plain functions
def make_mgu(features, hidden, rng):
    """A minimal gated unit written as a plain function: a closure over its Parameters."""
    Wf = nn.Parameter(rng.standard_normal((features, hidden)) * 0.5)
    Uf = nn.Parameter(rng.standard_normal((hidden, hidden)) * 0.5)
    bf = nn.Parameter(rng.standard_normal(hidden) * 0.5)
    Wn = nn.Parameter(rng.standard_normal((features, hidden)) * 0.5)
    Un = nn.Parameter(rng.standard_normal((hidden, hidden)) * 0.5)

    def mgu(x, h):
        if h is None:                          # unroll passes None first when no state is given
            h = Tensor(np.zeros((x.shape[0], hidden)))
        f = F.sigmoid(x @ Wf + h @ Uf + bf)
        n = F.tanh(x @ Wn + (f * h) @ Un)
        return (1 - f) * h + f * n
    return [Wf, Uf, bf, Wn, Un], mgu


def test_a_plain_function_cell_gradients_through_unroll_and_rnn():
    rng = np.random.default_rng(5)
    params, mgu = make_mgu(3, 4, rng)
    xs, (h0,) = _inputs(rng, 2, 4, 3, 4)
    named = {f"p{i}": p for i, p in enumerate(params)}
    assert gradcheck(lambda xs, h0: nn.unroll(mgu, xs, h0)[0], xs, h0, params=named, **TOL)
    # from no state at all (the function builds its zeros)
    assert gradcheck(lambda xs: nn.unroll(mgu, xs)[0], xs, params=named, **TOL)

    rnn = nn.RNN(mgu, params=params)
    assert all(a is b for a, b in zip(rnn.parameters(), params)) and len(rnn.parameters()) == 5
    assert [n for n, _ in rnn.named_parameters()] == [f"params.{i}" for i in range(5)]
    assert gradcheck(lambda xs, h0: rnn(xs, h0)[0], xs, h0, params=dict(rnn.named_parameters()), **TOL)
    hs, last = rnn(xs, h0)
    np.testing.assert_array_equal(hs.data, nn.unroll(mgu, xs, h0)[0].data)
    assert last is not None and hs.shape == (2, 4, 4)


def test_a_function_cell_with_a_tuple_state():
    rng = np.random.default_rng(6)
    W = nn.Parameter(rng.standard_normal((2, 3)))
    U = nn.Parameter(rng.standard_normal((3, 3)) * 0.5)

    def two_track(x, state):
        fast, slow = state
        fast = F.tanh(x @ W + fast @ U)
        return fast, 0.9 * slow + 0.1 * fast
    xs, (a0, b0) = _inputs(rng, 2, 4, 2, 3, pairs=2)

    def fn(xs, a0, b0):
        hs, (fast, slow) = nn.unroll(two_track, xs, (a0, b0))
        return _flat(hs, slow)
    assert gradcheck(fn, xs, a0, b0, params={"W": W, "U": U}, **TOL)
    hs, (fast, slow) = nn.unroll(two_track, xs, (a0, b0))
    np.testing.assert_array_equal(hs.data[:, -1], fast.data)


def test_rnn_params_must_be_parameters():
    with pytest.raises(TypeError, match="Parameters"):
        nn.RNN(lambda x, h: h, params=[np.ones(3)])
    with pytest.raises(TypeError, match="callable"):
        nn.RNN("not a cell")
