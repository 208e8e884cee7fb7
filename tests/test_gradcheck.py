"""The gradient-checking API: gradcheck, numerical_grad, gradcheck_report / GradReport, GradcheckError.

Wrong gradients are made on purpose with ``Tensor._make`` (a node with a hand-written,
deliberately wrong backward), so the expected message (input, worst index, both
values) is known exactly.  Tolerances: the gradcheck defaults (eps = 1e-6,
atol = 1e-6, rtol = 1e-4) unless a test says otherwise; values read back from a
message are compared to 1e-6 relative (the message prints 10 significant digits).
"""
import re
import warnings

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import GradcheckError, Tensor
from tinygrad_rnn import functional as F


def leaf(a, name=None):
    return Tensor(np.array(a, dtype=np.float64), requires_grad=True, name=name)


def square_with_wrong_element(bad_index, error=0.5):
    """x**2 whose backward is right except at ``bad_index``, where it is off by ``error``."""
    def fn(t):
        x = t.data

        def backward(g):
            grad = 2 * x * g
            grad[bad_index] += error * np.asarray(g)[bad_index] if np.ndim(g) else error * g
            return (grad,)
        return Tensor._make(x * x, (t,), backward, "wrong_square")
    return fn


def reversed_gradient(x):
    """The identity, whose backward hands the gradient back in reverse order (1-D)."""
    return Tensor._make(x.data.copy(), (x,), lambda g: (g[::-1].copy(),), "identity")


def values_in(message):
    m = re.search(r"autograd ([-+.0-9eE]+) vs numeric ([-+.0-9eE]+)", message)
    assert m, message
    return float(m.group(1)), float(m.group(2))


# ---------------------------------------------------------------- passing
def test_gradcheck_returns_true_for_right_gradients_of_several_inputs():
    rng = np.random.default_rng(0)
    a, b, c = leaf(rng.standard_normal((2, 3))), leaf(rng.standard_normal(3)), leaf(rng.standard_normal((3, 2)))
    assert tg.gradcheck(lambda a, b, c: ((a * b + b.exp()) @ c).tanh().sum(), a, b, c) is True


def test_gradcheck_of_a_non_scalar_output():
    rng = np.random.default_rng(1)
    x, w = leaf(rng.standard_normal((4, 3))), leaf(rng.standard_normal((3, 2)))
    assert tg.gradcheck(lambda x, w: F.softmax(x @ w, axis=0), x, w)   # (4, 2) output


def test_non_scalar_outputs_are_checked_through_a_projection():
    # a backward that sends each output's gradient to the wrong element would pass if the
    # output were only summed; the random projection catches it
    v = leaf([0.1, 0.2, 0.3, 0.4])
    assert tg.gradcheck(lambda a: reversed_gradient(a).sum(), v)     # summing cannot tell
    with pytest.raises(GradcheckError):
        tg.gradcheck(lambda a: reversed_gradient(a), v)


def test_inputs_without_requires_grad_are_constants():
    x, c = leaf([1.0, 2.0]), Tensor([3.0, 4.0])
    assert tg.gradcheck(lambda x, c: (x * c).sum(), x, c)
    with pytest.raises(ValueError, match="requires_grad"):
        tg.gradcheck(lambda c: (c * c).sum(), c)


def test_gradcheck_leaves_data_and_grad_as_they_were():
    x = leaf([0.5, -1.5])
    x.grad = np.array([7.0, 8.0])
    before = x.data.copy()
    tg.gradcheck(lambda t: (t ** 3).sum(), x)
    np.testing.assert_array_equal(x.data, before)
    np.testing.assert_array_equal(x.grad, [7.0, 8.0])


def rnn_unrolled(xs, wx, wh, b, h0):
    """A recurrent cell written with raw Tensors, unrolled over the time axis of ``xs`` (B, T, D)."""
    h, hs = h0, []
    for t in range(xs.shape[1]):
        h = (xs[:, t, :] @ wx + h @ wh + b).tanh()
        hs.append(h)
    return tg.stack(hs, axis=1)


