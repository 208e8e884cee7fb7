"""Graph drawing (DOT text, time-step boxes, gradient norms) and the gradient-through-time measurement."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinygrad_rnn import Tensor, nn
from tinygrad_rnn import functional as F
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



# ---------------------------------------------------------------------- compiled compositions in pictures
def first_lines(nodes):
    return [label.split("\\n")[0] for label in nodes.values()]


def hub_nodes(text):
    """The several-output composites (HTML-like labels): id -> (name, ports)."""
    found = re.findall(r"^\s*(n\d+) \[label=<(.*)>, shape=plain", text, re.M)
    return {n: (re.search(r"<b>(.*?)</b>", body).group(1), re.findall(r'port="(o\d+)"', body)) for n, body in found}


def all_edges(text):
    """Edges as (source node, target node), ports dropped."""
    return re.findall(r"^\s*(n\d+)(?::o\d+:n)? -> (n\d+);", text, re.M)


def clusters(text):
    """``{label: [node ids]}`` of the composites' boxes in ``expand=True`` output."""
    out = {}
    for block in re.findall(r"subgraph cluster_\w+ \{\n(.*?)\n\s*\}", text, re.S):
        label = re.search(r'label="([^"]*)"; labelloc=b', block)
        if label:
            out.setdefault(label.group(1), []).append(re.findall(r"^\s*(n\d+) \[", block, re.M))
    return out


def trained(cell, steps, seed=0):
    """An unrolled graph with every gradient kept after one backward (graph retained)."""
    xs, hs = unrolled(cell, steps, seed)
    loss = (hs[-1] * hs[-1]).sum()
    retain_all_grads(loss)
    loss.backward(retain_graph=True)
    return loss, hs


def test_a_composite_is_one_node():
    cell = nn.RNNCell(3, 4, rng=0)
    loss, hs = trained(cell, 3)
    text = to_dot(loss, steps=hs)
    nodes, edges = parse_dot(text)
    lines = first_lines(nodes)
    assert lines.count("rnn_cell") == 3
    assert not {"expm1", "div", "matmul", "tanh"} & set(lines)      # nothing of the composition inside
    assert len(nodes) == 3 + 3 + 3 + 1 + 2          # cells, parameters, x_t slices, the initial state, mul and sum
    for h in hs:
        assert f"rnn_cell\\n(2, 4)\\n|grad| = {np.linalg.norm(h.grad):.3g}" in nodes.values()
    assert "cluster_rnn_cell" not in text
    # the same for a library function: F.tanh is one node named tanh
    a = Tensor(np.linspace(-1, 1, 6), requires_grad=True, name="a")
    lines = first_lines(parse_dot(to_dot(F.tanh(a).sum()))[0])
    assert sorted(lines) == ["a", "sum", "tanh"]


def test_expand_draws_the_primitives_in_a_box_named_after_the_composite():
    cell = nn.RNNCell(3, 4, rng=0)
    loss, hs = trained(cell, 3)
    text = to_dot(loss, steps=hs, expand=True)
    nodes, _ = parse_dot(text)
    boxes = clusters(text)
    assert list(boxes) == ["rnn_cell"] and len(boxes["rnn_cell"]) == 3
    lines = first_lines(nodes)
    assert "rnn_cell" not in lines and lines.count("expm1") == 3
    for inside in boxes["rnn_cell"]:                                 # each box holds one cell's primitives
        ops = [nodes[n].split("\\n")[0] for n in inside]
        assert ops.count("expm1") == 1 and ops.count("matmul") == 2
        assert not {"Wx", "Wh", "b"} & set(ops)                      # the shared parameters stay outside
    # each box sits inside its time step's box
    assert re.search(r'label="t = 0";[^\n]*\n(?:[^\n]*\n)*?\s*subgraph cluster_rnn_cell_', text)
    # every edge joins drawn nodes; the parameters feed the boxes
    edges = all_edges(text)
    assert all(s in nodes and d in nodes for s, d in edges)
    inside = {n for box in boxes["rnn_cell"] for n in box}
    for p in cell.parameters():
        assert len([d for s, d in edges if s == f"n{id(p)}" and d in inside]) == 3


@pytest.mark.parametrize("make", [lambda: nn.RNNCell(3, 4, rng=0), lambda: nn.LSTMCell(2, 3, rng=1),
                                  lambda: nn.GRUCell(3, 2, rng=2)])
def test_expanded_picture_is_the_plain_graphs_picture(make):
    """expand=True draws what the composition, run node by node, draws: the same nodes, shapes and
    gradient norms (the inner ones by backward from the composite's outputs), and as many edges."""
    from tinygrad_rnn import expanded
    cell = make()
    loss, hs = trained(cell, 3)
    with expanded():
        plain_loss, plain_hs = trained(cell, 3)
    ours = to_dot(loss, steps=hs, expand=True)
    theirs = to_dot(plain_loss, steps=plain_hs)
    assert sorted(parse_dot(ours)[0].values()) == sorted(parse_dot(theirs)[0].values())
    assert len(all_edges(ours)) == len(all_edges(theirs))


