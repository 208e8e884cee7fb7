"""The engine: a Tensor that remembers how it was made, and reverse-mode autodiff over that record.

Every operation below computes its result with numpy and, next to it, a small
``backward`` closure: given the gradient of the loss with respect to the result,
it returns the gradients with respect to each input.  The result Tensor keeps
that closure and its inputs (``_parents``); together they form the graph.

``Tensor.backward`` orders the graph with an explicit stack (no recursion, so a
graph of any depth works), walks it from the output back to the leaves, reduces
each gradient to its input's shape (undoing numpy broadcasting in one place),
accumulates gradients that meet, and frees the graph as it goes.

This module imports nothing else from the package.  ``tanh``, ``sigmoid`` and
``relu`` are compositions of the operations here; ``functional.py`` defines them
and attaches them as methods.

While ``tracing.trace`` runs a function, each operation is also reported to a
recorder (``_tracer``), with its other arguments (``attrs``), so that the step
can be written out as numpy code.  ``derived`` and ``decide`` are how a
composition computes a constant or picks a branch from values, in a way such a
trace recomputes or guards rather than freezes.
"""
import contextlib
import functools
import inspect
import itertools
import operator
import types

import numpy as np

__all__ = ["Tensor", "concat", "stack", "where", "maximum", "minimum", "no_grad", "is_grad_enabled", "grad",
           "derived", "decide", "time_step", "label"]

_grad_enabled = True
_creation_counter = itertools.count()  # creation order is a topological order: inputs exist first
_last_write = -1  # the creation number of the library's last in-place write (see _writable)
_tracer = None  # while tracing.trace runs a function, every operation is also reported to it


def is_grad_enabled():
    """True when new operations are being recorded for backward."""
    return _grad_enabled


class no_grad(contextlib.ContextDecorator):
    """Stop recording the graph, as a context manager (``with no_grad():``) or a decorator."""

    def __init__(self):
        self._saved = []

    def __enter__(self):
        """Switch recording off until the block ends."""
        global _grad_enabled
        self._saved.append(_grad_enabled)
        _grad_enabled = False

    def __exit__(self, *exc):
        """Restore the recording state from before the block (exceptions pass through)."""
        global _grad_enabled
        _grad_enabled = self._saved.pop()
        return False


def derived(fn, *tensors, **params):
    """Constant Tensors (no gradient) computed by ``fn`` from the tensors' values: signs, masks, shifts.

    ``fn(*arrays, **params)`` returns an array or a tuple of arrays.  Compositions
    take data-dependent constants through here instead of reading ``.data``, so
    that a traced program (``tracing.trace``) recomputes them for new inputs.
    ``fn`` must be a module-level function of numpy only.
    """
    out = fn(*(t.data for t in tensors), **params)
    made = tuple(_constant(np.asarray(a)) for a in (out if isinstance(out, tuple) else (out,)))
    if _tracer is not None:
        _tracer.derived(made, fn, tensors, params)
    return made if isinstance(out, tuple) else made[0]


def decide(fn, *tensors, **params):
    """``fn(*arrays, **params)``: a Python value that picks a branch of a composition.

    A traced program checks that the value is the same for new inputs (a guard)
    and runs the function eagerly when it is not.
    """
    value = fn(*(t.data for t in tensors), **params)
    if _tracer is not None:
        _tracer.decide(value, fn, tensors, params)
    return value


def time_step(step):
    """Mark the operations that follow as time step ``step`` (None: outside a loop), for a trace's names."""
    if _tracer is not None:
        _tracer.step = step


def label(t, name):
    """Name ``t`` in a traced program's code (``h`` at step 3 is written ``h_3``); returns ``t``."""
    if _tracer is not None:
        _tracer.label(t, name)
    return t


def _graph_freed(g):
    raise RuntimeError(
        "backward through a graph that has already been freed: a previous backward() released it. "
        "Pass retain_graph=True to the first backward() to keep it, or call detach() on a state "
        "carried over from an earlier step (truncated BPTT).")


def _unbroadcast(g, shape):
    """Sum ``g`` down to ``shape``: the adjoint of numpy broadcasting (one sum over every axis it added or
    stretched; which axes those are depends on the shapes alone, so a traced program finds them once)."""
    return g if g.shape == shape else np.asarray(g.sum(axis=_broadcast_axes(g.shape, shape))).reshape(shape)


def _broadcast_axes(big, shape):
    """The axes of ``big`` that broadcasting ``shape`` to ``big`` added (in front) or stretched (from 1)."""
    extra = len(big) - len(shape)
    return tuple(range(extra)) + tuple(extra + i for i, n in enumerate(shape) if n == 1 and big[extra + i] != 1)


def _check_axis(axis, shape, op):
    """A reduction's ``axis`` (None, an int or a tuple of ints) must name axes of ``shape``."""
    axes = axis if isinstance(axis, tuple) else () if axis is None else (axis,)
    if any(not -len(shape) <= a < len(shape) for a in axes) or len({a % len(shape) for a in axes}) < len(axes):
        raise ValueError(f"{op}: axis {axis!r} does not fit shape {shape} ({len(shape)} dimensions)")


def _rows(a):
    """``a`` as a matrix of its last axis (``reshape(-1, n)`` fails when n is 0: the rows are counted then).

    No module but numpy is used: a traced program's saved module copies this function.
    """
    return a.reshape(-1, a.shape[-1]) if a.shape[-1] else a.reshape(int(np.prod(a.shape[:-1])), 0)


def _folded_matmul(a, b):
    """``a @ b``; a stack of rows times one matrix is done as one large product (faster than many)."""
    return (_rows(a) @ b).reshape(a.shape[:-1] + b.shape[-1:]) if a.ndim > 2 and b.ndim == 2 else a @ b


# Every derivative is written once, with operators and the functions of ``m``: on the normal path ``m``
# is numpy and the backward's saved operands are arrays; a backward that builds a graph
# (``grad(..., create_graph=True)``) passes ``m=_T`` (numpy's functions as Tensor operations, at the
# end of this module) and Tensors for the operands, so that the gradient can be differentiated again.
def _sum_to(x, shape, m):
    """``_unbroadcast`` for ``m`` (numpy) or ``sum_to`` (Tensors)."""
    return _unbroadcast(x, shape) if m is np else x if x.shape == shape else x.sum_to(shape)


def _power(a, e, mask, out, m):
    """``a ** e`` where ``mask``, 1 elsewhere (so that no 0 ** -1 is ever taken)."""
    if m is np:
        return np.power(a, e, where=mask, out=np.ones_like(out))
    return m.where(mask, a, 1) ** e


# ---------------------------------------------------------------------- every primitive's derivative
# Module-level, each written once: the operations below call them, and a traced program calls the same
# ones (on arrays).  A ``_grad`` function gives one input's gradient, a ``_backward`` function all of them.
def _sub_grad_b(g, shape, m=np):
    """The subtrahend's gradient: reduced before it is negated (cheaper when it was broadcast)."""
    return -_sum_to(g, shape, m)


def _mul_grad(g, other, m=np):
    """Either factor's gradient: ``g`` times the other factor."""
    return g * other


def _div_grad_a(g, b, m=np):
    return g / b


def _div_grad_b(g, b, out, m=np):
    return -g * out / b


def _neg_backward(g, m=np):
    return -g


def _matmul_grad_a(g, b, m=np):
    """The first factor's gradient when ``b`` is a matrix and ``a`` a matrix or a stack of rows (the common
    cases, ``_matrix_factor``; else ``_matmul_backward``)."""
    return g @ b.T if g.ndim == 2 else _folded_matmul(g, b.T)


def _matmul_grad_b(g, a, m=np):
    """The matrix's gradient: one product over all rows of the stack."""
    return a.T @ g if a.ndim == 2 else _rows(a).T @ _rows(g)


def _exp_backward(g, out, m=np):
    return g * out


def _expm1_backward(g, x, m=np):
    return g * m.exp(x)


def _log_backward(g, x, m=np):
    return g / x


def _sqrt_backward(g, out, m=np):
    return g / (2 * out)


def _abs_backward(g, x, m=np):
    """The gradient at 0 is 0, as numpy.sign (x is an array: the sign is a constant)."""
    return g * np.sign(x)


def _where_grad_a(g, mask, m=np):
    return m.where(mask, g, 0)


def _where_grad_b(g, mask, m=np):
    return m.where(mask, 0, g)


def _reshape_backward(g, shape, m=np):
    return g.reshape(shape)


def _transpose_backward(g, inverse, m=np):
    return g.transpose(inverse)


def _broadcast_to_backward(g, shape, m=np):
    return _sum_to(g, shape, m)


def _sum_to_backward(g, shape, m=np):
    return m.broadcast_to(g, shape)


def _concat_backward(g, splits, axis, m=np):
    return tuple(m.split(g, splits, axis=axis))


def _stack_backward(g, axis, m=np):
    """One slice of ``g`` along ``axis`` (the stacked axis, counted from the front) per input."""
    return tuple(g[_at(axis, i)] for i in range(g.shape[axis]))


