"""PyTorch cell weights into ours and back, without importing torch.

PyTorch's ``nn.RNNCell``, ``nn.LSTMCell`` and ``nn.GRUCell`` keep ``weight_ih``
(gates*H, D), ``weight_hh`` (gates*H, H), ``bias_ih`` and ``bias_hh`` (gates*H,)
and compute ``x @ weight_ih.T``.  Our cells use the row-vector convention
``x @ Wx`` with ``Wx`` (D, gates*H), so the weights are transposed; the gate
blocks are already in the same order (LSTM i, f, g, o; GRU r, z, n).

- RNN and LSTM cells have one bias: ``b = bias_ih + bias_hh`` on the way in;
  on the way out ``bias_ih = b`` and ``bias_hh = 0`` (the same function).
- GRU keeps both biases, because ``bias_hh``'s n block sits inside ``r * (...)``:
  ``bx = bias_ih``, ``bh = bias_hh``.

The source is anything with those four names: a torch cell (its attributes are
read duck-typed, as ``cell.weight_ih.detach().cpu().numpy()``), the cell's
``state_dict()``, or a plain dict of numpy arrays.  Single-layer ``nn.RNN`` /
``nn.LSTM`` / ``nn.GRU`` names (``weight_ih_l0`` ...) are accepted as well.
Nothing here imports torch except ``to_torch_cell``, which does so when called.
"""
import numpy as np

from .cells import GRUCell, LSTMCell, RNNCell

__all__ = ["torch_cell_arrays", "from_torch_cell", "to_torch_state_dict", "to_torch_cell"]

_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
_GATES = {1: RNNCell, 4: LSTMCell, 3: GRUCell}
_KINDS = {"RNNCell": RNNCell, "RNN": RNNCell, "LSTMCell": LSTMCell, "LSTM": LSTMCell,
          "GRUCell": GRUCell, "GRU": GRUCell}


def _to_numpy(value, name):
    """A numpy array from a torch tensor (duck-typed), our Tensor, or anything array-like."""
    if hasattr(value, "detach"):
        value = value.detach()
    if hasattr(value, "cpu"):
        value = value.cpu()
    if hasattr(value, "numpy"):
        value = value.numpy()
    elif hasattr(value, "data") and isinstance(value.data, np.ndarray):   # our Tensor
        value = value.data
    array = np.array(value)                         # a copy: never share memory with the source
    if array.dtype.kind != "f":
        raise TypeError(f"torch weights: {name!r} must be a floating-point array, got dtype {array.dtype}")
    return array


def _lookup(source, name):
    """``source[name]`` or ``source.name``, also under the single-layer suffix ``_l0``; None if absent."""
    for key in (name, name + "_l0"):
        if isinstance(source, dict):
            if key in source:
                return source[key]
        elif getattr(source, key, None) is not None:
            return getattr(source, key)
    return None


def torch_cell_arrays(source):
    """``{"weight_ih", "weight_hh", "bias_ih", "bias_hh"}`` as float numpy arrays in PyTorch's layout.

    ``source`` is a torch cell, its ``state_dict()``, or a dict of arrays.  A
    cell made with ``bias=False`` (no biases) gets zero biases.  The shapes are
    checked against each other.
    """
    arrays = {}
    for name in _NAMES:
        value = _lookup(source, name)
        if value is None and name.startswith("weight"):
            raise KeyError(f"torch weights: no {name!r} in the source ({type(source).__name__})")
        arrays[name] = None if value is None else _to_numpy(value, name)
    if isinstance(source, dict):
        unknown = [k for k in source if k.split("_l0")[0] not in _NAMES]
        if unknown:
            raise KeyError(f"torch weights: unexpected keys {unknown}; expected {list(_NAMES)} "
                           f"(a multi-layer or bidirectional RNN is not a single cell)")
    w_ih, w_hh = arrays["weight_ih"], arrays["weight_hh"]
    if w_ih.ndim != 2 or w_hh.ndim != 2 or w_hh.shape[0] != w_ih.shape[0] or \
            w_hh.shape[0] % max(w_hh.shape[1], 1) or w_hh.shape[1] == 0:
        raise ValueError(f"torch weights: weight_ih {w_ih.shape} and weight_hh {w_hh.shape} do not fit "
                         f"the layout (gates*H, D) and (gates*H, H)")
    rows = w_ih.shape[0]
    for name in ("bias_ih", "bias_hh"):
        if arrays[name] is None:
            arrays[name] = np.zeros(rows, dtype=w_ih.dtype)
        elif arrays[name].shape != (rows,):
            raise ValueError(f"torch weights: {name} has shape {arrays[name].shape}, expected ({rows},) "
                             f"to match weight_ih {w_ih.shape}")
    return arrays


def _kind(source, gates):
    by_gates = _GATES.get(gates)
    if by_gates is None:
        raise ValueError(f"torch weights: weight_hh has {gates} gate blocks; RNN has 1, GRU 3, LSTM 4")
    by_name = _KINDS.get(type(source).__name__)
    if by_name is not None and by_name is not by_gates:
        raise ValueError(f"torch weights: a {type(source).__name__} with {gates} gate blocks")
    return by_gates


