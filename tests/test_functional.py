"""The compositions in ``tinygrad_rnn.functional``: gradients, stability, properties.

Gradient tolerances (float64 central differences, step eps): an element passes
when |autograd - numeric| <= ATOL + RTOL * |numeric| with eps = 1e-6,
ATOL = 1e-6, RTOL = 1e-4, as in ``test_ops_gradients.py``.

Stability: values equal ``np.tanh`` and a stable logistic to REL = 1e-12
relative error (absolute floor: the smallest normal float, since subnormal
results have fewer significant bits), with overflow, division by zero and
invalid operations turned into errors, over the whole float64 range, 0, -0.0
and +-inf.  Properties without finite differences use 1e-12 relative too.
"""
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_rnn as tg
from tinygrad_rnn import Tensor
from tinygrad_rnn import functional as F
from tinygrad_rnn import fused

import strategies as S
from strategies import covers

EPS, ATOL, RTOL = 1e-6, 1e-6, 1e-4
REL = 1e-12
TINY = np.finfo(np.float64).tiny


def leaf(a, dtype=np.float64):
    return Tensor(np.array(a, dtype=dtype), requires_grad=True)


def check(fn, *arrays):
    inputs = [leaf(a) for a in arrays]
    for i, t in enumerate(inputs):
        t.name = f"x{i}"
    assert tg.gradcheck(fn, *inputs, eps=EPS, atol=ATOL, rtol=RTOL)


class strict:
    """Overflow, division by zero and invalid operations raise; any warning is an error.

    Underflow to 0 (exp(-1000)) is the right answer and stays allowed.
    """

    def __enter__(self):
        self._err = np.errstate(over="raise", divide="raise", invalid="raise")
        self._err.__enter__()
        self._warn = warnings.catch_warnings()
        self._warn.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        self._warn.__exit__(*exc)
        return self._err.__exit__(*exc)


# ---------------------------------------------------------------- gradients against finite differences
@covers("functional.tanh", "Tensor.tanh")
@given(S.any_array(S.floats(-5.0, 5.0)), st.booleans())
def test_tanh(x, as_method):
    check((lambda t: t.tanh()) if as_method else F.tanh, x)


@covers("functional.sigmoid", "Tensor.sigmoid")
@given(S.any_array(S.floats(-8.0, 8.0)), st.booleans())
def test_sigmoid(x, as_method):
    check((lambda t: t.sigmoid()) if as_method else F.sigmoid, x)


@covers("functional.relu", "Tensor.relu")
@given(S.any_array(S.away_from_zero(0.05, 3.0)), st.booleans())
def test_relu(x, as_method):
    check((lambda t: t.relu()) if as_method else F.relu, x)


@st.composite
def array_and_one_axis(draw, lo=-5.0, hi=5.0):
    x = draw(S.any_array(S.floats(lo, hi), min_dims=1))
    return x, draw(st.integers(-x.ndim, x.ndim - 1))


@covers("functional.softmax")
@given(array_and_one_axis())
def test_softmax(case):
    x, axis = case
    check(lambda t: F.softmax(t, axis=axis), x)


@covers("functional.log_softmax")
@given(array_and_one_axis())
def test_log_softmax(case):
    x, axis = case
    check(lambda t: F.log_softmax(t, axis=axis), x)


@covers("functional.cross_entropy")
@given(S.cross_entropy_case(), st.sampled_from(["mean", "sum", "none"]), st.sampled_from(["array", "list", "tensor"]))
def test_cross_entropy(case, reduction, target_form):
    logits, target, axis = case
    if target_form == "list":
        target = target.tolist()
    elif target_form == "tensor":
        target = Tensor(target)
    check(lambda t: F.cross_entropy(t, target, axis=axis, reduction=reduction), logits)


@covers("functional.mse_loss")
@given(S.any_array().flatmap(lambda a: st.tuples(st.just(a), S.arrays(a.shape))),
       st.sampled_from(["mean", "sum", "none"]))
def test_mse_loss(pair, reduction):
    # the target may need a gradient too (e.g. matching two networks' outputs)
    check(lambda p, t: F.mse_loss(p, t, reduction=reduction), *pair)


@covers("fused.tanh")
@given(S.any_array(S.floats(-5.0, 5.0)))
def test_fused_tanh(x):
    with fused.enabled():
        check(F.tanh, x)


@covers("fused.sigmoid")
@given(S.any_array(S.floats(-8.0, 8.0)))
def test_fused_sigmoid(x):
    with fused.enabled():
        check(F.sigmoid, x)


@covers("fused.cross_entropy")
@given(S.cross_entropy_case(), st.sampled_from(["mean", "sum", "none"]))
def test_fused_cross_entropy(case, reduction):
    logits, target, axis = case
    with fused.enabled():
        check(lambda t: F.cross_entropy(t, target, axis=axis, reduction=reduction), logits)


