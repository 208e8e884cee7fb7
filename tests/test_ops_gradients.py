"""Property: for every differentiable Tensor operation, autograd equals central differences.

How each example is checked (``check``): the operation's output ``y = fn(x0, x1, ...)``
gets a random cotangent ``v`` (standard normal, the output's shape, seeded by
hypothesis), autograd computes ``y.backward(grad=v)``, and
``tinygrad_rnn.numerical_grad`` differentiates the scalar ``sum(fn(...) * v)`` by
central differences.  Both are vector-Jacobian products, so every output element
takes part with a different weight and ``backward(grad=...)`` is exercised as well.

Tolerances, float64: an element passes when
``|autograd - numeric| <= ATOL + RTOL * |numeric|`` with step ``EPS = 1e-6``,
``ATOL = 1e-6`` and ``RTOL = 1e-4`` (the ``gradcheck`` defaults).  Inputs have at
most 3 axes of at most 3 elements and magnitudes of at most ~30, so the
finite-difference error is far below these tolerances, and a gradient that is off
by 0.1 % fails (``test_mutation.py`` shows that it does).

``@covers`` records which public operations a test differentiates
(``test_public_ops_covered.py`` fails when a public operation has none).
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import tinygrad_rnn as tg
from tinygrad_rnn import Tensor

import strategies as S
from strategies import covers

EPS, ATOL, RTOL = 1e-6, 1e-6, 1e-4

def leaf(a, name=None):
    return Tensor(np.array(a, dtype=np.float64), requires_grad=True, name=name)


def check(fn, *arrays, seed=0):
    """Autograd's vector-Jacobian product of ``fn`` at ``arrays`` equals the central-difference one."""
    xs = [leaf(a, f"x{i}") for i, a in enumerate(arrays)]
    out = fn(*xs)
    assert isinstance(out, Tensor) and out.dtype == np.float64
    assert out.requires_grad, "the result of an operation on tensors that require grad must require grad"
    v = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(grad=v)
    analytic = [np.zeros_like(x.data) if x.grad is None else x.grad for x in xs]
    probes = [leaf(a) for a in arrays]   # fresh leaves: perturbed in place by numerical_grad
    numeric = tg.numerical_grad(lambda *ts: (fn(*ts) * v).sum(), *probes, eps=EPS)
    assert len(numeric) == len(xs)
    for x, a, n in zip(xs, analytic, numeric):
        assert a.shape == x.shape and a.dtype == np.float64, (x.name, a.shape, a.dtype, x.shape)
        np.testing.assert_allclose(a, n, rtol=RTOL, atol=ATOL,
                                   err_msg=f"gradient of {x.name} (shape {x.shape}): autograd vs numeric")


# ---------------------------------------------------------------- arithmetic
@covers("Tensor.__add__")
@given(S.broadcast_pair(), S.seeds())
def test_add(pair, seed):
    check(lambda a, b: a + b, *pair, seed=seed)


@covers("Tensor.__sub__")
@given(S.broadcast_pair(), S.seeds())
def test_sub(pair, seed):
    check(lambda a, b: a - b, *pair, seed=seed)


@covers("Tensor.__mul__")
@given(S.broadcast_pair(), S.seeds())
def test_mul(pair, seed):
    check(lambda a, b: a * b, *pair, seed=seed)


@covers("Tensor.__truediv__")
@given(S.broadcast_pair(right=S.away_from_zero(0.5, 3.0)), S.seeds())
def test_div(pair, seed):
    check(lambda a, b: a / b, *pair, seed=seed)


@covers("Tensor.__neg__")
@given(S.any_array(), S.seeds())
def test_neg(x, seed):
    check(lambda t: -t, x, seed=seed)


@st.composite
def number_power(draw):
    """An exponent and a base that suits it: fractional powers need x > 0, negative ones x != 0."""
    p = draw(st.sampled_from([2.0, 0.0, 1.0, 3.0, -1.0, -2.0, 0.5, 1.5, -0.5, 2]))
    if p != int(p):
        elements = S.floats(0.2, 3.0)
    elif p == 0:   # x ** 0: 0 itself, or bases not so tiny that x ** -2 overflows in the second derivative
        elements = st.one_of(st.just(0.0), S.away_from_zero(1e-3, 3.0))
    elif p < 0:
        elements = S.away_from_zero(0.3, 3.0)
    else:
        elements = S.floats(-3.0, 3.0)
    return draw(S.any_array(elements)), p


