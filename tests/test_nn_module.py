"""Module, Parameter, Linear and Embedding: discovery, state dicts, checkpoints, gradients.

Gradient checks are float64 central differences (``tinygrad_rnn.gradcheck``'s
defaults: eps = 1e-6, an element passes when |autograd - numeric| <= 1e-6 + 1e-4 |numeric|).
"""
import zipfile

import numpy as np
import pytest

import tinygrad_rnn as tg
import tinygrad_rnn.nn as nn
from tinygrad_rnn import Tensor


class Net(nn.Module):
    """Parameters directly, in a list, a dict, a tuple, a submodule, and one shared twice."""

    def __init__(self):
        self.first = nn.Linear(3, 4, rng=0)
        self.layers = [nn.Linear(4, 4, rng=1), nn.Linear(4, 2, bias=False, rng=2)]
        self.table = {"emb": nn.Embedding(5, 3, rng=3), "scale": nn.Parameter(np.ones(2))}
        self.pair = (nn.Parameter(np.zeros(1)), "not a parameter")
        self.shared = self.first.W          # the same Parameter under a second name
        self._hidden = nn.Parameter(np.ones(7))   # underscore attributes are private: not found
        self.constant = Tensor(np.ones(3))  # a plain Tensor is not a Parameter


EXPECTED_NAMES = ["first.W", "first.b", "layers.0.W", "layers.0.b", "layers.1.W",
                  "table.emb.W", "table.scale", "pair.0"]


def test_named_parameters_dotted_deterministic_no_duplicates():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == EXPECTED_NAMES
    assert [n for n, _ in Net().named_parameters()] == names      # same order for a new instance
    params = net.parameters()
    assert len({id(p) for p in params}) == len(params) == len(EXPECTED_NAMES)
    assert params[0] is net.first.W and params[0] is net.shared
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in params)


def test_named_parameters_prefix_and_cycles():
    net = Net()
    net.parent_link = net                                     # a reference cycle must not recurse forever
    assert [n for n, _ in net.named_parameters(prefix="net")] == ["net." + n for n in EXPECTED_NAMES]


def test_shared_submodule_counted_once():
    class Tied(nn.Module):
        def __init__(self):
            self.a = nn.Linear(2, 2, rng=0)
            self.b = self.a
    assert [n for n, _ in Tied().named_parameters()] == ["a.W", "a.b"]


def test_repr_lists_parameters():
    text = repr(nn.RNN(nn.RNNCell(2, 3, dtype=np.float32)))
    assert text == "RNN(\n  cell.Wx: (2, 3) float32\n  cell.Wh: (3, 3) float32\n  cell.b: (3,) float32\n)"
    assert repr(nn.Module()) == "Module()"


def test_parameter_is_float_tensor_with_grad():
    p = nn.Parameter([1, 2, 3])
    assert p.dtype == np.float64 and p.requires_grad
    assert nn.Parameter(np.ones(2, np.float32)).dtype == np.float32


def test_zero_grad_clears_every_gradient():
    net = Net()
    loss = (net.first(np.ones((1, 3))) * 2).sum() + net.table["scale"].sum()
    loss.backward()
    assert net.first.W.grad is not None and net.table["scale"].grad is not None
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_state_dict_is_a_copy_and_round_trips():
    net, other = Net(), Net()
    for p in other.parameters():
        p.data[...] = np.random.default_rng(9).standard_normal(p.shape)
    state = other.state_dict()
    assert list(state) == EXPECTED_NAMES
    state["first.b"][...] = 123.0                             # a copy: the module is untouched
    assert not np.any(other.first.b.data == 123.0)
    W = net.first.W
    assert net.load_state_dict(other.state_dict()) is net
    assert net.first.W is W                                   # filled in place
    for (n1, p1), (n2, p2) in zip(net.named_parameters(), other.named_parameters()):
        assert n1 == n2 and np.array_equal(p1.data, p2.data)


def test_load_state_dict_missing_key_names_it_and_changes_nothing():
    net = Net()
    before = net.state_dict()
    state = Net().state_dict()
    for p in state.values():
        p += 1
    del state["layers.0.b"]
    with pytest.raises(KeyError, match=r"missing keys 'layers\.0\.b' \(shape \(4,\), float64\)") as err:
        net.load_state_dict(state)
    assert isinstance(err.value, ValueError) and isinstance(err.value, nn.StateDictError)
    for name, value in net.state_dict().items():
        assert np.array_equal(value, before[name])            # nothing partially loaded


def test_load_state_dict_extra_key_names_it():
    state = Net().state_dict()
    state["layers.2.W"] = np.ones((4, 1))
    with pytest.raises(nn.StateDictError, match=r"unexpected keys 'layers\.2\.W' \(shape \(4, 1\)\)"):
        Net().load_state_dict(state)