def test_cross_entropy_matches_its_definition():
    logits = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    idx = np.array([1, 2])
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = -logp[np.arange(2), idx]
    np.testing.assert_allclose(F.cross_entropy(logits, idx, reduction="none").data, expected, rtol=REL)
    np.testing.assert_allclose(F.cross_entropy(logits, idx).data, expected.mean(), rtol=REL)
    np.testing.assert_allclose(F.cross_entropy(logits, idx, reduction="sum").data, expected.sum(), rtol=REL)
    one_hot = np.eye(3)[idx]
    np.testing.assert_allclose(F.cross_entropy(logits, one_hot).data, expected.mean(), rtol=REL)
    # over axis 0: classes down the columns
    np.testing.assert_allclose(F.cross_entropy(logits.T, idx, axis=0, reduction="none").data, expected, rtol=REL)


def test_mse_loss_matches_its_definition():
    p, t = np.array([1.0, 2.0, 4.0]), np.array([0.0, 2.0, 1.0])
    np.testing.assert_allclose(F.mse_loss(p, t).data, ((p - t) ** 2).mean(), rtol=REL)
    np.testing.assert_allclose(F.mse_loss(p, t, reduction="sum").data, ((p - t) ** 2).sum(), rtol=REL)
    np.testing.assert_allclose(F.mse_loss(p, t, reduction="none").data, (p - t) ** 2, rtol=REL)


# ---------------------------------------------------------------- stability over the whole float range
wide = st.one_of(
    st.floats(-1e308, 1e308, allow_nan=False, allow_infinity=False),        # anything finite, subnormals too
    st.floats(-40.0, 40.0),                                                  # where tanh and sigmoid bend
    st.sampled_from([0.0, -0.0, np.inf, -np.inf, 1e308, -1e308, np.finfo(float).max, -np.finfo(float).max,
                     5e-324, -5e-324, 710.0, -710.0, 745.0, -745.0, 354.0, 20.0]),
)
wide_arrays = hnp.arrays(np.float64, S.shapes(max_dims=2, max_side=4), elements=wide)


def stable_logistic(x):
    """1 / (1 + e^-x) evaluated so that exp never overflows, element by element."""
    out = []
    for v in np.asarray(x, dtype=np.float64).ravel():
        if v >= 0:
            out.append(1.0 / (1.0 + math.exp(-v)))
        else:
            e = math.exp(v) if v > -746 else 0.0
            out.append(e / (1.0 + e))
    return np.array(out).reshape(np.shape(x))


def value_and_grad(fn, x):
    t = leaf(x)
    with strict():
        y = fn(t)
        y.backward(np.ones(y.shape))
    return y.data, t.grad


@given(wide_arrays)
def test_tanh_is_numpy_tanh_everywhere_with_finite_gradient(x):
    y, g = value_and_grad(F.tanh, x)
    np.testing.assert_allclose(y, np.tanh(x), rtol=REL, atol=TINY)
    assert np.array_equal(np.signbit(y), np.signbit(x))         # tanh(-0.0) is -0.0
    assert np.isfinite(g).all()
    with np.errstate(over="ignore"):
        np.testing.assert_allclose(g, 1.0 / np.cosh(x) ** 2, rtol=1e-10, atol=TINY)


@given(wide_arrays)
def test_sigmoid_is_the_stable_logistic_everywhere_with_finite_gradient(x):
    y, g = value_and_grad(F.sigmoid, x)
    s = stable_logistic(x)
    np.testing.assert_allclose(y, s, rtol=REL, atol=TINY)
    assert np.isfinite(g).all()
    e = np.exp(-np.abs(x))   # sigmoid'(x) = e^-|x| / (1 + e^-|x|)^2, never overflowing
    np.testing.assert_allclose(g, e / (1.0 + e) ** 2, rtol=1e-10, atol=TINY)


@given(wide_arrays)
def test_relu_everywhere(x):
    y, g = value_and_grad(F.relu, x)
    np.testing.assert_array_equal(y, np.maximum(x, 0.0))
    np.testing.assert_array_equal(g, (x > 0).astype(float))


@st.composite
def wide_rows(draw):
    """Rows with values anywhere in the float range, at most one +inf and at least one finite value."""
    x = draw(hnp.arrays(np.float64, S.shapes(min_dims=1, max_dims=2, max_side=4), elements=wide))
    axis = draw(st.integers(-x.ndim, x.ndim - 1))
    x = np.moveaxis(x, axis, -1).copy()
    for row in x.reshape(-1, x.shape[-1]):
        if not np.isfinite(row).any():
            row[0] = 0.0
        plus = np.flatnonzero(row == np.inf)
        row[plus[1:]] = 1.0
    return np.moveaxis(x, -1, axis), axis


@given(wide_rows())
def test_softmax_and_log_softmax_over_the_whole_range(case):
    x, axis = case
    p, gp = value_and_grad(lambda t: F.softmax(t, axis=axis), x)
    assert np.isfinite(p).all() and np.isfinite(gp).all()
    assert ((p >= 0) & (p <= 1)).all()
    np.testing.assert_allclose(p.sum(axis=axis), 1.0, rtol=1e-12 * x.shape[axis])
    lp, glp = value_and_grad(lambda t: F.log_softmax(t, axis=axis), x)
    assert not np.isnan(lp).any() and np.isfinite(glp).all()
    assert (lp <= 0).all()
    assert np.array_equal(np.isneginf(lp), np.isneginf(x))   # -inf logits only are impossible classes


