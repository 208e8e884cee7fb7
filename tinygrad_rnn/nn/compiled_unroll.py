"""Unrolling a compiled cell: the loop over time on arrays, and ONE graph node for the whole sequence.

When a cell's step is a compiled composition (the built-in cells' ``step``, a
function decorated with ``composite``, or a Module whose ``forward`` is), a
node per time step would cost more than the step's own arithmetic on long
sequences of small matrices.  ``unroll`` then runs the step's written forward
for t = 0 .. T-1 on arrays and makes one node for the sequence; that node's
backward runs the step's written backward for t = T-1 .. 0.

The numbers are those of the graph the step-by-step loop builds, to the last
bit: the backward hands the engine each step's gradient terms (for the
parameters, for ``xs`` at ``[:, t]``, for the initial state) one by one and in
that graph's order, and adds the terms flowing into a state in that graph's
order too (the stacked states' gradient first, then the next step's).

``per_step()`` (a context manager) turns this off: each step is then a node of
its own, as pictures of the unrolled graph want.
"""
import contextlib
import types

import numpy as np

from .. import composites
from .. import tensor as engine
from ..tensor import Tensor, _Scatter

__all__ = ["unroll_compiled", "per_step"]

_per_step = 0


@contextlib.contextmanager
def per_step():
    """Within this block, ``nn.unroll`` makes a node for every time step (cells stay compiled)."""
    global _per_step
    _per_step += 1
    try:
        yield
    finally:
        _per_step -= 1


def _plan(cell, x0, state):
    """``(composite, owner, args, flat)`` for a cell whose step is compiled, else None.

    ``flat`` says whether the step takes the state's parts as arguments of their own
    (``step(x, h, c)``, the built-in cells) or the state as one argument (``cell(x, state)``).
    """
    from .cells import STEP_FORWARDS
    if isinstance(cell, composites.Composite):
        return cell, None, (x0, state), False
    if getattr(type(cell), "forward", None) in STEP_FORWARDS:
        step = cell.step
        if isinstance(step, types.MethodType) and isinstance(step.__func__, composites.Composite):
            return step.__func__, cell, tuple(cell.step_args(x0, state)), True
        return None
    forward = getattr(cell, "forward", None)
    if isinstance(forward, types.MethodType) and isinstance(forward.__func__, composites.Composite):
        return forward.__func__, cell, (x0, state), False
    return None


class _Holder:
    """Something with ``.data`` for ``tensor._accumulate`` to add gradients for (a state of one step)."""
    __slots__ = ("data", "__weakref__")

    def __init__(self, data):
        self.data = data


def _add(grads, owned, holder, terms):
    """Add ``terms`` (None, an array or a list of them) for ``holder`` as the engine adds them."""
    if terms is not None:
        engine._accumulate(grads, owned, holder, terms if terms.__class__ is list else [terms])


def unroll_compiled(cell, xs, state, time_axis):
    """``(hs, last_state)`` as ``nn.unroll`` returns them, from one node; None when the cell does not qualify."""
    if _per_step or composites.is_expanded():
        return None
    if engine._tracer is not None:   # a traced step writes the sequence as a loop over t (tracing.unroll_loop)
        return engine._tracer.unroll(unroll_compiled, cell, xs, state, time_axis)
    steps = xs.shape[time_axis]
    at = [(slice(None), t) if time_axis == 1 else t for t in range(steps)]
    x0 = Tensor(xs.data[at[0]], requires_grad=xs.requires_grad)   # an example for the signature only
    plan = _plan(cell, x0, state)
    if plan is None:
        return None
    composite, owner, args0, flat = plan
    program0, tensors0 = composite.program_for(owner, args0, {})
    if program0 is None:
        return None
    state0 = tensors0[1:]
    n = len(state0)
    if program0.compiled.n_outputs != n or n == 0:
        return None
    params, xd = program0.params, xs.data
    pdata = [p.data for p in params]
    programs, saved, states = [], [], []
    try:
        program, outs = program0, None
        for t in range(steps):
            if t == 1:       # from here on the state is the step's own output: its program once more
                example = [Tensor(o, requires_grad=program0.compiled.differentiable and engine._grad_enabled)
                           for o in outs]
                args = (x0, *example) if flat else (x0, example[0] if n == 1 and program0.compiled.single
                                                       else tuple(example))
                program, _ = composite.program_for(owner, args, {})
                if program is None or len(program.params) != len(params) or \
                        any(p is not q for p, q in zip(program.params, params)):
                    return None
            state_now = [s.data for s in state0] if t == 0 else outs
            outs, kept = program.compiled.forward(xd[at[t]], *state_now, *pdata)
            if t and any(o.shape != s.shape or o.dtype != s.dtype for o, s in zip(outs, state_now)):
                return None   # a state that changes shape or dtype from step to step: run it step by step
            programs.append(program)
            saved.append(kept)
            states.append(outs)
    except composites.GuardFailed:
        return None
    hs = np.stack([s[0] for s in states], axis=time_axis)
    last = states[-1]
    parents = (xs, *state0, *params)
    op = UnrollOp(composite.name, cell, time_axis, len(params))
    op.programs = programs     # each step's program, for a traced step's loop
    if engine._grad_enabled and program0.compiled.differentiable:
        made = Tensor._make_many([hs, *last], parents,
                                 _backward(programs, saved, states, xs, state0, params, at), op)
    else:
        made = tuple(Tensor._make(a, (), None, op) for a in (hs, *last))
    hs_t, last_t = made[0], made[1:]
    single = program0.compiled.single
    return hs_t, last_t[0] if single else tuple(last_t)


