"""The interactive page of viz.to_html: what it holds (tests without a browser), and what it does in one.

The browser tests drive Debian's headless chromium through its chromedriver
with selenium.  They skip when either is missing, unless
TINYGRAD_RNN_REQUIRE_BROWSER=1 (as in CI), where a missing browser fails.
TINYGRAD_RNN_SCREENSHOT=path also saves the picture shown in the docs.
"""
import json
import os
import re
import shutil
import tempfile

import numpy as np
import pytest

from tinygrad_rnn import Tensor, nn
from tinygrad_rnn import viz
from tinygrad_rnn.cli import main
from tinygrad_rnn.tensor import _topological_order
from tinygrad_rnn.viz import to_html
from test_viz import unrolled as unrolled_states


def unrolled(cell, steps=3, seed=1):
    """The loss sum(h_T^2) of ``cell`` over ``steps`` steps, and the states h_t."""
    _, hs = unrolled_states(cell, steps, seed)
    return (hs[-1] * hs[-1]).sum(), hs


def page_data(page):
    """The data the page's script draws from, as Python objects."""
    literal = re.search(r"^const D = (.*);$", page, re.M).group(1)
    return json.loads(literal)


def by_seq(data):
    return {n["seq"]: n for n in data["nodes"]}


# ---------------------------------------------------------------------- the page, without a browser
def test_page_is_one_self_contained_file():
    loss, hs = unrolled(nn.RNNCell(3, 4, rng=0))
    page = to_html(loss, steps=hs, title='a <b>"title"</b>')
    assert isinstance(page, str) and isinstance(page, viz.Page)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # nothing that a browser could fetch: no URL, no external script, style or image
    assert not re.search(r"https?:|//[a-z]|\bsrc\s*=|<link|@import|url\((?!#)", page, re.I)
    assert "default-src 'none'" in page                       # and the browser is told to load nothing
    assert "a &lt;b&gt;&quot;title&quot;&lt;/b&gt;" in page and "<b>" not in page
    assert page.count("<script") == 1 and page.count("</script>") == 1


def test_a_label_cannot_end_the_script():
    a = Tensor([1.0, 2.0], requires_grad=True, name="</script><script>alert(1)</script>")
    page = to_html((a * a).sum())
    assert page.count("</script>") == 1 and page.count("<script") == 1
    assert page_data(page)["nodes"][0]["label"] == a.name


@pytest.mark.parametrize("make", [lambda: nn.RNNCell(3, 4, rng=0), lambda: nn.LSTMCell(3, 2, rng=0),
                                  lambda: nn.GRUCell(3, 2, rng=0)])
def test_values_and_gradients_are_the_engines(make):
    cell = make()
    loss, hs = unrolled(cell)
    data = page_data(to_html(loss, steps=hs, names=dict(cell.named_parameters())))
    for p in cell.parameters():
        assert p.grad is None                                 # the caller's gradients are untouched
    for h in hs:
        h.retain_grad()
    loss.backward()                                           # the graph is still alive
    nodes = by_seq(data)
    for name, p in cell.named_parameters():
        shown = nodes[p._seq]
        assert shown["label"] == name and shown["kind"] == "parameter"
        np.testing.assert_array_equal(np.array(shown["value"]["array"]), p.data)
        if p.size <= 64:
            np.testing.assert_array_equal(np.array(shown["grad"]["array"]), p.grad)
        assert shown["grad"]["norm"] == float(np.linalg.norm(p.grad))
        assert shown["grad"]["min"] == p.grad.min() and shown["grad"]["max"] == p.grad.max()
    for t, h in enumerate(hs):
        assert nodes[h._seq]["label"] == f"h({t})" and nodes[h._seq]["step"] == f"t = {t}"
        np.testing.assert_array_equal(np.array(nodes[h._seq]["grad"]["array"]), h.grad)
    # the side plot's |dL/dh_t|, in time order
    assert [s["t"] for s in data["states"]] == [str(t) for t in range(len(hs))]
    assert [s["norm"] for s in data["states"]] == [float(np.linalg.norm(h.grad)) for h in hs]


