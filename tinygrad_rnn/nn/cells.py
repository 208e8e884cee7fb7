"""Recurrent cells: ``cell(x, state) -> state``, each a composition of Tensor operations.

``x`` is (batch, input_size); ``state=None`` starts from zeros.  Weights follow
the row-vector convention of the numpy textbooks (``x @ Wx``), with gate blocks
side by side in the columns.
"""
import numpy as np

from .. import functional as F
from ..composites import composite
from ..tensor import Tensor, label
from .init import as_dtype, as_rng, scaled_normal, zeros
from .layers import as_input
from .module import Module, Parameter

__all__ = ["RNNCell", "LSTMCell", "GRUCell"]


class _Cell(Module):
    gates = 1
    """How many gate blocks sit side by side in the weights' columns."""

    def __init__(self, input_size, hidden_size, dtype, rng, biases=("b",)):
        rng, dtype = as_rng(rng), as_dtype(dtype)
        self.input_size, self.hidden_size = input_size, hidden_size
        width = self.gates * hidden_size
        self.Wx = Parameter(scaled_normal(rng, input_size, (input_size, width), dtype))
        self.Wh = Parameter(scaled_normal(rng, hidden_size, (hidden_size, width), dtype))
        for name in biases:
            setattr(self, name, Parameter(zeros(width, dtype)))

    def initial_state(self, batch):
        """Zeros of shape (batch, hidden_size)."""
        return Tensor(np.zeros((batch, self.hidden_size), dtype=self.Wx.dtype))

    def _input(self, x):
        x = as_input(x, self.Wx.dtype, type(self).__name__)
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"{type(self).__name__}: x must have shape (batch, {self.input_size}), got {x.shape}")
        return x

    def _check_state(self, h, x, what="state"):
        if h.shape != (x.shape[0], self.hidden_size):
            raise ValueError(f"{type(self).__name__}: {what} must have shape "
                             f"({x.shape[0]}, {self.hidden_size}) for x of shape {x.shape}, got {h.shape}")


class RNNCell(_Cell):
    """``h' = tanh(x @ Wx + h @ Wh + b)`` (or relu)."""

    def __init__(self, input_size, hidden_size, nonlinearity="tanh", *, dtype=np.float64, rng=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: nonlinearity must be 'tanh' or 'relu', not {nonlinearity!r}")
        super().__init__(input_size, hidden_size, dtype, rng)
        self.nonlinearity = nonlinearity

    def forward(self, x, state=None):
        """The next state ``h'`` (batch, hidden_size) from ``x`` (batch, input_size) and ``h`` (zeros when None)."""
        return self.step(*self.step_args(x, state))

    def step_args(self, x, state=None):
        """``(x, h)``, checked and as Tensors: the arguments of ``step``."""
        x = self._input(x)
        h = self.initial_state(x.shape[0]) if state is None else as_input(state, self.Wx.dtype, "RNNCell")
        self._check_state(h, x)
        return x, h

    @composite(name="rnn_cell")
    def step(self, x, h):
        """One step on checked inputs, compiled into one graph node (the composition is the definition)."""
        a = label(x @ self.Wx + h @ self.Wh + self.b, "a")
        return F.tanh(a) if self.nonlinearity == "tanh" else F.relu(a)


class LSTMCell(_Cell):
    """Gates i, f, g, o in the column blocks of ``Wx`` (D, 4H), ``Wh`` (H, 4H), ``b`` (4H,); state ``(h, c)``.

    ``c' = f * c + i * g``, ``h' = o * tanh(c')``.  Weights start as normal(0, 1/fan_in) and
    biases at zero, forget gate included; for the often recommended forget bias of 1, set
    ``cell.b.data[H:2 * H] = 1.0`` after construction.
    """
    gates = 4
    """How many gate blocks sit side by side in the weights' columns."""

    def __init__(self, input_size, hidden_size, *, dtype=np.float64, rng=None):
        super().__init__(input_size, hidden_size, dtype, rng)

    def initial_state(self, batch):
        """``(h, c)``, both zeros of shape (batch, hidden_size)."""
        return super().initial_state(batch), super().initial_state(batch)

    def forward(self, x, state=None):
        """The next state ``(h', c')`` from ``x`` (batch, input_size) and ``(h, c)`` (zeros when None)."""
        return self.step(*self.step_args(x, state))

    def step_args(self, x, state=None):
        """``(x, h, c)``, checked and as Tensors: the arguments of ``step``."""
        x = self._input(x)
        if state is None:
            state = self.initial_state(x.shape[0])
        if not (isinstance(state, (tuple, list)) and len(state) == 2):
            raise ValueError("LSTMCell: state must be a pair (h, c)")
        h, c = (as_input(s, self.Wx.dtype, "LSTMCell") for s in state)
        self._check_state(h, x, "h")
        self._check_state(c, x, "c")
        return x, h, c

    @composite(name="lstm_cell")
    def step(self, x, h, c):
        """One step on checked inputs, compiled into one graph node; returns ``(h', c')``."""
        H = self.hidden_size
        a = x @ self.Wx + h @ self.Wh + self.b
        # one sigmoid over all four blocks instead of three calls (the g block's sigmoid is simply
        # unused and gets a zero gradient): fewer graph nodes, which is what costs at small H
        s = F.sigmoid(a)
        i, f, o = s[:, :H], s[:, H:2 * H], s[:, 3 * H:]
        g = F.tanh(a[:, 2 * H:3 * H])
        c = f * c + i * g
        return o * F.tanh(c), c


class GRUCell(_Cell):
    """Gates r, z, n in the column blocks of ``Wx`` (D, 3H), ``Wh`` (H, 3H), ``bx``, ``bh`` (3H,).

    PyTorch's equations: ``n = tanh(x@Wx_n + bx_n + r * (h@Wh_n + bh_n))``, ``h' = (1 - z) * n + z * h``.
    """
    gates = 3
    """How many gate blocks sit side by side in the weights' columns."""

    def __init__(self, input_size, hidden_size, *, dtype=np.float64, rng=None):
        super().__init__(input_size, hidden_size, dtype, rng, biases=("bx", "bh"))

    def forward(self, x, state=None):
        """The next state ``h'`` (batch, hidden_size) from ``x`` (batch, input_size) and ``h`` (zeros when None)."""
        return self.step(*self.step_args(x, state))

    def step_args(self, x, state=None):
        """``(x, h)``, checked and as Tensors: the arguments of ``step``."""
        x = self._input(x)
        h = self.initial_state(x.shape[0]) if state is None else as_input(state, self.Wx.dtype, "GRUCell")
        self._check_state(h, x)
        return x, h

    @composite(name="gru_cell")
    def step(self, x, h):
        """One step on checked inputs, compiled into one graph node."""
        H = self.hidden_size
        gx = x @ self.Wx + self.bx
        gh = h @ self.Wh + self.bh
        # r and z are side by side: one sigmoid for both
        rz = F.sigmoid(gx[:, :2 * H] + gh[:, :2 * H])
        r, z = rz[:, :H], rz[:, H:]
        n = F.tanh(gx[:, 2 * H:] + r * gh[:, 2 * H:])
        return (1 - z) * n + z * h


# the cells whose forward is ``step(*step_args(x, state))``: nn.unroll may run their compiled step directly
STEP_FORWARDS = {RNNCell.forward, LSTMCell.forward, GRUCell.forward}