@given(wide_rows(), st.booleans())
def test_cross_entropy_over_the_whole_range(case, indices):
    x, axis = case
    finite_best = np.argmax(np.where(np.isneginf(x), -np.inf, np.clip(x, -1e308, 1e308)), axis=axis)
    target = finite_best if indices else np.moveaxis(
        np.eye(x.shape[axis])[finite_best], -1, axis % x.ndim)
    loss, g = value_and_grad(lambda t: F.cross_entropy(t, target, axis=axis), x)
    assert np.isfinite(loss).all() and np.isfinite(g).all()


def test_exact_values_at_zero():
    for zero in (0.0, -0.0):
        x = leaf(zero)
        F.tanh(x).backward()
        assert x.grad == 1.0                 # exactly, not 1 - 1e-16
        x = leaf(zero)
        F.sigmoid(x).backward()
        assert x.grad == 0.25
    assert F.sigmoid(Tensor(0.0)).item() == 0.5
    tiny = 1e-300
    assert F.tanh(Tensor(tiny)).item() == tiny   # tanh(x) = x to the last bit near 0


def test_softmax_of_1000_0_minus_1000_is_finite():
    with strict():
        p = F.softmax(Tensor([1000.0, 0.0, -1000.0])).data
        lp = F.log_softmax(Tensor([1000.0, 0.0, -1000.0])).data
    assert np.isfinite(p).all() and np.isfinite(lp).all()
    np.testing.assert_allclose(p, [1.0, math.exp(-1000), 0.0], rtol=REL)
    np.testing.assert_allclose(lp, [0.0, -1000.0, -2000.0], rtol=REL)


def test_limits_at_infinity():
    with strict():
        assert F.tanh(Tensor([np.inf, -np.inf])).data.tolist() == [1.0, -1.0]
        assert F.sigmoid(Tensor([np.inf, -np.inf])).data.tolist() == [1.0, 0.0]
        assert F.softmax(Tensor([np.inf, 0.0, -np.inf])).data.tolist() == [1.0, 0.0, 0.0]


# ---------------------------------------------------------------- properties without finite differences
def autograd(fn, x):
    t = leaf(x)
    fn(t).backward()
    return t.grad


FUNCS = {
    "tanh": lambda t: F.tanh(t).sum(),
    "sigmoid": lambda t: (F.sigmoid(t) * F.sigmoid(t)).sum(),
    "relu": lambda t: (F.relu(t) * t).sum(),
    "softmax": lambda t: (F.softmax(t) * t).sum(),
    "log_softmax": lambda t: F.log_softmax(t).sum() if t.ndim else F.log_softmax(t.reshape(1)).sum(),
    "cross_entropy": lambda t: F.cross_entropy(t.reshape(1, -1), [0]),
    "mse_loss": lambda t: F.mse_loss(t, np.ones(t.shape)),
}


@given(S.any_array(S.floats(-5.0, 5.0), min_dims=1), S.floats(-3.0, 3.0), S.floats(-3.0, 3.0),
       st.sampled_from(sorted(FUNCS)), st.sampled_from(sorted(FUNCS)))
def test_gradient_is_linear(x, a, b, f, g):
    """grad(a f + b g) = a grad f + b grad g."""
    f, g = FUNCS[f], FUNCS[g]
    both = autograd(lambda t: a * f(t) + b * g(t), x)
    apart = a * autograd(f, x) + b * autograd(g, x)
    np.testing.assert_allclose(both, apart, rtol=REL, atol=REL * (1 + np.abs(apart).max()))


@given(array_and_one_axis(-1e3, 1e3))
def test_softmax_rows_sum_to_one(case):
    x, axis = case
    p = F.softmax(Tensor(x), axis=axis).data
    np.testing.assert_allclose(p.sum(axis=axis), 1.0, rtol=REL * x.shape[axis])


@given(array_and_one_axis(-1e3, 1e3))
def test_log_softmax_is_log_of_softmax_where_finite(case):
    x, axis = case
    p = F.softmax(Tensor(x), axis=axis).data
    lp = F.log_softmax(Tensor(x), axis=axis).data
    normal = p >= TINY              # log of a subnormal or 0 has lost its digits
    np.testing.assert_allclose(lp[normal], np.log(p[normal]), rtol=REL, atol=REL)
    assert (lp[~normal] < np.log(TINY) + 1).all()


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "relu", "softmax", "log_softmax", "cross_entropy",
                                  "mse_loss"])
def test_float32_stays_float32(name):
    x = leaf(np.linspace(-2, 2, 6).reshape(2, 3), dtype=np.float32)
    if name == "cross_entropy":
        out = F.cross_entropy(x, [0, 2])
        also = F.cross_entropy(x, np.eye(3)[[0, 2]])    # float64 one-hot targets do not promote
        assert also.dtype == np.float32
    elif name == "mse_loss":
        out = F.mse_loss(x, np.zeros((2, 3)))
    else:
        out = getattr(F, name)(x)
    assert out.dtype == np.float32
    out.sum().backward()
    assert x.grad.dtype == np.float32
