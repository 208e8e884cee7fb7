"""Autograd equals central finite differences for every Tensor operation.

Tolerances (float64, central differences with step eps): an element passes when
|autograd - numeric| <= ATOL + RTOL * |numeric|, with eps = 1e-6, ATOL = 1e-6,
RTOL = 1e-4 (the ``gradcheck`` defaults, written out here).  With inputs of size
at most 3 and values of magnitude at most ~30, the finite-difference error is
below 1e-8, so these tolerances leave room for rounding yet catch a gradient
that is off by 0.1 % (``test_mutation.py`` shows that they do).

Each ``check_*`` function is one property; the hypothesis tests feed it
generated shapes and values, and ``test_mutation.py`` runs the same tests
against deliberately broken backward functions.  ``@covers`` records which
public operations a test differentiates (``test_public_ops_covered.py``).
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_rnn as tg
from tinygrad_rnn import Tensor

import strategies as S
from strategies import covers

EPS, ATOL, RTOL = 1e-6, 1e-6, 1e-4


def leaf(a, name=None):
    return Tensor(np.array(a, dtype=np.float64), requires_grad=True, name=name)


def check(fn, *arrays):
    """gradcheck ``fn`` at fresh float64 leaves made from ``arrays`` (every one requires grad)."""
    inputs = [leaf(a, name=f"x{i}") for i, a in enumerate(arrays)]
    assert tg.gradcheck(fn, *inputs, eps=EPS, atol=ATOL, rtol=RTOL)


# ---------------------------------------------------------------- arithmetic
BINARY = {
    "add": lambda x, y: x + y,
    "sub": lambda x, y: x - y,
    "mul": lambda x, y: x * y,
    "div": lambda x, y: x / y,
}


@covers("Tensor.__add__")
@given(S.broadcast_pair())
def test_add(pair):
    check(BINARY["add"], *pair)


@covers("Tensor.__sub__")
@given(S.broadcast_pair())
def test_sub(pair):
    check(BINARY["sub"], *pair)


@covers("Tensor.__mul__")
@given(S.broadcast_pair())
def test_mul(pair):
    check(BINARY["mul"], *pair)


@covers("Tensor.__truediv__")
@given(S.broadcast_pair(right=S.away_from_zero(0.5, 3.0)))
def test_div(pair):
    check(BINARY["div"], *pair)


@covers("Tensor.__neg__")
@given(S.any_array())
def test_neg(x):
    check(lambda t: -t, x)


# a number (or a constant numpy array) on either side of the operator
WITH_CONSTANT = {
    "x + c": (lambda t, c: t + c), "c + x": (lambda t, c: c + t),
    "x - c": (lambda t, c: t - c), "c - x": (lambda t, c: c - t),
    "x * c": (lambda t, c: t * c), "c * x": (lambda t, c: c * t),
    "x / c": (lambda t, c: t / c), "c / x": (lambda t, c: c / t),
}


@covers("Tensor.__radd__", "Tensor.__rsub__", "Tensor.__rmul__", "Tensor.__rtruediv__")
@given(S.any_array(S.away_from_zero(0.5, 3.0)), S.away_from_zero(0.5, 3.0),
       st.sampled_from(sorted(WITH_CONSTANT)), st.booleans())
def test_number_or_array_on_either_side(x, c, form, as_array):
    constant = np.full(x.shape[-1:], c) if as_array else c   # an ndarray on the left uses the r-method too
    check(lambda t: WITH_CONSTANT[form](t, constant), x)


@st.composite
def power_by_number(draw):
    p = draw(st.sampled_from([0.0, 1.0, 2.0, 3.0, -1.0, -2.0, 0.5, 1.5, -0.5]))
    if p != int(p):      # a fractional power needs a positive base
        elements = S.floats(0.2, 3.0)
    elif p < 0:          # a pole at 0
        elements = S.away_from_zero(0.3, 3.0)
    else:
        elements = S.floats(-3.0, 3.0)
    return draw(S.any_array(elements)), p


@covers("Tensor.__pow__")
@given(power_by_number())
def test_pow_by_number(case):
    x, p = case
    check(lambda t: t ** p, x)


@covers("Tensor.__pow__")
@given(S.broadcast_pair(left=S.floats(0.2, 3.0), right=S.floats(-2.0, 2.0)))
def test_pow_by_tensor(pair):
    check(lambda a, b: a ** b, *pair)


@covers("Tensor.__rpow__")
@given(S.floats(0.2, 3.0), S.any_array(S.floats(-2.0, 2.0)))
def test_number_to_the_power_of_tensor(base, x):
    check(lambda t: base ** t, x)


# ---------------------------------------------------------------- matmul
@covers("Tensor.__matmul__")
@given(S.matmul_pair())
def test_matmul(pair):
    """1-D @ 1-D, 1-D @ 2-D, 2-D @ 1-D, 2-D @ 2-D and batched with broadcast batch axes."""
    check(lambda a, b: a @ b, *pair)


@covers("Tensor.__matmul__")
@given(S.batched_matmul_pair())
def test_batched_matmul(pair):
    check(lambda a, b: a @ b, *pair)


@covers("Tensor.__rmatmul__")
@given(S.matmul_pair())
def test_array_at_tensor(pair):
    a, b = pair
    check(lambda t: a @ t, b)       # ndarray @ Tensor: only the right operand is a Tensor


# ---------------------------------------------------------------- elementwise
@covers("Tensor.exp")
@given(S.any_array())
def test_exp(x):
    check(lambda t: t.exp(), x)


@covers("Tensor.expm1")
@given(S.any_array())
def test_expm1(x):
    check(lambda t: t.expm1(), x)


@covers("Tensor.log")
@given(S.any_array(S.floats(0.1, 5.0)))
def test_log(x):
    check(lambda t: t.log(), x)


@covers("Tensor.sqrt")
@given(S.any_array(S.floats(0.1, 5.0)))
def test_sqrt(x):
    check(lambda t: t.sqrt(), x)


@covers("Tensor.abs")
@given(S.any_array(S.away_from_zero(0.05, 3.0)))
def test_abs(x):
    check(lambda t: t.abs(), x)


@covers("Tensor.clip")
@given(S.clip_case())
def test_clip(case):
    x, lo, hi = case
    check(lambda t: t.clip(lo, hi), x)


@covers("Tensor.clip")
@given(S.clip_case(array_bounds=True), st.booleans())
def test_clip_with_array_bounds(case, as_tensors):
    x, lo, hi = case
    if as_tensors:
        lo = None if lo is None else Tensor(lo)
        hi = None if hi is None else Tensor(hi)
    check(lambda t: t.clip(lo, hi), x)


# ---------------------------------------------------------------- reductions
@covers("Tensor.sum")
@given(S.array_and_axis(), st.booleans())
def test_sum(case, keepdims):
    x, axis = case
    check(lambda t: t.sum(axis=axis, keepdims=keepdims), x)


@covers("Tensor.mean")
@given(S.array_and_axis(), st.booleans())
def test_mean(case, keepdims):
    x, axis = case
    check(lambda t: t.mean(axis=axis, keepdims=keepdims), x)


@st.composite
def distinct_array_and_axis(draw):
    """Distinct values on a 0.1 grid: the maximum is unique and 0.1 clear of the runner-up."""
    x = draw(hnp.arrays(np.float64, S.shapes(), elements=S.grid(), unique=True))
    if x.ndim == 0 or draw(st.booleans()):
        return x, None
    if draw(st.booleans()):
        return x, draw(st.integers(-x.ndim, x.ndim - 1))
    return x, draw(hnp.valid_tuple_axes(x.ndim, min_size=1))


@covers("Tensor.max")
@given(distinct_array_and_axis(), st.booleans())
def test_max(case, keepdims):
    x, axis = case
    check(lambda t: t.max(axis=axis, keepdims=keepdims), x)


def test_max_shares_the_gradient_among_ties():
    # not differentiable at a tie; the documented choice is an equal share
    x = leaf([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    x.max(axis=1).sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])


# ---------------------------------------------------------------- shape
@covers("Tensor.reshape")
@given(S.array_and_new_shape(), st.booleans())
def test_reshape(case, as_tuple):
    x, shape = case
    check(lambda t: t.reshape(shape) if as_tuple else t.reshape(*shape), x)


@covers("Tensor.transpose")
@given(S.array_and_permutation(), st.sampled_from(["tuple", "args", "default"]))
def test_transpose(case, form):
    x, axes = case
    if form == "tuple":
        check(lambda t: t.transpose(axes), x)
    elif form == "args":
        check(lambda t: t.transpose(*axes), x)
    else:
        check(lambda t: t.transpose(), x)


@covers("Tensor.T")
@given(S.any_array())
def test_T(x):
    check(lambda t: t.T, x)


@covers("Tensor.__getitem__")
@given(S.array_and_basic_index())
def test_getitem_basic(case):
    x, idx = case
    check(lambda t: t[idx], x)


@covers("Tensor.__getitem__")
@given(S.array_and_integer_index(), st.sampled_from(["array", "list", "tensor"]))
def test_getitem_integer_arrays_with_repeats(case, form):
    x, idx = case
    if form == "list":
        idx = tuple(i.tolist() for i in idx)
    elif form == "tensor":
        idx = tuple(Tensor(i) for i in idx)
    check(lambda t: t[idx], x)


@covers("Tensor.__getitem__")
@given(S.array_and_mixed_index())
def test_getitem_slice_and_integer_list(case):
    x, idx = case
    check(lambda t: t[idx], x)


@covers("Tensor.__getitem__")
@given(S.array_and_mask(), st.booleans())
def test_getitem_boolean_mask(case, as_tensor):
    x, mask = case
    m = Tensor(mask) if as_tensor else mask
    check(lambda t: t[m], x)


def test_getitem_repeated_index_accumulates():
    x = leaf([1.0, 2.0, 3.0])
    x[[0, 0, 2, 0]].sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 0.0, 1.0])


# ---------------------------------------------------------------- several tensors
@covers("tensor.concat")
@given(S.arrays_to_join(), st.booleans())
def test_concat(case, with_constant):
    arrays, axis = case
    if with_constant:   # a plain array among the tensors gets no gradient and changes nothing
        const = arrays[0] * 0.5
        check(lambda *ts: tg.concat([const, *ts], axis=axis), *arrays)
    else:
        check(lambda *ts: tg.concat(list(ts), axis=axis), *arrays)


@covers("tensor.stack")
@given(S.arrays_to_join(same_shape=True))
def test_stack(case):
    arrays, axis = case
    check(lambda *ts: tg.stack(list(ts), axis=axis), *arrays)


@covers("tensor.where")
@given(S.broadcast_pair(num_shapes=3), st.integers(0, 2**32 - 1))
def test_where(arrays, seed):
    a, b, c = arrays
    cond = np.random.default_rng(seed).random(c.shape) < 0.5
    check(lambda x, y: tg.where(cond, x, y), a, b)


@covers("tensor.where")
@given(S.any_array(), S.floats(), st.booleans(), st.booleans())
def test_where_with_a_number(x, c, number_left, cond_tensor):
    cond = x > 0
    cond = Tensor(cond) if cond_tensor else cond
    if number_left:
        check(lambda t: tg.where(cond, c, t), x)
    else:
        check(lambda t: tg.where(cond, t, c), x)


# ---------------------------------------------------------------- graph structure
@given(S.broadcast_pair())
def test_an_input_used_several_times_accumulates(pair):
    check(lambda x, y: (x * x + x * y - y / (1.0 + x * x)) * x, *pair)


def test_detach_stops_the_gradient():
    x = leaf([1.0, -2.0, 3.0])
    (x * x.detach()).sum().backward()      # d/dx of x * c with c held constant is c
    np.testing.assert_array_equal(x.grad, [1.0, -2.0, 3.0])


# ---------------------------------------------------------------- float32 stays float32
FLOAT32_CASES = {
    "add": lambda a, b: a + b, "number + x": lambda a, b: 2.0 + a, "sub": lambda a, b: a - b,
    "number - x": lambda a, b: 1.0 - a, "mul": lambda a, b: a * b, "div": lambda a, b: a / b,
    "number / x": lambda a, b: 1.0 / a, "x ** number": lambda a, b: a ** 2, "x ** y": lambda a, b: a ** b,
    "number ** x": lambda a, b: 2.0 ** a, "neg": lambda a, b: -a, "matmul": lambda a, b: a @ b.T,
    "exp": lambda a, b: a.exp(), "expm1": lambda a, b: a.expm1(), "log": lambda a, b: a.log(),
    "sqrt": lambda a, b: a.sqrt(), "abs": lambda a, b: a.abs(), "clip": lambda a, b: a.clip(0.5, 1.5),
    "clip by float64 arrays": lambda a, b: a.clip(np.zeros(3), np.ones(3)),
    "sum": lambda a, b: a.sum(axis=0), "mean": lambda a, b: a.mean(), "max": lambda a, b: a.max(axis=1),
    "reshape": lambda a, b: a.reshape(-1), "T": lambda a, b: a.T, "index": lambda a, b: a[[0, 0]],
    "mask": lambda a, b: a[a.data > 1], "concat": lambda a, b: tg.concat([a, b]),
    "stack": lambda a, b: tg.stack([a, b]), "where": lambda a, b: tg.where(a.data > 1, a, 0.0),
    "where, number first": lambda a, b: tg.where(a.data > 1, 1.0, b),
}


@pytest.mark.parametrize("name", sorted(FLOAT32_CASES))
def test_float32_stays_float32_in_values_and_gradients(name):
    a = Tensor(np.linspace(0.5, 2.0, 6).reshape(2, 3).astype(np.float32), requires_grad=True)
    b = Tensor(np.linspace(1.0, 2.0, 6).reshape(2, 3).astype(np.float32), requires_grad=True)
    out = FLOAT32_CASES[name](a, b)
    assert out.dtype == np.float32
    out.sum().backward()
    for t in (a, b):
        assert t.grad is None or t.grad.dtype == np.float32
