"""Modules, cells and unrolling: everything built on Tensor operations and ``functional``."""
from .cells import GRUCell, LSTMCell, RNNCell
from .layers import Embedding, Linear
from .module import Module, Parameter, StateDictError
from .recurrent import RNN, detach_state, unroll
from .torch_weights import from_torch_cell, to_torch_cell, to_torch_state_dict, torch_cell_arrays

CELLS = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}
"""The built-in cells by name: the one map that the command line, training and the examples use."""

__all__ = ["Module", "Parameter", "StateDictError", "Linear", "Embedding",
           "RNNCell", "LSTMCell", "GRUCell", "CELLS", "unroll", "RNN", "detach_state",
           "from_torch_cell", "to_torch_state_dict", "to_torch_cell", "torch_cell_arrays"]