def _scatter_add(buffer, idx, g):
    """An indexing's gradient, added into its input's gradient ``buffer`` at ``idx``."""
    buffer[idx] += g            # basic indexing never repeats an element


def _scatter_add_at(buffer, idx, g):
    """The same for an index that may repeat an element."""
    np.add.at(buffer, idx, g)   # repeated indices accumulate


def _at(axis, i):
    """The index of position ``i`` along ``axis``: ``(i,)``, ``(:, i)``, ..."""
    return (slice(None),) * axis + (i,)


# ---------------------------------------------------------------------- the longer forward and backward formulas
# Module-level: the operations below call them, and a traced program calls the same ones (on arrays).
def _pow_grad_base(g, a, b, out, m=np):
    """d/da a**b = b * a**(b-1), taken as 0 where a == b == 0 (a**(b-1) is infinite there).

    Only that point is special-cased, so that the formula stays differentiable in b at b == 0.
    """
    finite = m.logical_or(a != 0, b != 0)
    return g * m.where(finite, b * _power(a, b - 1, finite, out, m), 0)


def _pow_grad_exponent(g, a, out, m=np):
    """d/db a**b = a**b * log(a), taken as 0 where a == 0 (log is taken of 1 there: no 0 * inf)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return g * m.where(a == 0, 0, out * m.log(m.where(a == 0, 1, a)))


def _matmul_backward(g, a, b, need_a, need_b, m=np):
    """The gradients of ``a @ b`` for operands that are 1-D or stacks of matrices."""
    a2, b2 = a, b
    if a.ndim == 1 or b.ndim == 1:  # treat a 1-D operand as a row (a) or a column (b), as numpy does
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g = g[..., None] if b.ndim == 1 else g
        g = g[..., None, :] if a.ndim == 1 else g
    ga = gb = None
    if need_a:
        ga = _sum_to(_folded_matmul(g, m.swapaxes(b2, -1, -2)), a2.shape, m).reshape(a.shape)
    if need_b:
        if b2.ndim == 2:  # one weight matrix for all batches: a single product, not a sum of many
            gb = _rows(a2).T @ _rows(g)
        else:
            gb = _sum_to(m.swapaxes(a2, -1, -2) @ g, b2.shape, m)
        gb = gb.reshape(b.shape)
    return ga, gb


def _clip(x, lo, hi):
    out = np.clip(x, lo, hi)
    return out.astype(x.dtype) if out.dtype != x.dtype and x.dtype.kind == "f" else out


def _clip_backward(g, x, lo, hi, m=np):
    """The gradient passes where lo <= x <= hi (x, lo and hi are arrays: the mask is a constant)."""
    inside = (x >= lo) if lo is not None else True
    if hi is not None:
        inside = inside & (x <= hi)
    return m.where(inside, g, 0)


def _sum_backward(g, axis, keepdims, shape, m=np):
    if axis is not None and not keepdims:
        g = m.expand_dims(g, axis)
    elif axis is None and not keepdims:
        g = m.reshape(g, (1,) * len(shape))
    return m.broadcast_to(g, shape)


def _max(x, axis, keepdims):
    top = x.max(axis=axis, keepdims=True)
    return top if keepdims else np.asarray(np.squeeze(top, axis=axis))


def _max_backward(g, x, axis, m=np):
    """Where several elements tie for the maximum, they share its gradient equally (x is an array)."""
    top = x.max(axis=axis, keepdims=True)
    hit = (x == top) | np.isnan(x)   # a NaN maximum is where the NaN is: its gradient must not vanish
    g = m.reshape(g, top.shape)
    return m.where(hit, g / hit.sum(axis=axis, keepdims=True), 0)


# The formulas of sin, cos, log1p, maximum/minimum and the broadcasting pair, each written once here:
# the Tensor methods below call them, and so does a traced program.
def _sin_backward(g, x, m=np):
    return g * m.cos(x)


def _cos_backward(g, x, m=np):
    return -g * m.sin(x)


def _log1p_backward(g, x, m=np):
    return g / (1 + x)


def _choice_backward(g, a_side, tie, m):
    """g to the side that was picked; half of g to each side where they tie (as torch does)."""
    half = g * 0.5
    return m.where(a_side, g, m.where(tie, half, 0)), m.where(a_side, 0, m.where(tie, half, g))


def _maximum_backward(g, a, b, m=np):
    """A NaN is picked (it propagates), so its gradient must not vanish; two NaNs tie (a, b: arrays)."""
    a_nan, b_nan = np.isnan(a), np.isnan(b)
    return _choice_backward(g, (a > b) | (a_nan & ~b_nan), (a == b) | (a_nan & b_nan), m)


def _minimum_backward(g, a, b, m=np):
    a_nan, b_nan = np.isnan(a), np.isnan(b)
    return _choice_backward(g, (a < b) | (a_nan & ~b_nan), (a == b) | (a_nan & b_nan), m)


# The forwards that are not one numpy ufunc or function, each written once here: the Tensor methods call
# them, and a traced program writes their expression (or calls them) from the table below.
def _sum(x, axis, keepdims):
    return np.asarray(x.sum(axis=axis, keepdims=keepdims))


def _reshape(x, shape):
    return x.reshape(shape)


def _transpose(x, axes):
    return x.transpose(axes)


def _index(x, idx):
    return x[idx]


def _concat(xs, axis):
    return np.concatenate(xs, axis=axis)


def _stack(xs, axis):
    return np.stack(xs, axis=axis)


def _where(mask, a, b):
    return np.where(mask, a, b)


def _detach(x):
    return x


def _two_matrices(a, b):
    """Where ``_folded_matmul`` is the operator ``a @ b`` as written (it folds only a stack of rows)."""
    return a.ndim == 2 and b.ndim == 2


def _matrix_factor(a, b):
    """Where a product's gradients are one function per input: ``b`` a matrix, ``a`` one or a stack of rows."""
    return b.ndim == 2 and a.ndim >= 2


# ---------------------------------------------------------------------- the table of primitives
class _Primitive:
    """One primitive operation: its numpy forward and, for each input, the function of its gradient.

    ``grads[i]`` is ``(function, reads)``: the function is called as ``function(g, *values, m)``
    with the values named in ``reads`` (``a``, ``b``: the inputs; ``mask``: a ``where``'s condition;
    ``out``: the result; ``shape_a``, ``shape_b``: the inputs' shapes; ``attr0``, ``attr1``: the
    operation's other arguments; ``need_a``, ``need_b``: whether that input needs a gradient; ``lo``,
    ``hi``: a ``clip``'s bounds); a function of None passes ``g``
    on as it is.  ``several``, instead, gives every input's gradient in one call.  ``saved`` names
    the values that the Tensor's backward keeps (its parameters of those names): on the graph path
    they are handed to it as Tensors.  ``symbol`` is the operator that writes the forward (``a * b``), for
    inputs where ``operator_if`` holds (None: all).  An entry with both ``grads`` and ``several`` uses
    ``grads`` where ``grads_if`` holds for its inputs' arrays, ``several`` elsewhere.  ``scatter``, an
    indexing's, adds the gradient into the input's gradient buffer in place, for a basic index and for
    any index: ``function(buffer, index, g)``.  ``view``: the result may share the input's memory,
    so both are kept read-only while the graph lives (a write into one would reach the other).  ``args`` names
    what ``forward`` is called with, as ``reads`` does (``inputs``: all inputs, as a list; ``index``:
    ``attr0`` as an index); None: the inputs, then the other arguments.  A traced program writes the
    forward from these alone.
    """
    __slots__ = ("name", "forward", "grads", "several", "saved", "symbol", "args", "operator_if", "grads_if",
                 "scatter", "view")

    def __init__(self, name, forward=None, grads=(), several=None, saved=(), symbol=None, args=None,
                 operator_if=None, grads_if=None, scatter=None, view=False):
        self.name, self.forward, self.grads, self.several = name, forward, grads, several
        self.saved, self.symbol, self.args, self.operator_if = saved, symbol, args, operator_if
        self.grads_if, self.scatter, self.view = grads_if, scatter, view


def _table(*primitives):
    return {p.name: p for p in primitives}


