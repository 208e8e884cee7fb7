"""Running a cell over time.  The loop is in the forward pass only: BPTT is the graph's backward."""
import numpy as np

from ..tensor import Tensor, stack
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
        xs = Tensor(np.asarray(xs))
    if xs.ndim != 3:
        layout = "(batch, time, features)" if batch_first else "(time, batch, features)"
        raise ValueError(f"unroll: xs must be 3-D {layout}, got shape {xs.shape}")
    time_axis = 1 if batch_first else 0
    steps = xs.shape[time_axis]
    if steps == 0:
        raise ValueError(f"unroll: xs of shape {xs.shape} has no time steps")
    if state is None and hasattr(cell, "initial_state"):
        state = cell.initial_state(xs.shape[1 - time_axis])
    outputs = []
    for t in range(steps):
        state = cell(xs[:, t] if batch_first else xs[t], state)
        outputs.append(state[0] if isinstance(state, (tuple, list)) else state)
    return stack(outputs, axis=time_axis), state


def detach_state(state):
    """The state with every Tensor in it detached (tuples and lists kept)."""
    if isinstance(state, (tuple, list)):
        return type(state)(detach_state(s) for s in state)
    return state.detach() if isinstance(state, Tensor) else state


class RNN(Module):
    """A cell unrolled over a sequence; ``rnn(xs, state=None)`` returns ``(hs, state)`` as ``unroll``.

    With ``stateful=True`` the last state is kept, detached, and used as the
    next call's initial state: truncated BPTT, as Deep Learning from Scratch 2's
    TimeRNN does it (the forward connection carries over, the backward stops at
    the chunk boundary).  ``reset_state()`` forgets it.  ``params`` registers the
    Parameters of a plain-function cell so that ``parameters()`` finds them.
    """

    def __init__(self, cell, stateful=False, params=None):
        if not callable(cell):
            raise TypeError(f"RNN: cell must be callable as cell(x, state), got {type(cell).__name__}")
        self.cell = cell
        self.stateful = bool(stateful)
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
        self._state = None

    def forward(self, xs, state=None):
        if state is None and self.stateful:
            state = self._state
        hs, last = unroll(self.cell, xs, state)
        if self.stateful:
            self._state = detach_state(last)
        return hs, last
