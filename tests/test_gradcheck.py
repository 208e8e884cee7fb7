"""gradcheck, gradcheck_report and numerical_grad: they pass what is right and name what is wrong.

Wrong gradients are made with ``Tensor._make`` (the way every operation records
its backward), so the error is known exactly: its input, its index and its size.
Tolerances: the defaults (eps = 1e-6, atol = 1e-6, rtol = 1e-4) unless a test
says otherwise; numerical_grad is compared with the exact gradient to 1e-8.
"""
import re

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import GradcheckError, Tensor
from tinygrad_rnn import functional as F


def leaf(a, name=None):
    return Tensor(np.array(a, dtype=np.float64), requires_grad=True, name=name)


def square_with_wrong_gradient(x, at=None, extra=0.5):
    """x * x whose backward is 2x, plus ``extra`` at index ``at`` (None: right everywhere)."""
    def backward(g):
        grad = 2 * x.data * g
        if at is not None:
            grad = grad.copy()
            grad[at] += extra * g[at]
        return (grad,)
    return Tensor._make(x.data * x.data, (x,), backward, "square")


def reversed_gradient(x):
    """The identity, whose backward hands the gradient back in reverse order (1-D)."""
    return Tensor._make(x.data.copy(), (x,), lambda g: (g[::-1].copy(),), "identity")


# ---------------------------------------------------------------- passing
def test_returns_true_on_correct_functions():
    rng = np.random.default_rng(0)
    x, w = leaf(rng.normal(size=(3, 4))), leaf(rng.normal(size=(4, 2)))
    assert tg.gradcheck(lambda a, b: F.tanh(a @ b).sum(), x, w) is True
    assert tg.gradcheck(lambda a: square_with_wrong_gradient(a).sum(), x) is True


def test_inputs_values_and_grads_are_left_as_they_were():
    x = leaf([1.0, 2.0, 3.0])
    x.grad = np.array([7.0, 7.0, 7.0])
    before = x.data.copy()
    tg.gradcheck(lambda a: (a * a).sum(), x)
    np.testing.assert_array_equal(x.data, before)
    np.testing.assert_array_equal(x.grad, [7.0, 7.0, 7.0])


def test_non_scalar_outputs_are_checked_through_a_projection():
    x = leaf(np.arange(6.0).reshape(3, 2) / 5)
    assert tg.gradcheck(lambda a: F.sigmoid(a) * a, x)
    # a backward that sends each output's gradient to the wrong element would pass if the
    # output were only summed; the random projection catches it
    v = leaf([0.1, 0.2, 0.3, 0.4])
    assert tg.gradcheck(lambda a: reversed_gradient(a).sum(), v)     # summing cannot tell
    with pytest.raises(GradcheckError):
        tg.gradcheck(lambda a: reversed_gradient(a), v)


def test_several_inputs_and_params():
    rng = np.random.default_rng(1)
    a, b, c = leaf(rng.normal(size=2)), leaf(rng.normal(size=(2, 3))), leaf(rng.normal(size=3))
    assert tg.gradcheck(lambda p, q, r: (p @ q * r).sum() + (q ** 2).mean(), a, b, c)
    # inputs without requires_grad are used but not checked
    fixed = Tensor(rng.normal(size=(2, 3)))
    assert tg.gradcheck(lambda p, q: (p @ q).sum(), a, fixed)
    # params: tensors the function uses without taking them as arguments
    w = leaf(rng.normal(size=(3, 2)))
    assert tg.gradcheck(lambda p: (p @ w).exp().sum(), b, params={"w": w})


def unroll_rnn(xs, h0, Wx, Wh, b):
    """A vanilla RNN written with raw Tensors: h_t = tanh(x_t Wx + h_{t-1} Wh + b)."""
    h, hs = h0, []
    for t in range(xs.shape[0]):
        h = F.tanh(xs[t] @ Wx + h @ Wh + b)
        hs.append(h)
    return tg.stack(hs)


def unroll_lstm(xs, h0, c0, W, U, b):
    """An LSTM step written with raw Tensors, gates sliced out of one product."""
    H = h0.shape[-1]
    h, c = h0, c0
    for t in range(xs.shape[0]):
        z = xs[t] @ W + h @ U + b
        i, f, o = F.sigmoid(z[:, :H]), F.sigmoid(z[:, H:2 * H]), F.sigmoid(z[:, 2 * H:3 * H])
        g = F.tanh(z[:, 3 * H:])
        c = f * c + i * g
        h = o * F.tanh(c)
    return h


def test_a_function_that_unrolls_a_recurrent_cell():
    rng = np.random.default_rng(2)
    T, B, D, H = 4, 2, 3, 3
    xs, h0 = leaf(rng.normal(size=(T, B, D))), leaf(rng.normal(size=(B, H)) * 0.5)
    Wx, Wh, b = leaf(rng.normal(size=(D, H)) * 0.5), leaf(rng.normal(size=(H, H)) * 0.5), leaf(rng.normal(size=H))
    assert tg.gradcheck(unroll_rnn, xs, h0, Wx, Wh, b)                       # every h_t, projected
    assert tg.gradcheck(lambda *a: F.cross_entropy(unroll_rnn(*a)[-1], [0, 2]), xs, h0, Wx, Wh, b)
    c0 = leaf(rng.normal(size=(B, H)) * 0.5)
    W, U, bb = leaf(rng.normal(size=(D, 4 * H)) * 0.5), leaf(rng.normal(size=(H, 4 * H)) * 0.5), leaf(rng.normal(size=4 * H))
    assert tg.gradcheck(unroll_lstm, xs, h0, c0, W, U, bb)