@covers("Tensor.__pow__")
@given(number_power(), S.seeds())
def test_pow_by_number(case, seed):
    x, p = case
    check(lambda t: t ** p, x, seed=seed)


@covers("Tensor.__pow__")
@given(S.broadcast_pair(left=S.floats(0.2, 3.0), right=S.floats(-2.0, 2.0)), S.seeds())
def test_pow_by_tensor(pair, seed):
    check(lambda a, b: a ** b, *pair, seed=seed)


@covers("Tensor.__rpow__")
@given(S.floats(0.2, 3.0), S.any_array(S.floats(-2.0, 2.0)), S.seeds())
def test_rpow_number_to_a_tensor_power(base, x, seed):
    check(lambda t: base ** t, x, seed=seed)


# a number (or a constant numpy array) on either side of the operator; the left-hand forms are a
# test of their own so that each reflected method gets a quarter of the examples
REFLECTED = {"c + x": lambda c, t: c + t, "c - x": lambda c, t: c - t,
             "c * x": lambda c, t: c * t, "c / x": lambda c, t: c / t}
CONSTANT_RIGHT = {"x + c": lambda c, t: t + c, "x - c": lambda c, t: t - c,
                  "x * c": lambda c, t: t * c, "x / c": lambda c, t: t / c}


@covers("Tensor.__radd__", "Tensor.__rsub__", "Tensor.__rmul__", "Tensor.__rtruediv__")
@given(S.any_array(S.away_from_zero(0.5, 3.0)), S.away_from_zero(0.5, 3.0), st.sampled_from(sorted(REFLECTED)),
       st.booleans(), S.seeds())
def test_reflected_with_a_number_or_array_on_the_left(x, c, form, as_array, seed):
    left = np.full(x.shape[-1:], c) if as_array else c   # an ndarray on the left takes the reflected path too
    check(lambda t: REFLECTED[form](left, t), x, seed=seed)


@given(S.any_array(S.away_from_zero(0.5, 3.0)), S.away_from_zero(0.5, 3.0), st.sampled_from(sorted(CONSTANT_RIGHT)),
       st.booleans(), S.seeds())
def test_a_number_or_array_on_the_right(x, c, form, as_array, seed):
    right = np.full(x.shape[-1:], c) if as_array else c
    check(lambda t: CONSTANT_RIGHT[form](right, t), x, seed=seed)


# ---------------------------------------------------------------- matmul
@covers("Tensor.__matmul__")
@given(S.matmul_pair(), S.seeds())
def test_matmul(pair, seed):
    """1-D @ 1-D, 1-D @ 2-D, 2-D @ 1-D, 2-D @ 2-D and batched with broadcast batch axes."""
    check(lambda a, b: a @ b, *pair, seed=seed)


@covers("Tensor.__matmul__")
@given(S.batched_matmul_pair(), S.seeds())
def test_matmul_batched_and_broadcast(pair, seed):
    check(lambda a, b: a @ b, *pair, seed=seed)


@covers("Tensor.__rmatmul__")
@given(S.matmul_pair(), S.seeds())
def test_rmatmul_array_at_tensor(pair, seed):
    a, b = pair
    check(lambda t: a @ t, b, seed=seed)


# ---------------------------------------------------------------- elementwise
@covers("Tensor.exp")
@given(S.any_array(), S.seeds())
def test_exp(x, seed):
    check(lambda t: t.exp(), x, seed=seed)


@covers("Tensor.expm1")
@given(S.any_array(), S.seeds())
def test_expm1(x, seed):
    check(lambda t: t.expm1(), x, seed=seed)


@covers("Tensor.log")
@given(S.any_array(S.floats(0.1, 5.0)), S.seeds())
def test_log(x, seed):
    check(lambda t: t.log(), x, seed=seed)


@covers("Tensor.sqrt")
@given(S.any_array(S.floats(0.1, 5.0)), S.seeds())
def test_sqrt(x, seed):
    check(lambda t: t.sqrt(), x, seed=seed)


@covers("Tensor.abs")
@given(S.any_array(S.away_from_zero(0.05, 3.0)), S.seeds())
def test_abs(x, seed):
    check(lambda t: t.abs(), x, seed=seed)


@covers("Tensor.clip")
@given(S.clip_case(), S.seeds())
def test_clip_number_bounds_one_or_both_sided(case, seed):
    x, lo, hi = case
    check(lambda t: t.clip(lo, hi), x, seed=seed)


