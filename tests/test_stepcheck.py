"""compare_bptt: the time step where a hand-derived BPTT goes wrong.

The network is the textbook "hello" tanh RNN; its hand-derived backward
(tinygrad_rnn.reference.hello_rnn, numpy only) records each step's dh_t, da_t and
the step's terms of the five parameters' gradients.  Mistakes are planted in that
record's computation at one step, as a learner would make them, and the report
must name the step.  Default tolerances: |autograd - hand| <= 1e-8 + 1e-6 * |hand|;
correct values agree to 1e-12 (float64 throughout).
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinygrad_rnn import BPTTReport, StepRecorder, Tensor, compare_bptt
from tinygrad_rnn import functional as F
from tinygrad_rnn.reference import hello_rnn

NAMES = hello_rnn.PARAM_NAMES
STEP_NAMES = ["h", "a", *NAMES]


def setup(T=4, hidden=3, seed=hello_rnn.SEED):
    if T == 4:
        X, Y = hello_rnn.hello_data()
    else:
        rs = np.random.RandomState(seed)
        X, Y = (hello_rnn.one_hot("".join(rs.choice(list("helo"), T))) for _ in range(2))
    weights = hello_rnn.init_params(hidden, seed=seed)
    params = {k: Tensor(v, requires_grad=True) for k, v in weights.items()}
    return X, Y, weights, params


def loss_by_step(params, X, Y):
    """The hello loss as a graph, each step with its own copies of the weights and its states kept."""
    def loss(steps):
        h = Tensor(np.zeros((1, params["Whh"].shape[0])))
        total = Tensor(0.0)
        for t in range(X.shape[0]):
            w = steps.params(t)
            a = steps.keep(t, "a", Tensor(X[t:t + 1]) @ w["Wxh"] + h @ w["Whh"] + w["Bh"])
            h = steps.keep(t, "h", a.tanh())
            total = total + F.cross_entropy(h @ w["Wy"] + w["By"], Y[t:t + 1], reduction="sum")
        return total
    return loss


def hand_bptt(w, X, Y, steps, slip=None, at=2):
    """The learner's loop, recording each step; ``slip`` plants one mistake at step ``at``.

    slip="Whh": tanh' left out of the dWhh term (h_prev^T dh instead of h_prev^T da).
    slip="da":  tanh' written as 1 - h instead of 1 - h^2, so da_t itself is wrong.
    """
    hs, ps = hello_rnn.forward(w, X)
    g = {k: np.zeros_like(v) for k, v in w.items()}
    dnext = np.zeros((1, w["Whh"].shape[0]))
    for t in reversed(range(len(X))):
        x, h = X[t:t + 1], hs[t:t + 1]
        h_prev = hs[t - 1:t] if t > 0 else np.zeros_like(h)
        dz = ps[t:t + 1] - Y[t:t + 1]
        dh = dz @ w["Wy"].T + dnext
        da = dh * (1 - h ** 2)
        if slip == "da" and t == at:
            da = dh * (1 - h)
        step = dict(h=dh, a=da, Wxh=x.T @ da, Whh=h_prev.T @ da, Bh=da.sum(), Wy=h.T @ dz, By=dz.sum())
        if slip == "Whh" and t == at:
            step["Whh"] = h_prev.T @ dh
        steps[t] = step
        for k in g:
            g[k] += step[k]
        dnext = da @ w["Whh"].T
    return g


def failing(report):
    return [(r["t"], r["name"]) for r in report.rows if not r["passed"]]


# ---------------------------------------------------------------- correct derivations agree
def test_the_reference_record_agrees_at_every_step():
    X, Y, weights, params = setup()
    steps = {}
    hs, ps = hello_rnn.forward(weights, X)
    grads = hello_rnn.backward(weights, X, Y, hs, ps, steps=steps)
    report = compare_bptt(loss_by_step(params, X, Y), params, steps, expected=grads)
    assert isinstance(report, BPTTReport) and report.passed and bool(report)
    assert report.first is None and report.totals.passed
    assert [(r["t"], r["name"]) for r in report.rows] == [(t, n) for t in (3, 2, 1, 0) for n in STEP_NAMES]
    assert all(r["max_abs"] < 1e-12 for r in report.rows)
    # the recorded terms add up to the whole gradients, and dh is the reference's hidden_grads
    for k in NAMES:
        np.testing.assert_allclose(sum(steps[t][k] for t in steps), grads[k], rtol=0, atol=1e-14)
    np.testing.assert_allclose(np.concatenate([steps[t]["h"] for t in range(4)]),
                               hello_rnn.hidden_grads(weights, X, Y), rtol=0, atol=1e-14)
    assert "every step agrees" in str(report)
    assert all(report.first_disagreement(n) is None for n in STEP_NAMES)


def test_per_step_copies_give_the_same_gradients_and_terms_that_add_up():
    X, Y, weights, params = setup()
    plain = {k: Tensor(v, requires_grad=True) for k, v in weights.items()}
    h = Tensor(np.zeros((1, 3)))
    total = Tensor(0.0)
    for t in range(4):
        h = (Tensor(X[t:t + 1]) @ plain["Wxh"] + h @ plain["Whh"] + plain["Bh"]).tanh()
        total = total + F.cross_entropy(h @ plain["Wy"] + plain["By"], Y[t:t + 1], reduction="sum")
    total.backward()
    recorder = StepRecorder(params)
    loss = loss_by_step(params, X, Y)(recorder)
    assert loss.item() == total.item()
    loss.backward()
    for k in NAMES:
        np.testing.assert_allclose(params[k].grad, plain[k].grad, rtol=0, atol=1e-13)
        np.testing.assert_allclose(sum(recorder.grad(t, k) for t in range(4)), params[k].grad, rtol=0, atol=1e-13)
        assert recorder.params(0)[k].dtype == params[k].dtype
    assert recorder.params(2) is recorder.params(2)


def test_float32_parameters_keep_their_dtype_in_the_copies():
    p = Tensor(np.ones((2, 2), np.float32), requires_grad=True)
    recorder = StepRecorder({"W": p})
    assert recorder.params(0)["W"].dtype == np.float32
    np.testing.assert_array_equal(recorder.params(0)["W"].data, p.data)


# ---------------------------------------------------------------- planted mistakes are found
@pytest.mark.parametrize("at", [1, 2, 3])
def test_tanh_derivative_left_out_of_one_dWhh_term_points_at_that_step(at):
    X, Y, weights, params = setup()
    good, bad = {}, {}
    hand_bptt(weights, X, Y, good)
    totals = hand_bptt(weights, X, Y, bad, slip="Whh", at=at)
    report = compare_bptt(loss_by_step(params, X, Y), params, bad, expected=totals)
    assert not report.passed
    assert failing(report) == [(at, "Whh")]
    assert [r["name"] for r in report.totals.rows if not r["passed"]] == ["Whh"]
    first = report.first
    assert (first["t"], first["name"]) == (at, "Whh") == (report.first_disagreement("Whh")["t"], "Whh")
    assert first["left"] == pytest.approx(good[at]["Whh"][first["worst"]], abs=1e-12)   # autograd: the true term
    assert first["right"] == bad[at]["Whh"][first["worst"]]
    text = str(report)
    assert f"first disagreement going back: t = {at}, in dWhh\n" in text
    assert f"dWhh_{at}: worst element {first['worst']}" in text
    assert "whole gradients (sums over the steps): Wxh ok, Whh FAIL, Bh ok, Wy ok, By ok" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line[:1].isdigit() and "  " in line}
    assert rows[str(at)].count("FAIL") == 1 and all("FAIL" not in r for t, r in rows.items() if t != str(at))


def test_tanh_derivative_left_out_at_t2_is_the_issue_example():
    X, Y, weights, params = setup()
    bad = {}
    totals = hand_bptt(weights, X, Y, bad, slip="Whh", at=2)
    report = compare_bptt(loss_by_step(params, X, Y), params, bad, expected=totals)
    assert (report.first["t"], report.first["name"]) == (2, "Whh")


@pytest.mark.parametrize("at", [1, 2, 3])
def test_a_wrong_da_fails_every_hidden_weight_and_points_at_the_first_wrong_dh(at):
    X, Y, weights, params = setup()
    bad = {}
    totals = hand_bptt(weights, X, Y, bad, slip="da", at=at)
    report = compare_bptt(loss_by_step(params, X, Y), params, bad, expected=totals)
    assert [r["name"] for r in report.totals.rows if not r["passed"]] == ["Wxh", "Whh", "Bh"]
    # the step itself: da_t and the three terms made from it; dh_t is still right
    assert [n for t, n in failing(report) if t == at] == ["a", "Wxh", "Whh", "Bh"]
    assert all(t <= at for t, _ in failing(report))
    assert report.first["t"] == at
    # dh first disagrees one step earlier: step `at` hands a wrong gradient back
    assert report.first_disagreement("h")["t"] == at - 1
    assert report.first_disagreement("Wy") is None and report.first_disagreement("By") is None
    assert f"dh at t = {at - 1}, da at t = {at}" in str(report)
    # a learner who records only dh_t is pointed at that step
    only_dh = compare_bptt(loss_by_step(params, X, Y), params, {t: {"h": e["h"]} for t, e in bad.items()})
    assert (only_dh.first["t"], only_dh.first["name"]) == (at - 1, "h")
    assert f"first disagreement going back: t = {at - 1}, in dh\n" in str(only_dh)


@settings(max_examples=30, deadline=None)
@given(T=st.integers(1, 6), hidden=st.integers(1, 4), seed=st.integers(0, 1000), data=st.data())
def test_a_perturbed_record_entry_is_located_exactly(T, hidden, seed, data):
    X, Y, weights, params = setup(T, hidden, seed)
    steps = {}
    hs, ps = hello_rnn.forward(weights, X)
    hello_rnn.backward(weights, X, Y, hs, ps, steps=steps)
    t = data.draw(st.integers(0, T - 1), label="t")
    name = data.draw(st.sampled_from(STEP_NAMES), label="name")
    index = data.draw(st.tuples(*(st.integers(0, n - 1) for n in steps[t][name].shape)), label="index")
    delta = data.draw(st.floats(1e-4, 10.0) | st.floats(-10.0, -1e-4), label="delta")
    steps[t][name][index] += delta
    report = compare_bptt(loss_by_step(params, X, Y), params, steps)
    assert failing(report) == [(t, name)]
    assert report.first["worst"] == index
    assert report.first["max_abs"] == pytest.approx(abs(delta), rel=1e-6, abs=1e-12)


def test_a_long_sequence_shows_a_short_table_around_the_mistake():
    X, Y, weights, params = setup(T=30, hidden=3, seed=5)
    bad = {}
    hand_bptt(weights, X, Y, bad, slip="Whh", at=12)
    report = compare_bptt(loss_by_step(params, X, Y), params, bad)
    assert (report.first["t"], report.first["name"]) == (12, "Whh")
    shown = [line.split()[0] for line in report.table().splitlines()[2:-2]]
    assert shown == ["29", "28", "27", "...", "14", "13", "12", "11", "10", "...", "0"]
    assert len(report.table(max_steps=None).splitlines()) == 2 + 30 + 2


def test_the_record_may_be_a_list_or_a_callable_and_hold_any_subset():
    X, Y, weights, params = setup()
    steps = {}
    hand_bptt(weights, X, Y, steps)
    as_list = [{"Whh": steps[t]["Whh"]} for t in range(4)]
    report = compare_bptt(loss_by_step(params, X, Y), params, lambda: as_list)
    assert report.passed and report.names == ["Whh"] and report.steps == [3, 2, 1, 0]
    sparse = [None, {"h": steps[1]["h"]}, None, {"a": steps[3]["a"]}]
    report = compare_bptt(loss_by_step(params, X, Y), params, sparse)
    assert [(r["t"], r["name"]) for r in report.rows] == [(3, "a"), (1, "h")]
    table = report.table().splitlines()
    assert table[2].split() == ["3", "ok", "-"] and table[3].split() == ["1", "-", "ok"]
    assert report[1, "h"]["passed"]


def test_existing_grads_are_left_untouched():
    X, Y, weights, params = setup()
    for p in params.values():
        p.grad = np.full(p.shape, 7.0)
    steps = {}
    hand_bptt(weights, X, Y, steps)
    assert compare_bptt(loss_by_step(params, X, Y), params, steps).passed
    for p in params.values():
        np.testing.assert_array_equal(p.grad, np.full(p.shape, 7.0))


# ---------------------------------------------------------------- bad inputs
def test_bad_records_are_errors_that_name_the_problem():
    X, Y, weights, params = setup()
    steps = {}
    hand_bptt(weights, X, Y, steps)
    loss = loss_by_step(params, X, Y)
    with pytest.raises(KeyError, match=r"step 2: nothing named 'c'.*states kept at step 2 are \['a', 'h'\]"):
        compare_bptt(loss, params, {2: {"c": np.zeros((1, 3))}})
    with pytest.raises(KeyError, match=r"never called params\(7\)"):
        compare_bptt(loss, params, {7: {"Whh": np.zeros((3, 3))}})
    with pytest.raises(ValueError, match=r"steps\[1\]\['Wy'\] has shape \(4, 3\), but the parameter 'Wy' "
                                         r"at step 1 has shape \(3, 4\)"):
        compare_bptt(loss, params, {1: {"Wy": steps[1]["Wy"].T}})
    with pytest.raises(TypeError, match="dict t ->"):
        compare_bptt(loss, params, np.zeros(3))
    with pytest.raises(ValueError, match="empty"):
        compare_bptt(loss, params, {})
    with pytest.raises(TypeError, match=r"steps\[0\] must be a dict"):
        compare_bptt(loss, params, {0: np.zeros(3)})
    with pytest.raises(TypeError, match="must be an int"):
        compare_bptt(loss, params, {"0": {"h": np.zeros((1, 3))}})
    with pytest.raises(KeyError, match=r"missing \['By'\]"):
        compare_bptt(loss, params, steps, expected={k: weights[k] for k in NAMES[:-1]})


def test_bad_losses_are_errors_that_name_the_problem():
    X, Y, weights, params = setup()
    steps = {}
    hand_bptt(weights, X, Y, steps)
    with pytest.raises(TypeError, match="takes a StepRecorder"):
        compare_bptt(loss_by_step(params, X, Y)(StepRecorder(params)), params, steps)
    with pytest.raises(ValueError, match="one element"):
        compare_bptt(lambda s: s.params(0)["Whh"] * 2, params, {0: {"Whh": np.zeros((3, 3))}})

    def direct(steps):                          # forgets steps.params(t): uses the shared weights
        h = Tensor(np.zeros((1, 3)))
        for t in range(4):
            steps.params(t)
            h = (Tensor(X[t:t + 1]) @ params["Wxh"] + h @ params["Whh"] + params["Bh"]).tanh()
        return h.sum()
    with pytest.raises(ValueError, match=r"'Wxh' has a gradient but none of its per-step copies.*steps.params"):
        compare_bptt(direct, params, steps)


def test_recorder_misuse_is_an_error():
    X, Y, weights, params = setup()
    recorder = StepRecorder(params)
    h = Tensor(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="does not require grad"):
        recorder.keep(0, "h", h)
    with pytest.raises(ValueError, match="a parameter's name"):
        recorder.keep(0, "Whh", params["Whh"] * 1)
    with pytest.raises(TypeError, match="not a Tensor"):
        recorder.keep(0, "h", np.zeros(3))
    with pytest.raises(TypeError, match="must be an int"):
        recorder.params(1.5)
    a = recorder.keep(0, "a", params["Bh"] * 2)
    assert recorder.keep(0, "a", a) is a
    with pytest.raises(ValueError, match="already keeps another tensor named 'a'"):
        recorder.keep(0, "a", params["Bh"] * 3)
    with pytest.raises(ValueError, match="does not require grad"):
        StepRecorder({"W": Tensor(np.ones(2))})


def test_the_books_time_rnn_layers_hold_each_steps_terms():
    # Deep Learning from Scratch 2's TimeRNN keeps one RNN layer per step; after backward, each
    # layer's grads are that step's terms, so they are the record as they stand
    from tinygrad_rnn.reference import time_rnn
    rs = np.random.RandomState(3)
    Wx, Wh, b = rs.randn(2, 3) * 0.5, rs.randn(3, 3) * 0.5, rs.randn(3) * 0.1
    xs, dhs = rs.randn(2, 5, 2), rs.randn(2, 5, 3)
    layer = time_rnn.TimeRNN(Wx.copy(), Wh.copy(), b.copy())
    layer.forward(xs)
    layer.backward(dhs)
    record = {t: dict(Wx=lay.grads[0], Wh=lay.grads[1], b=lay.grads[2]) for t, lay in enumerate(layer.layers)}
    params = {"Wx": Tensor(Wx, requires_grad=True), "Wh": Tensor(Wh, requires_grad=True),
              "b": Tensor(b, requires_grad=True)}

    def loss(steps):
        h, total = Tensor(np.zeros((2, 3))), Tensor(0.0)
        for t in range(5):
            w = steps.params(t)
            h = (h @ w["Wh"] + Tensor(xs[:, t]) @ w["Wx"] + w["b"]).tanh()
            total = total + (h * Tensor(dhs[:, t])).sum()
        return total
    expected = dict(zip(["Wx", "Wh", "b"], layer.grads))
    report = compare_bptt(loss, params, record, expected=expected)
    assert report.passed and len(report.rows) == 15 and max(r["max_abs"] for r in report.rows) < 1e-13
    record[3]["Wh"] = record[3]["Wh"] * 1.01           # one step's term off by 1 percent
    assert failing(compare_bptt(loss, params, record)) == [(3, "Wh")]


def test_stepcheck_sits_on_the_engine_and_checking_only():
    import ast
    import pathlib
    import tinygrad_rnn.stepcheck as module
    tree = ast.parse(pathlib.Path(module.__file__).read_text())
    relative = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level}
    absolute = {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    assert relative == {"checking", "tensor"} and absolute == {"numpy"}
