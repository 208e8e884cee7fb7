"""unroll and RNN: values, layouts, custom cells, truncated BPTT, long unrolls, a small language model.

Gradient checks: float64 central differences, eps = 1e-6, an element passes
when |autograd - numeric| <= 1e-7 + 1e-5 |numeric|.
"""
import sys

import numpy as np
import pytest

import tinygrad_rnn as tg
import tinygrad_rnn.functional as F
import tinygrad_rnn.nn as nn
import tinygrad_rnn.optim as optim
from tinygrad_rnn import Tensor

ATOL, RTOL = 1e-7, 1e-5
D, H, B, T = 3, 4, 2, 5


def cells(dtype=np.float64):
    return [nn.RNNCell(D, H, rng=0, dtype=dtype), nn.RNNCell(D, H, "relu", rng=1, dtype=dtype),
            nn.LSTMCell(D, H, rng=2, dtype=dtype), nn.GRUCell(D, H, rng=3, dtype=dtype)]


CELL_IDS = ["rnn-tanh", "rnn-relu", "lstm", "gru"]


def first(state):
    return state[0] if isinstance(state, tuple) else state


def manual(cell, xs_btd, state=None):
    """The plain Python loop that unroll must equal."""
    hs = []
    for t in range(xs_btd.shape[1]):
        state = cell(xs_btd[:, t], state)
        hs.append(first(state).data)
    return np.stack(hs, axis=1), state


@pytest.mark.parametrize("cell", cells(), ids=CELL_IDS)
def test_unroll_equals_the_loop_in_both_layouts(cell):
    xs = np.random.default_rng(0).standard_normal((B, T, D))
    hs, last = nn.unroll(cell, xs)
    ref, ref_last = manual(cell, xs)
    assert hs.shape == (B, T, H)
    np.testing.assert_array_equal(hs.data, ref)
    np.testing.assert_array_equal(first(last).data, first(ref_last).data)
    np.testing.assert_array_equal(hs.data[:, -1], first(last).data)
    tm, last_tm = nn.unroll(cell, Tensor(xs.transpose(1, 0, 2)), batch_first=False)
    assert tm.shape == (T, B, H)
    np.testing.assert_array_equal(tm.data, ref.transpose(1, 0, 2))
    for a, b in zip(last if isinstance(last, tuple) else [last], last_tm if isinstance(last_tm, tuple) else [last_tm]):
        np.testing.assert_array_equal(a.data, b.data)
    if isinstance(cell, nn.LSTMCell):
        assert isinstance(last, tuple) and len(last) == 2
        np.testing.assert_array_equal(last[1].data, ref_last[1].data)


@pytest.mark.parametrize("cell", cells(), ids=CELL_IDS)
def test_unroll_gradcheck_time_major_with_initial_state(cell):
    rng = np.random.default_rng(1)
    xs = Tensor(rng.standard_normal((3, B, D)), requires_grad=True)
    h0 = Tensor(rng.standard_normal((B, H)) * 0.5, requires_grad=True)
    c0 = Tensor(rng.standard_normal((B, H)) * 0.5, requires_grad=True)
    lstm = isinstance(cell, nn.LSTMCell)
    inputs = [xs, h0, c0] if lstm else [xs, h0]

    def f(*_):
        hs, last = nn.unroll(cell, xs, (h0, c0) if lstm else h0, batch_first=False)
        return hs.sum() + (last[1] ** 2).sum() if lstm else hs
    assert tg.gradcheck(f, *cell.parameters(), *inputs, atol=ATOL, rtol=RTOL)


def test_unroll_with_a_given_tuple_state_and_lists():
    rng = np.random.default_rng(1)
    cell = nn.LSTMCell(2, 3, rng=rng)
    h0, c0 = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    xs = rng.standard_normal((4, 6, 2))
    hs, (h, c) = nn.unroll(cell, xs, (Tensor(h0), Tensor(c0)))
    zeros_hs, _ = nn.unroll(cell, xs)
    assert not np.allclose(hs.data, zeros_hs.data)             # the given state is used
    hs_list, _ = nn.unroll(cell, xs.tolist(), [h0, c0])        # lists and arrays are accepted
    np.testing.assert_array_equal(hs_list.data, hs.data)
    assert h.shape == c.shape == (4, 3)


