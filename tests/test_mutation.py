"""The gradient property suite is only worth what it catches: a backward wrong by 0.1 % must fail it.

For every operation that a test of ``test_ops_gradients.py`` or
``test_functional.py`` declares with ``@covers``, the operation is monkeypatched so that the node it
produces passes back 1.001 times the right gradient (an index node's backward
hands back a ``_Scatter``, whose ``.g`` is scaled instead), and the very
hypothesis test registered for it is run and must fail with an AssertionError.
The compositions in ``functional`` have no backward of their own, so their pieces
(expm1 and div for tanh, exp for sigmoid and softmax, log for log_softmax,
indexing for cross_entropy) are broken one at a time as well.  A control wraps
operations with a factor of exactly 1 and requires the same tests to pass, so a
failure comes from the wrong gradient, not from the wrapping.
"""
import copy
import functools
import sys

import numpy as np
import pytest
from hypothesis import Phase, settings

import tinygrad_rnn as tg
from tinygrad_rnn import Tensor
from tinygrad_rnn import functional as F
from tinygrad_rnn import tensor as engine

import strategies
import test_functional as tf
import test_ops_gradients as to

if sys.version_info < (3, 11):                    # Python 3.10: hypothesis depends on the backport
    from exceptiongroup import BaseExceptionGroup

WRONG = 1.001


@pytest.fixture(autouse=True)
def _expanded():
    """Compositions run node by node here, so that a broken primitive shows through them (a compiled
    composition is written once, from the engine as it was at its first call)."""
    with tg.expanded():
        yield


def _scale(pg, factor):
    if pg is None:
        return None
    if isinstance(pg, engine._Scatter):          # the index gradient, scattered later: scale what it carries
        pg = copy.copy(pg)
        pg.g = pg.g * factor
        return pg
    return np.asarray(pg) * factor


def scaled_backward(make, factor, only=None):
    """``make`` (an operation) whose result node passes back ``factor`` times the right gradient,
    to every input or only to input number ``only``."""
    @functools.wraps(make)
    def broken(*args, **kwargs):
        out = make(*args, **kwargs)
        right = getattr(out, "_backward", None)
        if right is None:                        # not recorded (no_grad, or nothing needs a gradient)
            return out

        def wrong(g):
            grads = list(right(g))
            return tuple(_scale(pg, factor) if only in (None, i) else pg for i, pg in enumerate(grads))
        out._backward = wrong
        return out
    return broken


def owner_and_name(op):
    """Where to monkeypatch a registry key: 'Tensor.exp' -> (Tensor, 'exp'), 'functional.tanh' ->
    (F, 'tanh'), 'tensor.concat' -> (tg, 'concat'): the tests call the package's name."""
    prefix, name = op.split(".", 1)
    return {"Tensor": Tensor, "functional": F, "tensor": tg}[prefix], name


def break_op(monkeypatch, op, factor=WRONG, only=None):
    owner, name = owner_and_name(op)
    original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    if isinstance(original, property):           # .T
        monkeypatch.setattr(owner, name, property(scaled_backward(original.fget, factor, only)))
    else:
        monkeypatch.setattr(owner, name, scaled_backward(original, factor, only))


def must_fail(test, monkeypatch=None):
    """Run a hypothesis property test; it must fail with AssertionError (a wrong gradient)."""
    if monkeypatch is not None and hasattr(test, "_hypothesis_internal_use_settings"):
        # the same examples, but report the first failure as it is instead of shrinking it: the
        # failure is what matters here, and shrinking would cost most of the time
        current = test._hypothesis_internal_use_settings
        monkeypatch.setattr(test, "_hypothesis_internal_use_settings", settings(
            current, phases=[Phase.explicit, Phase.reuse, Phase.generate], report_multiple_bugs=False,
            database=None))
    try:
        test()
    except AssertionError as e:
        return str(e)
    except BaseExceptionGroup as group:          # hypothesis reports several distinct failures together
        assert all(isinstance(e, AssertionError) for e in group.exceptions), group
        return str(group.exceptions[0])
    pytest.fail(f"{test.__name__} passed although a backward was wrong by a factor {WRONG}")


REGISTRY = {op: [t for t in tests if t.__module__ in (to.__name__, tf.__name__)]
            for op, tests in strategies.COVERED.items()}
# every registered (operation, test) pair: each test must catch its own operation's wrong backward
PAIRS = [(op, test) for op, tests in sorted(REGISTRY.items()) for test in tests]