@covers("Tensor.clip")
@given(S.clip_case(array_bounds=True), st.booleans(), S.seeds())
def test_clip_array_bounds(case, as_tensors, seed):
    x, lo, hi = case
    if as_tensors:
        lo = None if lo is None else Tensor(lo)
        hi = None if hi is None else Tensor(hi)
    check(lambda t: t.clip(lo, hi), x, seed=seed)


# ---------------------------------------------------------------- reductions
@covers("Tensor.sum")
@given(S.array_and_axis(), st.booleans(), S.seeds())
def test_sum(case, keepdims, seed):
    x, axis = case
    check(lambda t: t.sum(axis=axis, keepdims=keepdims), x, seed=seed)


@covers("Tensor.mean")
@given(S.array_and_axis(), st.booleans(), S.seeds())
def test_mean(case, keepdims, seed):
    x, axis = case
    check(lambda t: t.mean(axis=axis, keepdims=keepdims), x, seed=seed)


@covers("Tensor.max")
@given(S.distinct_array_and_axis(), st.booleans(), S.seeds())
def test_max(case, keepdims, seed):
    x, axis = case
    check(lambda t: t.max(axis=axis, keepdims=keepdims), x, seed=seed)


def test_max_shares_the_gradient_among_ties():
    # not differentiable at a tie; the documented choice is an equal share
    x = leaf([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    x.max(axis=1).sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])


# ---------------------------------------------------------------- shape
@covers("Tensor.reshape")
@given(S.array_and_new_shape(), st.booleans(), S.seeds())
def test_reshape(case, as_tuple, seed):
    x, shape = case
    check((lambda t: t.reshape(shape)) if as_tuple else (lambda t: t.reshape(*shape)), x, seed=seed)


@covers("Tensor.transpose")
@given(S.array_and_permutation(), st.sampled_from(["tuple", "args", "none"]), S.seeds())
def test_transpose(case, form, seed):
    x, axes = case
    fn = {"tuple": lambda t: t.transpose(axes), "args": lambda t: t.transpose(*axes),
          "none": lambda t: t.transpose()}[form]
    check(fn, x, seed=seed)


@covers("Tensor.T")
@given(S.any_array(), S.seeds())
def test_T(x, seed):
    check(lambda t: t.T, x, seed=seed)


@covers("Tensor.__getitem__")
@given(S.array_and_basic_index(), S.seeds())
def test_getitem_basic_slices(case, seed):
    x, idx = case
    check(lambda t: t[idx], x, seed=seed)


@covers("Tensor.__getitem__")
@given(S.array_and_integer_index(), st.sampled_from(["array", "list", "tensor"]), S.seeds())
def test_getitem_integer_arrays_with_repeated_indices(case, form, seed):
    x, idx = case
    if form == "list":
        idx = tuple(i.tolist() for i in idx)
    elif form == "tensor":
        idx = tuple(Tensor(i) for i in idx)
    check(lambda t: t[idx], x, seed=seed)


@covers("Tensor.__getitem__")
@given(S.array_and_mixed_index(), S.seeds())
def test_getitem_slice_with_integer_list(case, seed):
    x, idx = case
    check(lambda t: t[idx], x, seed=seed)


@covers("Tensor.__getitem__")
@given(S.array_and_mask(), st.booleans(), S.seeds())
def test_getitem_boolean_mask(case, as_tensor, seed):
    x, mask = case
    m = Tensor(mask) if as_tensor else mask
    check(lambda t: t[m], x, seed=seed)


@covers("Tensor.__getitem__")
@given(S.any_array(max_dims=1), st.sampled_from(["()", "...", "None", "int", "-1"]), S.seeds())
def test_getitem_zero_d(x, form, seed):
    """Indexing a 0-d tensor, and integer indexing that yields a 0-d result."""
    if x.ndim == 0:
        idx = {"()": (), "...": Ellipsis, "None": None}.get(form, ())
    else:
        idx = {"int": 0, "-1": -1}.get(form, x.shape[0] - 1)
    check(lambda t: t[idx], x, seed=seed)


def test_getitem_repeated_index_accumulates():
    x = leaf([1.0, 2.0, 3.0])
    x[[0, 0, 2, 0]].sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 0.0, 1.0])