# ---------------------------------------------------------------- failing, with a useful message
def test_error_names_the_input_position_worst_index_both_values_and_the_error():
    ok = leaf(np.ones((2, 2)))
    x = leaf(np.arange(6.0).reshape(2, 3) / 10 + 0.03)
    with pytest.raises(GradcheckError) as info:
        tg.gradcheck(lambda a, b: a.sum() + square_with_wrong_gradient(b, at=(1, 2)).sum(), ok, x)
    assert isinstance(info.value, AssertionError)
    msg = str(info.value)
    assert "input 1" in msg and "input 0" not in msg          # only the wrong input is reported
    assert "(1, 2)" in msg                                      # the worst element
    right, wrong = 2 * 0.53, 2 * 0.53 + 0.5                     # d(x^2)/dx at x = 0.53, and the bad value
    numbers = [float(v) for v in re.findall(r"-?\d+(?:\.\d*)?(?:e[-+]?\d+)?", msg)]
    assert any(abs(v - wrong) < 1e-9 for v in numbers), msg     # autograd's value
    assert any(abs(v - right) < 1e-6 for v in numbers), msg     # the numeric value
    assert "autograd" in msg and "numeric" in msg and "error" in msg
    assert any(abs(v - 0.5) < 1e-6 for v in numbers), msg       # the size of the error


def test_error_uses_the_tensor_name_when_it_has_one():
    x = leaf([0.3, -0.2, 0.9], name="W_hh")
    with pytest.raises(GradcheckError, match=r"W_hh.*\(2,\)"):
        tg.gradcheck(lambda a: square_with_wrong_gradient(a, at=(2,)).sum(), x)
    b = leaf([1.0])
    with pytest.raises(GradcheckError, match=r"bias"):    # a params dict names its tensors
        tg.gradcheck(lambda: square_with_wrong_gradient(b, at=(0,)).sum(), params={"bias": b})


def test_tolerances_are_respected():
    x = leaf([1.0, 2.0])
    fn = lambda a: square_with_wrong_gradient(a, at=(1,), extra=4e-3).sum()   # 0.1 % of 4.0
    with pytest.raises(GradcheckError):
        tg.gradcheck(fn, x)
    assert tg.gradcheck(fn, x, rtol=1e-2)
    assert tg.gradcheck(fn, x, atol=1e-2)


def test_a_nan_gradient_never_passes():
    x = leaf([1.0, 2.0])
    nan_grad = lambda a: Tensor._make(a.data * 2, (a,), lambda g: (g * np.nan,), "nan")
    with pytest.raises(GradcheckError):
        tg.gradcheck(lambda a: nan_grad(a).sum(), x)


def test_report_is_a_table_and_false_when_wrong():
    x = leaf([1.0, 2.0], name="x")
    report = tg.gradcheck_report(lambda a: square_with_wrong_gradient(a, at=(0,)).sum(), x)
    assert not report.passed and not report
    assert report["x"]["worst"] == (0,)
    text = str(report)
    assert "FAIL" in text and "x" in text and "worst index" in text


def test_bad_calls():
    with pytest.raises(ValueError, match="requires_grad"):
        tg.gradcheck(lambda a: a.sum(), Tensor([1.0]))
    with pytest.raises(TypeError, match="Tensor"):
        tg.gradcheck(lambda a: 3.0, leaf([1.0]))


def test_float32_inputs_warn_that_finite_differences_are_imprecise():
    x = Tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    with pytest.warns(UserWarning, match="float64"):
        tg.numerical_grad(lambda a: (a * a).sum(), x)


# ---------------------------------------------------------------- numerical_grad
def test_numerical_grad_is_one_array_per_input():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(2, 3)), rng.normal(size=3)
    grads = tg.numerical_grad(lambda x, y: (x * y).sum() + (y ** 3).sum(), Tensor(a), Tensor(b))
    assert isinstance(grads, list) and len(grads) == 2
    assert all(isinstance(g, np.ndarray) for g in grads)
    assert grads[0].shape == a.shape and grads[1].shape == b.shape
    np.testing.assert_allclose(grads[0], np.broadcast_to(b, a.shape), atol=1e-8)
    np.testing.assert_allclose(grads[1], a.sum(axis=0) + 3 * b ** 2, atol=1e-8)


def test_numerical_grad_accepts_arrays_and_0d():
    (g,) = tg.numerical_grad(lambda x: x.exp(), np.array(0.5))
    assert g.shape == ()
    np.testing.assert_allclose(g, np.exp(0.5), atol=1e-8)
