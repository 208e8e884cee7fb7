"""Every bad input gets a clear error that names the problem; non-finite values stay non-finite.

Shape errors are ``ValueError`` naming the operation and both shapes (in operand order);
integer or bool data with ``requires_grad`` is a ``TypeError``; backward on a non-scalar
without ``grad`` is a ``RuntimeError``; cross_entropy's out-of-range class is an
``IndexError`` and a wrong target shape a ``ValueError``.  NaN and inf in the input are
never turned into finite results silently (the values asserted below are the
mathematical ones), with the compositions compiled (one node each) and expanded.
"""
import re

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import Tensor
from tinygrad_rnn import functional as F
from strategies import compiled_or_expanded


def shapes_named(op, *shapes):
    """A regex: the operation's name as a whole word, then every shape in order."""
    return r"\b" + re.escape(op) + r"\b.*" + ".*".join(re.escape(str(s)) for s in shapes)


def t(shape, grad=True):
    return Tensor(np.ones(shape), requires_grad=grad)


A = np.ones((2, 3))
B = np.ones((4, 5))


# ---------------------------------------------------------------- shape mismatches: ValueError naming op and shapes
add, sub, mul = (lambda a, b: a + b), (lambda a, b: a - b), (lambda a, b: a * b)
div, pow_, matmul = (lambda a, b: a / b), (lambda a, b: a ** b), (lambda a, b: a @ b)


@pytest.mark.parametrize("op, fn, sa, sb", [
    ("add", add, (2, 3), (4, 5)), ("sub", sub, (2, 3), (4, 5)), ("mul", mul, (2, 3), (4, 5)),
    ("div", div, (2, 3), (4, 5)), ("pow", pow_, (2, 3), (4, 5)), ("matmul", matmul, (2, 3), (4, 5)),
    # same size, transposed: the check is on the shapes, not on the element count
    ("sub", sub, (2, 3), (3, 2)),
    ("div", div, (3,), (2,)),                       # 1-D shapes are printed as tuples too
    ("pow", pow_, (2, 3), (2, 2)),                  # leading axes agree, the last does not
    ("matmul", matmul, (3,), (4,)),
    ("matmul", matmul, (2, 2, 3), (3, 2, 3)),       # batch axes do not broadcast
], ids=lambda v: v if isinstance(v, str) else None)
def test_binary_shape_mismatch_names_the_operation_and_both_shapes(op, fn, sa, sb):
    a, b = np.ones(sa), np.ones(sb)
    with pytest.raises(ValueError, match=shapes_named(op, sa, sb)):
        fn(Tensor(a, requires_grad=True), Tensor(b))
    with pytest.raises(ValueError, match=shapes_named(op, sa, sb)):
        fn(Tensor(a), b)                               # a plain array on the right
    with pytest.raises(ValueError, match=shapes_named(op, sb, sa)):
        fn(b, Tensor(a))                               # and on the left


def test_matmul_inner_dimensions_and_0d_operands():
    with pytest.raises(ValueError, match=shapes_named("matmul", (2, 3), (2, 3))):
        Tensor(A) @ Tensor(A)
    with pytest.raises(ValueError, match=shapes_named("matmul", (), (2, 3))):
        2.0 @ Tensor(A)
    with pytest.raises(ValueError, match=shapes_named("matmul", (2, 3), ())):
        t((2, 3)) @ t(())
    with pytest.raises(ValueError, match=r"inner dimensions 3 and 2"):
        t((2, 3)) @ t((2, 3))
    # inner dimensions that fit, stacks that do not: the message says which part is wrong
    with pytest.raises(ValueError, match=r"the stacks \(2,\) and \(5,\) cannot be broadcast together"):
        t((2, 3, 4)) @ t((5, 4, 6))