def from_torch_cell(source, cell=None, *, nonlinearity=None, dtype=None):
    """Our RNNCell, LSTMCell or GRUCell with the weights of a PyTorch cell.

    ``source``: a torch ``nn.RNNCell`` / ``nn.LSTMCell`` / ``nn.GRUCell`` (or its
    ``state_dict()``, or a dict of numpy arrays with the same names).  The kind
    of cell follows from the number of gate blocks.  With ``cell`` given, its
    parameters are overwritten in place (after every shape has been checked) and
    it is returned; otherwise a new cell is made, of ``dtype`` (default: the
    source's floating type).  An RNN cell's ``nonlinearity`` comes from the
    argument, else from the source's attribute, else "tanh".
    """
    arrays = torch_cell_arrays(source)
    w_ih, w_hh = arrays["weight_ih"], arrays["weight_hh"]
    hidden, inputs = w_hh.shape[1], w_ih.shape[1]
    kind = _kind(source, w_hh.shape[0] // hidden)
    source_nl = getattr(source, "nonlinearity", None) if not isinstance(source, dict) else None
    if nonlinearity is not None and source_nl is not None and nonlinearity != source_nl:
        raise ValueError(f"from_torch_cell: nonlinearity {nonlinearity!r} but the source uses {source_nl!r}")
    nonlinearity = nonlinearity or source_nl
    if cell is None:
        dtype = np.dtype(dtype) if dtype is not None else w_ih.dtype
        if kind is RNNCell:
            cell = RNNCell(inputs, hidden, nonlinearity or "tanh", dtype=dtype, rng=0)
        else:
            if nonlinearity is not None:
                raise ValueError(f"from_torch_cell: nonlinearity applies to RNN cells, not {kind.__name__}")
            cell = kind(inputs, hidden, dtype=dtype, rng=0)
    else:
        if type(cell) is not kind:
            raise ValueError(f"from_torch_cell: the source is a {kind.__name__} (weight_hh {w_hh.shape}), "
                             f"the target a {type(cell).__name__}")
        if (cell.input_size, cell.hidden_size) != (inputs, hidden):
            raise ValueError(f"from_torch_cell: the source has input_size {inputs} and hidden_size {hidden}, "
                             f"the target {cell.input_size} and {cell.hidden_size}")
        if kind is RNNCell and nonlinearity is not None and nonlinearity != cell.nonlinearity:
            raise ValueError(f"from_torch_cell: the source uses {nonlinearity!r}, the target cell "
                             f"{cell.nonlinearity!r}")
    state = {"Wx": w_ih.T, "Wh": w_hh.T}
    if kind is GRUCell:
        state.update(bx=arrays["bias_ih"], bh=arrays["bias_hh"])
    else:
        state["b"] = arrays["bias_ih"] + arrays["bias_hh"]
    cell.load_state_dict(state)
    return cell


def to_torch_state_dict(cell):
    """PyTorch's ``state_dict`` of the same cell, as numpy arrays (copies).

    ``torch_cell.load_state_dict({k: torch.from_numpy(v) for k, v in d.items()})``
    then gives a torch cell that computes what ``cell`` computes.  RNN and LSTM
    cells export their one bias as ``bias_ih`` and a zero ``bias_hh``.
    """
    if not isinstance(cell, (RNNCell, LSTMCell, GRUCell)):
        raise TypeError(f"to_torch_state_dict: expected an RNNCell, LSTMCell or GRUCell, "
                        f"got {type(cell).__name__}")
    out = {"weight_ih": cell.Wx.data.T.copy(), "weight_hh": cell.Wh.data.T.copy()}
    if isinstance(cell, GRUCell):
        out.update(bias_ih=cell.bx.data.copy(), bias_hh=cell.bh.data.copy())
    else:
        out.update(bias_ih=cell.b.data.copy(), bias_hh=np.zeros_like(cell.b.data))
    return out


def to_torch_cell(cell, torch_cell=None):  # pragma: no cover (needs torch: tested in test_against_torch.py)
    """Copy ``cell``'s weights into a PyTorch cell (made when not given) and return it.

    Imports torch when called.  A new torch cell takes the dtype of ``cell``.
    """
    import torch   # only here: the rest of the package never needs torch

    state = {k: torch.from_numpy(v) for k, v in to_torch_state_dict(cell).items()}
    if torch_cell is None:
        if isinstance(cell, RNNCell):
            torch_cell = torch.nn.RNNCell(cell.input_size, cell.hidden_size, nonlinearity=cell.nonlinearity)
        else:
            make = torch.nn.LSTMCell if isinstance(cell, LSTMCell) else torch.nn.GRUCell
            torch_cell = make(cell.input_size, cell.hidden_size)
        torch_cell = torch_cell.to(state["weight_ih"].dtype)
    elif isinstance(cell, RNNCell) and getattr(torch_cell, "nonlinearity", cell.nonlinearity) != cell.nonlinearity:
        raise ValueError(f"to_torch_cell: the torch cell uses {torch_cell.nonlinearity!r}, "
                         f"ours {cell.nonlinearity!r}")
    torch_cell.load_state_dict(state)
    return torch_cell
