"""Properties of the compositions in ``tinygrad_rnn.functional`` (each run compiled, as one node, by default).

1. Values against their definitions.  The gradients (central differences), the forward of
   leaky_relu, softplus and logsumexp against numpy, float32 and the traced and second-order
   checks are generic: each function has rows in ``op_table.py``.
2. Stability over the whole float range: with every warning an error and numpy's
   overflow/invalid/divide-by-zero raising, inputs from -max to +max, 0, -0.0,
   subnormals and +-inf give no warning and no NaN in values or gradients.
   float64 values equal ``np.tanh`` and a stable logistic within REL = 1e-12
   relative (absolute floor: the smallest normal float, as subnormal results carry
   fewer digits); gradients equal the closed forms within 1e-10 relative.
   float32 inputs are compared with float64 references within F32_REL = 1e-6.
3. Properties without finite differences: the gradient is linear (in the function
   and in the cotangent), softmax sums to 1, log_softmax equals log(softmax)
   where both are finite.
"""
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from tinygrad_rnn import Tensor
from tinygrad_rnn import functional as F

import strategies as S
from op_table import softplus_reference

REL = 1e-12
GRAD_REL = 1e-10
F32_REL = 1e-6
TINY = np.finfo(np.float64).tiny

class strict:
    """Every warning is an error and numpy raises on overflow, invalid operations and division by
    zero.  Underflow (exp(-1000) == 0) is the right answer and stays allowed."""

    def __enter__(self):
        self._errstate = np.errstate(over="raise", invalid="raise", divide="raise")
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("error")
        self._errstate.__enter__()

    def __exit__(self, *exc):
        self._errstate.__exit__(*exc)
        self._warnings.__exit__(*exc)
        return False


# ---------------------------------------------------------------- 1. values (gradients: op_table.py rows)
@given(S.cross_entropy_case(), st.sampled_from(["mean", "sum", "none"]))
def test_cross_entropy_value_is_its_definition(case, reduction):
    """A forward oracle in plain numpy: -sum(target * log_softmax) or -log_softmax[target]."""
    logits, target, axis = case
    z = logits - logits.max(axis=axis, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=axis, keepdims=True))
    if target.dtype.kind == "f":
        loss = -(target * logp).sum(axis=axis)
    else:
        loss = -np.take_along_axis(logp, np.expand_dims(target, axis), axis=axis).squeeze(axis)
    expected = {"mean": loss.mean(), "sum": loss.sum(), "none": loss}[reduction]
    got = F.cross_entropy(Tensor(logits), target, axis=axis, reduction=reduction).data
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_mse_loss_value_is_its_definition():
    p, t = np.array([1.0, 2.0, 4.0]), np.array([0.0, 2.0, 1.0])
    np.testing.assert_allclose(F.mse_loss(p, t).data, ((p - t) ** 2).mean(), rtol=REL)
    np.testing.assert_allclose(F.mse_loss(p, t, reduction="sum").data, ((p - t) ** 2).sum(), rtol=REL)
    np.testing.assert_allclose(F.mse_loss(p, t, reduction="none").data, (p - t) ** 2, rtol=REL)


# ---------------------------------------------------------------- 2. stability over the whole range
def value_and_grad(fn, x, dtype=np.float64):
    t = Tensor(np.array(x, dtype=dtype), requires_grad=True)
    with strict():
        y = fn(t)
        y.backward(np.ones(y.shape, dtype=y.dtype))
    return y.data, t.grad


def logistic_reference(x):
    """1 / (1 + exp(-x)) in float64, one element at a time, never overflowing."""
    out = []
    for v in np.asarray(x, dtype=np.float64).ravel():
        v = float(v)
        if v >= 0:
            out.append(1.0 / (1.0 + math.exp(-v)))
        else:
            e = math.exp(v) if v > -800 else 0.0
            out.append(e / (1.0 + e))
    return np.array(out).reshape(np.shape(x))


