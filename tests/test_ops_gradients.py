"""Property: for every differentiable operation, autograd equals central differences; float32 stays float32.

The operations and their input domains are the rows of ``op_table.py``; ``test_gradient``
runs ``check`` on each differentiable row (and its forward against numpy where the row
gives a reference), ``test_float32`` runs it in float32, ``test_no_gradient`` checks the
rows without a gradient.  The special cases (ties, NaN, exact values) are tests of their own below.

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

float32 (``check_float32``): values and gradients of the same inputs (rounded to float32 first)
in float32 and in float64 agree within ``|f32 - f64| <= F32_RTOL * |f64| + F32_ATOL * (1 + max |f64|)``,
F32_RTOL = 1e-5 and F32_ATOL = 1e-6 (float32 carries about 7 digits; the absolute term, relative
to the largest element, allows for cancellation in sums), and every result is float32.
"""
import numpy as np
import pytest
from hypothesis import given

import tinygrad_rnn as tg
from tinygrad_rnn import Tensor

import strategies as S
from op_table import DIFFERENTIABLE, ROWS, Row, property_test

EPS, ATOL, RTOL = 1e-6, 1e-6, 1e-4
F32_RTOL, F32_ATOL = 1e-5, 1e-6
FLOAT32_EXAMPLES = 20

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



def same_as_reference(row, arrays, args):
    """The forward equals numpy's reference: to the last bit (NaN equal to NaN), in shape and dtype as
    well, or within the row's ``reference_tol``."""
    got = row.fn(*[Tensor(a) for a in arrays], **args).data
    want = np.asarray(row.reference(*arrays, **args))
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype, want.shape, want.dtype)
    if row.reference_tol is None:
        assert np.array_equal(got, want, equal_nan=True), (got, want)
    else:
        rtol, atol = row.reference_tol
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def gradient_check(row, arrays, args, seed):
    if row.reference is not None:
        same_as_reference(row, arrays, args)
    check(row.bound(args), *arrays, seed=seed)


def gradient_test(row, **settings_kw):
    """The hypothesis test of ``row``'s gradient (``test_mutation.py`` runs it with a backward broken)."""
    return property_test(row, gradient_check, "test_gradient", **settings_kw)


def ids(rows):
    return [row.name for row in rows]


@pytest.mark.parametrize("row", DIFFERENTIABLE, ids=ids(DIFFERENTIABLE))
def test_gradient(row):
    gradient_test(row)()


def check_float32(row, arrays, args, seed):
    """float32 inputs give float32 values and gradients, equal to the float64 ones within F32 tolerance.
    The row's other arguments keep their own dtype (float64 constants do not promote a float32 graph),
    except where the row says that they promote, as numpy's do: those are passed in float32 too."""
    rounded = [np.asarray(a, dtype=np.float32) for a in arrays]
    if row.constants_promote:
        args = {k: v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype == np.float64 else v
                for k, v in args.items()}
    v = np.random.default_rng(seed).standard_normal(row.bound(args)(*[Tensor(a) for a in rounded]).shape)
    results = {}
    for dtype in (np.float32, np.float64):
        xs = [Tensor(a.astype(dtype), requires_grad=True) for a in rounded]
        out = row.fn(*xs, **args)
        assert out.dtype == dtype, f"{row.name}: {dtype.__name__} inputs gave a {out.dtype} result"
        out.backward(grad=v.astype(dtype))
        grads = [np.zeros(x.shape, dtype) if x.grad is None else x.grad for x in xs]
        assert all(g.dtype == dtype for g in grads), (row.name, [g.dtype for g in grads])
        results[dtype] = [out.data, *grads]
    for i, (r32, r64) in enumerate(zip(results[np.float32], results[np.float64])):
        scale = 1.0 + np.abs(r64).max(initial=0.0)
        np.testing.assert_allclose(r32, r64, rtol=F32_RTOL, atol=F32_ATOL * scale,
                                   err_msg=f"{row.name}: float32 vs float64, "
                                           + ("value" if i == 0 else f"gradient {i - 1}"))


FLOAT32_ROWS = [row for row in DIFFERENTIABLE if np.float32 in row.dtypes]


