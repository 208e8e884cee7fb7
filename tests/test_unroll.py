"""unroll and RNN: layouts, tuple states, errors, stateful truncated BPTT, very long sequences, a language model."""
import math

import numpy as np
import pytest

from tinygrad_rnn import Tensor, nn, optim
from tinygrad_rnn import functional as F

CELLS = {
    "rnn": lambda d, h, rng: nn.RNNCell(d, h, rng=rng),
    "lstm": lambda d, h, rng: nn.LSTMCell(d, h, rng=rng),
    "gru": lambda d, h, rng: nn.GRUCell(d, h, rng=rng),
}


def _first(state):
    return state[0] if isinstance(state, tuple) else state


def _values(state):
    return [s.data.copy() for s in state] if isinstance(state, tuple) else [state.data.copy()]


@pytest.mark.parametrize("kind", CELLS)
def test_unroll_shapes_and_layouts(kind):
    rng = np.random.default_rng(0)
    cell = CELLS[kind](3, 4, rng)
    xs = rng.standard_normal((2, 5, 3))                        # (batch, time, features)
    hs, last = nn.unroll(cell, xs)
    assert hs.shape == (2, 5, 4)
    assert (isinstance(last, tuple) and len(last) == 2) == (kind == "lstm")
    np.testing.assert_array_equal(hs.data[:, -1], _first(last).data)
    # the same sequence time-major gives the same numbers, transposed
    hs_t, last_t = nn.unroll(cell, xs.transpose(1, 0, 2), batch_first=False)
    assert hs_t.shape == (5, 2, 4)
    np.testing.assert_array_equal(hs_t.data, hs.data.transpose(1, 0, 2))
    for a, b in zip(_values(last), _values(last_t)):
        np.testing.assert_array_equal(a, b)
    # step by step by hand
    state = None
    for t in range(5):
        state = cell(xs[:, t], state)
        np.testing.assert_array_equal(_first(state).data, hs.data[:, t])


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


