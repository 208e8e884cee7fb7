"""Every bad input gets a clear error that names the problem; non-finite values stay non-finite.

Shape errors are ``ValueError`` naming the operation and both shapes; integer data
with ``requires_grad`` is a ``TypeError``; backward on a non-scalar without ``grad``
is a ``RuntimeError``; cross_entropy's out-of-range class is an ``IndexError`` and a
wrong target shape a ``ValueError``.  NaN and inf in the input are never turned into
finite results silently (the values asserted below are the mathematical ones).
"""
import re

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import Tensor
from tinygrad_rnn import functional as F


def t(shape, grad=True):
    return Tensor(np.ones(shape), requires_grad=grad)


# ---------------------------------------------------------------- shapes
SHAPE_ERRORS = {
    # name: (op name expected in the message, the two shapes, the call)
    "add": ("add", (2, 3), (4, 5), lambda a, b: a + b),
    "add ndarray on the left": ("add", (2, 3), (4, 5), lambda a, b: b.data + a),
    "sub": ("sub", (2, 3), (3, 2), lambda a, b: a - b),
    "mul": ("mul", (2, 3), (4, 5), lambda a, b: a * b),
    "div": ("div", (3,), (2,), lambda a, b: a / b),
    "pow": ("pow", (2, 3), (2, 2), lambda a, b: a ** b),
    "matmul 2-D": ("matmul", (2, 3), (4, 5), lambda a, b: a @ b),
    "matmul 1-D": ("matmul", (3,), (4,), lambda a, b: a @ b),
    "matmul batched": ("matmul", (2, 2, 3), (3, 2, 3), lambda a, b: a @ b),
    "concat": ("concat", (2, 3), (4, 5), lambda a, b: tg.concat([a, b])),
    "stack": ("stack", (2, 3), (2, 4), lambda a, b: tg.stack([a, b], axis=1)),
    "where": ("where", (2, 3), (4, 5), lambda a, b: tg.where(np.ones((2, 3), bool), a, b)),
}


@pytest.mark.parametrize("case", sorted(SHAPE_ERRORS))
def test_shape_mismatch_names_the_operation_and_both_shapes(case):
    op, sa, sb, call = SHAPE_ERRORS[case]
    a, b = t(sa), t(sb)
    with pytest.raises(ValueError) as info:
        call(a, b)
    msg = str(info.value)
    assert re.search(rf"\b{op}\b", msg), msg
    assert str(sa) in msg and str(sb) in msg, msg


def test_reshape_names_both_shapes():
    with pytest.raises(ValueError, match=r"reshape.*\(2, 3\).*\(4, 2\)"):
        t((2, 3)).reshape(4, 2)


def test_matmul_with_a_0d_operand():
    with pytest.raises(ValueError, match=r"matmul.*\(2, 3\).*\(\)"):
        t((2, 3)) @ t(())


def test_transpose_axes_that_are_not_a_permutation():
    with pytest.raises(ValueError, match=r"transpose.*\(2, 3\)"):
        t((2, 3)).transpose(0, 0)
    with pytest.raises(ValueError, match=r"transpose.*\(2, 3\)"):
        t((2, 3)).transpose(0, 1, 2)


@pytest.mark.parametrize("op", ["sum", "mean", "max"])
def test_reduction_over_an_axis_that_does_not_exist(op):
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        getattr(t((2, 3)), op)(axis=2)


def test_index_out_of_range_names_the_shape():
    with pytest.raises(IndexError, match=r"\(2, 3\)"):
        t((2, 3))[5]
    with pytest.raises(IndexError, match=r"\(2, 3\)"):
        t((2, 3))[np.ones(3, bool)]


def test_joining_nothing():
    with pytest.raises(ValueError, match="concat"):
        tg.concat([])
    with pytest.raises(ValueError, match="stack"):
        tg.stack([])


# ---------------------------------------------------------------- dtypes and data
@pytest.mark.parametrize("data", [np.arange(3), [1, 2, 3], 7, np.array([1, 2], np.uint8), [True, False]],
                         ids=["int64 array", "int list", "int", "uint8", "bool"])
def test_requires_grad_on_integer_or_bool_data_is_a_type_error(data):
    with pytest.raises(TypeError, match="floating"):
        Tensor(data, requires_grad=True)


def test_integer_tensors_without_grad_are_fine():
    assert Tensor([1, 2]).dtype.kind == "i"


@pytest.mark.parametrize("data", [["a", "b"], None, {"x": 1}])
def test_non_numeric_data_is_a_type_error(data):
    with pytest.raises(TypeError, match="Tensor"):
        Tensor(data)


def test_a_non_numeric_operand_is_a_type_error():
    with pytest.raises(TypeError):
        t((2,)) + "x"


# ---------------------------------------------------------------- backward
def test_backward_on_a_non_scalar_without_grad_is_a_runtime_error_naming_the_shape():
    with pytest.raises(RuntimeError, match=r"\(2, 3\)"):
        (t((2, 3)) * 2.0).backward()


def test_backward_with_a_grad_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"\(3,\).*\(2, 3\)"):
        (t((2, 3)) * 2.0).backward(np.ones(3))


def test_backward_on_a_tensor_without_a_graph():
    with pytest.raises(RuntimeError, match="requires? grad"):
        t((2,), grad=False).sum().backward()


def test_item_and_truth_value_of_many_elements():
    with pytest.raises(ValueError, match=r"6 elements"):
        t((2, 3)).item()
    with pytest.raises(ValueError, match="ambiguous"):
        bool(t((2, 3)))


def test_clip_without_bounds():
    with pytest.raises(ValueError, match="clip"):
        t((2,)).clip()


