"""Bad input gets a clear error naming the problem; non-finite values are never made finite."""
import re

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import Tensor
from tinygrad_rnn import functional as F
from tinygrad_rnn import fused


def shapes_named(op, *shapes):
    """A regex: the operation's name, then every shape in order."""
    return re.escape(op) + ".*" + ".*".join(re.escape(str(s)) for s in shapes)


A = np.ones((2, 3))
B = np.ones((4, 5))


# ---------------------------------------------------------------- shape mismatches: ValueError naming op and shapes
@pytest.mark.parametrize("op, fn", [
    ("add", lambda a, b: a + b), ("sub", lambda a, b: a - b), ("mul", lambda a, b: a * b),
    ("div", lambda a, b: a / b), ("pow", lambda a, b: a ** b), ("matmul", lambda a, b: a @ b),
])
def test_binary_shape_mismatch_names_the_operation_and_both_shapes(op, fn):
    with pytest.raises(ValueError, match=shapes_named(op, (2, 3), (4, 5))):
        fn(Tensor(A, requires_grad=True), Tensor(B))
    with pytest.raises(ValueError, match=shapes_named(op, (2, 3), (4, 5))):
        fn(Tensor(A), B)                               # a plain array on the right
    with pytest.raises(ValueError, match=shapes_named(op, (4, 5), (2, 3))):
        fn(B, Tensor(A))                               # and on the left


def test_matmul_inner_dimensions_and_0d_operands():
    with pytest.raises(ValueError, match=shapes_named("matmul", (2, 3), (2, 3))):
        Tensor(A) @ Tensor(A)
    with pytest.raises(ValueError, match=shapes_named("matmul", (), (2, 3))):
        2.0 @ Tensor(A)


@pytest.mark.parametrize("op, call", [
    ("where", lambda: tg.where(np.ones((3, 3), bool), Tensor(A), Tensor(B))),
    ("concat", lambda: tg.concat([Tensor(A), Tensor(B)])),
    ("stack", lambda: tg.stack([Tensor(A), Tensor(B)])),
])
def test_several_tensor_functions_name_the_shapes(op, call):
    with pytest.raises(ValueError, match=shapes_named(op, (2, 3), (4, 5))):
        call()


