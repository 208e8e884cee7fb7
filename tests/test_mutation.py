"""The gradient property suite is only worth what it catches: a backward wrong by 0.1 % must fail it.

For every operation that a differentiable row of ``op_table.py`` covers, the operation is
monkeypatched so that the node it produces passes back 1.001 times the right gradient (an
index node's backward hands back a ``_Scatter``, whose ``.g`` is scaled instead), and the
row's gradient property test (``test_ops_gradients.gradient_test``) is run and must fail
with an AssertionError.
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
from hypothesis import Phase

import tinygrad_rnn as tg
from tinygrad_rnn import Tensor
from tinygrad_rnn import functional as F
from tinygrad_rnn import tensor as engine

from op_table import BY_NAME, DIFFERENTIABLE
from test_ops_gradients import gradient_test

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


def must_fail(row_name):
    """Run a row's gradient property test; it must fail with AssertionError (a wrong gradient).
    The same examples as the suite's, but the first failure is reported as it is instead of
    shrunk: the failure is what matters here, and shrinking would cost most of the time."""
    # as many examples as the ci profile in every profile: a row that covers several operations (the
    # arithmetic with a constant) must draw the broken one, which a quick local profile could miss
    test = gradient_test(BY_NAME[row_name], phases=[Phase.explicit, Phase.reuse, Phase.generate],
                         report_multiple_bugs=False, database=None, max_examples=150)
    try:
        test()
    except AssertionError as e:
        return str(e)
    except BaseExceptionGroup as group:          # hypothesis reports several distinct failures together
        assert all(isinstance(e, AssertionError) for e in group.exceptions), group
        return str(group.exceptions[0])
    pytest.fail(f"the gradient test of row {row_name!r} passed although a backward was wrong by a factor {WRONG}")


# every (operation, row) pair: each row must catch a wrong backward of every operation it covers
PAIRS = [(op, row.name) for row in DIFFERENTIABLE for op in row.covers]


@pytest.mark.parametrize("op, row", PAIRS, ids=[f"{op}-{row}" for op, row in PAIRS])
def test_a_backward_wrong_by_a_tenth_of_a_percent_is_caught(monkeypatch, op, row):
    break_op(monkeypatch, op)
    message = must_fail(row)
    assert "autograd vs numeric" in message, message   # failed by the gradient comparison, nothing else


# only one input's gradient wrong: the test must check each input separately
ONE_INPUT = [("Tensor.__mul__", 1, "mul"), ("Tensor.__mul__", 0, "mul"),
             ("Tensor.__truediv__", 1, "div"),
             ("Tensor.__pow__", 1, "pow_by_tensor"),
             ("Tensor.__matmul__", 0, "matmul_batched"),
             ("Tensor.__matmul__", 1, "matmul_batched"),
             ("Tensor.__matmul__", 1, "matmul"),
             ("tensor.where", 1, "where"),
             ("tensor.concat", 1, "concat"),
             ("tensor.maximum", 1, "maximum"), ("tensor.minimum", 0, "minimum")]


@pytest.mark.parametrize("op, only, row", ONE_INPUT, ids=[f"{o}[{i}]-{r}" for o, i, r in ONE_INPUT])
def test_one_input_wrong_is_caught(monkeypatch, op, only, row):
    break_op(monkeypatch, op, only=only)
    must_fail(row)


# the compositions' pieces: a wrong primitive shows through the function built on it
PIECES = [("Tensor.expm1", "tanh"), ("Tensor.__truediv__", "tanh"), ("Tensor.__mul__", "tanh"),
          ("Tensor.exp", "sigmoid"), ("tensor.where", "relu"),
          ("Tensor.exp", "softmax"), ("Tensor.sum", "softmax"), ("Tensor.log", "log_softmax"),
          ("Tensor.__getitem__", "cross_entropy_class_indices"), ("Tensor.__sub__", "mse_loss"),
          ("Tensor.max", "min"), ("Tensor.reshape", "squeeze"), ("Tensor.reshape", "unsqueeze"),
          ("Tensor.__mul__", "leaky_relu"), ("Tensor.log1p", "softplus"), ("Tensor.exp", "softplus"),
          ("Tensor.exp", "logsumexp"), ("Tensor.log", "logsumexp")]


@pytest.mark.parametrize("op, row", PIECES, ids=[f"{o}-{r}" for o, r in PIECES])
def test_a_wrong_piece_of_a_composition_is_caught(monkeypatch, op, row):
    if op == "tensor.where":       # functional imported where from the engine module
        monkeypatch.setattr(F, "where", scaled_backward(engine.where, WRONG))
    else:
        break_op(monkeypatch, op)
    must_fail(row)


CONTROLS = [("Tensor.__mul__", "mul"), ("Tensor.__getitem__", "getitem_mask"),
            ("Tensor.__getitem__", "getitem_integer_arrays"), ("Tensor.T", "T"), ("tensor.concat", "concat"),
            ("Tensor.expm1", "tanh")]


@pytest.mark.parametrize("op, row", CONTROLS, ids=[f"{o}-{r}" for o, r in CONTROLS])
def test_control_the_same_wrapping_with_factor_one_passes(monkeypatch, op, row):
    break_op(monkeypatch, op, factor=1.0)
    gradient_test(BY_NAME[row])()


def test_averaging_instead_of_summing_over_broadcast_axes_is_caught(monkeypatch):
    """A classic slip in the adjoint of broadcasting."""
    right = engine._unbroadcast

    def averaging(g, shape):
        out = right(g, shape)
        copies = g.size // max(out.size, 1)
        return out / copies if copies > 1 else out
    monkeypatch.setattr(engine, "_unbroadcast", averaging)
    must_fail("add")


def test_repeated_indices_overwriting_instead_of_accumulating_is_caught(monkeypatch):
    """``buffer[idx] += g`` drops all but one of repeated indices; the engine must use np.add.at."""
    def overwrite(self, buffer):
        buffer[self.idx] += self.g
    monkeypatch.setattr(engine._Scatter, "add_into", overwrite)
    must_fail("getitem_integer_arrays")