# ---------------------------------------------------------------- losses and functions
@pytest.mark.parametrize("target, bad", [([0, 3], 3), ([-1, 0], -1), (np.array([[0], [7]]), 7)],
                         ids=["too large", "negative", "column"])
def test_cross_entropy_out_of_range_class_is_an_index_error(target, bad):
    logits = t((2, 3))
    if np.ndim(target) == 2:      # classes along axis 1 of a (2, 3, 1) tensor: the target is (2, 1)
        logits = t((2, 3, 1))
        call = lambda: F.cross_entropy(logits, target, axis=1)
    else:
        call = lambda: F.cross_entropy(logits, target)
    with pytest.raises(IndexError) as info:
        call()
    msg = str(info.value)
    assert "cross_entropy" in msg and str(bad) in msg and "3 classes" in msg, msg


def test_cross_entropy_wrong_target_shape_is_a_value_error_naming_both():
    with pytest.raises(ValueError, match=r"cross_entropy.*\(2,\).*\(3,\)"):
        F.cross_entropy(t((2, 3)), [0, 1, 2])
    with pytest.raises(ValueError, match=r"cross_entropy.*\(2, 3\).*\(3, 2\)"):
        F.cross_entropy(t((2, 3)), np.full((3, 2), 0.5))


def test_cross_entropy_other_bad_arguments():
    with pytest.raises(TypeError, match="cross_entropy"):
        F.cross_entropy(t((2, 3)), np.array(["a", "b"]))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(t((2, 3)), [0, 1], reduction="avg")
    with pytest.raises(ValueError, match=r"axis 2.*\(2, 3\)"):
        F.cross_entropy(t((2, 3)), [0, 1], axis=2)
    with pytest.raises(ValueError, match="dimension"):
        F.cross_entropy(t(()), [0])


def test_mse_loss_shape_mismatch_and_reduction():
    with pytest.raises(ValueError, match=r"mse_loss.*\(2, 3\).*\(3,\)"):
        F.mse_loss(t((2, 3)), np.ones(3))
    with pytest.raises(ValueError, match="reduction"):
        F.mse_loss(t((2,)), np.ones(2), reduction="avg")


@pytest.mark.parametrize("fn", [F.softmax, F.log_softmax])
def test_softmax_axis_out_of_range(fn):
    with pytest.raises(ValueError, match=r"axis 2.*\(2, 3\)"):
        fn(t((2, 3)), axis=2)


def test_gradcheck_of_a_function_that_returns_no_tensor():
    with pytest.raises(TypeError, match="Tensor"):
        tg.gradcheck(lambda x: 1.0, t((2,)))


# ---------------------------------------------------------------- non-finite values stay non-finite
def value_and_grad(fn, x):
    x = Tensor(np.array(x, dtype=np.float64), requires_grad=True)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        y = fn(x)
        y.backward(np.ones(y.shape))
    return y.data, x.grad


nan, inf = np.nan, np.inf


@pytest.mark.parametrize("name, fn", [("tanh", F.tanh), ("sigmoid", F.sigmoid), ("exp", Tensor.exp),
                                      ("expm1", Tensor.expm1), ("log", Tensor.log), ("sqrt", Tensor.sqrt),
                                      ("abs", Tensor.abs), ("relu", F.relu)])
def test_nan_in_nan_out_elementwise(name, fn):
    y, g = value_and_grad(fn, [nan, 0.5, 2.0])
    assert np.isnan(y[0]) and np.isfinite(y[1:]).all(), y
    if name in ("tanh", "sigmoid", "exp", "expm1", "sqrt", "abs"):   # the derivative at NaN is NaN too
        assert np.isnan(g[0]), g


def test_infinity_is_kept_where_the_result_is_infinite():
    y, g = value_and_grad(Tensor.exp, [inf, 0.0])
    assert y[0] == inf and g[0] == inf
    y, _ = value_and_grad(Tensor.log, [0.0, inf])
    assert y.tolist() == [-inf, inf]
    y, _ = value_and_grad(lambda x: x.sum(), [inf, 1.0])
    assert y == inf
    y, _ = value_and_grad(F.relu, [inf, -inf])
    assert y.tolist() == [inf, 0.0]
    y, _ = value_and_grad(lambda x: F.mse_loss(x, np.zeros(2)), [inf, 1.0])
    assert y == inf


def test_softmax_and_log_softmax_with_nan_give_nan_in_that_row_only():
    x = [[nan, 1.0, -2.0], [1.0, 2.0, 3.0]]
    for fn in (F.softmax, F.log_softmax):
        y, g = value_and_grad(fn, x)
        assert np.isnan(y[0]).all(), (fn.__name__, y)
        assert np.isfinite(y[1]).all() and np.isfinite(g[1]).all()


def test_losses_of_nan_are_nan():
    logits = [[nan, 1.0, 2.0], [0.0, 1.0, 2.0]]
    for target in ([1, 2], np.eye(3)[[1, 2]]):
        y, g = value_and_grad(lambda x: F.cross_entropy(x, target), logits)
        assert np.isnan(y), y
        assert np.isnan(g[0]).any(), g
    y, g = value_and_grad(lambda x: F.mse_loss(x, np.zeros(2)), [nan, 1.0])
    assert np.isnan(y) and np.isnan(g[0]) and g[1] == 1.0


def test_max_of_nan_is_nan_and_its_gradient_goes_to_the_nan():
    y, g = value_and_grad(lambda x: x.max(axis=1), [[nan, 1.0, -2.0], [1.0, 3.0, 3.0]])
    assert np.isnan(y[0]) and y[1] == 3.0
    np.testing.assert_array_equal(g, [[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
