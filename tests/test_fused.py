"""The opt-in fused tanh, sigmoid and cross-entropy agree with the plain compositions.

Tolerance: 1e-12 relative (floor 1 in the denominator) in values and gradients,
float64; the compositions are the reference.
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_rnn as tg
from tinygrad_rnn import functional as F
from tinygrad_rnn import fused

TOL = 1e-12
values = st.floats(-30, 30, allow_nan=False, allow_infinity=False)


def _run(fn, arrays, on):
    inputs = [tg.Tensor(a, requires_grad=True) for a in arrays]
    with fused.enabled(on):
        out = fn(*inputs)
    seed = np.random.default_rng(0).normal(size=out.shape)   # a fixed projection of the output
    out.backward(seed)
    return out, [t.grad for t in inputs]


def _assert_agree(fn, *arrays, fused_op=None):
    plain, plain_grads = _run(fn, arrays, False)
    quick, quick_grads = _run(fn, arrays, True)
    if fused_op is not None:
        assert quick._op == fused_op and plain._op != fused_op
    for a, b in zip([plain.data, *plain_grads], [quick.data, *quick_grads]):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(b, a, rtol=TOL, atol=TOL)


@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=3, max_side=4), elements=values))
def test_tanh_and_sigmoid_agree(x):
    _assert_agree(F.tanh, x, fused_op="tanh")
    _assert_agree(F.sigmoid, x, fused_op="sigmoid")


@st.composite
def logits_and_targets(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=4))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    logits = draw(hnp.arrays(np.float64, shape, elements=values))
    rest = shape[:axis % len(shape)] + shape[axis % len(shape) + 1:]
    if draw(st.booleans()):
        target = draw(hnp.arrays(np.int64, rest, elements=st.integers(0, shape[axis] - 1)))
    else:
        raw = draw(hnp.arrays(np.float64, shape, elements=st.floats(0.01, 1)))
        target = raw / raw.sum(axis=axis, keepdims=True)
    return logits, target, axis


@given(logits_and_targets(), st.sampled_from(["mean", "sum", "none"]))
def test_cross_entropy_agrees(case, reduction):
    logits, target, axis = case
    _assert_agree(lambda x: F.cross_entropy(x, target, axis=axis, reduction=reduction), logits,
                  fused_op="cross_entropy")


def test_float32_stays_float32():
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    for fn in (F.tanh, F.sigmoid, lambda t: F.cross_entropy(t, np.array([0, 1, 3]))):
        out, (grad,) = _run(fn, [x], True)
        assert out.dtype == np.float32 and grad.dtype == np.float32


def test_extreme_logits_fall_back_to_the_composition():
    logits = np.array([[1e308, -1e308, 0.0], [np.inf, 0.0, 1.0]])
    with np.errstate(over="raise", invalid="raise"):
        plain, plain_grads = _run(lambda x: F.cross_entropy(x, np.array([1, 2]), reduction="none"), [logits], False)
        quick, quick_grads = _run(lambda x: F.cross_entropy(x, np.array([1, 2]), reduction="none"), [logits], True)
    assert quick._op != "cross_entropy"
    np.testing.assert_array_equal(quick.data, plain.data)
    np.testing.assert_array_equal(quick_grads[0], plain_grads[0])


def test_switch_nests_and_restores():
    assert not fused.is_enabled()
    with fused.enabled():
        assert fused.is_enabled()
        with fused.enabled(False):
            assert not fused.is_enabled()
        assert fused.is_enabled()
    assert not fused.is_enabled()

    @fused.enabled()
    def inside():
        return fused.is_enabled()
    assert inside() and not fused.is_enabled()


def test_fused_gradients_match_finite_differences():
    x = tg.Tensor(np.random.default_rng(1).normal(size=(3, 4)), requires_grad=True)
    with fused.enabled():
        assert tg.gradcheck(lambda t: F.cross_entropy(F.tanh(t) * F.sigmoid(t), np.array([0, 3, 2])), x,
                            atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("bad", ["max", None])
def test_bad_reduction_is_rejected_on_both_paths(bad):
    for on in (False, True):
        with fused.enabled(on), pytest.raises(ValueError, match="reduction"):
            F.cross_entropy(tg.Tensor(np.zeros((2, 3))), np.array([0, 1]), reduction=bad)