def test_load_state_dict_accepts_tensors_and_names_an_extra_tensor_key():
    lin, other = nn.Linear(2, 2, rng=0), nn.Linear(2, 2, rng=1)
    lin.load_state_dict(dict(other.named_parameters()))          # Parameters as values
    assert np.array_equal(lin.W.data, other.W.data) and lin.W is not other.W
    with pytest.raises(KeyError, match=r"unexpected keys 'V' \(shape \(3, 2\)\)"):
        lin.load_state_dict({**lin.state_dict(), "V": Tensor(np.ones((3, 2)))})


def test_load_state_dict_wrong_shape_names_key_and_both_shapes():
    state = Net().state_dict()
    state["first.W"] = np.ones((4, 3))
    with pytest.raises(ValueError, match=r"'first\.W' has shape \(4, 3\).*parameter has shape \(3, 4\)"):
        Net().load_state_dict(state)


def test_load_state_dict_rejects_non_numbers():
    state = Net().state_dict()
    state["first.b"] = np.array(["a", "b", "c", "d"])
    with pytest.raises(ValueError, match=r"'first\.b' has dtype <U1"):
        Net().load_state_dict(state)


def test_save_load_round_trip(tmp_path):
    net, other = Net(), Net()
    for p in net.parameters():
        p.data[...] = np.random.default_rng(1).standard_normal(p.shape)
    path = tmp_path / "net.npz"
    net.save(path)
    assert other.load(path) is other
    for (_, a), (_, b) in zip(net.named_parameters(), other.named_parameters()):
        assert np.array_equal(a.data, b.data) and a.dtype == b.dtype


def test_save_load_float32_stays_float32(tmp_path):
    lin = nn.Linear(2, 3, dtype=np.float32, rng=0)
    lin.save(tmp_path / "lin.npz")
    again = nn.Linear(2, 3, dtype=np.float32, rng=1).load(tmp_path / "lin.npz")
    assert again.W.dtype == np.float32 and np.array_equal(again.W.data, lin.W.data)


def test_load_checks_keys_and_shapes(tmp_path):
    nn.Linear(2, 3, rng=0).save(tmp_path / "a.npz")
    with pytest.raises(ValueError, match=r"'W' has shape \(2, 3\).*\(3, 3\)"):
        nn.Linear(3, 3).load(tmp_path / "a.npz")
    with pytest.raises(KeyError, match="unexpected keys 'b'"):
        nn.Linear(2, 3, bias=False).load(tmp_path / "a.npz")


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        nn.Linear(2, 2).load(tmp_path / "nope.npz")


@pytest.mark.parametrize("content", [b"", b"this is not a checkpoint at all", b"PK\x03\x04garbage"])
def test_load_garbage_file_is_a_value_error_naming_it(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="bad.npz"):
        nn.Linear(2, 2).load(path)


def test_load_truncated_file(tmp_path):
    path = tmp_path / "cut.npz"
    nn.Linear(20, 20, rng=0).save(path)
    data = path.read_bytes()
    for keep in (len(data) // 2, len(data) - 30, 100):
        path.write_bytes(data[:keep])
        with pytest.raises(ValueError, match="cut.npz"):
            nn.Linear(20, 20).load(path)


def test_load_npy_file_is_rejected(tmp_path):
    path = tmp_path / "single.npz"
    with open(path, "wb") as f:
        np.save(f, np.ones(3))
    with pytest.raises(ValueError, match="single.npz.*single array"):
        nn.Linear(2, 2).load(path)


class _Exploding:
    """Unpickling this object would record that pickle ran."""
    ran = False

    def __reduce__(self):
        return (_Exploding._boom, ())

    @staticmethod
    def _boom():
        _Exploding.ran = True
        return "boom"


def test_load_object_array_never_unpickles(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, W=np.array([_Exploding()], dtype=object), b=np.zeros(2))
    with pytest.raises(ValueError, match="objects.npz"):
        nn.Linear(1, 2).load(path)
    assert not _Exploding.ran


def test_load_corrupted_member(tmp_path):
    path = tmp_path / "flip.npz"
    nn.Linear(8, 8, rng=0).save(path)
    # damage the stored array bytes inside the zip: the CRC check or the header parse must fail
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("W.npy")
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + 10
    data[start:start + 40] = b"\xff" * 40
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="flip.npz"):
        nn.Linear(8, 8).load(path)


# --- Linear -------------------------------------------------------------------------------------