_PRIMITIVES = _table(
    _Primitive("add", np.add, ((None, ()), (None, ())), symbol="+"),
    _Primitive("sub", np.subtract, ((None, ()), (_sub_grad_b, ("shape_b",))), symbol="-"),
    _Primitive("mul", np.multiply, ((_mul_grad, ("b",)), (_mul_grad, ("a",))), saved=("a", "b"), symbol="*"),
    _Primitive("div", np.divide, ((_div_grad_a, ("b",)), (_div_grad_b, ("b", "out"))), saved=("b", "out"),
               symbol="/"),
    _Primitive("pow", np.power, ((_pow_grad_base, ("a", "b", "out")), (_pow_grad_exponent, ("a", "out"))),
               saved=("a", "b", "out"), symbol="**"),
    _Primitive("neg", np.negative, ((_neg_backward, ()),), symbol="-"),
    # a matrix b: one function per input; other shapes: _matmul_backward gives both
    _Primitive("matmul", _folded_matmul, ((_matmul_grad_a, ("b",)), (_matmul_grad_b, ("a",))),
               several=(_matmul_backward, ("a", "b", "need_a", "need_b")), saved=("a", "b"), symbol="@",
               operator_if=_two_matrices, grads_if=_matrix_factor),
    _Primitive("exp", np.exp, ((_exp_backward, ("out",)),), saved=("out",)),
    _Primitive("expm1", np.expm1, ((_expm1_backward, ("a",)),), saved=("a",)),
    _Primitive("log", np.log, ((_log_backward, ("a",)),), saved=("a",)),
    _Primitive("sqrt", np.sqrt, ((_sqrt_backward, ("out",)),), saved=("out",)),
    _Primitive("abs", np.abs, ((_abs_backward, ("a",)),)),         # the sign is a constant: nothing saved
    _Primitive("sin", np.sin, ((_sin_backward, ("a",)),), saved=("a",)),
    _Primitive("cos", np.cos, ((_cos_backward, ("a",)),), saved=("a",)),
    _Primitive("log1p", np.log1p, ((_log1p_backward, ("a",)),), saved=("a",)),
    _Primitive("maximum", np.maximum, several=(_maximum_backward, ("a", "b"))),
    _Primitive("minimum", np.minimum, several=(_minimum_backward, ("a", "b"))),
    _Primitive("where", _where, ((_where_grad_a, ("mask",)), (_where_grad_b, ("mask",))), args=("mask", "a", "b")),
    _Primitive("clip", _clip, ((_clip_backward, ("a", "lo", "hi")),), args=("a", "lo", "hi")),
    _Primitive("sum", _sum, ((_sum_backward, ("attr0", "attr1", "shape_a")),)),
    _Primitive("max", _max, ((_max_backward, ("a", "attr0")),)),
    _Primitive("reshape", _reshape, ((_reshape_backward, ("shape_a",)),), view=True),
    _Primitive("transpose", _transpose, ((_transpose_backward, ("attr1",)),), args=("a", "attr0"), view=True),
    _Primitive("broadcast_to", np.broadcast_to, ((_broadcast_to_backward, ("shape_a",)),), view=True),
    _Primitive("sum_to", _unbroadcast, ((_sum_to_backward, ("shape_a",)),), view=True),  # (the input itself, if equal)
    _Primitive("concat", _concat, several=(_concat_backward, ("attr1", "attr0")), args=("inputs", "attr0")),
    _Primitive("stack", _stack, several=(_stack_backward, ("attr1",)), args=("inputs", "attr0")),
    # the engine hands the scatter over unmade (a _Scatter) and adds it into the buffer once it is there
    _Primitive("index", _index, scatter=(_scatter_add, _scatter_add_at), args=("a", "index")),
    _Primitive("detach", _detach),                   # no gradient flows through these
    _Primitive("less", np.less, symbol="<"),
    _Primitive("less_equal", np.less_equal, symbol="<="),
    _Primitive("greater", np.greater, symbol=">"),
    _Primitive("greater_equal", np.greater_equal, symbol=">="),
    _Primitive("equal", np.equal, symbol="=="),
    _Primitive("not_equal", np.not_equal, symbol="!="),
)
_INDEX = _PRIMITIVES["index"]


# ---------------------------------------------------------------------- the methods made from the table
_SAVED = ("a", "b", "out", "need_a", "need_b")     # what the backward of one or two inputs can hand over
_PASS = object()    # for a gradient function of None: the gradient is ``g`` itself (``+``)


def _caller(fn, reads):
    """The table's gradient function ``fn`` as a function of ``(g, a, b, out, m)``, handed the values its
    entry names (``shape_b``: ``b``'s shape): made once per entry, not per call."""
    if fn is None:
        return _PASS
    # the common cases without a step between (one value, or none)
    if reads == ("a",):
        return lambda g, a, b, out, m: fn(g, a, m)
    if reads == ("b",):
        return lambda g, a, b, out, m: fn(g, b, m)
    if reads == ("out",):
        return lambda g, a, b, out, m: fn(g, out, m)
    if reads == ("shape_b",):
        return lambda g, a, b, out, m: fn(g, b.shape, m)
    if not reads:
        return lambda g, a, b, out, m: fn(g, m)
    pick = operator.itemgetter(*map(_SAVED.index, reads))
    return lambda g, a, b, out, m: fn(g, *pick((a, b, out)), m)


def _several_caller(fn, reads):
    """The same for an entry's ``several``, as a function of ``(g, a, b, out, m, need_a, need_b)``."""
    pick = operator.itemgetter(*map(_SAVED.index, reads))
    return lambda g, a, b, out, m, na, nb: fn(g, *pick((a, b, out, na, nb)), m)


_ARGUMENT_VALUES = ("a", "out", "shape_a", "attr0", "attr1")   # the same for an operation with arguments


def _argument_caller(fn, reads):
    """The gradient function ``fn`` of an operation of one input with arguments, as a function of
    ``(g, values, m)``, ``values`` being ``(a, out, a's shape, *arguments)``."""
    pick = operator.itemgetter(*map(_ARGUMENT_VALUES.index, reads))
    if len(reads) == 1:
        return lambda g, values, m: fn(g, pick(values), m)
    return lambda g, values, m: fn(g, *pick(values), m)


def _locks(prim):
    """For each (a needs a gradient, b needs one), numbered ``need_a + 2 * need_b``: the positions of the
    inputs that the backward reads, and whether it reads ``out`` (each kept read-only while the graph
    lives).  An entry with ``grads`` says it through them (``matmul``'s ``several`` reads what they read)."""
    reads = [r for _, r in prim.grads] if prim.grads else [prim.several[1]] * 2
    table = []
    for need in range(4):
        read = {v for i, r in enumerate(reads) if need >> i & 1 for v in r}
        table.append((tuple(i for i, v in enumerate("ab") if v in read), "out" in read))
    return table


def _from_table(name, error=None):
    """A method of one or two inputs, elementwise or ``@``, made from the table's entry ``name``; the
    method written under it gives its name, signature and docstring, and nothing else::

        @_from_table("sin")
        def sin(self):
            \"\"\"Sine, elementwise.\"\"\"

    The node: the entry's forward on the data; a backward that hands each gradient function of the
    entry what it reads (the inputs ``a``, ``b`` and the result ``out``, default arguments that the
    graph path replaces by Tensors where the entry saves them), or its ``several`` function all of it;
    and what those read kept read-only while the graph lives.  A ValueError of the forward is reported
    with the shapes, or as ``error(self, other)`` makes it.  Everything per entry is decided here, once:
    a call of the method costs what a node written out by hand would.

    A method of one input with arguments (``sum(self, axis=None, keepdims=False)``) checks them in its
    body, which returns the node's arguments (``axis, keepdims``): the forward is called with them
    (as the entry's ``args`` say), the gradient function handed those it reads (``attr0``, ...), and
    ``error(self, *arguments)`` makes the error for a ValueError of the forward.
    """
    prim = _PRIMITIVES[name]

    def made(stub):
        if len(prim.grads) == 1 and list(inspect.signature(stub).parameters) != ["self"]:
            return functools.update_wrapper(_with_arguments(prim, stub, error), stub)
        return functools.update_wrapper(_elementwise(prim, error), stub)
    return made


def _elementwise(prim, error):
    """The method of ``_from_table`` for an operation of one or two inputs."""
    name, forward, several, grads_if, locks = prim.name, prim.forward, prim.several, prim.grads_if, _locks(prim)
    # each input's gradient function by whether that input needs a gradient (None: it does not)
    by_need = [(None, _caller(fn, reads)) for fn, reads in prim.grads]
    several = several and _several_caller(*several)
    if len(by_need) == 1:
        grad, (keeps, keep_out) = by_need[0][True], locks[1]

        def method(self):
            a = self.data
            out = forward(a)
            return Tensor._make(out, (self,), lambda g, a=a, out=out, m=np: (grad(g, a, None, out, m),), name,
                                keeps=keeps, keeps_out=keep_out)
        return method

    # for each (a needs a gradient, b needs one): the two gradient functions (None: not needed), and what to lock
    by_need_a, by_need_b = by_need or [(None, None)] * 2
    plans = [(by_need_a[need & 1], by_need_b[need >> 1], *locks[need]) for need in range(4)]

    def method(self, other):
        other = other if isinstance(other, Tensor) else self._lift(other)
        a, b = self.data, other.data
        try:
            out = forward(a, b)
        except ValueError as e:
            raise (self._broadcast_error(name, other, e) if error is None else error(self, other)) from None
        ga, gb, keeps, keep_out = plans[self.requires_grad + 2 * other.requires_grad]
        if several and not (grads_if and grads_if(a, b)):
            def backward(g, a=a, b=b, out=out, m=np, na=self.requires_grad, nb=other.requires_grad):
                return several(g, a, b, out, m, na, nb)
        else:       # (what backward needs is in its defaults: a closure would cost a collected cell per call)
            def backward(g, a=a, b=b, out=out, m=np, ga=ga, gb=gb):
                return (None if ga is None else g if ga is _PASS else ga(g, a, b, out, m),
                        None if gb is None else g if gb is _PASS else gb(g, a, b, out, m))
        return Tensor._make(out, (self, other), backward, name, keeps=keeps, keeps_out=keep_out)
    return method


