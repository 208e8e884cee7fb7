"""Running a cell over time.  The loop is in the forward pass only: BPTT is the graph's backward."""
import contextlib
import gc

import numpy as np

from ..tensor import Tensor, label, stack, time_step
from .compiled_unroll import unroll_compiled
from .module import Module, Parameter

__all__ = ["unroll", "RNN"]


def unroll(cell, xs, state=None, batch_first=True):
    """Run ``cell(x_t, state)`` for every time step of ``xs``; return ``(hs, last_state)``.

    ``xs`` is (batch, time, features), or (time, batch, features) with
    ``batch_first=False``.  ``hs`` stacks the states over time in the same
    layout (for a tuple state, its first element, as an LSTM's ``h``).
    ``state=None`` starts from zeros: the cell's ``initial_state(batch)`` when it
    has one, otherwise the cell is given ``None`` at the first step.
    """
    if not isinstance(xs, Tensor):
        # plain data takes the cell's dtype, as a layer's input does: a float32 cell stays float32
        xs = Tensor(np.asarray(xs, dtype=_param_dtype(cell)))
    if xs.ndim != 3:
        layout = "(batch, time, features)" if batch_first else "(time, batch, features)"
        raise ValueError(f"unroll: xs must be 3-D {layout}, got shape {xs.shape}")
    time_axis = 1 if batch_first else 0
    steps = xs.shape[time_axis]
    if steps == 0:
        raise ValueError(f"unroll: xs of shape {xs.shape} has no time steps")
    if state is None and hasattr(cell, "initial_state"):
        state = cell.initial_state(xs.shape[1 - time_axis])
    for s, name in zip(state if isinstance(state, (tuple, list)) else (state,), ("h_init", "c_init")):
        if isinstance(s, Tensor):
            label(s, name)
    compiled = unroll_compiled(cell, xs, state, time_axis)   # a compiled step: one node for the sequence
    if compiled is not None:
        return compiled
    outputs = []
    with _collector_paused():
        for t in range(steps):
            time_step(t)   # names for a traced program: x_3, h_3, ...
            state = cell(label(xs[:, t] if batch_first else xs[t], "x"), state)
            h = state[0] if isinstance(state, (tuple, list)) and state else state
            if not isinstance(h, Tensor):
                # a custom cell that forgot to return its state would otherwise fail later, in stack
                raise TypeError(f"unroll: at step {t} the cell returned {type(state).__name__}; a cell must "
                                f"return its new state, a Tensor or a tuple whose first element is a Tensor")
            for s, name in zip(state if isinstance(state, (tuple, list)) else (state,), "hc"):
                label(s, name)
            outputs.append(h)
        time_step(None)
    return label(stack(outputs, axis=time_axis), "hs"), state


@contextlib.contextmanager
def _collector_paused():
    """Python's cyclic garbage collector off while the graph of an unroll grows.

    The graph holds no reference cycles (a node refers only to its inputs), so
    reference counting frees it; but each full pass of the collector walks every
    live node, and a long unroll would pay for ever larger passes (time growing
    faster than the number of steps).  Cycles the cell itself makes are
    collected after the loop.
    """
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def _param_dtype(cell):
    """The dtype of a Module cell's first parameter; None (numpy's choice) for a plain function."""
    if isinstance(cell, Module):
        for p in cell.parameters():
            return p.dtype
    return None


def _first_tensor(state):
    """The first Tensor in a state (nested tuples and lists), or None."""
    if isinstance(state, (tuple, list)):
        return next((t for t in map(_first_tensor, state) if t is not None), None)
    return state if isinstance(state, Tensor) else None


def detach_state(state):
    """The state with every Tensor in it detached (tuples and lists kept)."""
    if isinstance(state, (tuple, list)):
        return type(state)(detach_state(s) for s in state)
    return state.detach() if isinstance(state, Tensor) else state


def _carried(state):
    """The state to carry to the next call: each Tensor a new leaf with a copy of its values, so that it can
    be edited in place (a lane reset at a document boundary) whatever still reads the original."""
    if isinstance(state, (tuple, list)):
        return type(state)(_carried(s) for s in state)
    return Tensor(state.data) if isinstance(state, Tensor) else state


class RNN(Module):
    """A cell unrolled over a sequence; ``rnn(xs, state=None)`` returns ``(hs, state)`` as ``unroll``.

    With ``stateful=True`` the last state is kept, detached (a copy that you may
    edit in place), and used as the next call's initial state: truncated BPTT, as Deep Learning from Scratch 2's
    TimeRNN does it (the forward connection carries over, the backward stops at
    the chunk boundary).  ``reset_state()`` forgets it.  ``params`` registers the
    Parameters of a plain-function cell so that ``parameters()`` finds them.
    ``batch_first=False`` takes and returns (time, batch, features).
    """

    def __init__(self, cell, stateful=False, params=None, *, batch_first=True):
        if not callable(cell):
            raise TypeError(f"RNN: cell must be callable as cell(x, state), got {type(cell).__name__}")
        self.cell = cell
        self.stateful = bool(stateful)
        self.batch_first = bool(batch_first)
        self.params = list(params) if params is not None else []
        for p in self.params:
            if not isinstance(p, Parameter):
                raise TypeError(f"RNN: params must be Parameters, got {type(p).__name__}")
        self._state = None

    @property
    def state(self):
        """The state carried to the next call (stateful only), or None."""
        return self._state

    def reset_state(self):
        """Forget the carried state: the next call starts from zeros."""
        self._state = None

    def forward(self, xs, state=None):
        """``(hs, last_state)`` for ``xs`` (batch, time, features), or (time, batch, features)."""
        if state is None and self.stateful and self._state is not None:
            state = self._state
            shape = xs.shape if isinstance(xs, Tensor) else np.shape(xs)
            batch = shape[0 if self.batch_first else 1] if len(shape) == 3 else None
            carried = _first_tensor(state)
            if batch is not None and carried is not None and carried.ndim and carried.shape[0] != batch:
                want = (batch,) + carried.shape[1:]
                raise ValueError(f"RNN: the carried state must have shape {want} for xs of shape {shape}, "
                                 f"got {carried.shape} (a batch of {carried.shape[0]}, not {batch}); "
                                 f"call reset_state() first")
        hs, last = unroll(self.cell, xs, state, batch_first=self.batch_first)
        if self.stateful:
            self._state = _carried(last)
        return hs, last