def test_gradcheck_of_an_unrolled_recurrent_cell_all_inputs():
    rng = np.random.default_rng(2)
    B, T, D, H = 2, 4, 3, 3
    args = [leaf(rng.standard_normal((B, T, D)), "xs"), leaf(0.5 * rng.standard_normal((D, H)), "Wx"),
            leaf(0.5 * rng.standard_normal((H, H)), "Wh"), leaf(0.1 * rng.standard_normal(H), "b"),
            leaf(0.1 * rng.standard_normal((B, H)), "h0")]
    assert tg.gradcheck(rnn_unrolled, *args)                       # all hidden states (non-scalar)
    target = rng.integers(0, H, size=(B, T))
    assert tg.gradcheck(lambda *a: F.cross_entropy(rnn_unrolled(*a), target), *args)


def test_gradcheck_of_an_unrolled_gated_cell():
    rng = np.random.default_rng(3)
    B, T, D, H = 2, 3, 2, 2
    xs = leaf(rng.standard_normal((B, T, D)), "xs")
    w = leaf(0.5 * rng.standard_normal((D + H, 4 * H)), "W")

    def lstm(xs, w):
        h = c = Tensor(np.zeros((B, H)))
        for t in range(T):
            z = tg.concat([xs[:, t], h], axis=1) @ w
            i, f, g, o = (z[:, k * H:(k + 1) * H] for k in range(4))
            c = f.sigmoid() * c + i.sigmoid() * g.tanh()
            h = o.sigmoid() * c.tanh()
        return (h * h).mean()
    assert tg.gradcheck(lstm, xs, w)


def test_params_are_checked_too_by_name():
    w = leaf([[0.5, -1.0], [2.0, 0.25]])
    x = Tensor([[1.0, 2.0]])
    assert tg.gradcheck(lambda x: (x @ w).tanh().sum(), x, params={"W": w})
    bad = square_with_wrong_element((1, 0))
    with pytest.raises(GradcheckError, match=r"W \(shape \(2, 2\)\).*index \(1, 0\)"):
        tg.gradcheck(lambda x: (x @ bad(w)).sum(), x, params={"W": w})


# ---------------------------------------------------------------- failing, and what the message says
def test_error_is_an_assertion_error_naming_input_worst_index_and_both_values():
    x = leaf(np.arange(6.0).reshape(2, 3) / 4, name="weights")
    with pytest.raises(GradcheckError) as info:
        tg.gradcheck(lambda t: square_with_wrong_element((1, 2))(t).sum(), x)
    assert isinstance(info.value, AssertionError)
    msg = str(info.value)
    assert "weights" in msg and "(1, 2)" in msg, msg
    analytic, numeric = values_in(msg)
    right = 2 * x.data[1, 2]
    assert analytic == pytest.approx(right + 0.5, rel=1e-6) and numeric == pytest.approx(right, rel=1e-6)
    assert re.search(r"error 0\.5\b", msg), msg


def test_an_unnamed_input_is_named_by_its_position_and_only_wrong_inputs_are_listed():
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0, 5.0])
    with pytest.raises(GradcheckError) as info:
        tg.gradcheck(lambda a, b: a.sum() * square_with_wrong_element(2, 1.0)(b).sum(), a, b)
    msg = str(info.value)
    assert "input 1" in msg and "input 0" not in msg and "(2,)" in msg, msg


def test_a_non_scalar_output_with_a_wrong_gradient_is_caught():
    x = leaf(np.linspace(-1, 1, 6).reshape(3, 2))
    with pytest.raises(GradcheckError, match=r"index \(0, 1\)"):
        tg.gradcheck(square_with_wrong_element((0, 1), 0.3), x)


def test_a_wrong_step_inside_an_unrolled_cell_is_caught():
    rng = np.random.default_rng(4)
    wh = leaf(0.5 * rng.standard_normal((2, 2)), "Wh")
    xs = Tensor(rng.standard_normal((1, 3, 2)))
    broken = square_with_wrong_element((0, 0), 0.01)

    def unrolled(wh):
        h = Tensor(np.ones((1, 2)))
        for t in range(3):
            pre = xs[:, t] + h @ wh
            h = (broken(pre) if t == 1 else pre * pre).tanh()   # one step's backward is wrong
        return h.sum()
    with pytest.raises(GradcheckError, match="Wh"):
        tg.gradcheck(unrolled, wh)


def test_tolerances_are_the_ones_given():
    x = leaf([1.0, 2.0, 3.0])
    fn = lambda t: square_with_wrong_element(1, 4e-3)(t).sum()   # 0.1 % off at x = 2
    with pytest.raises(GradcheckError):
        tg.gradcheck(fn, x)
    assert tg.gradcheck(fn, x, rtol=1e-2)
    assert tg.gradcheck(fn, x, atol=1e-2)