def _matmul_refused(self, other):
    """The error for ``self @ other`` that numpy refused, naming the shapes."""
    a, b = self.shape, other.shape
    if not a or not b:
        return ValueError(f"matmul: shapes {a} and {b}: both operands need at least 1 dimension")
    inner = b[-2 if len(b) > 1 else 0]
    if a[-1] != inner:
        return ValueError(f"matmul: shapes {a} and {b} do not match (inner dimensions {a[-1]} and {inner})")
    return ValueError(f"matmul: shapes {a} and {b}: the stacks {a[:-2]} and {b[:-2]} cannot be broadcast together")


def _with_arguments(prim, arguments, error):
    """The method of ``_from_table`` for an operation of one input with arguments (given by ``arguments``)."""
    name, forward, ((fn, reads),), view = prim.name, prim.forward, prim.grads, prim.view
    grad, pick = _argument_caller(fn, reads), prim.args and operator.itemgetter(*map(("a", "attr0", "attr1").index,
                                                                                      prim.args))
    keeps, keep_out = None if view else (0,) if "a" in reads else (), "out" in reads

    def method(self, *args, **kwargs):
        attrs = arguments(self, *args, **kwargs)
        a = self.data
        try:
            out = forward(*pick((a, *attrs))) if pick else forward(a, *attrs)
        except ValueError:
            if error is None:
                raise
            raise error(self, *attrs) from None
        return Tensor._make(out, (self,), lambda g, a=a, out=out, attrs=attrs, m=np: (
            grad(g, (a, out, a.shape, *attrs), m),), name, attrs,
            keeps=keeps, keeps_out=keep_out)
    return method


def _read(name, values, parents, attrs, out=None):
    """What a name of the table's vocabulary (``reads``, ``args``) stands for in one operation: ``a``, ``b``,
    ``mask`` (the inputs' ``values``: their arrays in the engine, their variables' names in a traced
    program), ``out`` (the result's), ``inputs`` (all values, a list), ``shape_a``, ``shape_b``, ``attr0``,
    ``attr1``, ``need_a``, ``need_b`` (whether that input needs a gradient) and a clip's bounds ``lo``,
    ``hi`` (the inputs after ``a``, as ``attrs`` say which are given; one not given is None)."""
    if name in ("a", "b", "mask"):
        return values[("a", "b", "mask").index(name)]
    if name in ("shape_a", "shape_b"):
        return parents[name == "shape_b"].shape
    if name in ("lo", "hi"):
        bounds = iter(values[1:])
        lo = next(bounds) if attrs[0] else None
        return lo if name == "lo" else next(bounds) if attrs[1] else None
    if name == "out":
        return out
    if name in ("need_a", "need_b"):
        return parents[name == "need_b"].requires_grad
    if name == "inputs":
        return list(values)
    return attrs[int(name[len("attr"):])]


def _node(name, inputs, attrs=(), error=None, more=None):
    """The node of the table's entry ``name`` on the Tensors ``inputs``, for the operations whose inputs are
    of a kind of their own (a condition, bounds, a list): the forward called with what the entry's ``args``
    name (None: the inputs' arrays, then ``attrs``), a backward that hands each gradient function what its
    ``reads`` name, and the inputs those read kept read-only.  ``more(out)`` gives arguments that are
    known once the forward has run (``stack``'s axis counted on the result); ``error(e)`` makes the error
    for a ValueError of the forward."""
    prim, arrays = _PRIMITIVES[name], [t.data for t in inputs]
    try:
        if prim.args is None:
            out = prim.forward(*arrays, *attrs)
        else:
            out = prim.forward(*(_read(r, arrays, inputs, attrs) for r in prim.args))
    except ValueError as e:
        if error is None:
            raise
        raise error(e) from None
    if more is not None:
        attrs = (*attrs, *more(out))
    if prim.several:
        several, reads = prim.several
        values = [_read(r, arrays, inputs, attrs, out) for r in reads]
        read = values

        def backward(g, m=np):
            return several(g, *values, m)
    else:       # for each input that needs a gradient: its function, and the values that it reads
        calls = [None if not t.requires_grad else (fn, [_read(r, arrays, inputs, attrs, out) for r in reads])
                 for t, (fn, reads) in zip(inputs, prim.grads)]
        read = [v for c in calls if c is not None for v in c[1]]

        def backward(g, m=np):
            return tuple(None if c is None else g if c[0] is None else c[0](g, *c[1], m) for c in calls)
    # kept read-only: the inputs (and the result) whose arrays are among the values the backward reads
    read = {id(v) for v in read}
    keeps = tuple(i for i, x in enumerate(arrays) if id(x) in read)
    return Tensor._make(out, tuple(inputs), backward, name, attrs, keeps=keeps,
                        keeps_out=id(out) in read)


def _broadcast_source(source, target):
    """Whether numpy broadcasting takes ``source`` to ``target`` (so summing takes ``target`` back)."""
    if len(source) > len(target):
        return False
    return all(s in (1, t) for s, t in zip(reversed(source), reversed(target)))


def _shape_argument(shape, op):
    shape = (shape,) if isinstance(shape, (int, np.integer)) else shape
    try:
        shape = tuple(operator.index(n) for n in shape)
    except TypeError:
        raise TypeError(f"{op}: shape must be an int or a sequence of ints, got {shape!r}") from None
    if any(n < 0 for n in shape):
        raise ValueError(f"{op}: shape {shape} has a negative size")
    return shape


def _is_basic_index(idx):
    parts = idx if isinstance(idx, tuple) else (idx,)
    return all(p is None or p is Ellipsis or isinstance(p, (int, np.integer, slice)) for p in parts)


def _index_tensors(idx):
    """The Tensors inside an index (they are inputs of the indexing, without gradient)."""
    if isinstance(idx, Tensor):
        return (idx,)
    return tuple(p for p in idx if isinstance(p, Tensor)) if isinstance(idx, tuple) else ()


def _index_data(idx):
    """Replace Tensors and lists inside an index by arrays; a caller's numpy array is copied, so that
    editing it afterwards cannot move the gradient's scatter (a Tensor's array is locked instead)."""
    if isinstance(idx, Tensor):
        return idx.data
    if isinstance(idx, (list, np.ndarray)):
        return np.array(idx)
    if isinstance(idx, tuple):
        for p in idx:
            if isinstance(p, (Tensor, list, np.ndarray)):
                return tuple(_index_data(q) if isinstance(q, (Tensor, list, np.ndarray)) else q for q in idx)
    return idx