def test_linear_shapes_init_and_value():
    lin = nn.Linear(50, 7, rng=np.random.default_rng(0))
    assert lin.W.shape == (50, 7) and lin.b.shape == (7,)
    assert np.all(lin.b.data == 0)
    # scaled normal: std 1/sqrt(fan_in), within sampling error for 350 draws
    assert abs(lin.W.data.std() * np.sqrt(50) - 1) < 0.15
    x = np.random.default_rng(1).standard_normal((4, 50))
    lin.b.data[...] = np.arange(7)
    np.testing.assert_allclose(lin(x).data, x @ lin.W.data + np.arange(7), rtol=1e-14)
    assert lin(Tensor(x[0])).shape == (7,)              # any leading shape, including none
    assert lin(x.reshape(2, 2, 50)).shape == (2, 2, 7)


def test_init_seeding():
    assert np.array_equal(nn.Linear(3, 3, rng=5).W.data, nn.Linear(3, 3, rng=5).W.data)
    assert not np.array_equal(nn.Linear(3, 3, rng=5).W.data, nn.Linear(3, 3, rng=6).W.data)
    assert not np.array_equal(nn.Linear(3, 3).W.data, nn.Linear(3, 3).W.data)   # None: fresh entropy
    with pytest.raises(TypeError, match="rng"):
        nn.Linear(3, 3, rng="seed")
    with pytest.raises(TypeError, match="dtype"):
        nn.Linear(3, 3, dtype=np.int64)


def test_linear_wrong_input_shape():
    with pytest.raises(ValueError, match=r"\(4, 5\).*expected 3"):
        nn.Linear(3, 2)(np.ones((4, 5)))


def test_linear_gradcheck():
    lin = nn.Linear(3, 2, rng=0)
    lin.b.data[...] = [0.3, -0.2]
    x = Tensor(np.random.default_rng(2).standard_normal((4, 3)), requires_grad=True)
    assert tg.gradcheck(lambda x, W, b: lin(x), x, lin.W, lin.b)


def test_linear_float32_forward_backward():
    lin = nn.Linear(3, 2, dtype=np.float32, rng=0)
    y = lin(np.ones((2, 3)))            # a float64 numpy input takes the layer's dtype
    assert y.dtype == np.float32
    y.sum().backward()
    assert lin.W.grad.dtype == np.float32 and lin.b.grad.dtype == np.float32


# --- Embedding ----------------------------------------------------------------------------------

@pytest.mark.parametrize("idx", [np.array([[0, 3], [3, 1]]), [[0, 3], [3, 1]],
                                 Tensor(np.array([[0, 3], [3, 1]])), np.array([[0, 3], [3, 1]], np.uint8)])
def test_embedding_lookup_any_index_kind(idx):
    emb = nn.Embedding(4, 5, rng=0)
    out = emb(idx)
    assert out.shape == (2, 2, 5)
    np.testing.assert_array_equal(out.data, emb.W.data[np.array([[0, 3], [3, 1]])])


def test_embedding_scalar_and_3d_indices():
    emb = nn.Embedding(6, 2, rng=0)
    assert emb(3).shape == (2,)
    assert emb(np.zeros((2, 3, 4), dtype=int)).shape == (2, 3, 4, 2)


def test_embedding_empty_index_list():
    out = nn.Embedding(4, 3, rng=0)([])
    assert out.shape == (0, 3)
    with pytest.raises(TypeError, match="must be integers"):
        nn.Embedding(4, 3)(np.zeros(0))          # an explicitly float array is still refused


def test_embedding_gradient_scatter_adds_repeats():
    emb = nn.Embedding(4, 3, rng=0)
    idx = np.array([[1, 1], [2, 1]])
    weights = np.random.default_rng(0).standard_normal((2, 2, 3))
    (emb(idx) * weights).sum().backward()
    expected = np.zeros((4, 3))
    np.add.at(expected, idx, weights)
    np.testing.assert_allclose(emb.W.grad, expected, rtol=1e-15)
    assert np.all(emb.W.grad[[0, 3]] == 0)


def test_embedding_gradcheck():
    emb = nn.Embedding(5, 3, rng=0)
    assert tg.gradcheck(lambda W: emb(np.array([[0, 4, 4], [2, 0, 1]])) ** 2, emb.W)


@pytest.mark.parametrize("bad", [np.array([0.0, 1.0]), [0.5], Tensor([1.0]), np.array([True, False])])
def test_embedding_rejects_non_integer_indices(bad):
    with pytest.raises(TypeError, match="Embedding: indices must be integers"):
        nn.Embedding(4, 2)(bad)


@pytest.mark.parametrize("bad", [[0, 4], [-1], np.array([[2, 9]])])
def test_embedding_rejects_out_of_range(bad):
    with pytest.raises(IndexError, match=r"Embedding: index (4|-1|9) is out of range for 4"):
        nn.Embedding(4, 2)(bad)


def test_embedding_float32():
    emb = nn.Embedding(4, 2, dtype=np.float32, rng=0)
    out = emb([1, 2])
    assert out.dtype == np.float32
    out.sum().backward()
    assert emb.W.grad.dtype == np.float32