def test_unroll_errors():
    cell = nn.RNNCell(3, 4, rng=0)
    with pytest.raises(ValueError, match=r"3-D.*\(2, 3\)"):
        nn.unroll(cell, np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"\(time, batch, features\)"):
        nn.unroll(cell, np.ones((2, 3)), batch_first=False)
    with pytest.raises(ValueError, match="no time steps"):
        nn.unroll(cell, np.ones((2, 0, 3)))
    with pytest.raises(ValueError, match=r"\(2, 4\).*got \(3, 4\)"):
        nn.unroll(cell, np.ones((2, 5, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 3\)"):
        nn.unroll(cell, np.ones((2, 5, 2)))
    lstm = nn.LSTMCell(3, 4, rng=0)
    with pytest.raises(ValueError, match=r"pair \(h, c\)"):
        nn.unroll(lstm, np.ones((2, 5, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"c must have shape"):
        nn.unroll(lstm, np.ones((2, 5, 3)), (np.zeros((2, 4)), np.zeros((2, 5))))
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.RNNCell(3, 4, "sigmoid")


@pytest.mark.parametrize("kind", CELLS)
def test_stateful_chunks_equal_one_unroll_of_the_concatenation(kind):
    rng = np.random.default_rng(2)
    cell = CELLS[kind](3, 4, rng)
    xs = rng.standard_normal((2, 9, 3))
    whole, whole_last = nn.unroll(cell, xs)
    rnn = nn.RNN(cell, stateful=True)
    assert rnn.state is None
    parts = [rnn(xs[:, a:b])[0].data for a, b in [(0, 4), (4, 5), (5, 9)]]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole.data, rtol=0, atol=1e-15)
    for a, b in zip(_values(rnn.state), _values(whole_last)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-15)
    # the carried state is detached: no graph hangs on to it
    for s in (rnn.state if isinstance(rnn.state, tuple) else (rnn.state,)):
        assert not s.requires_grad
    # not stateful: every call starts from zeros
    plain = nn.RNN(cell)
    first = plain(xs[:, :4])[0].data
    np.testing.assert_array_equal(plain(xs[:, :4])[0].data, first)
    assert plain.state is None


@pytest.mark.parametrize("kind", CELLS)
def test_truncated_bptt_cuts_the_gradient_at_the_chunk_boundary(kind):
    rng = np.random.default_rng(3)
    cell = CELLS[kind](3, 4, rng)
    head = nn.Linear(4, 2, rng=rng)
    rnn = nn.RNN(cell, stateful=True)
    x1 = Tensor(rng.standard_normal((2, 4, 3)), requires_grad=True)
    x2 = Tensor(rng.standard_normal((2, 4, 3)), requires_grad=True)
    target = rng.standard_normal((2, 4, 2))

    hs1, last1 = rnn(x1)                       # chunk 1: its graph is never backpropagated
    carried = _values(rnn.state)
    hs2, _ = rnn(x2)
    loss2 = F.mse_loss(head(hs2), target)
    loss2.backward()
    assert x1.grad is None                     # nothing reached chunk 1
    assert _first(last1).grad is None
    assert x2.grad is not None
    got = {n: p.grad.copy() for n, p in cell.named_parameters()}

    # the same chunk 2 from a constant start state that equals the carried one
    cell.zero_grad()
    head.zero_grad()
    start = tuple(Tensor(v) for v in carried) if kind == "lstm" else Tensor(carried[0])
    hs, _ = nn.unroll(cell, x2.detach(), start)
    F.mse_loss(head(hs), target).backward()
    for name, p in cell.named_parameters():
        np.testing.assert_allclose(got[name], p.grad, rtol=0, atol=1e-14, err_msg=name)

    # and it really is a cut: backpropagating through both chunks gives different gradients
    cell.zero_grad()
    hs_full, _ = nn.unroll(cell, np.concatenate([x1.data, x2.data], axis=1))
    F.mse_loss(head(hs_full[:, 4:]), target).backward()
    assert not np.allclose(cell.Wh.grad, got["Wh"], atol=1e-8)


def test_an_explicit_state_overrides_the_carried_one_and_reset_state_forgets():
    rng = np.random.default_rng(4)
    cell = nn.GRUCell(2, 3, rng=rng)
    rnn = nn.RNN(cell, stateful=True)
    xs = rng.standard_normal((1, 5, 2))
    fresh = rnn(xs)[0].data
    carried = rnn(xs)[0].data
    assert not np.allclose(fresh, carried)          # the second call started from the carried state
    rnn.reset_state()
    assert rnn.state is None
    np.testing.assert_array_equal(rnn(xs)[0].data, fresh)
    h0 = np.zeros((1, 3))
    np.testing.assert_array_equal(rnn(xs, Tensor(h0))[0].data, fresh)   # explicit state wins
    # a different batch size after reset is fine; without reset it is a clear error
    rnn.reset_state()
    rnn(np.ones((4, 2, 2)))
    with pytest.raises(ValueError, match=r"\(2, 3\).*got \(4, 3\)"):
        rnn(np.ones((2, 2, 2)))


def test_detach_state_keeps_structure():
    a = Tensor(np.ones(2), requires_grad=True) * 2
    b = Tensor(np.ones(2), requires_grad=True) * 3
    out = nn.detach_state((a, [b, None]))
    assert isinstance(out, tuple) and isinstance(out[1], list) and out[1][1] is None
    assert not out[0].requires_grad and not out[1][0].requires_grad
    np.testing.assert_array_equal(out[1][0].data, b.data)


@pytest.mark.parametrize("kind", CELLS)
def test_ten_thousand_steps_train_one_step(kind):
    # the graph is 10,000 steps deep: backward must not recurse per node
    rng = np.random.default_rng(5)
    cell = CELLS[kind](1, 2, rng)
    head = nn.Linear(2, 1, rng=rng)
    xs = rng.standard_normal((1, 10_000, 1)) * 0.1
    hs, _ = nn.unroll(cell, xs)
    loss = F.mse_loss(head(hs[:, -1]), np.ones((1, 1)))
    loss.backward()
    before = {n: p.data.copy() for n, p in cell.named_parameters()}
    for name, p in cell.named_parameters():
        assert p.grad is not None and np.isfinite(p.grad).all(), name
    opt = optim.SGD(cell.parameters() + head.parameters(), lr=0.1)
    opt.step()
    assert any(not np.array_equal(before[n], p.data) for n, p in cell.named_parameters())
    # the first input's weight gradient is made of contributions from all 10,000 steps
    assert np.abs(cell.Wx.grad).sum() > 0


TEXT = """the cat sat on the mat and the dog sat on the log.
a cat and a dog met on a mat; the dog sat and the cat ran.
then the cat sat on the log and the dog ran to the mat.
"""


class CharLM(nn.Module):
    def __init__(self, vocab, hidden, rng):
        self.embed = nn.Embedding(vocab, 16, rng=rng)
        self.rnn = nn.RNN(nn.LSTMCell(16, hidden, rng=rng), stateful=True)
        self.out = nn.Linear(hidden, vocab, rng=rng)

    def forward(self, ids):
        hs, _ = self.rnn(self.embed(ids))
        return self.out(hs)


def _perplexity(model, ids, vocab):
    model.rnn.reset_state()
    logits = model(ids[None, :-1])
    model.rnn.reset_state()
    return math.exp(float(F.cross_entropy(logits.reshape(-1, vocab), ids[1:]).data))


def test_lstm_char_language_model_halves_its_perplexity():
    from tinygrad_rnn import data
    vocab = data.Vocab.from_text(TEXT)
    ids = vocab.encode(TEXT)
    V = len(vocab)
    model = CharLM(V, 32, np.random.default_rng(0))
    opt = optim.Adam(model.parameters(), lr=0.01)
    start = _perplexity(model, ids, V)
    assert start > V * 0.8                     # untrained: close to uniform over the vocabulary
    for epoch in range(12):
        model.rnn.reset_state()
        for inputs, targets in data.bptt_batches(ids, batch_size=4, seq_len=10):
            logits = model(inputs)                # continues from the last chunk's detached state
            loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
            opt.zero_grad()
            loss.backward()
            optim.clip_grad_norm(model.parameters(), 5.0)
            opt.step()
    end = _perplexity(model, ids, V)
    assert end < start / 2, (start, end)