def test_gradients_already_there_stay_as_they_were():
    a = Tensor([1.0, -2.0], requires_grad=True, name="a")
    b = Tensor([3.0, 4.0], requires_grad=True, name="b")
    y = a * b
    y.name = "y"
    loss = (y * y).sum()
    loss.backward(retain_graph=True)
    kept = a.grad
    before = a.grad.copy()
    data = page_data(to_html(loss))
    assert a.grad is kept and np.array_equal(a.grad, before)  # the same array, the same numbers
    assert y.grad is None and not y._retain_grad               # no gradient kept where none was asked for
    assert by_seq(data)[y._seq]["grad"]["array"] == (2 * y.data).tolist()
    loss.backward()                                           # accumulates as it would have without the page
    np.testing.assert_array_equal(a.grad, 2 * before)


def test_replay_is_the_order_the_engine_visits():
    cell = nn.LSTMCell(2, 2, rng=0)
    loss, hs = unrolled(cell, steps=2)
    data = page_data(to_html(loss, steps=hs))
    seqs = [data["nodes"][i]["seq"] for i in data["order"]]
    assert seqs == [n._seq for n in _topological_order(loss)]   # every node reached, in backward's order
    assert seqs[0] == loss._seq


def test_layout_reads_left_to_right_and_nothing_overlaps():
    cell = nn.GRUCell(3, 2, rng=0)
    loss, hs = unrolled(cell, steps=3)
    data = page_data(to_html(loss, steps=hs, names=dict(cell.named_parameters())))
    nodes = data["nodes"]
    for s, d in data["edges"]:
        assert nodes[s]["x"] < nodes[d]["x"]                   # inputs left of their results
    spots = [(round(n["x"]), round(n["y"])) for n in nodes]
    for i, (x, y) in enumerate(spots):
        for x2, y2 in spots[i + 1:]:
            assert abs(x - x2) >= 92 or abs(y - y2) >= 38     # boxes of 92 x 38 never overlap
    # the time steps side by side: every node of step t left of every node of step t + 1
    for t in range(2):
        right = max(n["x"] for n in nodes if n["step"] == f"t = {t}")
        assert right < min(n["x"] for n in nodes if n["step"] == f"t = {t + 1}")
    # the parameters, shared by every step, in a column left of all steps
    params = [n["x"] for n in nodes if n["kind"] == "parameter"]
    assert len(params) == 4 and max(params) < min(n["x"] for n in nodes if n["step"] is not None)


def test_states_found_by_name():
    cell = nn.RNNCell(2, 3, rng=0)
    loss, hs = unrolled(cell, steps=3)
    for t, h in enumerate(hs):
        h.name = f"h_{t}"
    data = page_data(to_html(loss))
    assert [s["t"] for s in data["states"]] == ["0", "1", "2"]
    assert [data["nodes"][s["node"]]["seq"] for s in data["states"]] == [h._seq for h in hs]
    assert by_seq(data)[hs[1]._seq]["step"] == "t = 1"


def test_large_arrays_are_summarised():
    w = Tensor(np.arange(100.0).reshape(10, 10), requires_grad=True, name="w")
    data = page_data(to_html((w * w).sum()))
    shown = by_seq(data)[w._seq]
    assert shown["value"]["array"] is None and shown["value"]["size"] == 100
    assert shown["value"]["max"] == 99.0 and shown["value"]["mean"] == 49.5
    assert shown["grad"]["norm"] == pytest.approx(float(np.linalg.norm(2 * w.data)), rel=1e-15)


def test_bad_inputs():
    with pytest.raises(TypeError, match="expected a Tensor"):
        to_html(np.ones(3))
    a = Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ValueError, match=r"one element.*shape \(2,\)"):
        to_html(a * 2)
    loss = (a * a).sum()
    with pytest.raises(ValueError, match="step tensor at t = 1 is not part of the graph"):
        to_html(loss, steps=[a, Tensor([1.0])])
    with pytest.raises(TypeError, match="steps must be Tensors, got list at t = 0"):
        to_html(loss, steps=[[1.0]])
    loss.backward()
    with pytest.raises(RuntimeError, match="graph of the loss alive.*retain_graph=True"):
        to_html(loss)