@pytest.mark.parametrize("op, test", PAIRS, ids=[f"{op}-{t.__name__}" for op, t in PAIRS])
def test_a_backward_wrong_by_a_tenth_of_a_percent_is_caught(monkeypatch, op, test):
    break_op(monkeypatch, op)
    message = must_fail(test, monkeypatch)
    assert "autograd vs numeric" in message, message   # failed by the gradient comparison, nothing else


# only one input's gradient wrong: the test must check each input separately
ONE_INPUT = [("Tensor.__mul__", 1, to.test_mul), ("Tensor.__mul__", 0, to.test_mul),
             ("Tensor.__truediv__", 1, to.test_div),
             ("Tensor.__pow__", 1, to.test_pow_by_tensor),
             ("Tensor.__matmul__", 0, to.test_matmul_batched_and_broadcast),
             ("Tensor.__matmul__", 1, to.test_matmul_batched_and_broadcast),
             ("Tensor.__matmul__", 1, to.test_matmul),
             ("tensor.where", 1, to.test_where),
             ("tensor.concat", 1, to.test_concat),
             ("tensor.maximum", 1, to.test_maximum), ("tensor.minimum", 0, to.test_minimum)]


@pytest.mark.parametrize("op, only, test", ONE_INPUT, ids=[f"{o}[{i}]-{t.__name__}" for o, i, t in ONE_INPUT])
def test_one_input_wrong_is_caught(monkeypatch, op, only, test):
    break_op(monkeypatch, op, only=only)
    must_fail(test, monkeypatch)


# the compositions' pieces: a wrong primitive shows through the function built on it
PIECES = [("Tensor.expm1", tf.test_tanh_gradient),
          ("Tensor.__truediv__", tf.test_tanh_gradient),
          ("Tensor.__mul__", tf.test_tanh_gradient),
          ("Tensor.exp", tf.test_sigmoid_gradient),
          ("tensor.where", tf.test_relu_gradient_away_from_the_kink),
          ("Tensor.exp", tf.test_softmax_gradient),
          ("Tensor.sum", tf.test_softmax_gradient),
          ("Tensor.log", tf.test_log_softmax_gradient),
          ("Tensor.__getitem__", tf.test_cross_entropy_gradient_class_indices),
          ("Tensor.__sub__", tf.test_mse_loss_gradient_for_prediction_and_target),
          ("Tensor.max", to.test_min), ("Tensor.reshape", to.test_squeeze), ("Tensor.reshape", to.test_unsqueeze),
          ("Tensor.__mul__", tf.test_leaky_relu_gradient_away_from_the_kink),
          ("Tensor.log1p", tf.test_softplus_gradient), ("Tensor.exp", tf.test_softplus_gradient),
          ("Tensor.exp", tf.test_logsumexp_gradient), ("Tensor.log", tf.test_logsumexp_gradient)]


@pytest.mark.parametrize("op, test", PIECES, ids=[f"{o}-{t.__name__}" for o, t in PIECES])
def test_a_wrong_piece_of_a_composition_is_caught(monkeypatch, op, test):
    if op == "tensor.where":       # functional imported where from the engine module
        monkeypatch.setattr(F, "where", scaled_backward(engine.where, WRONG))
    else:
        break_op(monkeypatch, op)
    must_fail(test, monkeypatch)


CONTROLS = [("Tensor.__mul__", to.test_mul), ("Tensor.__getitem__", to.test_getitem_boolean_mask),
            ("Tensor.__getitem__", to.test_getitem_integer_arrays_with_repeated_indices),
            ("Tensor.T", to.test_T), ("tensor.concat", to.test_concat),
            ("Tensor.expm1", tf.test_tanh_gradient)]


@pytest.mark.parametrize("op, test", CONTROLS, ids=[f"{o}-{t.__name__}" for o, t in CONTROLS])
def test_control_the_same_wrapping_with_factor_one_passes(monkeypatch, op, test):
    break_op(monkeypatch, op, factor=1.0)
    test()


def test_averaging_instead_of_summing_over_broadcast_axes_is_caught(monkeypatch):
    """A classic slip in the adjoint of broadcasting."""
    right = engine._unbroadcast

    def averaging(g, shape):
        out = right(g, shape)
        copies = g.size // max(out.size, 1)
        return out / copies if copies > 1 else out
    monkeypatch.setattr(engine, "_unbroadcast", averaging)
    must_fail(to.test_add, monkeypatch)


def test_repeated_indices_overwriting_instead_of_accumulating_is_caught(monkeypatch):
    """``buffer[idx] += g`` drops all but one of repeated indices; the engine must use np.add.at."""
    def overwrite(self, buffer):
        buffer[self.idx] += self.g
    monkeypatch.setattr(engine._Scatter, "add_into", overwrite)
    must_fail(to.test_getitem_integer_arrays_with_repeated_indices, monkeypatch)