# ---------------------------------------------------------------- several tensors
@covers("tensor.concat")
@given(S.arrays_to_join(), st.booleans(), S.seeds())
def test_concat(case, with_constant, seed):
    arrays, axis = case
    if with_constant:   # a plain array among the tensors takes no gradient
        const = arrays[0] * 0.5
        check(lambda *ts: tg.concat([const, *ts], axis=axis), *arrays, seed=seed)
    else:
        check(lambda *ts: tg.concat(list(ts), axis=axis), *arrays, seed=seed)


@covers("tensor.stack")
@given(S.arrays_to_join(same_shape=True), S.seeds())
def test_stack(case, seed):
    arrays, axis = case
    check(lambda *ts: tg.stack(list(ts), axis=axis), *arrays, seed=seed)


@covers("tensor.where")
@given(S.broadcast_pair(num_shapes=3), S.seeds(), st.booleans())
def test_where(arrays, seed, cond_tensor):
    a, b, c = arrays
    cond = np.random.default_rng(seed + 1).random(c.shape) < 0.5   # the condition broadcasts too
    cond = Tensor(cond) if cond_tensor else cond
    check(lambda x, y: tg.where(cond, x, y), a, b, seed=seed)


@covers("tensor.where")
@given(S.any_array(), S.floats(), st.booleans(), st.booleans(), S.seeds())
def test_where_with_a_number(x, c, number_first, cond_tensor, seed):
    cond = Tensor(x > 0) if cond_tensor else x > 0
    check((lambda t: tg.where(cond, c, t)) if number_first else (lambda t: tg.where(cond, t, c)), x, seed=seed)


# ---------------------------------------------------------------- compositions of operations
@given(S.broadcast_pair(right=S.away_from_zero(0.5, 2.0)), S.seeds())
def test_an_input_used_many_times_accumulates(pair, seed):
    check(lambda x, y: (x * x + x * y - y / (1.0 + x * x)) * x - (x @ x.T if x.ndim == 2 else x).sum() / y,
          *pair, seed=seed)


def test_detach_stops_the_gradient():
    x = leaf([1.0, -2.0, 3.0])
    (x * x.detach()).sum().backward()      # d/dx of x * c with c held constant is c
    np.testing.assert_array_equal(x.grad, [1.0, -2.0, 3.0])


def test_check_itself_fails_on_a_wrong_gradient():
    """A control: ``check`` is not vacuous (a node whose backward is twice too large fails it)."""
    def doubled(t):
        out = t * 1.0
        right = out._backward
        out._backward = lambda g: right(2 * g)
        return out
    try:
        check(doubled, np.array([1.0, -2.0]))
    except AssertionError as e:
        assert "autograd vs numeric" in str(e)
    else:
        raise AssertionError("check passed a gradient that is twice too large")


# ---------------------------------------------------------------- sin, cos, log1p, min, shapes, maximum, minimum
def same_as_numpy(fn, reference, *arrays):
    """The forward equals numpy's to the last bit (NaN equal to NaN), in shape and dtype as well."""
    got = fn(*[Tensor(a) for a in arrays]).data
    want = np.asarray(reference(*arrays))
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype, want.shape, want.dtype)
    assert np.array_equal(got, want, equal_nan=True), (got, want)


@covers("Tensor.sin")
@given(S.any_array(S.floats(-10.0, 10.0)), S.seeds())
def test_sin(x, seed):
    same_as_numpy(lambda t: t.sin(), np.sin, x)
    check(lambda t: t.sin(), x, seed=seed)


@covers("Tensor.cos")
@given(S.any_array(S.floats(-10.0, 10.0)), S.seeds())
def test_cos(x, seed):
    same_as_numpy(lambda t: t.cos(), np.cos, x)
    check(lambda t: t.cos(), x, seed=seed)


@covers("Tensor.log1p")
@given(S.any_array(S.floats(-0.5, 5.0)), S.seeds())
def test_log1p(x, seed):
    same_as_numpy(lambda t: t.log1p(), np.log1p, x)
    check(lambda t: t.log1p(), x, seed=seed)


def test_log1p_is_exact_near_zero():
    x = leaf(1e-300)
    y = x.log1p()
    y.backward()
    assert y.item() == 1e-300 and x.grad == 1.0


@covers("Tensor.min")
@given(S.distinct_array_and_axis(), st.booleans(), S.seeds())
def test_min(case, keepdims, seed):
    x, axis = case
    same_as_numpy(lambda t: t.min(axis=axis, keepdims=keepdims), lambda a: a.min(axis=axis, keepdims=keepdims), x)
    check(lambda t: t.min(axis=axis, keepdims=keepdims), x, seed=seed)