class Tensor:
    """An n-dimensional array that records the operations applied to it.

    ``Tensor(data, requires_grad=False, dtype=None, name=None)`` copies ``data`` (a number, a
    nested list, a numpy array or another Tensor) into a new leaf.  Python floats and lists of
    them become float64; a numpy array keeps its dtype unless ``dtype`` is given.
    ``requires_grad=True`` (floating dtypes only) makes ``backward`` fill this tensor's
    ``.grad``; ``name`` labels it in printed graphs and traced programs.

    Besides the members below, ``tanh()``, ``sigmoid()`` and ``relu()`` are methods too: the
    functions of ``tinygrad_rnn.functional``, attached to the class.

    :param data: the values; a copy is kept, so later changes to ``data`` do not reach the tensor
    :param requires_grad: whether gradients should flow to this tensor
    :param dtype: the numpy dtype to store (default: float64 for Python numbers, else as given)
    :param name: a label for pictures and traced programs
    :raises ValueError: when ``data`` cannot be made into an array (ragged lists)
    :raises TypeError: for non-numeric data, or ``requires_grad=True`` with an integer dtype
    """

    __slots__ = ("data", "grad", "requires_grad", "name", "_parents", "_backward", "_op",
                 "_retain_grad", "_seq", "_version", "_locked", "_locked_base",
                 "__weakref__")
    __array_ufunc__ = None  # so that `ndarray + Tensor` calls Tensor.__radd__

    def __init__(self, data, requires_grad=False, dtype=None, name=None):
        if isinstance(data, Tensor):
            if _tracer is not None:
                _tracer.copied(self, data)
            data = data.data
        given_array = isinstance(data, (np.ndarray, np.generic))
        try:
            data = np.array(data, dtype=dtype)          # a copy: the Tensor owns its data
        except (ValueError, TypeError) as e:            # ragged lists, unparseable strings
            raise ValueError(f"Tensor: cannot make an array from this data: {e}") from None
        if not given_array and dtype is None and data.dtype.kind == "f":
            data = data.astype(np.float64, copy=False)
        if data.dtype.kind not in "fcbiu":
            raise TypeError(f"Tensor: cannot make a numeric array from this data (numpy dtype {data.dtype})")
        if requires_grad and data.dtype.kind != "f":
            raise TypeError(f"Tensor: requires_grad=True needs a floating dtype, got {data.dtype}; "
                            f"only floating-point tensors can have gradients")
        self.data = data
        """The values, a numpy array that the tensor owns."""
        self.grad = None
        """After ``backward``: d(output)/d(this tensor), an array of the same shape and dtype; else None."""
        self.requires_grad = bool(requires_grad)
        """Whether gradients flow to this tensor (set by you on a leaf, inherited by results)."""
        self.name = name
        """A label for printed graphs and traced programs, or None."""
        self._parents = ()
        self._backward = None
        self._op = None
        self._retain_grad = False
        self._seq = next(_creation_counter)
        self._version = 0       # when the library last wrote .data in place (a _creation_counter value)
        self._locked = None     # the array this tensor made read-only for a graph, if any

    # ------------------------------------------------------------------ plumbing
    @staticmethod
    def _make(data, parents, backward, op, attrs=None, keeps=None, keeps_out=False):
        """The result of an operation: linked into the graph when a parent needs a gradient.

        ``attrs`` are the operation's other arguments (axis, index, ...), for a trace.
        ``keeps`` are the positions in ``parents`` of the inputs whose arrays ``backward`` reads,
        and ``keeps_out`` whether it reads the result's: they are made read-only while the graph
        lives (None: every input and the result).
        """
        t = Tensor.__new__(Tensor)
        t.data = data
        t.grad = None
        t.name = None
        t._op = op
        t._retain_grad = False
        t._seq = next(_creation_counter)
        t._version = 0
        t._locked = None
        for p in parents if _grad_enabled and backward is not None else ():
            if p.requires_grad:
                t.requires_grad = True
                t._parents = parents
                t._backward = backward
                # what backward will read is made read-only while the graph lives: a raw in-place
                # write (W.data[...] = 0) then fails instead of silently changing the gradient
                for i in range(len(parents)) if keeps is None else keeps:
                    q = parents[i]
                    if q._locked is not q.data:
                        _lock(q)
                if keeps is None or keeps_out:
                    data.setflags(False)
                    t._locked = data
                break
        else:
            t.requires_grad = False
            t._parents = ()
            t._backward = None
        if _tracer is not None:
            _tracer.record(t, op, parents, attrs)
        return t

    @staticmethod
    def _make_many(arrays, parents, backward, op, attrs=None):
        """The results of an operation with several outputs (a compiled composition's).

        The outputs hang off one hidden node (the operation) that gathers their
        gradients into a list, ``None`` for an output that received none, and
        hands that list to ``backward``.
        """
        node = Tensor._make(np.empty(0), parents, backward, op, attrs)
        if not node.requires_grad:
            return tuple(Tensor._make(a, (), None, op) for a in arrays)
        n = len(arrays)
        return tuple(Tensor._make(a, (node,), _Output(i, n), f"{op}[{i}]") for i, a in enumerate(arrays))

    def _lift(self, other):
        """A Tensor for the other operand; Python numbers take this tensor's dtype."""
        if isinstance(other, Tensor):
            return other
        if isinstance(other, (int, float, bool)) and self.data.dtype.kind == "f":
            return _constant(np.asarray(other, dtype=self.data.dtype))
        if isinstance(other, np.ndarray):
            return _constant(np.array(other))   # a copy: a caller's later in-place edit cannot reach the graph
        return Tensor(other)

    def _broadcast_error(self, name, other, e):
        """The error to raise for numpy's ValueError ``e`` in the binary operation ``name``."""
        try:
            np.broadcast_shapes(self.shape, other.shape)
        except ValueError:
            return ValueError(f"{name}: shapes {self.shape} and {other.shape} cannot be broadcast together")
        # the shapes fit: numpy refused the values (integers to negative integer powers, say)
        return ValueError(f"{name} of {self.dtype} {self.shape} and {other.dtype} {other.shape}: {e}")

    shape = property(lambda self: self.data.shape)
    """The shape of the data, a tuple."""
    ndim = property(lambda self: self.data.ndim)
    """The number of dimensions."""
    dtype = property(lambda self: self.data.dtype)
    """The data's numpy dtype."""
    size = property(lambda self: self.data.size)
    """The number of elements."""
    is_leaf = property(lambda self: self._backward is None)
    """True when this tensor has no backward: made by you, or by an operation none of whose inputs requires grad."""

    def __repr__(self):
        """``Tensor([...], dtype=..., requires_grad=True)``, the values as numpy prints them."""
        grad = ", requires_grad=True" if self.requires_grad else ""
        body = np.array2string(self.data, separator=", ", prefix="Tensor(")
        return f"Tensor({body}, dtype={self.dtype}{grad})"

    def __len__(self):
        """The length of the first axis (a 0-d tensor has none: TypeError)."""
        if self.ndim == 0:
            raise TypeError("len() of a 0-d Tensor")
        return len(self.data)

    def _to_python(self, how):
        if _tracer is not None:
            raise _tracer.value_error(how)

    def __bool__(self):
        """The truth of a one-element tensor; more elements are ambiguous (ValueError)."""
        self._to_python("bool()")
        if self.size != 1:
            raise ValueError(f"the truth value of a Tensor with {self.size} elements is ambiguous; "
                             f"use (t == x).numpy().all() or .any()")
        return bool(self.data)

    __hash__ = object.__hash__

    def numpy(self):
        """The data as a numpy array (shared, not copied)."""
        self._to_python("numpy()")
        return self.data

    def item(self):
        """The single value of a size-1 Tensor as a Python number."""
        self._to_python("item()")
        if self.size != 1:
            raise ValueError(f"item(): the Tensor has {self.size} elements (shape {self.shape}), not 1")
        return self.data.item()

    def __float__(self):
        """The value of a one-element tensor as a Python float."""
        self._to_python("float()")
        return float(self.item())

    def __int__(self):
        """The value of a one-element tensor as a Python int."""
        self._to_python("int()")
        return int(self.item())

    def detach(self):
        """The same values as a new leaf that does not require grad (the graph stops here)."""
        return Tensor._make(self.data, (self,), None, "detach")   # no backward: not linked

    def retain_grad(self):
        """Keep ``.grad`` on this intermediate result after backward (leaves always keep it)."""
        self._retain_grad = True
        return self

    # ------------------------------------------------------------------ arithmetic
    @_from_table("add")
    def __add__(self, other):
        """``self + other``, broadcasting as numpy does; numbers and arrays become constants."""

    @_from_table("sub")
    def __sub__(self, other):
        """``self - other``, broadcasting."""

    @_from_table("mul")
    def __mul__(self, other):
        """``self * other``, elementwise, broadcasting."""

    @_from_table("div")
    def __truediv__(self, other):
        """``self / other``, elementwise, broadcasting."""

    @_from_table("pow")
    def __pow__(self, other):
        """``self ** other``, elementwise; the exponent may be a tensor that needs a gradient too."""

    @_from_table("neg")
    def __neg__(self):
        """``-self``."""

    def __radd__(self, other):
        """``other + self`` for a number or array ``other``."""
        return self._lift(other) + self

    def __rsub__(self, other):
        """``other - self`` for a number or array ``other``."""
        return self._lift(other) - self

    def __rmul__(self, other):
        """``other * self`` for a number or array ``other``."""
        return self._lift(other) * self

    def __rtruediv__(self, other):
        """``other / self`` for a number or array ``other``."""
        return self._lift(other) / self

    def __rpow__(self, other):
        """``other ** self`` for a number or array ``other``."""
        return self._lift(other) ** self

    @_from_table("matmul", error=_matmul_refused)
    def __matmul__(self, other):
        """``self @ other``, as ``numpy.matmul`` (stacks of matrices broadcast; 1-D operands are vectors)."""

    def __rmatmul__(self, other):
        """``other @ self`` for an array ``other``."""
        return self._lift(other) @ self

    # ------------------------------------------------------------------ comparisons (no gradient)
    def _compare(self, other, fn):
        other = self._lift(other)
        return Tensor._make(np.asarray(fn(self.data, other.data)), (self, other), None, fn.__name__)

    def __lt__(self, other):
        """``self < other``, elementwise: a boolean tensor, through which no gradient flows."""
        return self._compare(other, np.less)

    def __le__(self, other):
        """``self <= other``, elementwise: a boolean tensor, through which no gradient flows."""
        return self._compare(other, np.less_equal)

    def __gt__(self, other):
        """``self > other``, elementwise: a boolean tensor, through which no gradient flows."""
        return self._compare(other, np.greater)

    def __ge__(self, other):
        """``self >= other``, elementwise: a boolean tensor, through which no gradient flows."""
        return self._compare(other, np.greater_equal)

    def __eq__(self, other):
        """``self == other``, elementwise: a boolean tensor, through which no gradient flows."""
        return self._compare(other, np.equal)

    def __ne__(self, other):
        """``self != other``, elementwise: a boolean tensor, through which no gradient flows."""
        return self._compare(other, np.not_equal)

    # ------------------------------------------------------------------ elementwise functions
    @_from_table("exp")
    def exp(self):
        """e to the power of each element."""

    @_from_table("expm1")
    def expm1(self):
        """exp(x) - 1, exact for small x (the stable tanh is built on it)."""

    @_from_table("log")
    def log(self):
        """The natural logarithm of each element."""

    @_from_table("sqrt")
    def sqrt(self):
        """The square root of each element."""

    @_from_table("abs")
    def abs(self):
        """The absolute value of each element; the gradient at 0 is 0 (as numpy.sign)."""

    def clip(self, lo=None, hi=None):
        """Limit values to [lo, hi]; the gradient passes where lo <= x <= hi (as torch.clamp)."""
        if lo is None and hi is None:
            raise ValueError("clip: give lo, hi or both")
        bounds = tuple(self._lift(v) for v in (lo, hi) if v is not None)   # no gradient flows to them
        return _node("clip", (self,) + bounds, (lo is not None, hi is not None))

    # ------------------------------------------------------------------ more elementwise, reductions and shapes
    @_from_table("sin")
    def sin(self):
        """Sine, elementwise; its gradient is ``g * cos(x)``."""

    @_from_table("cos")
    def cos(self):
        """Cosine, elementwise; its gradient is ``-g * sin(x)``."""

    @_from_table("log1p")
    def log1p(self):
        """log(1 + x), exact for small x."""

    def min(self, axis=None, keepdims=False):
        """Minimum, as -max(-x): ties share the gradient equally, and a NaN is picked (and gets it)."""
        _check_axis(axis, self.shape, "min")
        return -(-self).max(axis=axis, keepdims=keepdims)

    def flatten(self):
        """The elements as one axis (a 0-d tensor becomes shape (1,))."""
        return self.reshape(-1)

    def squeeze(self, axis=None):
        """Drop size-1 axes: all of them, or ``axis`` (an int or a tuple), which must have size 1."""
        shape = self.shape
        if axis is None:
            return self.reshape(tuple(n for n in shape if n != 1))
        _check_axis(axis, shape, "squeeze")
        axes = {a % len(shape) for a in (axis if isinstance(axis, tuple) else (axis,))}
        wide = [a for a in sorted(axes) if shape[a] != 1]
        if wide:
            raise ValueError(f"squeeze: axis {wide[0]} has size {shape[wide[0]]}, not 1 (shape {shape})")
        return self.reshape(tuple(n for i, n in enumerate(shape) if i not in axes))

    def unsqueeze(self, axis):
        """A new size-1 axis at ``axis`` (-ndim-1 <= axis <= ndim, as torch.unsqueeze)."""
        shape = self.shape
        if not isinstance(axis, (int, np.integer)) or not -len(shape) - 1 <= axis <= len(shape):
            raise ValueError(f"unsqueeze: axis {axis!r} does not fit shape {shape}: a new axis goes at "
                             f"{-len(shape) - 1} to {len(shape)}")
        at = axis % (len(shape) + 1)
        return self.reshape(shape[:at] + (1,) + shape[at:])

    @_from_table("broadcast_to")
    def broadcast_to(self, shape):
        """The values repeated to ``shape`` by numpy's broadcasting (a read-only view); the gradient is
        summed back (``sum_to``)."""
        shape = _shape_argument(shape, "broadcast_to")
        if not _broadcast_source(self.shape, shape):
            raise ValueError(f"broadcast_to: shape {self.shape} cannot be broadcast to {shape}")
        return (shape,)

    @_from_table("sum_to")
    def sum_to(self, shape):
        """Sum down to ``shape``, a shape that broadcasts to this one: the adjoint of broadcasting.
        The gradient is broadcast back (``broadcast_to``)."""
        shape = _shape_argument(shape, "sum_to")
        if not _broadcast_source(shape, self.shape):
            raise ValueError(f"sum_to: shape {shape} does not broadcast to {self.shape}, so {self.shape} cannot "
                             f"be summed to it")
        return (shape,)

    # ------------------------------------------------------------------ reductions
    @_from_table("sum")
    def sum(self, axis=None, keepdims=False):
        """The sum over ``axis`` (an int, a tuple of ints, or None for all), as ``numpy.sum``."""
        _check_axis(axis, self.shape, "sum")
        return axis, keepdims

    def mean(self, axis=None, keepdims=False):
        """The mean over ``axis`` (an int, a tuple of ints, or None for all), as ``numpy.mean``."""
        _check_axis(axis, self.shape, "mean")
        total = self.sum(axis=axis, keepdims=keepdims)
        return total / (self.size // max(total.size, 1))

    @_from_table("max")
    def max(self, axis=None, keepdims=False):
        """Maximum; where several elements tie, the gradient is shared equally among them."""
        _check_axis(axis, self.shape, "max")
        return axis, keepdims

    # ------------------------------------------------------------------ shape
    @_from_table("reshape", error=lambda self, shape: ValueError(
        f"reshape: cannot reshape shape {self.shape} ({self.size} elements) into shape {shape}"))
    def reshape(self, *shape):
        """The same values in a new shape: ``t.reshape(2, 3)`` or ``t.reshape((2, 3))``; one entry may be -1."""
        return (tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape,)

    @_from_table("transpose")
    def transpose(self, *axes):
        """The axes permuted: reversed when none are given, else as ``numpy.transpose(axes)``."""
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        axes = axes or tuple(reversed(range(self.ndim)))
        if sorted(a % max(self.ndim, 1) for a in axes) != list(range(self.ndim)):
            raise ValueError(f"transpose: axes {axes} are not a permutation for shape {self.shape}")
        return tuple(axes), tuple(int(i) for i in np.argsort([a % self.ndim for a in axes]))

    T = property(lambda self: self.transpose())
    """The tensor with its axes reversed (the transpose of a matrix)."""

    def __getitem__(self, idx):
        """``self[idx]``: any numpy index (ints, slices, None, Ellipsis, integer or boolean arrays or Tensors)."""
        given = idx
        idx = _index_data(idx)
        x = self.data
        try:
            out = _index(x, idx)
        except IndexError as e:
            raise IndexError(f"index into shape {x.shape}: {e}") from None

        # The gradient is g at idx and zero elsewhere; backward adds it into the
        # input's gradient buffer in place, so slicing one time step out of a
        # long sequence costs the size of the slice, not of the sequence.
        basic = _is_basic_index(idx)
        add = _INDEX.scatter[not basic]
        shape = x.shape

        def backward(g, m=np):
            return (_Scatter(idx, g, add) if m is np else _scatter(idx, g, add, shape),)
        return Tensor._make(np.asarray(out), (self,) + _index_tensors(given), backward, "index", (given, basic))

    # ------------------------------------------------------------------ backward
    def backward(self, grad=None, retain_graph=None, create_graph=False):
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        ``grad`` is the gradient flowing into this tensor (needed unless it has one
        element).  The graph is freed afterwards unless ``retain_graph=True``.
        ``create_graph=True`` computes the gradients with Tensor operations and keeps the
        graph (``retain_graph`` must not be False then); ``.grad`` still receives numpy
        arrays: to differentiate a gradient again, take it from ``tinygrad_rnn.grad``.
        """
        if not self.requires_grad:
            raise RuntimeError("backward(): this Tensor does not require grad and has no graph "
                               "(was it made under no_grad(), or from inputs without requires_grad?)")
        if create_graph:
            _no_free_with_graph(retain_graph, "backward()")
            root = _graph_seed(self, grad, "backward()")
            for node, g in _graph_backward([self], [root], None).items():
                data = np.asarray(g.data, dtype=node.data.dtype)
                if node.grad is None:
                    node.grad = np.array(data)
                else:
                    node.grad += data
            return
        _backpropagate([self], [_array_seed(self, grad, "backward()")], retain_graph, None)


def _array_seed(out, grad, who):
    """The gradient flowing into ``out`` as an array of its dtype (ones for a one-element output)."""
    if grad is None:
        if out.size != 1:
            raise RuntimeError(f"{who}: the output has shape {out.shape}; pass grad= of that "
                               f"shape, or reduce it to a scalar (e.g. .sum()) first")
        return np.ones_like(out.data)
    grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=out.dtype)
    if grad.shape != out.shape:
        raise ValueError(f"{who}: grad has shape {grad.shape} but the output has shape {out.shape}")
    return grad


def _backpropagate(roots, seeds, retain_graph, targets):
    """The backward pass on arrays, from ``roots`` (with gradients ``seeds``) to the leaves.

    ``targets`` None: add into ``.grad`` of the leaves (and of tensors that retain it).
    Else a dict id -> None, filled with the gradients of those tensors; no ``.grad`` changes.
    """
    grads = {}                 # gradients waiting to flow further, dropped once used
    owned = set()              # ids whose gradient array backward allocated: safe to add into
    for root, seed in zip(roots, seeds):
        if id(root) in grads:
            _accumulate(grads, owned, root, seed)
        else:
            grads[id(root)] = seed
    for node in _topological_order(*roots):
        key = id(node)
        g = grads.pop(key, None)
        if g is None:
            continue
        backward = node._backward
        if targets is not None:
            if key in targets:
                targets[key] = g if key in owned else np.array(g, dtype=node.data.dtype)
        elif backward is None or node._retain_grad:
            if node.grad is not None:
                node.grad += g
            elif key in owned and backward is None and g.dtype == node.data.dtype:
                node.grad = g          # allocated by this backward: hand it over uncopied
            else:
                node.grad = np.array(g, dtype=node.data.dtype)  # an ndarray even for 0-d results
        if owned:
            owned.discard(key)
        if backward is None:
            continue
        pieces = backward(g)
        # a tuple: one gradient per input; otherwise (an unrolled sequence's node) pairs
        # (input number, term) handed over as they are made, so that none waits in memory
        pairs = zip(node._parents, pieces) if pieces.__class__ is tuple else \
            ((node._parents[i], pg) for i, pg in pieces)
        for parent, pg in pairs:
            if pg is None or not parent.requires_grad:
                continue
            pkey = id(parent)
            if pkey not in grads and pg.__class__ is np.ndarray and pg.shape == parent.data.shape \
                    and pg.dtype == parent.data.dtype:
                grads[pkey] = pg      # the common case: first gradient to arrive, right shape
            else:
                _accumulate(grads, owned, parent, pg)
        if not retain_graph:
            for p in node._parents:    # the graph lets go of what it saved: leaves are writable again
                if p._locked is not None and p._backward is None and p._op != "const":
                    _unlock(p)
            node._parents = ()
            node._backward = _graph_freed


class _Output:
    """The backward of output ``i`` of a several-output operation: hand ``g`` to the operation's node."""
    __slots__ = ("i", "n")

    def __init__(self, i, n):
        self.i, self.n = i, n

    def __call__(self, g):
        return (_Slot(self.i, self.n, g),)


class _Slot:
    """The gradient ``g`` of output ``i`` of ``n``, on its way into the operation's list of output gradients."""
    __slots__ = ("i", "n", "g")

    def __init__(self, i, n, g):
        self.i, self.n, self.g = i, n, g


class _Scatter:
    """The gradient of ``x[idx]`` for ``x``: ``g`` at ``idx``, zero elsewhere, never materialised.
    ``add`` is the index entry's ``scatter`` function for this index."""
    __slots__ = ("idx", "g", "add")

    def __init__(self, idx, g, add):
        self.idx, self.g, self.add = idx, g, add

    def add_into(self, buffer):
        self.add(buffer, self.idx, self.g)


def _accumulate(grads, owned, parent, pg):
    """Add the gradient ``pg`` flowing into ``parent`` to the one gathered so far.

    An array that backward allocated itself (``owned``) is added into in place;
    an array an operation handed over may be shared (``add`` passes ``g`` to both
    inputs), so the first sum makes a fresh, owned copy.
    """
    data = parent.data
    key = id(parent)
    before = grads.get(key)
    if pg.__class__ is list:        # a compiled composition's terms, added one by one as the graph would
        for piece in pg:
            if key in owned and piece.__class__ is np.ndarray and piece.shape == data.shape \
                    and piece.dtype == data.dtype:
                before += piece     # the common case of the branch below, without the call
            else:
                _accumulate(grads, owned, parent, piece)
                before = grads.get(key)
        return
    if pg.__class__ is _Slot:       # an output's gradient, for its operation's node
        if before is None:
            grads[key] = before = [None] * pg.n
        before[pg.i] = pg.g
        return
    if isinstance(pg, _Scatter):
        if key not in owned:
            before = np.zeros_like(data) if before is None else np.array(before, dtype=data.dtype)
            owned.add(key)
        pg.add_into(before)
        grads[key] = before
        return
    if pg.shape != data.shape:
        pg = _unbroadcast(pg, data.shape)
    if pg.dtype != data.dtype:
        pg = pg.astype(data.dtype)
    if before is None:
        grads[key] = pg
    elif key in owned:
        before += pg
    else:
        # asarray: two 0-d arrays add to a numpy scalar, which `+=` above could not update in place
        grads[key] = np.asarray(before + pg)
        owned.add(key)


def _constant(array):
    """A Tensor around ``array`` without copying it (for operands that need no gradient)."""
    t = Tensor.__new__(Tensor)
    t.data, t.grad, t.requires_grad, t.name = array, None, False, None
    # _op "const" is what marks a constant (for the tracer, viz, and the graph's unlocking)
    t._parents, t._backward, t._op, t._retain_grad = (), None, "const", False
    t._seq = next(_creation_counter)
    t._version, t._locked = 0, array   # made by the engine (or copied): nothing else writes it
    return t


def _lock(t):
    """Make ``t.data`` read-only; a view's base too, as a write into the base would reach the view
    (remembered only when this lock made it read-only: a base locked by its own graph stays so)."""
    t._locked = arr = t.data
    arr.setflags(False)
    base = arr.base
    if isinstance(base, np.ndarray) and base.flags.writeable:
        base.setflags(False)
    else:
        base = None
    t._locked_base = base


def _unlock(t):
    """Let ``t.data`` be written again (after a graph that saved it has been freed)."""
    if t._locked is not None:
        arr, t._locked = t._locked, None
        try:
            base = t._locked_base   # set by every _lock; unset where a result or constant locked itself
        except AttributeError:
            base = None
        if base is not None:
            t._locked_base = None
            base.setflags(True)
        try:
            arr.setflags(True)
        except ValueError:      # a view of an array that is still locked, or that numpy made read-only
            pass


def _writable(t):
    """``t.data``, ready for an in-place write by library code (optimisers, load_state_dict, gradcheck).

    The write is stamped on ``t``: backward through a graph made before it raises
    instead of using the new values.
    """
    global _last_write
    _unlock(t)
    t._version = _last_write = next(_creation_counter)
    return t.data


def _written_since(t, node):
    what = f"{t.name!r} " if t.name else ""
    raise RuntimeError(
        f"backward(): the tensor {what}of shape {t.shape} ({t.dtype}) was changed in place (an optimiser "
        f"step, load_state_dict or another in-place write) after the operation {node._op!r} saved it for "
        f"backward; its gradient would use the new values. Run backward before changing it, or run the "
        f"forward again.")


def _topological_order(root, *more, stop=()):
    """Every node that leads to ``root`` (and ``more``) and needs a gradient, each before its inputs.

    Collect the nodes with an explicit stack (no recursion), then sort them by
    creation, newest first: an operation's inputs always exist before its result.
    The search does not go past the nodes whose ids are in ``stop``.
    """
    found = {id(r): r for r in (root, *more)}
    stack = list(found.values())
    written = _last_write
    while stack:
        node = stack.pop()
        if stop and id(node) in stop:
            continue
        if node._backward is _graph_freed:   # fail before any gradient is accumulated
            _graph_freed(None)
        if node._seq < written:               # only a node made before the library's last write can see one
            for p in node._parents:
                if p._version > node._seq:
                    _written_since(p, node)
        for p in node._parents:
            if p.requires_grad and id(p) not in found:
                found[id(p)] = p
                stack.append(p)
    return sorted(found.values(), key=_by_creation, reverse=True)


_by_creation = operator.attrgetter("_seq")


# ---------------------------------------------------------------------- functions of several tensors
def _as_tensors(tensors, name):
    tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    if not tensors:
        raise ValueError(f"{name}: needs at least one tensor")
    return tensors


def concat(tensors, axis=0):
    """Join tensors along an existing axis."""
    tensors = _as_tensors(tensors, "concat")
    return _node("concat", tensors, (axis,), lambda e: ValueError(
        f"concat along axis {axis}: shapes {[t.shape for t in tensors]} do not fit: {e}"),
        lambda out: ([int(i) for i in np.cumsum([t.shape[axis] for t in tensors])[:-1]],))


def stack(tensors, axis=0):
    """Join same-shaped tensors along a new axis."""
    tensors = _as_tensors(tensors, "stack")
    return _node("stack", tensors, (axis,), lambda e: ValueError(
        f"stack along axis {axis}: shapes {[t.shape for t in tensors]}: {e}"), lambda out: (axis % out.ndim,))


def where(cond, a, b):
    """Elementwise ``a`` where ``cond`` is true, else ``b``; the gradient goes to the chosen side."""
    a, b = _two_tensors(a, b)
    if isinstance(cond, Tensor):
        cond = cond if cond.dtype == bool else cond != 0
    else:
        cond = _constant(np.array(cond, dtype=bool))
    return _node("where", (a, b, cond), error=lambda e: ValueError(
        f"where: shapes {cond.shape}, {a.shape} and {b.shape} cannot be broadcast together"))


def _two_tensors(a, b):
    """``a`` and ``b`` as Tensors: numbers and arrays become constants of the other's dtype."""
    like = a if isinstance(a, Tensor) else b if isinstance(b, Tensor) else Tensor(np.asarray(a))
    return like._lift(a), like._lift(b)


@_from_table("maximum")
def _maximum(a, b):
    """The node of ``maximum`` of two Tensors."""


@_from_table("minimum")
def _minimum(a, b):
    """The node of ``minimum`` of two Tensors."""


def maximum(a, b):
    """Elementwise maximum of ``a`` and ``b`` (broadcast); NaN propagates.  The gradient goes to the
    larger side; where the two are equal it is split equally between them (as torch.maximum)."""
    return _maximum(*_two_tensors(a, b))


def minimum(a, b):
    """Elementwise minimum of ``a`` and ``b`` (broadcast); NaN propagates.  The gradient goes to the
    smaller side; where the two are equal it is split equally between them (as torch.minimum)."""
    return _minimum(*_two_tensors(a, b))


# ---------------------------------------------------------------------- gradients as Tensors, gradients of gradients
def grad(outputs, inputs, grad_outputs=None, create_graph=False, retain_graph=None, allow_unused=False):
    """The gradients of ``outputs`` with respect to ``inputs``, as ``torch.autograd.grad``: a tuple of Tensors.

    ``outputs`` and ``inputs`` are Tensors or sequences of them (an input may be an
    intermediate result).  ``grad_outputs`` gives the gradient flowing into each
    output (arrays or Tensors, one per output); it may be left out for one-element
    outputs (ones).  ``.grad`` of no tensor is touched.

    ``create_graph=True`` builds the graph of this backward pass: the results can be
    differentiated again (Hessian-vector products), through every operation and every
    compiled composition (which is run again plainly for it).  ``retain_graph`` defaults
    to ``create_graph``; without it the forward graph is freed as by ``backward()``.
    An input that the outputs do not depend on raises ``RuntimeError`` unless
    ``allow_unused=True``, which gives None for it (as torch does, not zeros).
    """
    outputs = _tensor_list(outputs, "outputs")
    inputs = _tensor_list(inputs, "inputs")
    if retain_graph is None:
        retain_graph = create_graph
    if grad_outputs is None or isinstance(grad_outputs, (Tensor, np.ndarray)):
        grad_outputs = [grad_outputs] * len(outputs) if grad_outputs is None else [grad_outputs]
    grad_outputs = list(grad_outputs)
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"grad(): {len(grad_outputs)} grad_outputs for {len(outputs)} outputs")
    for i, o in enumerate(outputs):
        if not o.requires_grad:
            raise RuntimeError(f"grad(): output {i} (shape {o.shape}) does not require grad and has no graph")
    for i, x in enumerate(inputs):
        if not x.requires_grad:
            raise RuntimeError(f"grad(): input {i} (shape {x.shape}) does not require grad, so it has no gradient")
    if create_graph:
        _no_free_with_graph(retain_graph, "grad()")
        seeds = [_graph_seed(o, g, f"grad() output {i}") for i, (o, g) in enumerate(zip(outputs, grad_outputs))]
        found = _graph_backward(outputs, seeds, {id(x) for x in inputs})
    else:
        seeds = [_array_seed(o, g, f"grad() output {i}") for i, (o, g) in enumerate(zip(outputs, grad_outputs))]
        found = dict.fromkeys((id(x) for x in inputs), None)
        _backpropagate(outputs, seeds, retain_graph, found)
        found = {k: Tensor._make(g, (), None, "grad") for k, g in found.items() if g is not None}
    result = tuple(found.get(id(x)) for x in inputs)
    unused = [i for i, g in enumerate(result) if g is None]
    if unused and not allow_unused:
        raise RuntimeError(f"grad(): the outputs do not depend on input {unused[0]} (shape "
                           f"{inputs[unused[0]].shape}); pass allow_unused=True to get None for it")
    return result