@pytest.mark.parametrize("op, call, sa, sb", [
    ("where", lambda: tg.where(np.ones((3, 3), bool), Tensor(A), Tensor(B)), (2, 3), (4, 5)),
    # the condition fits x, only y is wrong
    ("where", lambda: tg.where(np.ones((2, 3), bool), Tensor(A), Tensor(B)), (2, 3), (4, 5)),
    ("concat", lambda: tg.concat([Tensor(A), Tensor(B)]), (2, 3), (4, 5)),
    ("stack", lambda: tg.stack([Tensor(A), Tensor(B)]), (2, 3), (4, 5)),
    ("stack", lambda: tg.stack([t((2, 3)), t((2, 4))], axis=1), (2, 3), (2, 4)),
])
def test_several_tensor_functions_name_the_shapes(op, call, sa, sb):
    with pytest.raises(ValueError, match=shapes_named(op, sa, sb)):
        call()


@pytest.mark.parametrize("op, call, pattern", [
    ("reshape", lambda t: t.reshape(4, 2), shapes_named("reshape", (2, 3), (4, 2))),
    ("transpose", lambda t: t.transpose(0, 0), shapes_named("transpose", (0, 0), (2, 3))),
    ("transpose", lambda t: t.transpose(2, 0, 1), shapes_named("transpose", (2, 0, 1), (2, 3))),
    ("sum", lambda t: t.sum(axis=2), shapes_named("sum", 2, (2, 3))),
    ("mean", lambda t: t.mean(axis=2), shapes_named("mean", 2, (2, 3))),
    ("mean", lambda t: t.mean(axis=-3), shapes_named("mean", -3, (2, 3))),
    ("max", lambda t: t.max(axis=2), shapes_named("max", 2, (2, 3))),
    ("max", lambda t: t.max(axis=(0, 0)), shapes_named("max", (0, 0), (2, 3))),
    ("softmax", lambda t: F.softmax(t, axis=2), shapes_named("softmax", "axis 2", (2, 3))),
    ("log_softmax", lambda t: F.log_softmax(t, axis=2), shapes_named("log_softmax", "axis 2", (2, 3))),
    ("log_softmax", lambda t: F.log_softmax(t, axis=-3), shapes_named("log_softmax", "axis -3", (2, 3))),
    ("mse_loss", lambda t: F.mse_loss(t, np.ones((3, 2))), shapes_named("mse_loss", (2, 3), (3, 2))),
    # (3,) would broadcast against (2, 3); the loss refuses rather than broadcasting silently
    ("mse_loss", lambda t: F.mse_loss(t, np.ones(3)), shapes_named("mse_loss", (2, 3), (3,))),
    ("cross_entropy", lambda t: F.cross_entropy(t, [0, 1, 2]), shapes_named("cross_entropy", (2,), (3,))),
    ("cross_entropy", lambda t: F.cross_entropy(t, np.ones((2, 2))), shapes_named("cross_entropy", (2, 3), (2, 2))),
    ("cross_entropy", lambda t: F.cross_entropy(t, np.full((3, 2), 0.5)),
     shapes_named("cross_entropy", (2, 3), (3, 2))),
    ("backward", lambda t: (t * 2).backward(np.ones(3)), shapes_named("backward", (3,), (2, 3))),
])
def test_shape_errors_of_one_tensor_operations(op, call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call(Tensor(A, requires_grad=True))


def test_indexing_out_of_range_names_the_shape():
    t = Tensor(A, requires_grad=True)
    with pytest.raises(IndexError, match=re.escape("(2, 3)")):
        t[5]
    with pytest.raises(IndexError, match=re.escape("(2, 3)")):
        t[:, [0, 7]]
    with pytest.raises(IndexError, match=re.escape("(2, 3)")):
        t[np.ones(3, bool)]


# ---------------------------------------------------------------- types and data
@pytest.mark.parametrize("data", [np.arange(3), [1, 2, 3], 7, np.array([True, False]), [True, False],
                                  np.arange(3, dtype=np.uint8)],
                         ids=["int64 array", "int list", "int", "bool array", "bool list", "uint8"])
def test_requires_grad_on_integer_or_bool_data_is_a_type_error(data):
    with pytest.raises(TypeError, match="floating"):
        Tensor(data, requires_grad=True)
    assert not Tensor(data).requires_grad     # without requires_grad it is fine (e.g. indices)


def test_integer_tensors_without_grad_keep_their_dtype():
    assert Tensor([1, 2]).dtype.kind == "i"


@pytest.mark.parametrize("data", [["a", "b"], None, {"x": 1}], ids=["str", "None", "dict"])
def test_non_numeric_data_is_a_type_error(data):
    with pytest.raises(TypeError, match="Tensor.*numeric"):
        Tensor(data)


def test_a_non_numeric_operand_is_a_type_error():
    with pytest.raises(TypeError):
        t((2,)) + "x"


def test_gradcheck_of_a_function_that_returns_no_tensor():
    with pytest.raises(TypeError, match="Tensor"):
        tg.gradcheck(lambda x: 1.0, t((2,)))


# ---------------------------------------------------------------- backward misuse
def test_backward_on_a_non_scalar_without_grad_is_a_runtime_error():
    t = Tensor(A, requires_grad=True)
    with pytest.raises(RuntimeError, match=re.escape("(2, 3)")):
        (t * 2).backward()
    # with grad= of the right shape it works
    (t * 2).backward(np.ones((2, 3)))
    np.testing.assert_array_equal(t.grad, 2 * np.ones((2, 3)))


def test_backward_without_a_graph_is_a_runtime_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor([1.0]).sum().backward()
    x = Tensor([1.0], requires_grad=True)
    with tg.no_grad():
        y = (x * 2).sum()
    with pytest.raises(RuntimeError, match="no_grad"):
        y.backward()


def test_misc_misuse():
    t = Tensor(A)
    with pytest.raises(ValueError, match="6 elements"):
        t.item()
    with pytest.raises(ValueError, match="ambiguous"):
        bool(t)
    with pytest.raises(ValueError, match="clip"):
        t.clip()
    with pytest.raises(ValueError, match="concat"):
        tg.concat([])
    with pytest.raises(ValueError, match="stack"):
        tg.stack([])
    with pytest.raises(ValueError, match="reduction"):
        F.mse_loss(t, A, reduction="avg")


# ---------------------------------------------------------------- cross_entropy targets
@pytest.mark.parametrize("target, bad", [([0, 3], 3), ([-1, 0], -1), (np.array([5, 1]), 5),
                                         (np.array([[0], [7]]), 7)],
                         ids=["too large", "negative", "array", "column"])
@pytest.mark.parametrize("compiled", [False, True], ids=["expanded", "compiled"])
def test_cross_entropy_class_index_out_of_range(target, bad, compiled):
    logits, kw = Tensor(A, requires_grad=True), {}
    if np.ndim(target) == 2:      # classes along axis 1 of a (2, 3, 1) tensor: the target is (2, 1)
        logits, kw = t((2, 3, 1)), {"axis": 1}
    message = rf"cross_entropy.*class index {bad}.*3 classes"
    with compiled_or_expanded(compiled), pytest.raises(IndexError, match=message):
        F.cross_entropy(logits, target, **kw)


def test_cross_entropy_other_bad_targets():
    logits = Tensor(A, requires_grad=True)
    with pytest.raises(TypeError, match="cross_entropy.*dtype"):
        F.cross_entropy(logits, ["a", "b"])
    with pytest.raises(TypeError, match="cross_entropy.*dtype"):
        F.cross_entropy(logits, np.array(["a", "b"]))
    with pytest.raises(ValueError, match="reduction.*'avg'"):
        F.cross_entropy(logits, [0, 1], reduction="avg")
    with pytest.raises(ValueError, match="at least one dimension"):
        F.cross_entropy(Tensor(1.0), [0])
    with pytest.raises(ValueError, match=shapes_named("cross_entropy", "axis 2", (2, 3))):
        F.cross_entropy(logits, [0, 1], axis=2)


# ---------------------------------------------------------------- non-finite values stay non-finite
NONFINITE = np.array([np.nan, np.inf, -np.inf, 0.0, 1.5])
NAN_GRAD = True     # the derivative at NaN must be NaN too


@pytest.mark.parametrize("name, fn, expected, nan_grad", [
    ("tanh", F.tanh, [np.nan, 1.0, -1.0, 0.0, np.tanh(1.5)], NAN_GRAD),
    ("sigmoid", F.sigmoid, [np.nan, 1.0, 0.0, 0.5, 1 / (1 + np.exp(-1.5))], NAN_GRAD),
    ("relu", F.relu, [np.nan, np.inf, 0.0, 0.0, 1.5], False),
    ("exp", lambda t: t.exp(), [np.nan, np.inf, 0.0, 1.0, np.exp(1.5)], NAN_GRAD),
    ("expm1", lambda t: t.expm1(), [np.nan, np.inf, -1.0, 0.0, np.expm1(1.5)], NAN_GRAD),
    ("log", lambda t: t.log(), [np.nan, np.inf, np.nan, -np.inf, np.log(1.5)], False),
    ("sqrt", lambda t: t.sqrt(), [np.nan, np.inf, np.nan, 0.0, np.sqrt(1.5)], NAN_GRAD),
    ("abs", lambda t: t.abs(), [np.nan, np.inf, np.inf, 0.0, 1.5], NAN_GRAD),
    ("clip", lambda t: t.clip(-1.0, 1.0), [np.nan, 1.0, -1.0, 0.0, 1.0], False),
    ("mul", lambda t: t * 2.0, [np.nan, np.inf, -np.inf, 0.0, 3.0], False),
], ids=lambda v: v if isinstance(v, str) else None)
@pytest.mark.parametrize("compiled", [False, True], ids=["expanded", "compiled"])
def test_elementwise_nan_and_inf_are_kept(name, fn, expected, nan_grad, compiled):
    x = Tensor(NONFINITE, requires_grad=True)
    with compiled_or_expanded(compiled), np.errstate(all="ignore"):
        y = fn(x)
        y.sum().backward()
    np.testing.assert_allclose(y.data, expected, rtol=1e-15)   # NaN where NaN went in, infinities kept
    assert np.isnan(y.data[0])
    if nan_grad:
        assert np.isnan(x.grad[0]), x.grad


@pytest.mark.parametrize("compiled", [False, True], ids=["expanded", "compiled"])
def test_a_nan_does_not_take_the_gradient_of_its_neighbours(compiled):
    for fn in (F.tanh, F.sigmoid):
        x = Tensor([np.nan, 0.0], requires_grad=True)
        with compiled_or_expanded(compiled), np.errstate(all="ignore"):
            fn(x).sum().backward()
        assert x.grad[1] > 0


def test_exp_gradient_at_infinity_is_infinite():
    x = Tensor([np.inf, 0.0], requires_grad=True)
    with np.errstate(all="ignore"):
        x.exp().sum().backward()
    assert x.grad[0] == np.inf


def test_reductions_and_losses_keep_nan_and_inf():
    with np.errstate(all="ignore"):
        assert np.isnan(Tensor(NONFINITE).sum().item())
        assert Tensor([1.0, np.inf]).sum().item() == np.inf
        assert Tensor([1.0, np.inf]).mean().item() == np.inf
        assert np.isnan(Tensor(NONFINITE).max().item())
        assert np.isnan((Tensor(np.full((2, 2), np.nan)) @ Tensor(np.ones(2))).data).all()
        assert F.mse_loss(Tensor([np.inf, 0.0]), np.zeros(2)).item() == np.inf
        assert np.isnan(Tensor([-1.0]).sqrt().item())
        for compiled in (False, True):
            with compiled_or_expanded(compiled):
                assert F.cross_entropy(Tensor([[-np.inf, 0.0, 1.0]]), [0]).item() == np.inf  # impossible class


def value_and_grad(fn, x):
    x = Tensor(np.array(x, dtype=np.float64), requires_grad=True)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        y = fn(x)
        y.backward(np.ones(y.shape))
    return y.data, x.grad


def test_softmax_and_log_softmax_with_nan_give_nan_in_that_row_only():
    x = [[np.nan, 1.0, -2.0], [1.0, 2.0, 3.0]]
    for fn in (F.softmax, F.log_softmax):
        y, g = value_and_grad(fn, x)
        assert np.isnan(y[0]).all(), (fn.__name__, y)
        assert np.isfinite(y[1]).all() and np.isfinite(g[1]).all()


@pytest.mark.parametrize("compiled", [False, True], ids=["expanded", "compiled"])
def test_losses_of_nan_are_nan(compiled):
    logits = [[np.nan, 1.0, 2.0], [0.0, 1.0, 2.0]]
    with compiled_or_expanded(compiled):
        for target in ([1, 2], np.eye(3)[[1, 2]]):
            y, g = value_and_grad(lambda x, target=target: F.cross_entropy(x, target), logits)
            assert np.isnan(y), y
            assert np.isnan(g[0]).any(), g
    y, g = value_and_grad(lambda x: F.mse_loss(x, np.zeros(2)), [np.nan, 1.0])
    assert np.isnan(y) and np.isnan(g[0]) and g[1] == 1.0


def test_max_of_nan_is_nan_and_its_gradient_goes_to_the_nan():
    y, g = value_and_grad(lambda x: x.max(axis=1), [[np.nan, 1.0, -2.0], [1.0, 3.0, 3.0]])
    assert np.isnan(y[0]) and y[1] == 3.0
    np.testing.assert_array_equal(g, [[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])


# ---------------------------------------------------------------- the newer operations
@pytest.mark.parametrize("call, error, pattern", [
    (lambda: t((2, 3)).min(axis=2), ValueError, shapes_named("min", 2, (2, 3))),
    (lambda: t((2, 3)).min(axis=(0, -2)), ValueError, shapes_named("min", (0, -2), (2, 3))),
    (lambda: t((2, 1)).squeeze(0), ValueError, r"squeeze: axis 0 has size 2, not 1 \(shape \(2, 1\)\)"),
    (lambda: t((2, 1)).squeeze(2), ValueError, shapes_named("squeeze", 2, (2, 1))),
    (lambda: t((2, 1)).squeeze((1, 0)), ValueError, "squeeze: axis 0 has size 2"),
    (lambda: t((2, 3)).unsqueeze(3), ValueError, r"unsqueeze: axis 3 does not fit shape \(2, 3\).* -3 to 2"),
    (lambda: t((2, 3)).unsqueeze(-4), ValueError, "unsqueeze: axis -4 does not fit"),
    (lambda: t((2, 3)).broadcast_to((4, 3, 2)), ValueError, shapes_named("broadcast_to", (2, 3), (4, 3, 2))),
    (lambda: t((2, 3)).broadcast_to((3,)), ValueError, shapes_named("broadcast_to", (2, 3), (3,))),
    (lambda: t((2, 3)).broadcast_to((2, -3)), ValueError, "broadcast_to: shape .* negative"),
    (lambda: t((2, 3)).broadcast_to("23"), TypeError, "broadcast_to: shape must be"),
    (lambda: t((2, 3)).sum_to((2,)), ValueError, shapes_named("sum_to", (2,), (2, 3))),
    (lambda: t((2, 3)).sum_to((1, 2, 3)), ValueError, shapes_named("sum_to", (1, 2, 3), (2, 3))),
    (lambda: tg.maximum(Tensor(A), Tensor(B)), ValueError, shapes_named("maximum", (2, 3), (4, 5))),
    (lambda: tg.minimum(np.ones(3), Tensor(A[:, :2])), ValueError, shapes_named("minimum", (3,), (2, 2))),
    (lambda: F.logsumexp(t((2, 3)), axis=2), ValueError, shapes_named("logsumexp", 2, (2, 3))),
    (lambda: F.logsumexp(t(())), ValueError, r"logsumexp: axis -1 is out of range for shape \(\)"),
    (lambda: F.leaky_relu(t(3), negative_slope="0.1"), TypeError, "negative_slope must be a number"),
], ids=lambda v: None)
def test_newer_operations_name_the_bad_argument(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_a_column_of_logits_is_told_about_the_row_convention():
    z = Tensor(np.zeros((5, 1)))                    # one example as a column, as some textbooks write it
    for target in (3, np.array([3]), np.eye(5)[[3]]):
        with pytest.raises(ValueError, match=r"logits are \(batch, classes\).*pass z\.T \(shape \(1, 5\)\)"):
            F.cross_entropy(z, target)
    assert np.isclose(F.cross_entropy(z.T, np.array([3])).item(), np.log(5))
    with pytest.raises(ValueError) as e:            # a real batch of one class each says nothing of columns
        F.cross_entropy(Tensor(np.zeros((5, 2))), np.array([1]))
    assert "z.T" not in str(e.value)