def test_inner_gradients_are_the_engines():
    """The gradients inside an expanded composite equal those of the plain graph, node for node (rtol 1e-12)."""
    from tinygrad_rnn import expanded
    from tinygrad_rnn.viz import _expansion
    cell = nn.RNNCell(3, 4, rng=0)
    loss, hs = trained(cell, 2)
    with expanded():
        plain_loss, plain_hs = trained(cell, 2)
    params = [p.grad.copy() for p in cell.parameters()]
    plain = sorted((n for n in viz_graph(plain_loss) if n._parents), key=lambda n: n._seq)
    for t, h in enumerate(hs):
        _, _, inner, grads = _expansion(h, [h.grad])
        ops = sorted((n for n in inner if n._parents), key=lambda n: n._seq)
        step = [n for n in plain if (t == 0 or n._seq > plain_hs[t - 1]._seq) and n._seq <= plain_hs[t]._seq
                and n._op != "index"]
        assert [n._op for n in ops] == [n._op for n in step]
        for a, b in zip(ops, step):
            np.testing.assert_allclose(grads[id(a)], b.grad, rtol=1e-12, atol=0)
    for p, before in zip(cell.parameters(), params):               # the caller's gradients are untouched
        np.testing.assert_array_equal(p.grad, before)


def viz_graph(root):
    from tinygrad_rnn.viz import _graph
    return _graph(root)


def test_a_several_output_composite_is_one_node_with_ports():
    cell = nn.LSTMCell(3, 4, rng=0)
    loss, hs = trained(cell, 2)
    text = to_dot(loss, steps=hs)
    nodes, _ = parse_dot(text)
    hubs = hub_nodes(text)
    assert len(nodes) + len(hubs) <= 12                              # small: the 2-step LSTM is 11 boxes
    assert sorted(hubs.values()) == [("lstm_cell", ["o0"]), ("lstm_cell", ["o0", "o1"])]  # c of the last step unused
    assert "expm1" not in text and "sigmoid" not in text
    edges = re.findall(r"^\s*(n\d+):(o\d+):n -> (n\d+);", text, re.M)
    first, second = sorted(hubs, key=lambda n: len(hubs[n][1]), reverse=True)
    assert sorted((port, d) for s, port, d in edges if s == first) == [("o0", second), ("o1", second)]
    # each port shows its output's shape and gradient norm
    h0 = hs[0]
    assert f"(2, 4)<br/>|grad| = {np.linalg.norm(h0.grad):.3g}" in text
    # expanded, the same graph shows the primitives in two boxes named lstm_cell
    boxes = clusters(to_dot(loss, steps=hs, expand=True))
    assert list(boxes) == ["lstm_cell"] and len(boxes["lstm_cell"]) == 2


def test_expand_needs_the_module():
    _, hs = unrolled(nn.RNNCell(2, 3, rng=0), 1)                   # the cell is gone; its node stays
    with pytest.raises(RuntimeError, match="module .* no longer exists"):
        to_dot(hs[0], expand=True)
    assert "rnn_cell" in to_dot(hs[0])                               # drawn collapsed all the same


def test_cli_expand(tmp_path):
    from tinygrad_rnn.cli import main
    assert main(["graph", "--steps", "2", "--output", str(tmp_path / "a.dot")]) == 0
    assert main(["graph", "--steps", "2", "--expand", "--output", str(tmp_path / "b.dot")]) == 0
    a, b = (tmp_path / "a.dot").read_text(), (tmp_path / "b.dot").read_text()
    assert "h(1) = rnn_cell" in a and "expm1" not in a and "cluster_rnn_cell" not in a
    assert list(clusters(b)) == ["rnn_cell"] and len(clusters(b)["rnn_cell"]) == 2
    assert b.count('"expm1\\n') == 2 and "h(1) = div" in b          # the cell's output keeps its name


def png_size(path):
    import struct
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.mark.skipif(not shutil.which("dot"), reason="Graphviz's dot is not installed")
def test_the_default_picture_fits_a_screen(tmp_path):
    from tinygrad_rnn.cli import main
    for cell in ("rnn", "lstm", "gru"):
        out = tmp_path / f"{cell}.dot"
        assert main(["graph", "--cell", cell, "--steps", "3", "--output", str(out)]) == 0
        subprocess.run(["dot", "-Tpng", str(out), "-o", str(tmp_path / f"{cell}.png")], check=True)
        width, height = png_size(tmp_path / f"{cell}.png")
        assert height < 1000 and width < 1400, (cell, width, height)


def test_docs_show_the_pictures():
    docs = os.path.join(os.path.dirname(__file__), "..", "docs")
    text = Path(docs, "cli.md").read_text(encoding="utf-8")
    assert "--expand" in text and "img/graph_rnn.png" in text and "img/graph_rnn_expanded.png" in text
    width, height = png_size(os.path.join(docs, "img", "graph_rnn.png"))
    assert height < 1200
    assert png_size(os.path.join(docs, "img", "graph_rnn_expanded.png"))[1] > height   # the primitives take room