def _tensor_list(x, what):
    items = [x] if isinstance(x, Tensor) else list(x)
    if not items or not all(isinstance(t, Tensor) for t in items):
        raise TypeError(f"grad(): {what} must be a Tensor or a non-empty sequence of Tensors")
    return items


def _no_free_with_graph(retain_graph, who):
    if retain_graph is False:
        raise ValueError(f"{who}: create_graph=True keeps the forward graph (the gradients' graph goes "
                         f"through it); retain_graph=False cannot be honoured")


def _graph_seed(out, grad, who):
    """The gradient flowing into ``out`` as a Tensor (a Tensor given is used as it is: its graph counts)."""
    if isinstance(grad, Tensor):
        if grad.shape != out.shape:
            raise ValueError(f"{who}: grad has shape {grad.shape} but the output has shape {out.shape}")
        return grad
    return _constant(_array_seed(out, grad, who))


# which Tensors a backward receives, on the graph path, for the operands it saved (by its parameters' names)
_SAVED_TENSOR = {"a": lambda n: n._parents[0], "b": lambda n: n._parents[1], "out": lambda n: n}
_OPERANDS = {p.name: (lambda n, get=tuple((k, _SAVED_TENSOR[k]) for k in p.saved): {k: f(n) for k, f in get})
             for p in _PRIMITIVES.values() if p.saved}