@pytest.mark.parametrize("op, call, pattern", [
    ("reshape", lambda t: t.reshape(4, 2), shapes_named("reshape", (2, 3), (4, 2))),
    ("transpose", lambda t: t.transpose(0, 0), shapes_named("transpose", (0, 0), (2, 3))),
    ("transpose", lambda t: t.transpose(2, 0, 1), shapes_named("transpose", (2, 0, 1), (2, 3))),
    ("sum", lambda t: t.sum(axis=2), shapes_named("sum", 2, (2, 3))),
    ("mean", lambda t: t.mean(axis=-3), shapes_named("mean", -3, (2, 3))),
    ("max", lambda t: t.max(axis=(0, 0)), shapes_named("max", (0, 0), (2, 3))),
    ("softmax", lambda t: F.softmax(t, axis=2), shapes_named("softmax", 2, (2, 3))),
    ("log_softmax", lambda t: F.log_softmax(t, axis=-3), shapes_named("log_softmax", -3, (2, 3))),
    ("mse_loss", lambda t: F.mse_loss(t, np.ones((3, 2))), shapes_named("mse_loss", (2, 3), (3, 2))),
    ("cross_entropy", lambda t: F.cross_entropy(t, [0, 1, 2]), shapes_named("cross_entropy", (2,), (3,))),
    ("cross_entropy", lambda t: F.cross_entropy(t, np.ones((2, 2))), shapes_named("cross_entropy", (2, 3), (2, 2))),
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


# ---------------------------------------------------------------- types and backward misuse
@pytest.mark.parametrize("data", [np.arange(3), [1, 2, 3], 7, np.array([True, False]), np.arange(3, dtype=np.uint8)])
def test_requires_grad_on_integer_or_bool_data_is_a_type_error(data):
    with pytest.raises(TypeError, match="floating"):
        Tensor(data, requires_grad=True)
    assert not Tensor(data).requires_grad     # without requires_grad it is fine (e.g. indices)


def test_non_numeric_data_is_a_type_error():
    with pytest.raises(TypeError, match="numeric"):
        Tensor(["a", "b"])


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
    with pytest.raises(ValueError, match="reduction"):
        F.mse_loss(t, A, reduction="avg")


# ---------------------------------------------------------------- cross_entropy targets
@pytest.mark.parametrize("target, bad", [([0, 3], 3), ([-1, 0], -1), (np.array([5, 1]), 5)])
@pytest.mark.parametrize("use_fused", [False, True])
def test_cross_entropy_class_index_out_of_range(target, bad, use_fused):
    with fused.enabled(use_fused), pytest.raises(IndexError, match=rf"class index {bad}.*3 classes"):
        F.cross_entropy(Tensor(A, requires_grad=True), target)


def test_cross_entropy_other_bad_targets():
    logits = Tensor(A, requires_grad=True)
    with pytest.raises(TypeError, match="dtype"):
        F.cross_entropy(logits, ["a", "b"])
    with pytest.raises(ValueError, match="reduction.*'avg'"):
        F.cross_entropy(logits, [0, 1], reduction="avg")
    with pytest.raises(ValueError, match="at least one dimension"):
        F.cross_entropy(Tensor(1.0), [0])
    with pytest.raises(ValueError, match=shapes_named("cross_entropy", 2, (2, 3))):
        F.cross_entropy(logits, [0, 1], axis=2)


# ---------------------------------------------------------------- non-finite values stay non-finite
NONFINITE = np.array([np.nan, np.inf, -np.inf, 0.0, 1.5])


@pytest.mark.parametrize("name, fn, expected", [
    ("tanh", F.tanh, [np.nan, 1.0, -1.0, 0.0, np.tanh(1.5)]),
    ("sigmoid", F.sigmoid, [np.nan, 1.0, 0.0, 0.5, 1 / (1 + np.exp(-1.5))]),
    ("relu", F.relu, [np.nan, np.inf, 0.0, 0.0, 1.5]),
    ("exp", lambda t: t.exp(), [np.nan, np.inf, 0.0, 1.0, np.exp(1.5)]),
    ("expm1", lambda t: t.expm1(), [np.nan, np.inf, -1.0, 0.0, np.expm1(1.5)]),
    ("abs", lambda t: t.abs(), [np.nan, np.inf, np.inf, 0.0, 1.5]),
    ("clip", lambda t: t.clip(-1.0, 1.0), [np.nan, 1.0, -1.0, 0.0, 1.0]),
    ("mul", lambda t: t * 2.0, [np.nan, np.inf, -np.inf, 0.0, 3.0]),
])
@pytest.mark.parametrize("use_fused", [False, True])
def test_elementwise_nan_and_inf_are_kept(name, fn, expected, use_fused):
    x = Tensor(NONFINITE, requires_grad=True)
    with fused.enabled(use_fused), np.errstate(all="ignore"):
        y = fn(x)
        y.sum().backward()
    np.testing.assert_allclose(y.data, expected, rtol=1e-15)   # NaN where NaN went in, infinities kept
    assert np.isnan(y.data[0])


@pytest.mark.parametrize("use_fused", [False, True])
def test_nan_gradients_are_not_hidden_by_tanh_and_sigmoid(use_fused):
    for fn in (F.tanh, F.sigmoid):
        x = Tensor([np.nan, 0.0], requires_grad=True)
        with fused.enabled(use_fused), np.errstate(all="ignore"):
            fn(x).sum().backward()
        assert np.isnan(x.grad[0]) and x.grad[1] > 0


def test_reductions_and_losses_keep_nan_and_inf():
    with np.errstate(all="ignore"):
        assert np.isnan(Tensor(NONFINITE).sum().item())
        assert Tensor([1.0, np.inf]).sum().item() == np.inf
        assert Tensor([1.0, np.inf]).mean().item() == np.inf
        assert np.isnan(Tensor(NONFINITE).max().item())
        assert np.isnan(F.softmax(Tensor([np.nan, 0.0, 1.0])).data).all()
        assert np.isnan(F.log_softmax(Tensor([np.nan, 0.0, 1.0])).data).all()
        assert np.isnan((Tensor(np.full((2, 2), np.nan)) @ Tensor(np.ones(2))).data).all()
        assert F.mse_loss(Tensor([np.inf, 0.0]), np.zeros(2)).item() == np.inf
        assert np.isnan(F.mse_loss(Tensor([np.nan, 0.0]), np.zeros(2)).item())
        for use_fused in (False, True):
            with fused.enabled(use_fused):
                assert np.isnan(F.cross_entropy(Tensor([[np.nan, 0.0, 1.0]]), [1]).item())
                assert F.cross_entropy(Tensor([[-np.inf, 0.0, 1.0]]), [0]).item() == np.inf  # impossible class
        assert Tensor([0.0]).log().item() == -np.inf
        assert np.isnan(Tensor([-1.0]).sqrt().item())