def test_a_nan_gradient_never_passes():
    x = leaf([1.0, 2.0])
    nan_grad = lambda a: Tensor._make(a.data * 2, (a,), lambda g: (g * np.nan,), "nan")
    with pytest.raises(GradcheckError):
        tg.gradcheck(lambda a: nan_grad(a).sum(), x)


def test_a_function_that_returns_no_tensor_is_a_type_error():
    with pytest.raises(TypeError, match="Tensor"):
        tg.gradcheck(lambda a: 3.0, leaf([1.0]))


# ---------------------------------------------------------------- numerical_grad
def test_numerical_grad_one_array_per_input_with_the_right_values():
    x, y = leaf([[1.0, -2.0], [0.5, 3.0]]), leaf([0.25, -1.0])
    grads = tg.numerical_grad(lambda x, y: (x * y).sum() + (y ** 2).sum(), x, y)
    assert isinstance(grads, list) and len(grads) == 2
    assert all(isinstance(g, np.ndarray) for g in grads)
    assert grads[0].shape == (2, 2) and grads[1].shape == (2,)
    np.testing.assert_allclose(grads[0], np.broadcast_to(y.data, (2, 2)), atol=1e-8)
    np.testing.assert_allclose(grads[1], x.data.sum(axis=0) + 2 * y.data, atol=1e-8)
    assert x.grad is None and y.grad is None          # no autograd involved
    np.testing.assert_array_equal(x.data, [[1.0, -2.0], [0.5, 3.0]])


def test_numerical_grad_eps_and_plain_arrays():
    grads = tg.numerical_grad(lambda t: (t ** 3).sum(), np.array([2.0]), eps=1e-3)
    # central differences of x**3: 3 x**2 + eps**2 exactly
    np.testing.assert_allclose(grads[0], [12.0 + 1e-6], rtol=1e-9)


def test_numerical_grad_of_a_0d_array():
    (g,) = tg.numerical_grad(lambda x: x.exp(), np.array(0.5))
    assert g.shape == ()
    np.testing.assert_allclose(g, np.exp(0.5), atol=1e-8)


def test_numerical_grad_agrees_with_autograd_for_a_non_scalar_output():
    rng = np.random.default_rng(5)
    x = leaf(rng.standard_normal((2, 3)))
    fn = lambda t: (t * t).exp()
    (numeric,) = tg.numerical_grad(fn, x)
    assert numeric.shape == (2, 3) and np.abs(numeric).max() > 0
    assert tg.gradcheck(fn, x)      # the same projection on both sides


def test_float32_inputs_warn_that_finite_differences_are_imprecise():
    x = Tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    with pytest.warns(UserWarning, match="float64"):
        tg.numerical_grad(lambda t: (t * t).sum(), x)


# ---------------------------------------------------------------- report
def test_gradcheck_report_table():
    a, b = leaf([1.0, 2.0], "a"), leaf([[1.0], [2.0]], "b")
    report = tg.gradcheck_report(lambda a, b: (a * square_with_wrong_element((1, 0), 0.2)(b)).sum(), a, b)
    assert isinstance(report, tg.GradReport)
    assert not report.passed and not report
    assert report["a"]["passed"] and not report["b"]["passed"]
    assert report["b"]["worst"] == (1, 0)
    assert report["b"]["left"] == pytest.approx(2 * 2.0 * 3.0 + 0.2 * 3.0, rel=1e-6)   # autograd
    assert report["b"]["right"] == pytest.approx(2 * 2.0 * 3.0, rel=1e-6)              # numeric
    text = str(report)
    lines = text.splitlines()
    assert "tensor" in lines[0] and "worst index" in lines[0]
    assert lines[-1] == ("worst index: where |autograd - numeric| - (atol 1e-06 + rtol 0.0001 * |numeric|) is "
                         "largest; autograd and numeric are the values there")
    assert any(line.startswith("a ") and line.endswith("PASS") for line in lines), text
    assert any(line.startswith("b ") and line.endswith("FAIL") for line in lines), text
    with pytest.raises(KeyError):
        report["c"]
    good = tg.gradcheck_report(lambda a: (a * a).sum(), a)
    assert good.passed and bool(good)


def test_no_warning_from_a_passing_float64_check():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tg.gradcheck(lambda t: F.sigmoid(t).sum(), leaf([0.0, 1.0]))