_NO_OPERANDS = lambda n: {}  # noqa: E731


def _graph_backward(roots, seeds, targets, stop=()):
    """The backward pass with Tensor operations: {id: gradient Tensor} for each node in ``targets``.

    ``targets`` is a set of ids, or None for the leaves and the tensors that retain
    their gradient (keyed by the tensor itself then).  Every backward runs on Tensors
    (``m=_T``); a compiled composition is run again plainly on its own inputs and
    differentiated through that.  The search stops at the ids in ``stop``.
    """
    grads, found = {}, {}
    for root, seed in zip(roots, seeds):
        grads[id(root)] = seed if id(root) not in grads else grads[id(root)] + seed
    for node in _topological_order(*roots, stop=stop):
        key = id(node)
        g = grads.pop(key, None)
        if g is None:
            continue
        backward = node._backward
        if targets is None:
            if backward is None or node._retain_grad:
                found[node] = g
        elif key in targets:
            found[key] = g
        if backward is None or key in stop:
            continue
        if backward.__class__ is _Output:      # one output of several: its gradient goes to the operation
            slots = grads.setdefault(id(node._parents[0]), [None] * backward.n)
            slots[backward.i] = g
            continue
        replay = getattr(node._op, "replay", None)
        if replay is not None:
            pgs = _through_composition(node, replay(node), g)
        else:
            pgs = backward(g, m=_T, **_OPERANDS.get(node._op, _NO_OPERANDS)(node))
        for parent, pg in zip(node._parents, pgs):
            if pg is None or not parent.requires_grad:
                continue
            if pg.shape != parent.shape:
                pg = pg.sum_to(parent.shape)
            if pg.dtype != parent.dtype:
                pg = _cast(pg, parent.dtype)
            pkey = id(parent)
            grads[pkey] = pg if pkey not in grads else grads[pkey] + pg
    return found