def tanh_grad_reference(x):
    """1 - tanh(x)**2 = 4 e / (1 + e)**2 with e = exp(-2|x|), never overflowing."""
    with np.errstate(over="ignore"):
        e = np.exp(-2.0 * np.abs(np.asarray(x, dtype=np.float64)))
    return 4.0 * e / (1.0 + e) ** 2


def sigmoid_grad_reference(x):
    e = np.exp(-np.abs(np.asarray(x, dtype=np.float64)))
    return e / (1.0 + e) ** 2


@given(S.whole_range_arrays(np.float64))
def test_tanh_equals_numpy_tanh_over_the_float64_range(x):
    y, g = value_and_grad(F.tanh, x)
    np.testing.assert_allclose(y, np.tanh(x), rtol=REL, atol=TINY)
    assert np.array_equal(np.signbit(y), np.signbit(x))      # odd, also at -0.0
    assert np.isfinite(g).all()
    np.testing.assert_allclose(g, tanh_grad_reference(x), rtol=GRAD_REL, atol=TINY)


@given(S.whole_range_arrays(np.float64))
def test_sigmoid_equals_the_stable_logistic_over_the_float64_range(x):
    y, g = value_and_grad(F.sigmoid, x)
    np.testing.assert_allclose(y, logistic_reference(x), rtol=REL, atol=TINY)
    assert np.isfinite(g).all()
    np.testing.assert_allclose(g, sigmoid_grad_reference(x), rtol=GRAD_REL, atol=TINY)


@given(S.whole_range_arrays(np.float64))
def test_relu_over_the_float64_range(x):
    y, g = value_and_grad(F.relu, x)
    np.testing.assert_array_equal(y, np.maximum(x, 0.0))
    np.testing.assert_array_equal(g, (x > 0).astype(np.float64))


@given(S.whole_range_arrays(np.float32))
def test_float32_tanh_sigmoid_relu_over_the_float32_range(x):
    x64 = x.astype(np.float64)
    for fn, ref, dref in [(F.tanh, np.tanh, tanh_grad_reference),
                          (F.sigmoid, logistic_reference, sigmoid_grad_reference),
                          (F.relu, lambda v: np.maximum(v, 0.0), lambda v: (v > 0).astype(np.float64))]:
        y, g = value_and_grad(fn, x, np.float32)
        assert y.dtype == np.float32 and g.dtype == np.float32, fn.__name__
        assert not np.isnan(y).any() and np.isfinite(g).all(), fn.__name__
        tiny32 = float(np.finfo(np.float32).tiny)
        np.testing.assert_allclose(y, ref(x64), rtol=F32_REL, atol=tiny32, err_msg=fn.__name__)
        np.testing.assert_allclose(g, dref(x64), rtol=10 * F32_REL, atol=tiny32, err_msg=fn.__name__)


@st.composite
def whole_range_rows(draw, dtype=np.float64):
    """Rows along ``axis`` with values anywhere in the range; each row keeps a finite value and at most
    one +inf (softmax has a limit then; two +inf in a row have none)."""
    x = draw(hnp.arrays(dtype, S.shapes(min_dims=1, max_dims=2, max_side=4),
                        elements=S.whole_range(64 if dtype == np.float64 else 32)))
    axis = draw(st.integers(-x.ndim, x.ndim - 1))
    rows = np.moveaxis(x, axis, -1).copy()
    for row in rows.reshape(-1, rows.shape[-1]):
        if not np.isfinite(row).any():
            row[0] = 0.0
        row[np.flatnonzero(row == np.inf)[1:]] = 0.0
    return np.moveaxis(rows, -1, axis), axis


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(data=st.data())
def test_softmax_and_log_softmax_over_the_whole_range(dtype, data):
    x, axis = data.draw(whole_range_rows(dtype))
    p, gp = value_and_grad(lambda t: F.softmax(t, axis=axis), x, dtype)
    assert p.dtype == dtype and gp.dtype == dtype
    assert np.isfinite(p).all() and np.isfinite(gp).all()
    assert ((p >= 0) & (p <= 1)).all()
    rel = (1e-12 if dtype == np.float64 else 1e-6) * x.shape[axis]
    np.testing.assert_allclose(p.sum(axis=axis), 1.0, rtol=rel)
    lp, glp = value_and_grad(lambda t: F.log_softmax(t, axis=axis), x, dtype)
    assert not np.isnan(lp).any() and np.isfinite(glp).all()
    assert (lp <= 0).all()
    assert np.array_equal(np.isneginf(lp), np.isneginf(x))   # only a -inf logit is an impossible class