@pytest.mark.parametrize("row", FLOAT32_ROWS, ids=ids(FLOAT32_ROWS))
def test_float32(row):
    property_test(row, check_float32, "test_float32", max_examples=FLOAT32_EXAMPLES)()


def test_check_float32_fails_on_a_promoted_result_and_on_a_float32_only_error():
    """Controls: a result promoted to float64, and a gradient wrong by 0.1 % in float32 only, both fail."""
    promoted = Row("promoted", (), lambda t: t * np.ones(1), None)
    with pytest.raises(AssertionError, match="float32 inputs gave a float64 result"):
        check_float32(promoted, [np.array([0.5, 2.0])], {}, seed=0)

    def off_in_float32(t):
        out = t * 1.0
        right = out._backward
        if t.dtype == np.float32:
            out._backward = lambda g: tuple(None if pg is None else pg * np.float32(1.001) for pg in right(g))
        return out
    with pytest.raises(AssertionError, match="float32 vs float64, gradient 0"):
        check_float32(Row("off", (), off_in_float32, None), [np.array([0.5, 2.0])], {}, seed=0)


def check_no_gradient(row, arrays, args, seed):
    """A result that carries no gradient, whatever its inputs need; its value is numpy's."""
    same_as_reference(row, arrays, args)
    out = row.fn(*[leaf(a) for a in arrays], **args)
    assert isinstance(out, Tensor) and not out.requires_grad and out.is_leaf, row.name


NO_GRADIENT = [row for row in ROWS if not row.differentiable]


@pytest.mark.parametrize("row", NO_GRADIENT, ids=ids(NO_GRADIENT))
def test_no_gradient(row):
    property_test(row, check_no_gradient, "test_no_gradient", max_examples=FLOAT32_EXAMPLES)()


# ---------------------------------------------------------------- special cases the table's domains avoid
def test_max_shares_the_gradient_among_ties():
    # not differentiable at a tie; the documented choice is an equal share
    x = leaf([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    x.max(axis=1).sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])


def test_min_shares_the_gradient_among_ties_and_gives_it_to_a_nan_as_max_does():
    x = leaf([[1.0, -3.0, -3.0], [2.0, 2.0, 2.0]])
    x.min(axis=1).sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    for op in ("min", "max"):
        x = leaf([1.0, np.nan, -1.0])
        y = getattr(x, op)()
        y.backward()
        assert np.isnan(y.item()) and x.grad.tolist() == [0.0, 1.0, 0.0], op


def test_maximum_and_minimum_split_a_tie_equally_and_give_a_nan_its_gradient():
    for op, reference, picked_a in [(tg.maximum, np.maximum, 1.0), (tg.minimum, np.minimum, 0.0)]:
        a, b = leaf([1.0, 2.0, np.nan, np.nan, 5.0]), leaf([1.0, np.nan, 3.0, np.nan, 4.0])
        y = op(a, b)
        assert np.array_equal(y.data, reference(a.data, b.data), equal_nan=True)
        y.backward(np.ones(5))
        assert a.grad.tolist() == [0.5, 0.0, 1.0, 0.5, picked_a], (op.__name__, a.grad)
        assert b.grad.tolist() == [0.5, 1.0, 0.0, 0.5, 1.0 - picked_a], (op.__name__, b.grad)


def test_getitem_repeated_index_accumulates():
    x = leaf([1.0, 2.0, 3.0])
    x[[0, 0, 2, 0]].sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 0.0, 1.0])


def test_log1p_is_exact_near_zero():
    x = leaf(1e-300)
    y = x.log1p()
    y.backward()
    assert y.item() == 1e-300 and x.grad == 1.0


@given(S.broadcast_source_and_target(), S.seeds())
def test_sum_to_and_broadcast_to_are_adjoint(shapes, seed):
    """<broadcast_to(u), v> == <u, sum_to(v)> for any u and v: each is the other's transpose."""
    source, target = shapes
    rng = np.random.default_rng(seed)
    u, v = rng.standard_normal(source), rng.standard_normal(target)
    left = (Tensor(u).broadcast_to(target).data * v).sum()
    right = (u * Tensor(v).sum_to(source).data).sum()
    np.testing.assert_allclose(left, right, rtol=1e-12, atol=1e-12 * (1 + abs(right)))


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