def test_unroll_bad_inputs():
    cell = nn.RNNCell(D, H)
    with pytest.raises(ValueError, match=r"3-D \(batch, time, features\), got shape \(2, 3\)"):
        nn.unroll(cell, np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"3-D \(time, batch, features\)"):
        nn.unroll(cell, np.ones(3), batch_first=False)
    with pytest.raises(ValueError, match="no time steps"):
        nn.unroll(cell, np.ones((2, 0, D)))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 3\)"):
        nn.unroll(cell, np.ones((2, 4, 5)))
    with pytest.raises(ValueError, match=r"\(2, 4\).*got \(3, 4\)"):
        nn.unroll(cell, np.ones((2, 5, D)), np.zeros((3, H)))
    lstm = nn.LSTMCell(D, H, rng=0)
    with pytest.raises(ValueError, match=r"pair \(h, c\)"):
        nn.unroll(lstm, np.ones((2, 5, D)), np.zeros((2, H)))
    with pytest.raises(ValueError, match=r"c must have shape"):
        nn.unroll(lstm, np.ones((2, 5, D)), (np.zeros((2, H)), np.zeros((2, 5))))
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.RNNCell(D, H, "sigmoid")
    with pytest.raises(TypeError, match="callable"):
        nn.RNN("not a cell")


@pytest.mark.parametrize("cell", cells(np.float32), ids=CELL_IDS)
def test_unroll_float32(cell):
    hs, last = nn.unroll(cell, np.random.default_rng(2).standard_normal((B, T, D)).astype(np.float32))
    assert hs.dtype == np.float32 and all(s.dtype == np.float32 for s in (last if isinstance(last, tuple) else [last]))
    hs.sum().backward()
    assert all(p.grad.dtype == np.float32 for p in cell.parameters())


# --- custom cells -------------------------------------------------------------------------------

def make_mgu(rng):
    """A minimal gated unit as a plain function closing over its Parameters; the state is (h, steps)."""
    Wf = nn.Parameter(rng.standard_normal((D + H, H)) * 0.5)
    Wn = nn.Parameter(rng.standard_normal((D + H, H)) * 0.5)

    def mgu(x, state):
        # state None: this function knows its own zeros (unroll passes None to a plain callable)
        h = Tensor(np.zeros((x.shape[0], H))) if state is None else state[0]
        f = F.sigmoid(tg.concat([x, h], axis=1) @ Wf)
        n = F.tanh(tg.concat([x, f * h], axis=1) @ Wn)
        return (1 - f) * h + f * n, (0 if state is None else state[1]) + 1
    return mgu, [Wf, Wn]


