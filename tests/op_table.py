"""The table of operations that the generic tests read: one row per way of calling a public operation.

A row says what to call and on what:

- ``name``: the row's id (``"sin"``, ``"getitem_mask"``);
- ``covers``: the public operations it calls (``"Tensor.sin"``, ``"tensor.where"``, ``"functional.tanh"``);
- ``fn(*tensors, **args)``: the operation applied to Tensors, ``args`` holding everything else
  (axes, indices, constants, a flag choosing between equivalent spellings).  It looks the
  operation up when called (``tg.maximum(a, b)``, not ``tg.maximum`` itself), so that
  ``test_mutation.py`` can swap it for a broken one;
- ``inputs``: a hypothesis strategy of ``(arrays, args)``, the arrays float64.  The domain keeps
  clear of kinks, poles and ties (relu and abs away from 0, maxima unique, clip bounds off the
  values), so first and second derivatives exist there and finite differences are accurate;
- ``reference(*arrays, **args)``: numpy's value, where the row checks the forward as well, equal
  to the last bit unless ``reference_tol = (rtol, atol)``;
- ``dtypes``: the float dtypes it runs in (float32 rows: ``test_ops_gradients.test_float32``);
  ``constants_promote``: a float64 array among ``args`` makes the result float64, as in numpy
  (``+ - * / @`` and ``concat``), so the float32 check passes such constants in float32; the
  other rows keep float32 against float64 constants (clip bounds, targets of the losses);
- ``differentiable``: False for comparisons and ``detach`` (their results carry no gradient);
- ``traceable``: ``tinygrad_rnn.trace`` replays it (``test_tracing.test_each_operation_replays_exactly``).

Readers: ``test_ops_gradients.py`` (float64 gradients against central differences, float32),
``test_second_order.py``, ``test_tracing.py``, ``test_mutation.py`` and ``test_public_ops_covered.py``.
A new public operation needs one row here; ``property_test`` turns a row and a check into a
hypothesis test.
"""
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_rnn as tg
from tinygrad_rnn import Tensor
from tinygrad_rnn import functional as F

import strategies as S

BOTH = (np.float64, np.float32)
REL = 1e-12                          # the compositions' forward against numpy, relative
TINY = float(np.finfo(np.float64).tiny)


@dataclass(frozen=True)
class Row:
    name: str
    covers: tuple
    fn: Callable
    inputs: st.SearchStrategy
    reference: Callable = None
    reference_tol: tuple = None
    dtypes: tuple = BOTH
    constants_promote: bool = False
    differentiable: bool = True
    traceable: bool = True

    def bound(self, args):
        """The operation with its non-Tensor arguments filled in: a function of Tensors only."""
        return lambda *ts: self.fn(*ts, **args)


def case(arrays, **args):
    """A strategy of ``(arrays, args)``: ``arrays`` a strategy of one array or of a tuple of them,
    each keyword a strategy of that argument."""
    as_tuple = arrays.map(lambda a: a if isinstance(a, tuple) else (a,))
    return st.tuples(as_tuple, st.fixed_dictionaries(args))


@st.composite
def _unpacked(draw, strategy, names):
    """``strategy`` draws ``(array, arg, ...)``; the arguments get the ``names``."""
    array, *rest = draw(strategy)
    return (array,), dict(zip(names, rest))


def cases(strategy, *names, **more):
    """``(arrays, args)`` from a strategy of ``(array, arg, ...)`` tuples, the arguments called ``names``,
    with further keyword arguments drawn from the strategies ``more``."""
    base = _unpacked(strategy, names)
    if not more:
        return base
    return st.tuples(base, st.fixed_dictionaries(more)).map(lambda c: (c[0][0], {**c[0][1], **c[1]}))


# ---------------------------------------------------------------- domains the rows share
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


@st.composite
def where_case(draw):
    """Three broadcasting shapes: two arrays and a boolean condition, an array or a Tensor."""
    a, b, c = draw(S.broadcast_pair(num_shapes=3))
    cond = draw(hnp.arrays(np.bool_, c.shape))
    return (a, b), {"cond": Tensor(cond) if draw(st.booleans()) else cond}


@st.composite
def where_number_case(draw):
    x = draw(S.any_array())
    cond = x > 0
    return (x,), {"cond": Tensor(cond) if draw(st.booleans()) else cond, "c": draw(S.floats()),
                  "number_first": draw(st.booleans())}


