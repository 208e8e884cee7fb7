"""compare_grads: autograd next to hand-derived gradients, as a per-parameter report.

The network is the textbook "hello" RNN: its loss is built from Tensors here, its
hand-derived gradients come from tinygrad_rnn.reference.hello_rnn (numpy only).
Default tolerances of compare_grads: |autograd - hand| <= 1e-8 + 1e-6 * |hand|.
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from tinygrad_rnn import GradReport, Tensor, compare_grads
from tinygrad_rnn import functional as F
from tinygrad_rnn.reference import hello_rnn

NAMES = hello_rnn.PARAM_NAMES


def hello_setup(hidden=3):
    X, Y = hello_rnn.hello_data()
    weights = hello_rnn.init_params(hidden)
    params = {k: Tensor(v, requires_grad=True) for k, v in weights.items()}
    return X, Y, weights, params


def hello_loss(params, X, Y):
    h = Tensor(np.zeros((1, params["Whh"].shape[0])))
    total = Tensor(0.0)
    for t in range(X.shape[0]):
        h = (Tensor(X[t:t + 1]) @ params["Wxh"] + h @ params["Whh"] + params["Bh"]).tanh()
        total = total + F.cross_entropy(h @ params["Wy"] + params["By"], Y[t:t + 1], reduction="sum")
    return total


def bias_from_last_step_only(weights, X, Y):
    """A realistic hand-derivation bug: dBh assigned at each step instead of summed over the steps."""
    hs, ps = hello_rnn.forward(weights, X)
    grads = hello_rnn.backward(weights, X, Y, hs, ps)
    Wy, Whh = weights["Wy"], weights["Whh"]
    dnext = np.zeros((1, Whh.shape[0]))
    for t in reversed(range(X.shape[0])):
        dh = (ps[t:t + 1] - Y[t:t + 1]) @ Wy.T + dnext
        da = dh * (1 - hs[t:t + 1] ** 2)
        grads["Bh"] = np.full((1, 1), da.sum())           # the bug: '=' where '+=' belongs
        dnext = da @ Whh.T
    return grads


def test_correct_hand_gradients_pass_every_row():
    X, Y, weights, params = hello_setup()
    _, hand = hello_rnn.loss_and_grads(weights, X, Y)
    report = compare_grads(hello_loss(params, X, Y), params, hand)
    assert isinstance(report, GradReport)
    assert report.passed and bool(report)
    assert [r["name"] for r in report.rows] == list(NAMES)
    for r in report.rows:
        assert r["shape"] == weights[r["name"]].shape
        assert r["max_abs"] < 1e-12 and r["rel"] < 1e-7 and r["passed"]


def test_report_prints_a_readable_table():
    X, Y, weights, params = hello_setup()
    _, hand = hello_rnn.loss_and_grads(weights, X, Y)
    text = str(compare_grads(hello_loss(params, X, Y), params, hand))
    lines = text.splitlines()
    header = lines[0]
    for column in ("tensor", "shape", "max |diff|", "rel error", "worst index", "autograd", "hand", "ok"):
        assert column in header
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert len(lines) == 3 + len(NAMES)
    # the last line says what the "worst index" column means, with the tolerances used
    assert lines[-1] == ("worst index: where |autograd - hand| - (atol 1e-08 + rtol 1e-06 * |hand|) is largest; "
                         "autograd and hand are the values there")
    for name, line in zip(NAMES, lines[2:-1]):
        assert line.split()[0] == name and line.endswith("PASS")
        assert str(weights[name].shape) in line
    # columns line up: every row starts its shape column where the header does
    start = header.index("shape")
    assert all(line[start - 2:start] == "  " for line in lines[2:-1])


def test_catches_bias_gradient_from_one_time_step():
    X, Y, weights, params = hello_setup()
    _, good = hello_rnn.loss_and_grads(weights, X, Y)
    bad = bias_from_last_step_only(weights, X, Y)
    report = compare_grads(hello_loss(params, X, Y), params, bad)
    assert not report.passed
    failing = [r["name"] for r in report.rows if not r["passed"]]
    assert failing == ["Bh"]
    row = report["Bh"]
    assert row["worst"] == (0, 0)
    assert row["left"] == pytest.approx(good["Bh"].item(), abs=1e-12)   # autograd holds the true value
    assert row["right"] == pytest.approx(bad["Bh"].item(), abs=1e-15)
    assert row["max_abs"] == pytest.approx(abs(good["Bh"] - bad["Bh"]).item(), rel=1e-12)
    assert row["rel"] > 1e-3
    line = next(line for line in str(report).splitlines() if line.startswith("Bh"))
    assert line.endswith("FAIL")
    assert "Bh" in report.failure_message() and "(0, 0)" in report.failure_message()


def test_catches_the_original_posts_mistakes():
    X, Y, weights, params = hello_setup()
    overwrite = compare_grads(lambda: hello_loss(params, X, Y), params,
                              hello_rnn.grads_overwritten_output(weights, X, Y))
    # dWy taken from one step is wrong; dBy is wrong too in principle, but its true value is 0
    # and one step's term is also 0 (probabilities and a one-hot row both sum to 1)
    assert [r["name"] for r in overwrite.rows if not r["passed"]] == ["Wy"]
    typo = compare_grads(lambda: hello_loss(params, X, Y), params,
                         hello_rnn.grads_single_target_typo(weights, X, Y))
    assert not typo["Wy"].get("passed") and not typo["Wxh"]["passed"] and not typo.passed


def test_expected_may_be_a_callable_and_loss_a_function_called_once():
    X, Y, weights, params = hello_setup()
    calls = []

    def loss():
        calls.append(1)
        return hello_loss(params, X, Y)
    report = compare_grads(loss, params, lambda: hello_rnn.loss_and_grads(weights, X, Y)[1])
    assert report.passed and len(calls) == 1


def test_list_of_params_is_named_by_position_or_tensor_name():
    a = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    b = Tensor(np.array([3.0]), requires_grad=True, name="b")
    loss = (a * a).sum() + (b * a[0]).sum()
    report = compare_grads(loss, [a, b], {"p0": np.array([2.0 + 3.0, 4.0]), "b": np.array([1.0])})
    assert report.passed and [r["name"] for r in report.rows] == ["p0", "b"]


def test_existing_grads_are_left_untouched():
    X, Y, weights, params = hello_setup()
    before = {k: np.full(p.shape, 7.0) for k, p in params.items()}
    for k, p in params.items():
        p.grad = before[k].copy()
    compare_grads(hello_loss(params, X, Y), params, hello_rnn.loss_and_grads(weights, X, Y)[1])
    for k, p in params.items():
        np.testing.assert_array_equal(p.grad, before[k])


def test_tolerances_decide_pass_and_fail():
    X, Y, weights, params = hello_setup()
    _, hand = hello_rnn.loss_and_grads(weights, X, Y)
    hand["Whh"] = hand["Whh"] + 1e-5                    # beyond 1e-8 + 1e-6 * |hand| (|hand| < 2)
    assert not compare_grads(hello_loss(params, X, Y), params, hand).passed
    assert compare_grads(hello_loss(params, X, Y), params, hand, atol=2e-5).passed


@given(index=st.tuples(st.integers(0, 2), st.integers(0, 2)), delta=st.floats(1e-5, 10.0))
def test_worst_index_points_at_the_perturbed_element(index, delta):
    w = Tensor(np.arange(9.0).reshape(3, 3) / 10, requires_grad=True)
    hand = 2 * w.data
    hand[index] += delta
    report = compare_grads((w * w).sum(), {"w": w}, {"w": hand})
    row = report["w"]
    assert not row["passed"] and row["worst"] == index
    assert row["max_abs"] == pytest.approx(delta, rel=1e-9, abs=1e-12)


def test_missing_and_unknown_names_are_reported():
    X, Y, weights, params = hello_setup()
    _, hand = hello_rnn.loss_and_grads(weights, X, Y)
    partial = {k: v for k, v in hand.items() if k != "Whh"}
    with pytest.raises(KeyError, match="missing \\['Whh'\\]"):
        compare_grads(hello_loss(params, X, Y), params, partial)
    with pytest.raises(KeyError, match="unknown names \\['Wzz'\\]"):
        compare_grads(hello_loss(params, X, Y), params, dict(hand, Wzz=np.zeros(1)))


def test_wrong_shape_is_an_error_naming_both_shapes():
    X, Y, weights, params = hello_setup()
    _, hand = hello_rnn.loss_and_grads(weights, X, Y)
    hand["Wy"] = hand["Wy"].T
    with pytest.raises(ValueError, match=r"'Wy': parameter \(3, 4\), hand-derived \(4, 3\)"):
        compare_grads(hello_loss(params, X, Y), params, hand)


def test_other_bad_inputs():
    w = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(ValueError, match="one element"):
        compare_grads(w * 2, {"w": w}, {"w": np.ones(3)})
    with pytest.raises(TypeError, match="dict"):
        compare_grads((w * 2).sum(), {"w": w}, [np.ones(3)])
    frozen = Tensor(np.ones(3))
    with pytest.raises(ValueError, match="does not require grad"):
        compare_grads((frozen * 2).sum(), {"frozen": frozen}, {"frozen": np.ones(3)})
    with pytest.raises(TypeError, match="not a Tensor"):
        compare_grads((w * 2).sum(), {"w": np.ones(3)}, {"w": np.ones(3)})