def test_min_shares_the_gradient_among_ties_and_gives_it_to_a_nan_as_max_does():
    x = leaf([[1.0, -3.0, -3.0], [2.0, 2.0, 2.0]])
    x.min(axis=1).sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    for op in ("min", "max"):
        x = leaf([1.0, np.nan, -1.0])
        y = getattr(x, op)()
        y.backward()
        assert np.isnan(y.item()) and x.grad.tolist() == [0.0, 1.0, 0.0], op


@covers("Tensor.flatten")
@given(S.any_array(), S.seeds())
def test_flatten(x, seed):
    same_as_numpy(lambda t: t.flatten(), lambda a: a.flatten(), x)
    check(lambda t: t.flatten(), x, seed=seed)


@covers("Tensor.squeeze")
@given(S.array_and_squeeze_axis(), S.seeds())
def test_squeeze(case, seed):
    x, axis = case
    same_as_numpy(lambda t: t.squeeze(axis), lambda a: np.squeeze(a, axis), x)
    check(lambda t: t.squeeze(axis), x, seed=seed)


@covers("Tensor.unsqueeze")
@given(S.array_and_new_axis(), S.seeds())
def test_unsqueeze(case, seed):
    x, axis = case
    same_as_numpy(lambda t: t.unsqueeze(axis), lambda a: np.expand_dims(a, axis), x)
    check(lambda t: t.unsqueeze(axis), x, seed=seed)


@covers("Tensor.broadcast_to")
@given(S.broadcast_source_and_target(), st.data())
def test_broadcast_to(shapes, data):
    source, target = shapes
    x, seed = data.draw(S.arrays(source)), data.draw(S.seeds())
    same_as_numpy(lambda t: t.broadcast_to(target), lambda a: np.broadcast_to(a, target), x)
    check(lambda t: t.broadcast_to(target), x, seed=seed)


@covers("Tensor.sum_to")
@given(S.broadcast_source_and_target(), st.data())
def test_sum_to(shapes, data):
    """The reference: sum over the leading axes broadcasting adds, then over the widened size-1 axes."""
    source, target = shapes
    x, seed = data.draw(S.arrays(target)), data.draw(S.seeds())

    def reference(a):
        a = a.sum(axis=tuple(range(len(target) - len(source))))
        return a.sum(axis=tuple(i for i, n in enumerate(source) if n == 1), keepdims=True).reshape(source)
    same_as_numpy(lambda t: t.sum_to(source), reference, x)
    check(lambda t: t.sum_to(source), x, seed=seed)


@given(S.broadcast_source_and_target(), S.seeds())
def test_sum_to_and_broadcast_to_are_adjoint(shapes, seed):
    """<broadcast_to(u), v> == <u, sum_to(v)> for any u and v: each is the other's transpose."""
    source, target = shapes
    rng = np.random.default_rng(seed)
    u, v = rng.standard_normal(source), rng.standard_normal(target)
    left = (Tensor(u).broadcast_to(target).data * v).sum()
    right = (u * Tensor(v).sum_to(source).data).sum()
    np.testing.assert_allclose(left, right, rtol=1e-12, atol=1e-12 * (1 + abs(right)))


@covers("tensor.maximum")
@given(S.untied_pair(), S.seeds())
def test_maximum(pair, seed):
    same_as_numpy(tg.maximum, np.maximum, *pair)
    check(tg.maximum, *pair, seed=seed)


@covers("tensor.minimum")
@given(S.untied_pair(), S.seeds())
def test_minimum(pair, seed):
    same_as_numpy(tg.minimum, np.minimum, *pair)
    check(tg.minimum, *pair, seed=seed)


@covers("tensor.maximum", "tensor.minimum")
@given(S.any_array(S.grid(-30, 30, 0.1)), S.floats(-3.0, 3.0).map(lambda c: round(c, 1) + 0.05),
       st.sampled_from(["maximum", "minimum"]), st.booleans(), S.seeds())
def test_maximum_and_minimum_with_a_number(x, c, name, number_first, seed):
    op = getattr(tg, name)
    check((lambda t: op(c, t)) if number_first else (lambda t: op(t, c)), x, seed=seed)