def test_a_loss_without_gradient_is_drawn_with_values_only():
    a = Tensor([1.0, 2.0])
    data = page_data(to_html((a * a).sum()))
    assert data["order"] == [] and all(n["grad"] is None for n in data["nodes"])
    assert "does not require grad" in data["no_grad_reason"]


def test_inner_graph_must_list_inputs_first(monkeypatch):
    a = Tensor([1.0, 2.0], requires_grad=True)
    loss = a.tanh().sum()
    monkeypatch.setattr(viz, "_inner_graph", lambda node, *_: {"nodes": [{"op": "exp"}, {"op": "add"}],
                                                           "edges": [(1, 0)]} if node._op == "sum" else None)
    with pytest.raises(ValueError, match=r"inner graph of sum: edge \(1, 0\)"):
        to_html(loss)


def test_composites_carry_their_real_inside():
    """A cell's step is one node; its inner graph is the composition run again, with the engine's gradients."""
    from tinygrad_rnn import expanded
    cell = nn.RNNCell(3, 4, rng=0)
    loss, hs = unrolled(cell, steps=2)
    data = page_data(to_html(loss, steps=hs, names=dict(cell.named_parameters())))
    nodes = by_seq(data)
    cells = [n for n in data["nodes"] if n["op"] == "rnn_cell"]
    assert [n["seq"] for n in cells] == [h._seq for h in hs]
    assert not any(n["op"] == "expm1" for n in data["nodes"])          # collapsed: no primitive of tanh outside
    assert all(n["inner"] is None for n in data["nodes"] if n["op"] != "rnn_cell")
    # the plain graph of the same computation, every gradient kept: what the inside must show
    with expanded():
        plain_loss, plain_hs = unrolled(cell, steps=2)
    plain = sorted(viz._graph(plain_loss), key=lambda n: n._seq)
    grads = viz._all_gradients(plain_loss)
    for t, (shown, h) in enumerate(zip(cells, hs)):
        inner = shown["inner"]
        assert inner["label"] == f"h({t})"
        labels = [n["label"] for n in inner["nodes"]]
        # the inputs stand for the outer tensors: the parameters by name, the previous state as h(t-1)
        assert {"Wx", "Wh", "b"} <= set(labels) and (t == 0 or "h(0)" in labels)
        assert all(0 <= a < b < len(inner["nodes"]) for a, b in inner["edges"])
        ops = [n for n in inner["nodes"] if n["kind"] == "op"]
        step = [n for n in plain if n._parents and n._op != "index"
                and (t == 0 or n._seq > plain_hs[t - 1]._seq) and n._seq <= plain_hs[t]._seq]
        assert [n["op"] for n in ops] == [n._op for n in step] and "expm1" in [n["op"] for n in ops]
        for a, b in zip(ops, step):
            np.testing.assert_array_equal(np.array(a["value"]["array"]), b.data)
            np.testing.assert_allclose(np.array(a["grad"]["array"]), grads[id(b)], rtol=1e-12, atol=0)
        assert ops[-1]["grad"] == nodes[h._seq]["grad"]                  # the output's is the node's own
    for p in cell.parameters():
        assert p.grad is None                                            # the caller's gradients untouched


