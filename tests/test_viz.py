"""Graph drawing (DOT text, time-step boxes, gradient norms) and the gradient-through-time measurement."""
import re
from pathlib import Path

import numpy as np
import pytest

from tinygrad_rnn import Tensor, nn
from tinygrad_rnn.viz import gradient_through_time, plot_gradient_norms, retain_all_grads, step_groups, to_dot


def unrolled(cell, steps, seed=0):
    rng = np.random.default_rng(seed)
    xs = Tensor(rng.normal(size=(2, steps, cell.input_size)), name="xs")
    state, hs = None, []
    for t in range(steps):
        state = cell(xs[:, t], state)
        hs.append(state[0] if isinstance(state, tuple) else state)
    return xs, hs


def parse_dot(text):
    """Node ids with their labels, and edges, from to_dot's output (a small DOT reader)."""
    assert text.startswith("digraph") and text.rstrip().endswith("}")
    assert text.count("{") == text.count("}")
    nodes = dict(re.findall(r'^\s*(n\d+) \[label="((?:[^"\\]|\\.)*)"', text, re.M))
    edges = re.findall(r"^\s*(n\d+) -> (n\d+);", text, re.M)
    return nodes, edges


def test_dot_of_a_small_expression():
    a = Tensor([1.0, 2.0], requires_grad=True, name="a")
    b = Tensor([3.0, 4.0], requires_grad=True, name="b")
    loss = (a * b).sum()
    nodes, edges = parse_dot(to_dot(loss, title='say "hi"'))
    labels = sorted(nodes.values())
    assert labels == sorted(["a\\n(2,)", "b\\n(2,)", "mul\\n(2,)", "sum\\n()"])
    assert len(edges) == 3 and all(s in nodes and d in nodes for s, d in edges)
    assert 'label="say \\"hi\\""' in to_dot(loss, title='say "hi"')


def test_gradient_norms_after_backward():
    a = Tensor([3.0, 4.0], requires_grad=True, name="a")
    y = a * 2.0
    y.name = "y"
    loss = y.sum()
    retain_all_grads(loss)
    loss.backward(retain_graph=True)
    nodes, _ = parse_dot(to_dot(loss))
    assert "a\\n(2,)\\n|grad| = 2.83" in nodes.values()      # |(2, 2)| = 2.828
    assert "y\\n(2,)\\n|grad| = 1.41" in nodes.values()      # |(1, 1)|
    np.testing.assert_allclose(y.grad, [1.0, 1.0])


@pytest.mark.parametrize("make", [lambda: nn.RNNCell(3, 4, rng=0), lambda: nn.LSTMCell(3, 4, rng=0),
                                  lambda: nn.GRUCell(3, 4, rng=0)])
def test_time_step_boxes(make):
    cell = make()
    steps = 3
    xs, hs = unrolled(cell, steps)
    loss = (hs[-1] * hs[-1]).sum()
    owner = step_groups(loss, hs)
    text = to_dot(loss, steps=hs)
    nodes, edges = parse_dot(text)
    assert text.count("subgraph cluster_") == steps
    for t in range(steps):
        assert f'label="t = {t}"' in text
    # each step's state is in its own box, the shared parameters and the input in none
    for t, h in enumerate(hs):
        assert owner[id(h)] == f"t = {t}"
    for p in cell.parameters():
        assert id(p) not in owner and f"n{id(p)}" in nodes
    assert id(xs) not in owner and id(loss) not in owner
    # an edge never goes from a later step's box back into an earlier one
    step_of = {k: int(v.split("= ")[1]) for k, v in owner.items()}
    for s, d in edges:
        s, d = int(s[1:]), int(d[1:])
        if s in step_of and d in step_of:
            assert step_of[s] <= step_of[d]
    # every parameter feeds every step
    for p in cell.parameters():
        targets = {int(d[1:]) for s, d in edges if s == f"n{id(p)}"}
        assert {step_of[d] for d in targets if d in step_of} == set(range(steps))


def test_steps_as_a_dict_and_bad_input():
    cell = nn.RNNCell(2, 3, rng=1)
    _, hs = unrolled(cell, 2)
    text = to_dot(hs[-1].sum(), steps={hs[0]: "first", hs[1]: "second"})
    assert 'label="first"' in text and 'label="second"' in text
    with pytest.raises(TypeError, match="Tensor"):
        to_dot(np.zeros(3))
    with pytest.raises(TypeError, match="Tensors"):
        to_dot(hs[-1], steps=[np.zeros(2)])


def test_gradient_through_time_matches_hand_derivation():
    """A tanh RNN: dL/dh_t = dL/dh_{t+1} * (1 - h_{t+1}^2) @ Wh^T, computed here in numpy."""
    cell = nn.RNNCell(2, 5, rng=3)
    xs = np.random.default_rng(4).normal(size=(1, 6, 2))
    norms = gradient_through_time(cell, xs)
    h, hs = np.zeros((1, 5)), []
    for t in range(6):
        h = np.tanh(xs[:, t] @ cell.Wx.data + h @ cell.Wh.data + cell.b.data)
        hs.append(h)
    g = np.ones((1, 5))               # L = sum of the last state
    expected = [np.linalg.norm(g)]
    for t in range(5, 0, -1):
        g = (g * (1 - hs[t] ** 2)) @ cell.Wh.data.T
        expected.append(np.linalg.norm(g))
    np.testing.assert_allclose(norms, expected[::-1], rtol=1e-12)


def test_vanishing_and_exploding():
    xs = np.random.default_rng(0).normal(size=(1, 30, 4)) * 1e-3
    curves = {}
    for radius in (0.5, 1.5):
        cell = nn.RNNCell(4, 8, rng=0)
        cell.Wh.data *= radius / np.abs(np.linalg.eigvals(cell.Wh.data)).max()
        curves[radius] = gradient_through_time(cell, xs)
    assert curves[0.5][0] < 1e-6 * curves[0.5][-1]         # vanishes going back
    assert curves[1.5][0] > 100 * curves[1.5][-1]          # grows going back (until tanh saturates)


def test_gradient_through_time_custom_loss_and_lstm():
    cell = nn.LSTMCell(2, 3, rng=0)
    xs = np.random.default_rng(1).normal(size=(2, 4, 2))
    # a loss on the first state only: later states get no gradient
    norms = gradient_through_time(cell, xs, loss=lambda hs: (hs[0] * hs[0]).sum())
    assert norms[0] > 0 and np.all(norms[1:] == 0)
    with pytest.raises(ValueError, match="batch, time, features"):
        gradient_through_time(cell, np.zeros((4, 2)))


def test_plot_gradient_norms(tmp_path):
    pytest.importorskip("matplotlib")
    path = plot_gradient_norms({"a": np.array([1.0, 0.1, 0.0])}, tmp_path / "g.png")
    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