def test_maximum_and_minimum_split_a_tie_equally_and_give_a_nan_its_gradient():
    for op, reference, picked_a in [(tg.maximum, np.maximum, 1.0), (tg.minimum, np.minimum, 0.0)]:
        a, b = leaf([1.0, 2.0, np.nan, np.nan, 5.0]), leaf([1.0, np.nan, 3.0, np.nan, 4.0])
        y = op(a, b)
        assert np.array_equal(y.data, reference(a.data, b.data), equal_nan=True)
        y.backward(np.ones(5))
        assert a.grad.tolist() == [0.5, 0.0, 1.0, 0.5, picked_a], (op.__name__, a.grad)
        assert b.grad.tolist() == [0.5, 1.0, 0.0, 0.5, 1.0 - picked_a], (op.__name__, b.grad)


# ---------------------------------------------------------------- float32 graphs stay float32
FLOAT32_OPS = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b, "div": lambda a, b: a / b,
    "pow": lambda a, b: a ** b, "pow by number": lambda a, b: a ** 2 + a ** 0.5,
    "reflected": lambda a, b: 2.0 ** a + (1 - a) * 3 / b, "number + x": lambda a, b: 2.0 + a,
    "neg": lambda a, b: -a,
    "matmul": lambda a, b: a @ b.T, "matmul 1-D": lambda a, b: a[0] @ b.T,
    "exp": lambda a, b: a.exp(), "expm1": lambda a, b: a.expm1(), "log": lambda a, b: a.log(),
    "sqrt": lambda a, b: a.sqrt(), "abs": lambda a, b: (a - 1.0).abs(), "clip": lambda a, b: a.clip(0.6, 0.9),
    "clip one-sided": lambda a, b: a.clip(None, 0.8),
    "clip by float64 arrays": lambda a, b: a.clip(np.zeros(3), np.full(3, 0.75)), "sum": lambda a, b: a.sum(axis=0),
    "mean": lambda a, b: a.mean(axis=(0, 1), keepdims=True), "max": lambda a, b: a.max(axis=1),
    "reshape": lambda a, b: a.reshape(3, 2), "transpose": lambda a, b: a.transpose(1, 0), "T": lambda a, b: a.T,
    "getitem": lambda a, b: a[[0, 0, 1], 1:], "mask": lambda a, b: a[a.data > 0.7],
    "concat": lambda a, b: tg.concat([a, b], axis=1), "stack": lambda a, b: tg.stack([a, b], axis=-1),
    "where": lambda a, b: tg.where(a.data > 0.7, a, b),
    "where with a number": lambda a, b: tg.where(a.data > 0.7, 0.0, b),
    "sin": lambda a, b: a.sin(), "cos": lambda a, b: a.cos(), "log1p": lambda a, b: a.log1p(),
    "min": lambda a, b: a.min(axis=0), "flatten": lambda a, b: a.flatten() * b.flatten(),
    "squeeze": lambda a, b: a[:1].squeeze(0), "unsqueeze": lambda a, b: a.unsqueeze(1),
    "broadcast_to": lambda a, b: a[0].broadcast_to((4, 2, 3)), "sum_to": lambda a, b: b.sum_to((1, 3)),
    "maximum": lambda a, b: tg.maximum(a, b[0] - 0.3), "minimum": lambda a, b: tg.minimum(0.7, a),
}


@pytest.mark.parametrize("name", sorted(FLOAT32_OPS))
def test_float32_values_and_gradients_stay_float32_and_match_float64(name):
    """A float32 graph (Python numbers included) stays float32, and its gradients are the float64
    ones rounded (within 1e-5 relative: float32 has about 7 digits)."""
    fn = FLOAT32_OPS[name]
    base = np.arange(6.0).reshape(2, 3) * 0.1 + 0.5
    grads = {}
    for dtype in (np.float32, np.float64):
        a = Tensor(base.astype(dtype), requires_grad=True)
        b = Tensor((base + 0.5).astype(dtype), requires_grad=True)
        out = fn(a, b)
        assert out.dtype == dtype, (name, out.dtype)
        out.backward(np.ones(out.shape, dtype=dtype))
        for t in (a, b):
            assert t.grad is None or t.grad.dtype == dtype, (name, t.grad.dtype)
        grads[dtype] = [np.zeros(6) if t.grad is None else t.grad for t in (a, b)]
    for g32, g64 in zip(grads[np.float32], grads[np.float64]):
        np.testing.assert_allclose(g32, g64, rtol=1e-5, atol=1e-6)
