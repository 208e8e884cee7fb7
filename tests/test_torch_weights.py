"""PyTorch's cell layout into our cells and back, without torch: numpy dicts, nn.RNN's ``_l0`` names and
objects that look like torch cells (duck-typed ``.detach().cpu().numpy()``), and every refusal.

The conversions themselves against real torch cells are in ``test_against_torch.py`` (skipped without
torch); here the arrays are compared exactly, since a conversion only transposes, copies and adds.
"""
from types import SimpleNamespace

import numpy as np
import pytest

from tinygrad_rnn import Tensor, nn


class FakeTorchTensor:
    """What the converters read of a torch tensor: ``detach()``, ``cpu()``, ``numpy()``."""

    def __init__(self, array):
        self.array = array

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.array


def torch_layout(gates, inputs=3, hidden=4, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    rows = gates * hidden
    return {"weight_ih": rng.standard_normal((rows, inputs)).astype(dtype),
            "weight_hh": rng.standard_normal((rows, hidden)).astype(dtype),
            "bias_ih": rng.standard_normal(rows).astype(dtype), "bias_hh": rng.standard_normal(rows).astype(dtype)}


def fake_torch_cell(class_name, arrays, **attrs):
    """An object named like a torch cell class, with its weights as torch-like tensors."""
    cell = type(class_name, (), {})()
    for k, v in arrays.items():
        setattr(cell, k, FakeTorchTensor(v))
    for k, v in attrs.items():
        setattr(cell, k, v)
    return cell


@pytest.mark.parametrize("name, gates, kind", [("RNNCell", 1, nn.RNNCell), ("LSTMCell", 4, nn.LSTMCell),
                                               ("GRUCell", 3, nn.GRUCell)])
def test_a_torch_like_cell_object_converts_by_its_attributes(name, gates, kind):
    d = torch_layout(gates)
    extra = {"nonlinearity": "relu"} if kind is nn.RNNCell else {}
    cell = nn.from_torch_cell(fake_torch_cell(name, d, **extra))
    assert type(cell) is kind and cell.Wx.dtype == np.float64
    np.testing.assert_array_equal(cell.Wx.data, d["weight_ih"].T)
    np.testing.assert_array_equal(cell.Wh.data, d["weight_hh"].T)
    if kind is nn.GRUCell:
        np.testing.assert_array_equal(cell.bx.data, d["bias_ih"])
        np.testing.assert_array_equal(cell.bh.data, d["bias_hh"])
    else:
        np.testing.assert_array_equal(cell.b.data, d["bias_ih"] + d["bias_hh"])
    if kind is nn.RNNCell:
        assert cell.nonlinearity == "relu"          # read from the source's attribute
    d["weight_ih"][0, 0] += 1.0                     # the cell copied the arrays: the source is not shared
    assert cell.Wx.data[0, 0] != d["weight_ih"][0, 0]


def test_single_layer_rnn_names_our_tensors_and_a_cell_without_biases():
    d = torch_layout(4)
    layer = {k + "_l0": Tensor(v) for k, v in d.items()}       # nn.LSTM's names; our Tensors as values
    layer["bias_hh_l0"] = SimpleNamespace(data=d["bias_hh"])   # anything with an array as .data
    cell = nn.from_torch_cell(layer)
    np.testing.assert_array_equal(cell.Wh.data, d["weight_hh"].T)
    no_bias = nn.torch_cell_arrays({"weight_ih": d["weight_ih"], "weight_hh": d["weight_hh"]})
    assert no_bias["bias_ih"].tolist() == [0.0] * 16 and no_bias["bias_hh"].tolist() == [0.0] * 16
    assert nn.from_torch_cell(fake_torch_cell("LSTMCell", {k: d[k] for k in ("weight_ih", "weight_hh")}),
                              dtype=np.float32).b.data.tolist() == [0.0] * 16


def test_into_a_given_cell_in_place_and_of_a_chosen_dtype():
    d = torch_layout(1)
    target = nn.RNNCell(3, 4, "tanh", rng=1)
    same = nn.from_torch_cell(d, target)
    assert same is target
    np.testing.assert_array_equal(target.Wx.data, d["weight_ih"].T)
    small = nn.from_torch_cell(d, dtype=np.float32)
    assert small.Wx.dtype == np.float32 and small.nonlinearity == "tanh"
    np.testing.assert_array_equal(small.Wx.data, d["weight_ih"].T.astype(np.float32))


@pytest.mark.parametrize("source, error, pattern", [
    ({"weight_ih": np.ones((4, 3))}, KeyError, "no 'weight_hh'"),
    ({"weight_ih": np.ones((4, 3), int), "weight_hh": np.ones((4, 4))}, TypeError, "'weight_ih' must be a floating"),
    ({"weight_ih": np.ones((4, 3)), "weight_hh": np.ones((8, 4))}, ValueError, r"weight_ih \(4, 3\) and weight_hh"),
    ({"weight_ih": np.ones(4), "weight_hh": np.ones((4, 4))}, ValueError, "do not fit the layout"),
    ({"weight_ih": np.ones((4, 3)), "weight_hh": np.ones((4, 0))}, ValueError, "do not fit the layout"),
    ({"weight_ih": np.ones((4, 3)), "weight_hh": np.ones((4, 4)), "bias_ih": np.ones(3)}, ValueError,
     r"bias_ih has shape \(3,\), expected \(4,\)"),
    ({"weight_ih": np.ones((8, 3)), "weight_hh": np.ones((8, 4))}, ValueError, "2 gate blocks; RNN has 1"),
    ({"weight_ih_l1": np.ones((4, 3)), "weight_ih": np.ones((4, 3)), "weight_hh": np.ones((4, 4))}, KeyError,
     "unexpected keys.*weight_ih_l1"),
], ids=["missing", "integer", "rows", "1-D", "no hidden", "bias", "gates", "second layer"])
def test_bad_sources_are_refused_by_name(source, error, pattern):
    with pytest.raises(error, match=pattern):
        nn.from_torch_cell(source)


def test_kind_size_and_nonlinearity_mismatches_are_refused():
    rnn, lstm = torch_layout(1), torch_layout(4)
    with pytest.raises(ValueError, match="a GRUCell with 4 gate blocks"):
        nn.from_torch_cell(fake_torch_cell("GRUCell", lstm))
    with pytest.raises(ValueError, match="nonlinearity 'tanh' but the source uses 'relu'"):
        nn.from_torch_cell(fake_torch_cell("RNNCell", rnn, nonlinearity="relu"), nonlinearity="tanh")
    with pytest.raises(ValueError, match="nonlinearity applies to RNN cells, not LSTMCell"):
        nn.from_torch_cell(lstm, nonlinearity="relu")
    with pytest.raises(ValueError, match="the source is a LSTMCell .* the target a GRUCell"):
        nn.from_torch_cell(lstm, nn.GRUCell(3, 4, rng=0))
    with pytest.raises(ValueError, match="input_size 3 and hidden_size 4, the target 5 and 4"):
        nn.from_torch_cell(rnn, nn.RNNCell(5, 4, rng=0))
    with pytest.raises(ValueError, match="the source uses 'relu', the target cell 'tanh'"):
        nn.from_torch_cell(rnn, nn.RNNCell(3, 4, "tanh", rng=0), nonlinearity="relu")
    with pytest.raises(TypeError, match="expected an RNNCell, LSTMCell or GRUCell, got Linear"):
        nn.to_torch_state_dict(nn.Linear(3, 4))