@given(whole_range_rows(), st.sampled_from(["indices", "one-hot"]), st.sampled_from(["mean", "sum", "none"]))
def test_cross_entropy_over_the_whole_range(case, form, reduction):
    x, axis = case
    # a target class that the logits make possible (the largest finite-or-+inf logit)
    best = np.argmax(np.where(np.isneginf(x), -np.inf, np.nan_to_num(x, posinf=np.finfo(float).max)), axis=axis)
    target = best if form == "indices" else np.moveaxis(np.eye(x.shape[axis])[best], -1, axis % x.ndim)
    loss, g = value_and_grad(lambda t: F.cross_entropy(t, target, axis=axis, reduction=reduction), x)
    assert np.isfinite(loss).all() and (loss >= 0).all() and np.isfinite(g).all()


def test_exact_values_at_zero():
    for zero in (0.0, -0.0):
        x = Tensor(zero, requires_grad=True)
        F.tanh(x).backward()
        assert x.grad == 1.0                 # exactly, not 1 - 1e-16
        x = Tensor(zero, requires_grad=True)
        F.sigmoid(x).backward()
        assert x.grad == 0.25
        x = Tensor(np.zeros((2, 2), np.float32), requires_grad=True)
        F.tanh(x).sum().backward()
        assert (x.grad == 1.0).all() and x.grad.dtype == np.float32
    assert F.tanh(Tensor(1e-300)).item() == 1e-300      # tanh(x) is x to the last bit near 0
    assert F.sigmoid(Tensor(0.0)).item() == 0.5


def test_softmax_of_1000_0_minus_1000_is_finite():
    with strict():
        x = Tensor([1000.0, 0.0, -1000.0], requires_grad=True)
        p = F.softmax(x)
        (p * Tensor([1.0, 2.0, 3.0])).sum().backward()
        lp = F.log_softmax(Tensor([1000.0, 0.0, -1000.0])).data
    assert np.isfinite(p.data).all() and np.isfinite(x.grad).all()
    np.testing.assert_allclose(p.data, [1.0, math.exp(-1000.0), 0.0], rtol=REL, atol=0)
    np.testing.assert_allclose(lp, [0.0, -1000.0, -2000.0], rtol=REL)


def test_limits_at_infinity():
    with strict():
        for fn, limits in [(F.tanh, [1.0, -1.0]), (F.sigmoid, [1.0, 0.0])]:
            x = Tensor([np.inf, -np.inf], requires_grad=True)
            y = fn(x)
            y.sum().backward()
            assert y.data.tolist() == limits
            assert x.grad.tolist() == [0.0, 0.0]
        assert F.softmax(Tensor([np.inf, 1.0, -np.inf])).data.tolist() == [1.0, 0.0, 0.0]
        lp = F.log_softmax(Tensor([np.inf, 1.0, -np.inf])).data
        assert lp[0] == 0.0 and lp[2] == -np.inf and not np.isnan(lp).any()


# ---------------------------------------------------------------- 3. properties without finite differences
def autograd(fn, x, cotangent=None):
    t = Tensor(np.array(x, dtype=np.float64), requires_grad=True)
    y = fn(t)
    y.backward(cotangent)
    return t.grad


SCALAR = {
    "tanh": lambda t: F.tanh(t).sum(),
    "sigmoid": lambda t: (F.sigmoid(t) * t).sum(),
    "relu": lambda t: (F.relu(t) * t).sum(),
    "softmax": lambda t: (F.softmax(t.reshape(-1)) * t.reshape(-1)).sum(),
    "log_softmax": lambda t: F.log_softmax(t.reshape(-1)).sum() * 0.5 + F.log_softmax(t.reshape(-1))[0],
    "cross_entropy": lambda t: F.cross_entropy(t.reshape(1, -1), [0]),
    "mse_loss": lambda t: F.mse_loss(t, np.full(t.shape, 0.5)),
    "leaky_relu": lambda t: (F.leaky_relu(t, 0.1) * t).sum(),
    "softplus": lambda t: F.softplus(t).sum(),
    "logsumexp": lambda t: F.logsumexp(t.reshape(-1)),
}