def _through_composition(node, outs, g):
    """The gradients for ``node``'s inputs through ``outs``, its composition run plainly on them."""
    outs = (outs,) if isinstance(outs, Tensor) else tuple(outs)
    gs = g if isinstance(g, list) else [g]
    pairs = [(o, x) for o, x in zip(outs, gs) if x is not None and o.requires_grad]
    if not pairs:
        return [None] * len(node._parents)
    ids = {id(p) for p in node._parents}
    inner = _graph_backward([o for o, _ in pairs], [x for _, x in pairs], ids, stop=ids)
    return [inner.get(id(p)) for p in node._parents]


def _scatter(idx, g, add, shape):
    """A Tensor of zeros of ``shape`` with ``g`` added at ``idx`` by ``add``: indexing's gradient,
    differentiable (its own gradient is indexing again)."""
    out = np.zeros(shape, dtype=g.dtype)
    add(out, idx, g.data)
    return Tensor._make(out, (g,), lambda g2, m=np: (g2[idx],), "scatter")


def _cast(t, dtype):
    """``t`` in another dtype; the gradient is cast back where it is added (as on the array path)."""
    return Tensor._make(t.data.astype(dtype), (t,), lambda g, m=np: (g,), "cast")


def _t_split(g, splits, axis):
    bounds = [0, *(int(i) for i in splits), g.shape[axis]]
    before = (slice(None),) * (axis % g.ndim)
    return [g[before + (slice(lo, hi),)] for lo, hi in zip(bounds, bounds[1:])]


def _t_swapaxes(t, i, j):
    axes = list(range(t.ndim))
    axes[i], axes[j] = axes[j], axes[i]
    return t.transpose(axes)


# the numpy functions that backwards call, as Tensor operations (for the backward that builds a graph)
_T = types.SimpleNamespace(
    where=where, logical_or=lambda x, y: np.logical_or(x.data, y.data),   # a mask: a constant
    cos=Tensor.cos, sin=Tensor.sin, exp=Tensor.exp, log=Tensor.log,
    swapaxes=_t_swapaxes, reshape=Tensor.reshape, broadcast_to=Tensor.broadcast_to, split=_t_split,
    expand_dims=lambda t, axis: t.reshape(np.expand_dims(t.data, axis).shape),
    moveaxis=lambda t, src, dst: t.transpose([src] + [i for i in range(t.ndim) if i != src]))