@st.composite
def integer_index_case(draw):
    x, idx = draw(S.array_and_integer_index())
    form = draw(st.sampled_from(["array", "list", "tensor"]))
    if form == "list":
        idx = tuple(i.tolist() for i in idx)
    elif form == "tensor":
        idx = tuple(Tensor(i) for i in idx)
    return (x,), {"idx": idx}


@st.composite
def mask_case(draw):
    x, mask = draw(S.array_and_mask())
    return (x,), {"idx": Tensor(mask) if draw(st.booleans()) else mask}


@st.composite
def zero_d_index_case(draw):
    """Indexing a 0-d tensor, and integer indexing that yields a 0-d result."""
    x = draw(S.any_array(max_dims=1))
    if x.ndim == 0:
        idx = draw(st.sampled_from([(), Ellipsis, None]))
    else:
        idx = draw(st.sampled_from([0, -1, x.shape[0] - 1]))
    return (x,), {"idx": idx}


@st.composite
def clip_bounds_case(draw, array_bounds):
    x, lo, hi = draw(S.clip_case(array_bounds=array_bounds))
    if array_bounds and draw(st.booleans()):
        lo = None if lo is None else Tensor(lo)
        hi = None if hi is None else Tensor(hi)
    return (x,), {"lo": lo, "hi": hi}


@st.composite
def join_case(draw, same_shape):
    arrays, axis = draw(S.arrays_to_join(same_shape=same_shape))
    const = None
    if not same_shape and draw(st.booleans()):   # a plain array among the tensors takes no gradient
        const = arrays[0] * 0.5
    return tuple(arrays), {"axis": axis, "const": const}


@st.composite
def constant_case(draw):
    """A tensor and a number, or a constant array, for either side of + - * / (on the left: the
    reflected methods)."""
    x = draw(S.any_array(S.away_from_zero(0.5, 3.0)))
    c = draw(S.away_from_zero(0.5, 3.0))
    constant = np.full(x.shape[-1:], c) if draw(st.booleans()) else c
    return (x,), {"c": constant, "op": draw(st.sampled_from(["+", "-", "*", "/"]))}


ARITHMETIC = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b}


@st.composite
def broadcast_to_case(draw):
    source, target = draw(S.broadcast_source_and_target())
    return (draw(S.arrays(source)),), {"shape": target}


@st.composite
def sum_to_case(draw):
    source, target = draw(S.broadcast_source_and_target())
    return (draw(S.arrays(target)),), {"shape": source}


def sum_to_reference(a, shape):
    """One sum over the leading axes broadcasting adds and the size-1 axes it widens, then the shape."""
    extra = a.ndim - len(shape)
    axes = [i for i in range(a.ndim) if i < extra or shape[i - extra] == 1]
    return np.asarray(a.sum(axis=tuple(axes))).reshape(shape)


@st.composite
def number_against_untied_case(draw):
    x = draw(S.any_array(S.grid(-30, 30, 0.1)))
    c = round(draw(S.floats(-3.0, 3.0)), 1) + 0.05
    return (x,), {"c": c, "op": draw(st.sampled_from(["maximum", "minimum"])), "number_first": draw(st.booleans())}


@st.composite
def cross_entropy_case(draw, probabilities):
    logits, target, axis = draw(S.cross_entropy_case(probabilities=probabilities))
    if not probabilities:
        form = draw(st.sampled_from(["array", "list", "tensor"]))
        target = {"array": target, "list": target.tolist(), "tensor": Tensor(target)}[form]
    return (logits,), {"target": target, "axis": axis, "reduction": draw(st.sampled_from(["mean", "sum", "none"]))}


@st.composite
def mse_case(draw, constant_target):
    p = draw(S.any_array())
    t = draw(S.arrays(p.shape))
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    if constant_target:   # a float64 plain array as the target: it takes no gradient and keeps float32 float32
        return (p,), {"target": t, "reduction": reduction}
    return (p, t), {"reduction": reduction}


def softplus_reference(x):
    """log(1 + exp(x)) as numpy's logaddexp(0, x) computes it (overflow-free)."""
    return np.logaddexp(0.0, np.asarray(x, dtype=np.float64))