def test_a_several_output_composite_opens_on_its_hub():
    cell = nn.LSTMCell(2, 3, rng=0)
    loss, hs = unrolled(cell, steps=2)
    data = page_data(to_html(loss, steps=hs))
    hubs = [n for n in data["nodes"] if n["op"] == "lstm_cell"]
    assert len(hubs) == 2 and all(n["inner"] and len(n["inner"]["nodes"]) > 20 for n in hubs)
    outputs = [n for n in data["nodes"] if n["op"] in ("lstm_cell[0]", "lstm_cell[1]")]
    assert len(outputs) == 3 and all(n["inner"] is None for n in outputs)   # c of the last step is unused
    # the hub is in the replay with what reaches it: its outputs' gradients
    first = min(hubs, key=lambda n: n["seq"])
    h0, c0 = [n for n in outputs if n["seq"] in (hs[0]._seq, hs[0]._seq + 1)]
    assert first["grad"]["array"] == [h0["grad"]["array"], c0["grad"]["array"]]
    assert data["nodes"].index(first) in data["order"]


def test_jupyter_shows_the_page_and_dot_pictures(monkeypatch):
    a = Tensor([1.0, 2.0], requires_grad=True, name="a")
    loss = (a * a).sum()
    page = to_html(loss)
    frame = page._repr_html_()
    assert frame.startswith("<iframe") and 'srcdoc="&lt;!DOCTYPE html&gt;' in frame and "<script" not in frame
    dot = viz.to_dot(loss)
    assert isinstance(dot, viz.Dot) and dot.startswith("digraph")
    if shutil.which("dot"):
        assert "<svg" in dot._repr_svg_() and dot._repr_html_() is None
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    fresh = viz.to_dot(loss)
    assert fresh._repr_svg_() is None
    assert "Graphviz" in fresh._repr_html_() and "digraph" in fresh._repr_html_()
    with pytest.raises(RuntimeError, match="dot program is not installed"):
        fresh.svg()


def test_cli_graph_html(tmp_path, capsys):
    assert main(["graph", "--steps", "3", "--html", "--output", str(tmp_path / "g" / "rnn.dot")]) == 0
    out = capsys.readouterr().out
    page = (tmp_path / "g" / "rnn.html").read_text(encoding="utf-8")
    assert f"wrote {tmp_path / 'g' / 'rnn.html'}" in out and (tmp_path / "g" / "rnn.dot").exists()
    data = page_data(page)
    labels = {n["label"] for n in data["nodes"]}
    assert {"Wx", "Wh", "b", "x(0)", "x(2)", "h(-1)", "h(0)", "h(2)", "loss"} <= labels
    assert [s["t"] for s in data["states"]] == ["0", "1", "2"] and all(s["norm"] > 0 for s in data["states"])
    # the DOT file still shows the gradients the command computed itself
    assert "|grad| = " in (tmp_path / "g" / "rnn.dot").read_text()


# ---------------------------------------------------------------------- in a real browser
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("the selenium package")
    if missing:
        if os.environ.get("TINYGRAD_RNN_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test required but missing: {', '.join(missing)}")
        pytest.skip(f"no browser to test in: {', '.join(missing)}")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1400,820"):
        options.add_argument(arg)
    profile = tempfile.mkdtemp(prefix="tinygrad_rnn_chromium_")
    options.add_argument(f"--user-data-dir={profile}")
    # the driver given by path: selenium never looks for (or downloads) one
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def open_page(driver, page, tmp_path):
    path = tmp_path / "graph.html"
    path.write_text(page, encoding="utf-8")
    driver.get(path.as_uri())
    assert driver.execute_script("return document.readyState") == "complete"
    return driver


