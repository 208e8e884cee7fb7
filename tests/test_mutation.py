"""The gradient property suite catches a backward that is wrong by 0.1 %.

Each case breaks one operation's backward (its gradient scaled by 1.001, for
all inputs or for one input only), then runs the very hypothesis test from
``test_ops_gradients.py`` / ``test_functional.py`` that covers the operation
and requires it to fail with ``GradcheckError``.  A control case wraps the
operation with a factor of exactly 1 and requires the same test to pass, so
the failure comes from the wrong gradient and not from the wrapping.
"""
import functools

import numpy as np
import pytest
from hypothesis import Phase, settings

import tinygrad_rnn as tg
import tinygrad_rnn.tensor as engine
from tinygrad_rnn import GradcheckError, Tensor, fused

import test_functional as tf
import test_ops_gradients as to

WRONG = 1.001


def scaled_backward(make, factor, only=None):
    """Wrap an operation so the nodes it creates pass back ``factor`` times the right gradient.

    ``only`` = k scales only the gradient for the k-th input.  Backward closures
    are linear in the incoming gradient, so scaling that is scaling the result.
    """
    @functools.wraps(make)
    def broken(*args, **kwargs):
        out = make(*args, **kwargs)
        right = getattr(out, "_backward", None)   # (a fused function may return None: not handled)
        if right is None:
            return out

        if only is None:
            out._backward = lambda g: right(g * factor)
        else:
            def wrong(g):
                grads = list(right(g))
                if grads[only] is not None:
                    grads[only] = np.asarray(grads[only]) * factor
                return tuple(grads)
            out._backward = wrong
        return out
    return broken


def quick(test, monkeypatch):
    """The same test and examples, without shrinking a failure or saving it to the example database.

    Shrinking only makes the report prettier (and costs most of the time here);
    saving would make the unbroken test replay examples found against a broken engine.
    """
    if monkeypatch is not None and hasattr(test, "_hypothesis_internal_use_settings"):
        current = test._hypothesis_internal_use_settings
        monkeypatch.setattr(test, "_hypothesis_internal_use_settings", settings(
            current, phases=[Phase.explicit, Phase.generate], database=None, report_multiple_bugs=False))
    return test


def expect_caught(test, monkeypatch=None):
    """Run a hypothesis property test and require a GradcheckError from it."""
    try:
        quick(test, monkeypatch)()
    except GradcheckError as e:
        return str(e)
    except BaseExceptionGroup as group:   # several distinct failures reported together
        assert all(isinstance(e, GradcheckError) for e in group.exceptions), group
        return str(group.exceptions[0])
    pytest.fail(f"{test.__name__} passed although the backward was wrong by a factor {WRONG}")


# (where the operation lives, its name, which input's gradient is wrong, the test that must catch it)
CASES = [
    (Tensor, "__mul__", None, to.test_mul),
    (Tensor, "__mul__", 1, to.test_mul),
    (Tensor, "__truediv__", 1, to.test_div),
    (Tensor, "__pow__", 0, to.test_pow_by_number),
    (Tensor, "__pow__", 1, to.test_pow_by_tensor),
    (Tensor, "__matmul__", None, to.test_matmul),
    (Tensor, "__matmul__", 1, to.test_batched_matmul),
    (Tensor, "exp", None, to.test_exp),
    (Tensor, "log", None, to.test_log),
    (Tensor, "sqrt", None, to.test_sqrt),
    (Tensor, "abs", None, to.test_abs),
    (Tensor, "clip", None, to.test_clip),
    (Tensor, "sum", None, to.test_sum),
    (Tensor, "max", None, to.test_max),
    (Tensor, "reshape", None, to.test_reshape),
    (Tensor, "transpose", None, to.test_transpose),
    (Tensor, "__getitem__", None, to.test_getitem_basic),
    (Tensor, "__getitem__", None, to.test_getitem_integer_arrays_with_repeats),
    (Tensor, "__getitem__", None, to.test_getitem_boolean_mask),
    (tg, "concat", None, to.test_concat),
    (tg, "stack", None, to.test_stack),
    (tg, "where", 1, to.test_where),
    # the compositions have no backward of their own: a wrong primitive shows through them
    (Tensor, "expm1", None, tf.test_tanh),
    (Tensor, "exp", None, tf.test_sigmoid),
    (Tensor, "exp", None, tf.test_softmax),
    (Tensor, "log", None, tf.test_log_softmax),
    (Tensor, "__getitem__", None, tf.test_cross_entropy),
    # the opt-in fused versions have a backward of their own
    (fused, "tanh", None, tf.test_fused_tanh),
    (fused, "sigmoid", None, tf.test_fused_sigmoid),
    (fused, "cross_entropy", None, tf.test_fused_cross_entropy),
]


@pytest.mark.parametrize("owner, name, only, test", CASES,
                         ids=[f"{c[1]}{'' if c[2] is None else f'[input {c[2]}]'}-{c[3].__name__}" for c in CASES])
def test_a_gradient_wrong_by_a_tenth_of_a_percent_is_caught(monkeypatch, owner, name, only, test):
    monkeypatch.setattr(owner, name, scaled_backward(getattr(owner, name), WRONG, only))
    message = expect_caught(test, monkeypatch)
    assert "autograd" in message and "numeric" in message


@pytest.mark.parametrize("owner, name, test", [(Tensor, "__mul__", to.test_mul), (tg, "concat", to.test_concat),
                                               (Tensor, "__getitem__", to.test_getitem_integer_arrays_with_repeats)])
def test_control_the_same_wrapping_with_factor_one_passes(monkeypatch, owner, name, test):
    monkeypatch.setattr(owner, name, scaled_backward(getattr(owner, name), 1.0))
    quick(test, monkeypatch)()


def test_summing_broadcast_gradients_wrongly_is_caught(monkeypatch):
    """Averaging instead of summing over broadcast axes (a classic slip) fails the add test."""
    right = engine._unbroadcast

    def averaging(g, shape):
        out = right(g, shape)
        copies = g.size // max(out.size, 1)
        return out / copies if copies > 1 else out
    monkeypatch.setattr(engine, "_unbroadcast", averaging)
    expect_caught(to.test_add, monkeypatch)