def test_custom_function_cell_through_unroll():
    mgu, params = make_mgu(np.random.default_rng(0))
    xs = Tensor(np.random.default_rng(1).standard_normal((B, T, D)), requires_grad=True)
    hs, (h, steps) = nn.unroll(mgu, xs)
    assert hs.shape == (B, T, H) and steps == T            # a tuple state with a non-Tensor element
    np.testing.assert_array_equal(hs.data[:, -1], h.data)
    assert tg.gradcheck(lambda *_: nn.unroll(mgu, xs)[0], *params, xs, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("result", [None, 3.0, (), ([1.0], 2)])
def test_a_cell_that_returns_no_tensor_is_named(result):
    with pytest.raises(TypeError, match="at step 0 the cell returned .*must return its new state"):
        nn.unroll(lambda x, state: result, np.ones((1, 2, 3)))


def test_custom_function_cell_through_stateful_rnn_trains():
    mgu, params = make_mgu(np.random.default_rng(0))
    rnn = nn.RNN(mgu, stateful=True, params=params)
    assert rnn.parameters() == params
    xs = np.random.default_rng(1).standard_normal((B, T, D))
    target = np.tanh(xs.sum(axis=2, keepdims=True)).repeat(H, axis=2) * 0.5
    opt = optim.Adam(rnn.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        rnn.reset_state()
        hs, _ = rnn(xs)
        loss = F.mse_loss(hs, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    rnn(xs)
    assert rnn.state[1] == 2 * T          # the carried state continues across calls
    assert not rnn.state[0].requires_grad


def test_module_cell_inside_rnn_is_discovered():
    rnn = nn.RNN(nn.GRUCell(D, H, rng=0))
    assert [n for n, _ in rnn.named_parameters()] == ["cell.Wx", "cell.Wh", "cell.bx", "cell.bh"]
    assert rnn.parameters()[0] is rnn.cell.Wx


# --- truncated BPTT -----------------------------------------------------------------------------

@pytest.mark.parametrize("cell", cells(), ids=CELL_IDS)
def test_stateful_forward_carries_the_state_exactly(cell):
    xs = np.random.default_rng(3).standard_normal((B, 2 * T, D))
    full, full_last = nn.unroll(cell, xs)
    rnn = nn.RNN(cell, stateful=True)
    a, _ = rnn(xs[:, :T - 1])                       # uneven chunks, one of a single step
    b, _ = rnn(xs[:, T - 1:T])
    c, last = rnn(xs[:, T:])
    np.testing.assert_array_equal(np.concatenate([a.data, b.data, c.data], axis=1), full.data)
    for s, r in zip(last if isinstance(last, tuple) else [last],
                    full_last if isinstance(full_last, tuple) else [full_last]):
        np.testing.assert_array_equal(s.data, r.data)
    # the kept state is detached, element-wise for a tuple
    kept = rnn.state if isinstance(rnn.state, tuple) else (rnn.state,)
    assert all(not s.requires_grad for s in kept)
    assert isinstance(rnn.state, tuple) == isinstance(cell, nn.LSTMCell)
    rnn.reset_state()
    assert rnn.state is None
    again, _ = rnn(xs[:, :T - 1])
    np.testing.assert_array_equal(again.data, a.data)


def test_an_explicit_state_overrides_the_carried_one():
    rng = np.random.default_rng(4)
    rnn = nn.RNN(nn.GRUCell(2, 3, rng=rng), stateful=True)
    xs = rng.standard_normal((1, 5, 2))
    fresh = rnn(xs)[0].data
    assert not np.allclose(rnn(xs)[0].data, fresh)      # the second call started from the carried state
    np.testing.assert_array_equal(rnn(xs, Tensor(np.zeros((1, 3))))[0].data, fresh)


def test_not_stateful_starts_from_zeros_each_call():
    rnn = nn.RNN(nn.RNNCell(D, H, rng=0))
    xs = np.random.default_rng(0).standard_normal((B, T, D))
    a, _ = rnn(xs)
    b, _ = rnn(xs)
    assert rnn.state is None
    np.testing.assert_array_equal(a.data, b.data)


@pytest.mark.parametrize("cell", cells(), ids=CELL_IDS)
def test_truncated_bptt_cuts_the_gradient(cell):
    rng = np.random.default_rng(4)
    x1 = Tensor(rng.standard_normal((B, T, D)), requires_grad=True)
    x2 = Tensor(rng.standard_normal((B, T, D)), requires_grad=True)
    rnn = nn.RNN(cell, stateful=True)
    hs1, _ = rnn(x1)
    loss1 = (hs1 ** 2).sum()
    carried = rnn.state
    hs2, _ = rnn(x2)
    (hs2 ** 2).sum().backward()
    assert x1.grad is None                        # nothing reached chunk 1's inputs
    assert x2.grad is not None and np.any(x2.grad)
    grads2 = [p.grad.copy() for p in cell.parameters()]
    # chunk 2's gradient is exactly that of a fresh unroll from the carried state as a constant
    cell.zero_grad()
    start = tuple(Tensor(s.data) for s in carried) if isinstance(carried, tuple) else Tensor(carried.data)
    hs2b, _ = nn.unroll(cell, Tensor(x2.data), start)
    (hs2b ** 2).sum().backward()
    for g, p in zip(grads2, cell.parameters()):
        np.testing.assert_array_equal(g, p.grad)
    # chunk 1's graph was not walked (hence not freed) by chunk 2's backward: it can still run
    cell.zero_grad()
    loss1.backward()
    assert x1.grad is not None and np.any(x1.grad)


def test_without_detach_the_gradient_does_flow_back():
    """Control for the cut test: passing the attached state on does reach chunk 1."""
    cell = nn.LSTMCell(D, H, rng=0)
    rng = np.random.default_rng(4)
    x1 = Tensor(rng.standard_normal((B, T, D)), requires_grad=True)
    x2 = Tensor(rng.standard_normal((B, T, D)))
    _, state = nn.unroll(cell, x1)
    hs2, _ = nn.unroll(cell, x2, state)
    (hs2 ** 2).sum().backward()
    assert x1.grad is not None and np.any(x1.grad)


def test_detach_state_keeps_structure():
    a = Tensor(np.ones(2), requires_grad=True) * 2
    b = Tensor(np.ones(2), requires_grad=True) * 3
    out = nn.detach_state((a, [b, 3, None]))
    assert isinstance(out, tuple) and isinstance(out[1], list) and out[1][1] == 3 and out[1][2] is None
    assert not out[0].requires_grad and not out[1][0].requires_grad
    np.testing.assert_array_equal(out[0].data, a.data)
    np.testing.assert_array_equal(out[1][0].data, b.data)


@pytest.mark.parametrize("cell", cells(), ids=CELL_IDS)
def test_a_long_unroll_trains_one_step_without_recursion(cell):
    # backward must not recurse per node: with a recursion limit of 200 frames, a few hundred
    # graph nodes would already fail, and 2,000 steps make tens of thousands of nodes
    xs = np.random.default_rng(5).standard_normal((1, 2_000, D)) * 0.1
    hs, _ = nn.unroll(cell, xs)
    loss = ((hs[:, -1] - 1.0) ** 2).sum()
    before = [p.data.copy() for p in cell.parameters()]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        loss.backward()
    finally:
        sys.setrecursionlimit(limit)
    for p in cell.parameters():
        assert p.grad is not None and np.isfinite(p.grad).all()
    assert np.abs(cell.Wx.grad).sum() > 0
    optim.SGD(cell.parameters(), lr=0.1).step()
    assert any(not np.array_equal(b, p.data) for b, p in zip(before, cell.parameters()))


@pytest.mark.parametrize("cell", cells(np.float32), ids=CELL_IDS)
def test_float64_data_takes_a_float32_cells_dtype(cell):
    """Plain numpy data (float64 by default) is read in the cell's dtype, as a layer's input is."""
    xs = np.random.default_rng(2).standard_normal((B, T, D))
    hs, _ = nn.unroll(cell, xs)
    assert hs.dtype == np.float32
    hs2, _ = nn.RNN(cell, stateful=True)(xs.tolist())
    assert hs2.dtype == np.float32
    np.testing.assert_array_equal(hs.data, hs2.data)


def test_rnn_time_major():
    cell = nn.LSTMCell(D, H, rng=0)
    xs = np.random.default_rng(0).standard_normal((T, B, D))
    rnn = nn.RNN(cell, stateful=True, batch_first=False)
    hs, last = rnn(xs)
    ref, ref_last = nn.unroll(cell, xs, batch_first=False)
    assert hs.shape == (T, B, H)
    np.testing.assert_array_equal(hs.data, ref.data)
    more, _ = rnn(xs[:2])                       # carries on in the same layout
    np.testing.assert_array_equal(more.data, nn.unroll(cell, xs[:2], ref_last, batch_first=False)[0].data)


def test_stateful_batch_change_needs_a_reset():
    rnn = nn.RNN(nn.LSTMCell(D, H, rng=0), stateful=True)
    rnn(np.ones((2, T, D)))
    with pytest.raises(ValueError, match=r"carried state must have shape \(3, 4\).*got \(2, 4\) "
                                         r"\(a batch of 2, not 3\); call reset_state"):
        rnn(np.ones((3, T, D)))
    rnn.reset_state()
    assert rnn(np.ones((3, T, D)))[0].shape == (3, T, H)


# --- a small character language model -----------------------------------------------------------

TEXT = ("the cat sat on the mat. the dog sat on the log. "
        "a cat and a dog met on the mat and sat on the log. ") * 4


class CharLM(nn.Module):
    def __init__(self, vocab, rng):
        self.embed = nn.Embedding(vocab, 12, rng=rng)
        self.rnn = nn.RNN(nn.LSTMCell(12, 32, rng=rng), stateful=True)
        self.out = nn.Linear(32, vocab, rng=rng)

    def forward(self, ids):
        hs, _ = self.rnn(self.embed(ids))
        return self.out(hs)


def perplexity(model, ids, chunk):
    """exp(mean cross-entropy) over the whole text, state carried from chunk to chunk."""
    model.rnn.reset_state()
    total, count = 0.0, 0
    with tg.no_grad():
        for s in range(0, len(ids) - 1, chunk):
            x, y = ids[None, s:s + chunk], ids[None, s + 1:s + chunk + 1]
            x = x[:, :y.shape[1]]
            total += F.cross_entropy(model(x), y, reduction="sum").item()
            count += y.size
    return float(np.exp(total / count))


def test_lstm_language_model_halves_its_perplexity():
    chars = sorted(set(TEXT))
    ids = np.array([chars.index(c) for c in TEXT])
    model = CharLM(len(chars), np.random.default_rng(0))
    opt = optim.Adam(model.parameters(), lr=0.02)
    chunk, batch = 16, 4
    # truncated BPTT over `batch` parallel streams of the text
    stream = len(ids) // batch
    streams = ids[:stream * batch].reshape(batch, stream)
    start = perplexity(model, ids, chunk)
    assert start > 0.7 * len(chars)               # an untrained model is close to uniform
    for _ in range(4):
        model.rnn.reset_state()
        for s in range(0, stream - chunk, chunk):
            logits = model(streams[:, s:s + chunk])
            loss = F.cross_entropy(logits, streams[:, s + 1:s + chunk + 1])
            opt.zero_grad()
            loss.backward()
            optim.clip_grad_norm(model.parameters(), 5.0)
            opt.step()
    end = perplexity(model, ids, chunk)
    assert end < 0.5 * start, (start, end)