def logsumexp_reference(x, axis, keepdims):
    """max + log(sum(exp(x - max))) in float64 with numpy, for finite rows."""
    top = x.max(axis=axis, keepdims=True)
    out = top + np.log(np.exp(x - top).sum(axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


def elementwise(elements=None):
    """Cases of one array of any shape (0-d included), its values from ``elements``."""
    return case(S.any_array(elements))


def pairs(left=None, right=None):
    return case(S.broadcast_pair(left=left, right=right))


def method_or_function(name):
    """``t.tanh()`` or ``functional.tanh(t)``, as the flag ``as_method`` picks."""
    return lambda t, as_method: getattr(t, name)() if as_method else getattr(F, name)(t)


COMPARISONS = ["__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__"]
AXIS_KEEPDIMS = {"keepdims": st.booleans()}

# ---------------------------------------------------------------- the table
ROWS = [
    # arithmetic
    Row("add", ("Tensor.__add__",), lambda a, b: a + b, pairs()),
    Row("sub", ("Tensor.__sub__",), lambda a, b: a - b, pairs()),
    Row("mul", ("Tensor.__mul__",), lambda a, b: a * b, pairs()),
    Row("div", ("Tensor.__truediv__",), lambda a, b: a / b, pairs(right=S.away_from_zero(0.5, 3.0))),
    Row("neg", ("Tensor.__neg__",), lambda t: -t, elementwise()),
    Row("pow_by_number", ("Tensor.__pow__",), lambda t, p: t ** p, cases(number_power(), "p")),
    Row("pow_by_tensor", ("Tensor.__pow__",), lambda a, b: a ** b,
        pairs(left=S.floats(0.2, 3.0), right=S.floats(-2.0, 2.0))),
    Row("rpow", ("Tensor.__rpow__",), lambda t, base: base ** t,
        case(S.any_array(S.floats(-2.0, 2.0)), base=S.floats(0.2, 3.0))),
    Row("constant_on_the_left", ("Tensor.__radd__", "Tensor.__rsub__", "Tensor.__rmul__", "Tensor.__rtruediv__"),
        lambda t, c, op: ARITHMETIC[op](c, t), constant_case(), constants_promote=True),
    Row("constant_on_the_right", ("Tensor.__add__", "Tensor.__sub__", "Tensor.__mul__", "Tensor.__truediv__"),
        lambda t, c, op: ARITHMETIC[op](t, c), constant_case(), constants_promote=True),
    # matmul: 1-D either side, 2-D, batched with broadcast batch axes
    Row("matmul", ("Tensor.__matmul__",), lambda a, b: a @ b, case(S.matmul_pair())),
    Row("matmul_batched", ("Tensor.__matmul__",), lambda a, b: a @ b, case(S.batched_matmul_pair())),
    Row("rmatmul", ("Tensor.__rmatmul__",), lambda t, a: a @ t,
        cases(S.matmul_pair().map(lambda p: (p[1], p[0])), "a"), constants_promote=True),
    # elementwise
    Row("exp", ("Tensor.exp",), lambda t: t.exp(), elementwise()),
    Row("expm1", ("Tensor.expm1",), lambda t: t.expm1(), elementwise()),
    Row("log", ("Tensor.log",), lambda t: t.log(), elementwise(S.floats(0.1, 5.0))),
    Row("sqrt", ("Tensor.sqrt",), lambda t: t.sqrt(), elementwise(S.floats(0.1, 5.0))),
    Row("abs", ("Tensor.abs",), lambda t: t.abs(), elementwise(S.away_from_zero(0.05, 3.0))),
    Row("sin", ("Tensor.sin",), lambda t: t.sin(), elementwise(S.floats(-10.0, 10.0)), reference=np.sin),
    Row("cos", ("Tensor.cos",), lambda t: t.cos(), elementwise(S.floats(-10.0, 10.0)), reference=np.cos),
    Row("log1p", ("Tensor.log1p",), lambda t: t.log1p(), elementwise(S.floats(-0.5, 5.0)), reference=np.log1p),
    Row("clip", ("Tensor.clip",), lambda t, lo, hi: t.clip(lo, hi), clip_bounds_case(array_bounds=False)),
    Row("clip_array_bounds", ("Tensor.clip",), lambda t, lo, hi: t.clip(lo, hi), clip_bounds_case(array_bounds=True)),
    # reductions
    Row("sum", ("Tensor.sum",), lambda t, axis, keepdims: t.sum(axis=axis, keepdims=keepdims),
        cases(S.array_and_axis(), "axis", **AXIS_KEEPDIMS)),
    Row("mean", ("Tensor.mean",), lambda t, axis, keepdims: t.mean(axis=axis, keepdims=keepdims),
        cases(S.array_and_axis(), "axis", **AXIS_KEEPDIMS)),
    Row("max", ("Tensor.max",), lambda t, axis, keepdims: t.max(axis=axis, keepdims=keepdims),
        cases(S.distinct_array_and_axis(), "axis", **AXIS_KEEPDIMS),
        reference=lambda a, axis, keepdims: a.max(axis=axis, keepdims=keepdims)),
    Row("min", ("Tensor.min",), lambda t, axis, keepdims: t.min(axis=axis, keepdims=keepdims),
        cases(S.distinct_array_and_axis(), "axis", **AXIS_KEEPDIMS),
        reference=lambda a, axis, keepdims: a.min(axis=axis, keepdims=keepdims)),
    # shapes
    Row("reshape", ("Tensor.reshape",), lambda t, shape, as_tuple: t.reshape(shape) if as_tuple else t.reshape(*shape),
        cases(S.array_and_new_shape(), "shape", as_tuple=st.booleans())),
    Row("transpose", ("Tensor.transpose",),
        lambda t, axes, form: {"tuple": lambda: t.transpose(axes), "args": lambda: t.transpose(*axes),
                               "none": lambda: t.transpose()}[form](),
        cases(S.array_and_permutation(), "axes", form=st.sampled_from(["tuple", "args", "none"]))),
    Row("T", ("Tensor.T",), lambda t: t.T, elementwise()),
    Row("flatten", ("Tensor.flatten",), lambda t: t.flatten(), elementwise(), reference=lambda a: a.flatten()),
    Row("squeeze", ("Tensor.squeeze",), lambda t, axis: t.squeeze(axis), cases(S.array_and_squeeze_axis(), "axis"),
        reference=lambda a, axis: np.squeeze(a, axis)),
    Row("unsqueeze", ("Tensor.unsqueeze",), lambda t, axis: t.unsqueeze(axis), cases(S.array_and_new_axis(), "axis"),
        reference=lambda a, axis: np.expand_dims(a, axis)),
    Row("broadcast_to", ("Tensor.broadcast_to",), lambda t, shape: t.broadcast_to(shape), broadcast_to_case(),
        reference=lambda a, shape: np.broadcast_to(a, shape)),
    Row("sum_to", ("Tensor.sum_to",), lambda t, shape: t.sum_to(shape), sum_to_case(), reference=sum_to_reference),
    # indexing (repeated indices accumulate)
    Row("getitem_basic", ("Tensor.__getitem__",), lambda t, idx: t[idx], cases(S.array_and_basic_index(), "idx")),
    Row("getitem_integer_arrays", ("Tensor.__getitem__",), lambda t, idx: t[idx], integer_index_case()),
    Row("getitem_slice_and_list", ("Tensor.__getitem__",), lambda t, idx: t[idx],
        cases(S.array_and_mixed_index(), "idx")),
    Row("getitem_mask", ("Tensor.__getitem__",), lambda t, idx: t[idx], mask_case()),
    Row("getitem_zero_d", ("Tensor.__getitem__",), lambda t, idx: t[idx], zero_d_index_case()),
    # several tensors
    Row("concat", ("tensor.concat",),
        lambda *ts, axis, const: tg.concat(([] if const is None else [const]) + list(ts), axis=axis),
        join_case(same_shape=False), constants_promote=True),
    Row("stack", ("tensor.stack",), lambda *ts, axis, const: tg.stack(list(ts), axis=axis),
        join_case(same_shape=True)),
    Row("where", ("tensor.where",), lambda a, b, cond: tg.where(cond, a, b), where_case()),
    Row("where_number", ("tensor.where",),
        lambda t, cond, c, number_first: tg.where(cond, c, t) if number_first else tg.where(cond, t, c),
        where_number_case()),
    Row("maximum", ("tensor.maximum",), lambda a, b: tg.maximum(a, b), case(S.untied_pair()), reference=np.maximum),
    Row("minimum", ("tensor.minimum",), lambda a, b: tg.minimum(a, b), case(S.untied_pair()), reference=np.minimum),
    Row("maximum_minimum_number", ("tensor.maximum", "tensor.minimum"),
        lambda t, c, op, number_first: getattr(tg, op)(c, t) if number_first else getattr(tg, op)(t, c),
        number_against_untied_case()),
    # compositions in functional (and the methods it attaches to Tensor)
    Row("tanh", ("functional.tanh", "Tensor.tanh"), method_or_function("tanh"),
        case(S.any_array(S.floats(-5.0, 5.0)), as_method=st.booleans())),
    Row("sigmoid", ("functional.sigmoid", "Tensor.sigmoid"), method_or_function("sigmoid"),
        case(S.any_array(S.floats(-8.0, 8.0)), as_method=st.booleans())),
    Row("relu", ("functional.relu", "Tensor.relu"), method_or_function("relu"),
        case(S.any_array(S.away_from_zero(0.05, 3.0)), as_method=st.booleans())),
    Row("leaky_relu", ("functional.leaky_relu",), lambda t, slope: F.leaky_relu(t, negative_slope=slope),
        case(S.any_array(S.away_from_zero(0.05, 3.0)), slope=st.sampled_from([0.01, 0.2, 0.0, 1.0, 0.5, 3.0, -0.5])),
        reference=lambda a, slope: np.where(a > 0, a, slope * a)),
    Row("softplus", ("functional.softplus",), lambda t: F.softplus(t), elementwise(S.floats(-20.0, 20.0)),
        reference=softplus_reference, reference_tol=(REL, TINY)),
    Row("softmax", ("functional.softmax",), lambda t, axis: F.softmax(t, axis=axis),
        cases(S.array_and_one_axis(S.floats(-5.0, 5.0)), "axis")),
    Row("log_softmax", ("functional.log_softmax",), lambda t, axis: F.log_softmax(t, axis=axis),
        cases(S.array_and_one_axis(S.floats(-5.0, 5.0)), "axis")),
    Row("logsumexp", ("functional.logsumexp",), lambda t, axis, keepdims: F.logsumexp(t, axis=axis, keepdims=keepdims),
        cases(S.array_and_one_axis(S.floats(-5.0, 5.0)), "axis", **AXIS_KEEPDIMS),
        reference=logsumexp_reference, reference_tol=(REL, REL)),
    Row("cross_entropy_class_indices", ("functional.cross_entropy",),
        lambda t, target, axis, reduction: F.cross_entropy(t, target, axis=axis, reduction=reduction),
        cross_entropy_case(probabilities=False)),
    Row("cross_entropy_probabilities", ("functional.cross_entropy",),
        lambda t, target, axis, reduction: F.cross_entropy(t, target, axis=axis, reduction=reduction),
        cross_entropy_case(probabilities=True)),
    Row("mse_loss", ("functional.mse_loss",), lambda p, t, reduction: F.mse_loss(p, t, reduction=reduction),
        mse_case(constant_target=False)),
    Row("mse_loss_constant_target", ("functional.mse_loss",),
        lambda p, target, reduction: F.mse_loss(p, target, reduction=reduction), mse_case(constant_target=True)),
    # no gradient: their results do not require grad
    Row("compare", tuple(f"Tensor.{n}" for n in COMPARISONS), lambda a, b, op: getattr(a, op)(b),
        case(S.broadcast_pair(), op=st.sampled_from(COMPARISONS)), differentiable=False,
        reference=lambda a, b, op: getattr(a, op)(b)),
    Row("detach", ("Tensor.detach",), lambda t: t.detach(), elementwise(), differentiable=False,
        reference=lambda a: a),
]

BY_NAME = {row.name: row for row in ROWS}
assert len(BY_NAME) == len(ROWS), "row names are unique"
DIFFERENTIABLE = [row for row in ROWS if row.differentiable]


def covering(op):
    """The rows that call the public operation ``op``."""
    return [row for row in ROWS if op in row.covers]


def property_test(row, check, name, **settings_kw):
    """A hypothesis test named ``name``: ``check(row, arrays, args, seed)`` for drawn ``(arrays, args)``
    and a seed (for cotangents and directions).  ``settings_kw`` adjusts the current profile."""
    def test(drawn, seed):
        arrays, args = drawn
        check(row, arrays, args, seed)
    # a name of its own: hypothesis derives the derandomized seed and the database key from it
    test.__name__ = test.__qualname__ = f"{name}__{row.name}"
    wrapped = given(row.inputs, S.seeds())(test)
    return settings(**settings_kw)(wrapped) if settings_kw else wrapped