@given(S.any_array(S.floats(-5.0, 5.0)), S.floats(-3.0, 3.0), S.floats(-3.0, 3.0),
       st.sampled_from(sorted(SCALAR)), st.sampled_from(sorted(SCALAR)))
def test_gradient_is_linear_in_the_function(x, a, b, f, g):
    """grad(a f + b g) = a grad f + b grad g."""
    f, g = SCALAR[f], SCALAR[g]
    together = autograd(lambda t: a * f(t) + b * g(t), x)
    apart = a * autograd(f, x) + b * autograd(g, x)
    np.testing.assert_allclose(together, apart, rtol=REL, atol=REL * (1 + np.abs(apart).max(initial=0)))


ELEMENTWISE = {"tanh": F.tanh, "sigmoid": F.sigmoid, "softmax": F.softmax, "log_softmax": F.log_softmax,
               "softplus": F.softplus, "leaky_relu": F.leaky_relu}


@given(S.array_and_one_axis(S.floats(-5.0, 5.0)), S.floats(-3.0, 3.0), S.floats(-3.0, 3.0),
       S.seeds(), st.sampled_from(sorted(ELEMENTWISE)))
def test_gradient_is_linear_in_the_cotangent(case, a, b, seed, name):
    """The vector-Jacobian product is linear: vjp(a u + b w) = a vjp(u) + b vjp(w)."""
    x, _ = case
    fn = ELEMENTWISE[name]
    rng = np.random.default_rng(seed)
    u, w = rng.standard_normal(x.shape), rng.standard_normal(x.shape)
    together = autograd(fn, x, a * u + b * w)
    apart = a * autograd(fn, x, u) + b * autograd(fn, x, w)
    np.testing.assert_allclose(together, apart, rtol=1e-10, atol=1e-12 * (1 + np.abs(apart).max(initial=0)))


@given(S.array_and_one_axis(S.floats(-1e3, 1e3)))
def test_softmax_sums_to_one_along_its_axis(case):
    x, axis = case
    p = F.softmax(Tensor(x), axis=axis).data
    assert ((p >= 0) & (p <= 1)).all()
    np.testing.assert_allclose(p.sum(axis=axis), 1.0, rtol=REL * x.shape[axis])


@given(S.array_and_one_axis(S.floats(-1e3, 1e3)))
def test_log_softmax_is_log_of_softmax_where_finite(case):
    x, axis = case
    p = F.softmax(Tensor(x), axis=axis).data
    lp = F.log_softmax(Tensor(x), axis=axis).data
    normal = p >= TINY              # log of 0 or a subnormal has lost its digits
    np.testing.assert_allclose(lp[normal], np.log(p[normal]), rtol=REL, atol=REL)
    assert np.isfinite(lp).all() and (lp[~normal] < np.log(TINY) + 1).all()


# ---------------------------------------------------------------- leaky_relu, softplus, logsumexp
# The whole range as in 2 (their gradients and forward against numpy: rows of op_table.py).
@given(S.whole_range_arrays(np.float64), st.sampled_from([0.01, 0.2, 1.0, 0.0]))
def test_leaky_relu_over_the_float64_range(x, slope):
    """Slopes up to 1: a larger one makes -max float overflow to -inf, which is then the right value."""
    y, g = value_and_grad(lambda t: F.leaky_relu(t, slope), x)
    np.testing.assert_array_equal(y, np.maximum(x, 0.0) if slope == 0 else np.where(x > 0, x, slope * x))
    np.testing.assert_array_equal(g, np.where(x > 0, 1.0, slope))