def numbers(text):
    return np.array([float(v) for v in re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?|NaN|-?Infinity", text)])


def lit(driver):
    return [int(e.get_attribute("data-seq")) for e in driver.find_elements("css selector", ".node.lit")]


def node(driver, tensor):
    return driver.find_element("css selector", f'.node[data-seq="{tensor._seq}"]')


def test_click_shows_the_engines_gradient(browser, tmp_path):
    cell = nn.RNNCell(3, 4, rng=0)
    loss, hs = unrolled(cell)
    d = open_page(browser, to_html(loss, steps=hs, names=dict(cell.named_parameters())), tmp_path)
    hs[1].retain_grad()
    loss.backward()
    for tensor, name in ((cell.Wh, "Wh"), (hs[1], "h(1)")):
        node(d, tensor).click()
        assert d.find_element("id", "node-name").text == name
        assert d.find_element("id", "node-shape").text == str(tensor.shape)
        shown = numbers(d.find_element("id", "grad-array").text)
        # printed to 6 significant digits: within half a unit of the 6th digit
        np.testing.assert_allclose(shown, tensor.grad.ravel(), rtol=5e-6, atol=0)
        np.testing.assert_allclose(numbers(d.find_element("id", "value-array").text), tensor.data.ravel(),
                                   rtol=5e-6, atol=0)
        norm = re.search(r"norm (\S+)", d.find_element("id", "grad-stats").text).group(1)
        assert float(norm) == pytest.approx(np.linalg.norm(tensor.grad), rel=5e-6)
    assert d.find_element("id", "node-op").text == "rnn_cell"   # the cell's step: one compiled node
    node(d, hs[1]).click()                                      # a second click folds its inside away again
    node(d, cell.Wh).click()
    assert d.find_element("id", "node-op").text == "parameter"


def test_replay_lights_each_node_in_backward_order(browser, tmp_path):
    cell = nn.RNNCell(2, 3, rng=0)
    loss, hs = unrolled(cell)
    d = open_page(browser, to_html(loss, steps=hs), tmp_path)
    order = [n._seq for n in _topological_order(loss)]
    assert lit(d) == []
    nxt = d.find_element("id", "next")
    plot_seen = []
    for k in range(len(order)):
        if k % 2:
            nxt.click()
        else:
            d.find_element("tag name", "body").send_keys("\ue014")   # the right arrow key
        assert lit(d) == [order[k]]
        assert d.find_element("id", "step-label").text.startswith(f"{k + 1} of {len(order)}")
        # the gradient arriving at the lit node is shown next to it
        shown = numbers(d.find_element("id", "grad-array").text)
        assert shown.size == d.execute_script(f"return D.nodes[D.order[{k}]].grad.size")
        bars = d.find_elements("css selector", "#plot rect.bar")
        plot_seen.append([b.get_attribute("data-t") for b in bars])
    # the plot grows back through time: h(2) first, then h(1), then h(0)
    firsts = [order.index(h._seq) for h in hs]
    assert plot_seen[firsts[2]] == ["2"] and plot_seen[firsts[1]] == ["1", "2"]
    assert plot_seen[-1] == ["0", "1", "2"] and plot_seen[firsts[2] - 1] == []
    for h in hs:
        h.retain_grad()
    loss.backward()
    norms = [float(b.get_attribute("data-norm")) for b in d.find_elements("css selector", "#plot rect.bar")]
    assert norms == pytest.approx([np.linalg.norm(h.grad) for h in hs], rel=1e-12)
    d.find_element("id", "back").click()
    assert lit(d) == [order[-2]]
    assert len(d.find_elements("css selector", ".node.done")) == len(order) - 2
    d.find_element("tag name", "body").send_keys("\ue011")       # Home: before backward
    assert lit(d) == [] and d.find_elements("css selector", "#plot rect.bar") == []


def test_composite_expands_and_collapses(browser, tmp_path, monkeypatch):
    cell = nn.RNNCell(2, 3, rng=0)
    loss, hs = unrolled(cell, steps=2)
    inner = {"nodes": [{"label": "a", "op": "input", "kind": "input", "shape": (2, 3)},
                       {"label": "-2|a|", "op": "mul", "shape": (2, 3)},
                       {"label": "expm1", "op": "expm1", "shape": (2, 3)},
                       {"label": "tanh", "op": "div", "shape": (2, 3)}],
             "edges": [(0, 1), (1, 2), (2, 3), (0, 3)]}
    monkeypatch.setattr(viz, "_inner_graph", lambda t, *_: inner if t is hs[0] else None)
    d = open_page(browser, to_html(loss, steps=hs), tmp_path)
    box = d.find_element("css selector", ".inner")
    assert not box.is_displayed()                               # collapsed at first
    assert "composite" in node(d, hs[0]).get_attribute("class")
    node(d, hs[0]).click()
    assert box.is_displayed()
    labels = [e.text for e in box.find_elements("css selector", ".inner-node text:not(.shape)")]
    assert labels == ["a", "-2|a|", "expm1", "tanh"]
    assert len(box.find_elements("css selector", "path.edge")) == 4
    box.find_elements("css selector", ".inner-node")[2].click()
    assert d.find_element("id", "node-name").text == "expm1" and d.find_element("id", "node-op").text == "expm1"
    node(d, hs[0]).click()
    assert not box.is_displayed()                               # and collapsed again


def test_a_real_composite_opens_in_the_browser(browser, tmp_path):
    from tinygrad_rnn import expanded
    cell = nn.RNNCell(2, 3, rng=0)
    loss, hs = unrolled(cell, steps=2)
    d = open_page(browser, to_html(loss, steps=hs, names=dict(cell.named_parameters())), tmp_path)
    i = d.execute_script(f"return D.nodes.findIndex(n => n.seq === {hs[1]._seq})")
    box = d.find_element("id", f"inner-{i}")
    assert not box.is_displayed()
    node(d, hs[1]).click()
    assert box.is_displayed() and d.find_element("id", "node-op").text == "rnn_cell"
    inner = box.find_elements("css selector", ".inner-node")
    labels = [e.find_element("css selector", "text:not(.shape)").text for e in inner]
    assert "expm1" in labels and "h(0)" in labels and "Wh" in labels
    inner[labels.index("expm1")].click()
    assert d.find_element("id", "node-op").text == "expm1"
    # the gradient shown is the engine's at that node of the plain composition (the second step's expm1)
    with expanded():
        plain_loss, _ = unrolled(cell, steps=2)
    expm1 = max((n for n in viz._graph(plain_loss) if n._op == "expm1"), key=lambda n: n._seq)
    want = viz._all_gradients(plain_loss)[id(expm1)]
    np.testing.assert_allclose(numbers(d.find_element("id", "grad-array").text), want.ravel(), rtol=5e-6, atol=0)
    node(d, hs[1]).click()
    assert not box.is_displayed()


def test_the_page_makes_no_request(browser, tmp_path):
    cell = nn.LSTMCell(2, 2, rng=0)
    loss, hs = unrolled(cell, steps=2)
    d = open_page(browser, to_html(loss, steps=hs), tmp_path)
    d.find_element("id", "play").click()
    d.find_element("id", "play").click()
    node(d, hs[1]).click()
    links = d.execute_script("return Array.from(document.querySelectorAll('[src],[href]'))"
                             ".map(e => e.getAttribute('src') || e.getAttribute('href'))")
    assert not [u for u in links if re.match(r"\s*(https?:)?//", u)]
    assert d.execute_script("return performance.getEntriesByType('resource').length") == 0
    errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []                                          # the script ran without errors


def test_screenshot_for_the_docs(browser, tmp_path):
    """Draws the picture in docs/img when TINYGRAD_RNN_SCREENSHOT names where; checks the page fits a screen."""
    assert main(["graph", "--steps", "3", "--hidden-size", "3", "--html",
                 "--output", str(tmp_path / "graph.dot")]) == 0
    d = browser
    d.get((tmp_path / "graph.html").as_uri())
    for _ in range(4):                                            # loss, mul, h(2), h(1): halfway back
        d.find_element("id", "next").click()
    lit_node = d.find_elements("css selector", ".node.lit")
    assert len(lit_node) == 1 and "composite" in lit_node[0].get_attribute("class")
    assert d.find_element("id", "step-label").text.endswith("h(1)")
    assert d.find_element("id", "graph").size["height"] < 700    # a 3-step RNN fits the window's height
    lit_node[0].click()                                          # and the cell's step opens on its inside
    assert len([e for e in d.find_elements("css selector", ".inner") if e.is_displayed()]) == 1
    where = os.environ.get("TINYGRAD_RNN_SCREENSHOT")
    if where:
        assert d.save_screenshot(where)