def _backward(programs, saved, states, xs, state0, params, at):
    """The backward of an unrolled sequence: each step's written backward, from the last step to the first.

    It yields ``(input number, term)`` as the terms are made (the inputs being xs,
    the initial state's parts, then the parameters), and the engine adds each at
    once, in the order the step-by-step graph would add them.
    """
    def backward(gs):
        steps, n = len(programs), len(state0)
        dhs, dlast = gs[0], gs[1:]
        x_shape = xs.data[at[0]].shape
        carried = None          # the terms the step after this one gave for this step's state
        for t in range(steps - 1, -1, -1):
            out = states[t]
            if t < steps - 1 and n == 1 and dhs is not None and carried is not None and \
                    carried[0].__class__ is np.ndarray and carried[0].shape == out[0].shape and \
                    carried[0].dtype == dhs.dtype == out[0].dtype:
                seeds = [dhs[at[t]] + carried[0]]     # the common case of the general path below
            else:
                grads, owned = {}, set()
                holders = [_Holder(o) for o in out]
                if t == steps - 1:                        # what the last state's users sent
                    for h, g in zip(holders, dlast):
                        _add(grads, owned, h, g)
                if dhs is not None:                       # the stacked states' share (the newest node)
                    _add(grads, owned, holders[0], dhs[at[t]])
                if carried is not None:                   # then the step after this one
                    for h, terms in zip(holders, carried):
                        _add(grads, owned, h, terms)
                seeds = [grads.get(id(h)) for h in holders]
            carried = None
            if all(g is None for g in seeds):
                continue
            pattern = tuple(g is not None for g in seeds)
            terms = programs[t].compiled.backwards[pattern](*[g for g in seeds if g is not None], *saved[t])
            gx = terms[0]
            if xs.requires_grad and gx is not None:
                if gx.__class__ is not np.ndarray or gx.shape != x_shape or gx.dtype != xs.dtype:
                    holder, total = _Holder(xs.data[at[t]]), {}
                    _add(total, set(), holder, gx)
                    gx = total[id(holder)]
                yield 0, _Scatter(at[t], gx, engine._INDEX.scatter[0])     # a time step: a basic index
            carried = terms[1:1 + n]
            for j, term in enumerate(terms[1 + n:], start=1 + n):
                if term is not None:
                    yield j, term
        for i, term in enumerate(carried if carried is not None else (), start=1):
            if term is not None:
                yield i, term
    return backward


class UnrollOp(composites.CompositeOp):
    """The operation of an unrolled sequence's node: ``unroll(<cell's step>)``; ``expand`` shows the steps."""

    def __new__(cls, step_name, cell, time_axis, n_params):
        op = super().__new__(cls, f"unroll({step_name})", None, n_params)
        op.cell, op.time_axis = cell, time_axis
        return op

    def expand(self, node):
        """``(inputs, outputs)``: fresh leaves for the node's inputs and the unroll on them, one node per step."""
        leaves = [Tensor(t.data, requires_grad=t.requires_grad) for t in self._inputs(node)]
        return leaves, self._unroll(leaves)

    def replay(self, node):
        """The node's outputs ``(hs, *last state)`` again, one node per step, on its own input Tensors."""
        hs, last = self._unroll(self._inputs(node))
        return (hs, last) if isinstance(last, Tensor) else (hs, *last)

    def _unroll(self, inputs):
        from .recurrent import unroll
        state = inputs[1] if len(inputs) == 2 else tuple(inputs[1:])
        with per_step():
            return unroll(self.cell, inputs[0], state, batch_first=self.time_axis == 1)