@given(S.whole_range_arrays(np.float64))
def test_softplus_over_the_float64_range(x):
    y, g = value_and_grad(F.softplus, x)
    with np.errstate(over="ignore"):
        np.testing.assert_allclose(y, softplus_reference(x), rtol=REL, atol=TINY)
    assert np.isfinite(g).all()
    np.testing.assert_allclose(g, logistic_reference(x), rtol=GRAD_REL, atol=TINY)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(data=st.data())
def test_logsumexp_over_the_whole_range(dtype, data):
    """Rows from whole_range_rows (a finite value in each, at most one +inf): the value is the largest
    element plus a term in [0, log n], +inf where the row has +inf; gradients are finite, and where the
    row is finite they are softmax, which sums to 1."""
    x, axis = data.draw(whole_range_rows(dtype))
    y, g = value_and_grad(lambda t: F.logsumexp(t, axis=axis), x, dtype)
    assert y.dtype == dtype and g.dtype == dtype and np.isfinite(g).all() and (g >= 0).all()
    top = x.max(axis=axis)
    n = x.shape[axis]
    assert np.array_equal(np.isposinf(y), np.isposinf(top))
    finite = np.isfinite(top)
    eps = np.finfo(dtype).eps
    t = top[finite].astype(np.float64)
    slack = 4 * eps * (np.abs(t) + 1)
    with np.errstate(over="ignore"):        # the upper bound may round up to inf near the largest float
        assert (y[finite] >= t - slack).all() and (y[finite] <= t + np.log(n) + slack).all()
    sums = g.sum(axis=axis)
    np.testing.assert_allclose(sums[finite], 1.0, rtol=(1e-12 if dtype == np.float64 else 1e-6) * n)


def test_exact_values_at_zero_and_limits_of_the_new_functions():
    with strict():
        x = Tensor([0.0, -0.0], requires_grad=True)
        y = F.softplus(x)
        y.sum().backward()
        assert y.data.tolist() == [math.log(2.0)] * 2 and x.grad.tolist() == [0.5, 0.5]
        x = Tensor([0.0, -0.0, 2.0], requires_grad=True)
        y = F.leaky_relu(x, 0.25)
        y.sum().backward()
        assert y.data.tolist() == [0.0, 0.0, 2.0] and np.signbit(y.data[1]) and x.grad.tolist() == [0.25, 0.25, 1.0]
        x = Tensor([[0.0], [7.5]], requires_grad=True)
        y = F.logsumexp(x)
        y.sum().backward()
        assert y.data.tolist() == [0.0, 7.5] and x.grad.tolist() == [[1.0], [1.0]]
        x = Tensor([[np.inf, 1.0], [-np.inf, -np.inf], [1e308, -1e308]], requires_grad=True)
        y = F.logsumexp(x)
        y.backward(np.ones(3))
        assert y.data.tolist() == [np.inf, -np.inf, 1e308] and x.grad.tolist() == [[0, 0], [0, 0], [1, 0]]
        assert F.logsumexp(Tensor(np.zeros((2, 0))), keepdims=True).data.tolist() == [[-np.inf], [-np.inf]]
        x = Tensor([np.inf, -np.inf], requires_grad=True)
        y = F.softplus(x)
        y.backward(np.ones(2))
        assert y.data.tolist() == [np.inf, 0.0] and x.grad.tolist() == [1.0, 0.0]
    assert F.softplus(Tensor(np.nan)).data.item() != F.softplus(Tensor(np.nan)).data.item()   # NaN stays NaN
    assert np.isnan(F.leaky_relu(Tensor(np.nan)).item())


def test_softplus_and_logsumexp_agree():
    """softplus(x) is logsumexp over the pair (0, x): equal within REL, or within 4 eps absolute, since
    logsumexp takes log(1 + e) where softplus takes log1p(e), exact for tiny e."""
    x = np.linspace(-40, 40, 81)
    pair = np.stack([np.zeros_like(x), x], axis=-1)
    np.testing.assert_allclose(F.softplus(Tensor(x)).data, F.logsumexp(Tensor(pair)).data, rtol=REL,
                               atol=4 * np.finfo(np.float64).eps)
