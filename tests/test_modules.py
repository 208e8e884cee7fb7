"""Module, Parameter, Linear and Embedding: discovery, state dicts, checkpoints, dtypes, seeding, gradients.

Gradient checks are float64 central differences with ``GRAD_TOL``: eps = 1e-6, an element
passes when |autograd - numeric| <= 1e-7 + 1e-5 |numeric|.
"""
import pickle
import zipfile

import numpy as np
import pytest

from tinygrad_rnn import Tensor, gradcheck, nn
from tinygrad_rnn import functional as F
from tinygrad_rnn.nn.module import read_npz

GRAD_TOL = dict(eps=1e-6, atol=1e-7, rtol=1e-5)   # central differences in float64


class Net(nn.Module):
    """Parameters directly, in a list, a dict, a tuple inside the dict, submodules, and one shared twice."""

    def __init__(self):
        self.first = nn.Linear(2, 3, rng=0)
        self.scale = nn.Parameter(np.ones(3))
        self.layers = [nn.Linear(3, 3, rng=1), nn.Linear(3, 1, bias=False, rng=2)]
        self.table = {"emb": nn.Embedding(5, 3, rng=3), "gain": nn.Parameter(np.full(1, 2.0)),
                      "inner": (nn.Parameter(np.zeros(2)), "not a parameter")}
        self.shared = self.first.W                                  # the same Parameter under a second name
        self.constant = Tensor(np.ones(2), requires_grad=True)      # a plain Tensor is not trained
        self._hidden = nn.Parameter(np.ones(4))                     # private attributes are skipped
        self.count = 3

    def forward(self, x):
        h = self.first(x) * self.scale
        for layer in self.layers:
            h = F.tanh(layer(h))
        return h * self.table["gain"]


EXPECTED_NAMES = ["first.W", "first.b", "scale", "layers.0.W", "layers.0.b", "layers.1.W",
                  "table.emb.W", "table.gain", "table.inner.0"]


def test_parameter_is_a_float_tensor_requiring_grad():
    p = nn.Parameter([1, 2, 3])
    assert isinstance(p, Tensor) and p.requires_grad and p.dtype == np.float64
    assert nn.Parameter(np.ones(2, dtype=np.float32)).dtype == np.float32
    assert nn.Parameter(Tensor([1.0, 2.0])).shape == (2,)


def test_named_parameters_dotted_in_order_deterministic_no_duplicates():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == EXPECTED_NAMES
    assert [n for n, _ in Net().named_parameters()] == names      # same order for a new instance
    params = net.parameters()
    assert len({id(p) for p in params}) == len(params) == len(EXPECTED_NAMES)
    assert all(a is b for a, (_, b) in zip(params, net.named_parameters()))
    assert params[0] is net.first.W and params[0] is net.shared
    assert params[-1] is net.table["inner"][0]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in params)


def test_named_parameters_prefix_and_cycles():
    net = Net()
    net.parent_link = net                                     # a reference cycle must not recurse forever
    assert [n for n, _ in net.named_parameters(prefix="net")] == ["net." + n for n in EXPECTED_NAMES]
    assert [n for n, _ in net.named_parameters(prefix="net.")][0] == "net.first.W"


def test_a_shared_parameter_is_listed_once_under_its_first_name():
    class Tied(nn.Module):
        def __init__(self):
            self.embed = nn.Embedding(5, 3, rng=0)
            self.out = nn.Linear(3, 5, rng=1)
            self.out.W = self.embed.W            # weight tying: (5, 3) used twice
            self.again = [self.embed]            # and a submodule reachable twice
    tied = Tied()
    named = list(tied.named_parameters())
    assert [n for n, _ in named] == ["embed.W", "out.b"]
    assert named[0][1] is tied.embed.W
    assert len(tied.parameters()) == 2


def test_repr_lists_parameters():
    text = repr(nn.RNN(nn.RNNCell(2, 3, dtype=np.float32)))
    assert text == "RNN(\n  cell.Wx: (2, 3) float32\n  cell.Wh: (3, 3) float32\n  cell.b: (3,) float32\n)"
    assert repr(nn.Module()) == "Module()"


def test_zero_grad_clears_every_gradient():
    net = Net()
    # inner and emb are not in forward
    loss = net(np.ones((4, 2))).sum() + net.table["inner"][0].sum() + net.table["emb"](0).sum()
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_forward_is_required():
    with pytest.raises(NotImplementedError, match="forward"):
        nn.Module()(1)


# ---------------------------------------------------------------- state dicts
def _snapshot(module):
    return {n: p.data.copy() for n, p in module.named_parameters()}


def _unchanged(module, snap):
    return all(np.array_equal(p.data, snap[n]) for n, p in module.named_parameters())


def test_state_dict_is_a_copy_and_round_trips():
    net, other = Net(), Net()
    for p in other.parameters():
        p.data[...] = np.random.default_rng(9).standard_normal(p.shape)
    state = other.state_dict()
    assert list(state) == EXPECTED_NAMES
    state["first.b"][...] = 123.0                             # a copy: the module is untouched
    assert not np.any(other.first.b.data == 123.0)
    W = net.first.W
    ids = [id(p.data) for p in net.parameters()]
    assert net.load_state_dict(other.state_dict()) is net
    assert net.first.W is W                                   # filled in place
    assert [id(p.data) for p in net.parameters()] == ids
    for (n1, p1), (n2, p2) in zip(net.named_parameters(), other.named_parameters()):
        assert n1 == n2
        np.testing.assert_array_equal(p1.data, p2.data, err_msg=n1)
    # Tensors are accepted as values too
    net.load_state_dict({n: Tensor(v * 0 + 1) for n, v in other.state_dict().items()})
    assert all((p.data == 1).all() for p in net.parameters())


def test_load_state_dict_accepts_parameters_and_names_an_extra_tensor_key():
    lin, other = nn.Linear(2, 2, rng=0), nn.Linear(2, 2, rng=1)
    lin.load_state_dict(dict(other.named_parameters()))          # Parameters as values
    assert np.array_equal(lin.W.data, other.W.data) and lin.W is not other.W
    with pytest.raises(KeyError, match=r"unexpected keys 'V' \(shape \(3, 2\)\)"):
        lin.load_state_dict({**lin.state_dict(), "V": Tensor(np.ones((3, 2)))})


def test_load_state_dict_missing_key_names_it_and_changes_nothing():
    net = Net()
    snap = _snapshot(net)
    state = {n: v + 1 for n, v in net.state_dict().items()}
    del state["layers.0.b"]
    with pytest.raises(KeyError, match=r"missing keys 'layers\.0\.b' \(shape \(3,\), float64\)") as err:
        net.load_state_dict(state)
    assert isinstance(err.value, ValueError) and isinstance(err.value, nn.StateDictError)
    assert _unchanged(net, snap)                               # nothing partially loaded


def test_load_state_dict_extra_key_names_it_and_changes_nothing():
    net = Net()
    snap = _snapshot(net)
    state = {n: v + 1 for n, v in net.state_dict().items()}
    state["layers.2.W"] = np.ones((4, 1))
    with pytest.raises(nn.StateDictError, match=r"unexpected keys 'layers\.2\.W' \(shape \(4, 1\)\)"):
        net.load_state_dict(state)
    assert _unchanged(net, snap)


def test_load_state_dict_wrong_shape_names_key_and_both_shapes_and_changes_nothing():
    net = Net()
    snap = _snapshot(net)
    state = {n: v + 1 for n, v in net.state_dict().items()}
    # the last key, with as many elements as the parameter: every key before it passed
    state["table.inner.0"] = np.ones((1, 2))
    with pytest.raises(nn.StateDictError, match=r"'table\.inner\.0' has shape \(1, 2\).*parameter has shape \(2,\)"):
        net.load_state_dict(state)
    assert _unchanged(net, snap)


def test_load_state_dict_refuses_non_numbers():
    state = Net().state_dict()
    state["first.b"] = np.array(["a", "b", "c"])
    with pytest.raises(nn.StateDictError, match=r"'first\.b' has dtype <U1"):
        Net().load_state_dict(state)


# ---------------------------------------------------------------- checkpoints
def test_save_and_load_npz_round_trip(tmp_path):
    net, other = Net(), Net()
    for p in net.parameters():
        p.data[...] = np.random.default_rng(1).standard_normal(p.shape)
    path = tmp_path / "net.npz"
    net.save(path)
    with np.load(path, allow_pickle=False) as archive:        # a plain npz, one array per parameter
        assert sorted(archive.files) == sorted(EXPECTED_NAMES)
    assert other.load(path) is other
    for (n, a), (_, b) in zip(net.named_parameters(), other.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=n)
        assert a.dtype == b.dtype
    # string paths work as well, and mismatches are checked as load_state_dict checks them
    with pytest.raises(nn.StateDictError, match="missing"):
        nn.Linear(2, 3).load(str(path))


def test_parameter_names_that_are_also_savez_arguments_round_trip(tmp_path):
    class Awkward(nn.Module):
        def __init__(self, value):
            self.file = nn.Parameter(np.full(2, value))
            self.allow_pickle = nn.Parameter(np.full(3, value))
    Awkward(1.5).save(tmp_path / "awkward.npz")
    loaded = Awkward(0.0).load(tmp_path / "awkward.npz")
    assert (loaded.file.data == 1.5).all() and (loaded.allow_pickle.data == 1.5).all()


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


def test_missing_checkpoint_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        nn.Linear(2, 2).load(tmp_path / "nope.npz")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_corrupt_file_is_a_clear_value_error(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    lin = nn.Linear(2, 2, rng=0)
    snap = _snapshot(lin)
    with pytest.raises(ValueError, match="bad.npz"):
        lin.load(path)
    assert _unchanged(lin, snap)


# cut inside the first member, through the middle, and inside the central directory at the end
@pytest.mark.parametrize("keep", [lambda n: 100, lambda n: n // 10, lambda n: n // 2, lambda n: n * 9 // 10,
                                  lambda n: n - 30, lambda n: n * 99 // 100],
                         ids=["100 bytes", "10%", "50%", "90%", "all but 30 bytes", "99%"])
def test_truncated_file_is_a_clear_value_error(tmp_path, keep):
    good = tmp_path / "good.npz"
    nn.Linear(20, 20, rng=0).save(good)
    raw = good.read_bytes()
    bad = tmp_path / "cut.npz"
    bad.write_bytes(raw[:keep(len(raw))])
    with pytest.raises(ValueError, match="cut.npz"):
        nn.Linear(20, 20).load(bad)


@pytest.mark.parametrize("where", ["array header", "array data"])
def test_damaged_member_is_a_value_error_naming_the_file(tmp_path, where):
    good = tmp_path / "good.npz"
    nn.Linear(8, 8, rng=0).save(good)
    raw = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as z:
        info = z.getinfo("W.npy")
    data_start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    if where == "array header":       # the .npy header text: the CRC check or the header parse must fail
        raw[data_start + 10:data_start + 50] = b"\xff" * 40
    else:                             # one byte in the middle of W's values: the zip's CRC no longer matches
        raw[data_start + info.compress_size - 8] ^= 0xFF
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="flipped.npz"):
        nn.Linear(8, 8).load(bad)


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_any_flipped_byte_gives_a_value_error_or_the_same_weights(tmp_path, save):
    # damaged zip metadata, array headers and (compressed) data raise many different errors inside
    # numpy and zlib; the caller must only ever see a ValueError naming the file
    good = tmp_path / "good.npz"
    lin = nn.Linear(6, 5, rng=0)
    save(good, **lin.state_dict())
    raw = good.read_bytes()
    bad = tmp_path / "flipped.npz"
    failures = 0
    offsets = range(0, len(raw), 3)
    for offset in offsets:
        corrupt = bytearray(raw)
        corrupt[offset] ^= 0xFF
        bad.write_bytes(bytes(corrupt))
        target = nn.Linear(6, 5, rng=1)
        try:
            target.load(bad)
        except ValueError as e:
            assert "flipped.npz" in str(e) or "load_state_dict" in str(e), str(e)
            failures += 1
        else:   # a byte nobody reads (a timestamp, padding): the weights are intact
            np.testing.assert_array_equal(target.W.data, lin.W.data)
            np.testing.assert_array_equal(target.b.data, lin.b.data)
    assert failures > len(offsets) // 2


@pytest.mark.parametrize("name", ["single.npz", "single.npy"])
def test_npy_file_is_not_a_checkpoint(tmp_path, name):
    path = tmp_path / name
    with open(path, "wb") as f:          # np.save on an open file keeps the name as given
        np.save(f, np.ones(3))
    with pytest.raises(ValueError, match=rf"{name}.*single array"):
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


def test_object_arrays_are_refused_never_unpickled(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, W=np.array([_Exploding(), None], dtype=object), b=np.zeros(2))
    with pytest.raises(ValueError, match="pickle"):
        read_npz(path)
    lin = nn.Linear(2, 2, rng=0)
    snap = _snapshot(lin)
    with pytest.raises(ValueError, match="objects.npz"):
        lin.load(path)
    assert _unchanged(lin, snap)
    assert not _Exploding.ran


def test_a_plain_pickle_file_is_refused(tmp_path):
    path = tmp_path / "model.npz"
    path.write_bytes(pickle.dumps({"W": [1, 2]}))
    with pytest.raises(ValueError, match="model.npz"):
        nn.Linear(2, 2).load(path)


# ---------------------------------------------------------------- Linear
def test_linear_shapes_and_values():
    lin = nn.Linear(3, 4, rng=0)
    assert lin.W.shape == (3, 4) and lin.b.shape == (4,)
    x = np.random.default_rng(1).standard_normal((5, 3))
    lin.b.data[...] = np.arange(4.0)
    np.testing.assert_allclose(lin(x).data, x @ lin.W.data + lin.b.data, rtol=1e-14)
    assert lin(np.ones((2, 6, 3))).shape == (2, 6, 4)     # any leading shape, including none
    assert lin(np.ones(3)).shape == (4,)
    assert lin(Tensor(x[0])).shape == (4,)
    nobias = nn.Linear(3, 4, bias=False, rng=0)
    assert nobias.b is None and [n for n, _ in nobias.named_parameters()] == ["W"]
    np.testing.assert_allclose(nobias(x).data, x @ nobias.W.data, rtol=1e-14)


def test_linear_bad_inputs():
    lin = nn.Linear(3, 4, rng=0)
    with pytest.raises(ValueError, match=r"\(2, 5\).*expected 3"):
        lin(np.ones((2, 5)))
    with pytest.raises(ValueError, match="expected 3"):
        lin(np.float64(1.0))
    with pytest.raises(TypeError, match="floating"):
        lin(Tensor(np.ones((2, 3), dtype=np.int64)))


def test_initialisation_scale_is_one_over_sqrt_fan_in():
    lin = nn.Linear(400, 300, rng=0)
    assert abs(lin.W.data.std() - 1 / np.sqrt(400)) < 0.002
    assert (lin.b.data == 0).all()


def test_gradcheck_linear():
    rng = np.random.default_rng(3)
    lin = nn.Linear(3, 2, rng=rng)
    lin.b.data[...] = rng.standard_normal(2)
    x = Tensor(rng.standard_normal((4, 3)), requires_grad=True)
    assert gradcheck(lambda x: F.tanh(lin(x)), x, params=dict(lin.named_parameters()), **GRAD_TOL)


def test_linear_float32_takes_a_float64_input_to_its_own_dtype():
    lin = nn.Linear(3, 2, dtype=np.float32, rng=0)
    y = lin(np.ones((2, 3)))            # a float64 numpy input takes the layer's dtype
    assert y.dtype == np.float32
    y.sum().backward()
    assert lin.W.grad.dtype == np.float32 and lin.b.grad.dtype == np.float32


# ---------------------------------------------------------------- Embedding
IDX = [[0, 3], [3, 1]]


@pytest.mark.parametrize("idx", [np.array(IDX), IDX, Tensor(np.array(IDX)), np.array(IDX, np.uint8)],
                         ids=["int64 array", "list", "Tensor", "uint8"])
def test_embedding_lookup_any_index_kind(idx):
    emb = nn.Embedding(4, 5, rng=0)
    assert emb.W.shape == (4, 5)
    out = emb(idx)
    assert out.shape == (2, 2, 5)
    np.testing.assert_array_equal(out.data, emb.W.data[np.array(IDX)])


def test_embedding_scalar_3d_and_empty_indices():
    emb = nn.Embedding(6, 2, rng=0)
    assert emb(3).shape == (2,)
    assert emb(np.zeros((2, 3, 4), dtype=int)).shape == (2, 3, 4, 2)
    assert emb(np.zeros((2, 0), dtype=np.int64)).shape == (2, 0, 2)
    assert emb([]).shape == (0, 2)
    with pytest.raises(TypeError, match="must be integers"):
        emb(np.zeros(0))          # an explicitly float array is still refused


def test_embedding_gradient_scatter_adds_repeats():
    emb = nn.Embedding(4, 3, rng=0)
    idx = np.array([[1, 1], [2, 1]])
    weights = np.random.default_rng(0).standard_normal((2, 2, 3))
    (emb(idx) * weights).sum().backward()
    expected = np.zeros((4, 3))
    np.add.at(expected, idx, weights)
    np.testing.assert_allclose(emb.W.grad, expected, rtol=1e-15)
    assert np.all(emb.W.grad[[0, 3]] == 0)


def test_gradcheck_embedding_with_repeated_indices():
    emb = nn.Embedding(5, 3, rng=0)
    idx = np.array([[1, 3, 1], [1, 0, 3]])      # row 1 three times, row 3 twice, rows 2 and 4 never
    assert gradcheck(lambda: F.tanh(emb(idx) * 10.0), params={"W": emb.W}, **GRAD_TOL)


@pytest.mark.parametrize("bad, dtype", [(np.array([0.0, 1.0]), "float64"), ([0.5], "float64"),
                                        (Tensor([1.0]), "float64"), (np.array([True, False]), "bool")])
def test_embedding_rejects_non_integer_indices_naming_the_dtype(bad, dtype):
    with pytest.raises(TypeError, match=f"Embedding: indices must be integers.*{dtype}"):
        nn.Embedding(4, 2)(bad)


@pytest.mark.parametrize("bad, index", [([0, 4], 4), ([-1], -1), (np.array([[2, 9]]), 9)])
def test_embedding_rejects_out_of_range(bad, index):
    with pytest.raises(IndexError, match=rf"Embedding: index {index} is out of range for 4 embeddings"):
        nn.Embedding(4, 2)(bad)


# ---------------------------------------------------------------- dtypes and seeding, every module
def _all_modules(dtype):
    return [
        (nn.Linear(3, 4, dtype=dtype, rng=0), lambda: np.ones((2, 3), dtype=dtype)),
        (nn.Embedding(5, 4, dtype=dtype, rng=0), lambda: np.array([[1, 1, 4]])),
        (nn.RNNCell(3, 4, dtype=dtype, rng=0), lambda: np.ones((2, 3), dtype=dtype)),
        (nn.RNNCell(3, 4, "relu", dtype=dtype, rng=0), lambda: np.ones((2, 3), dtype=dtype)),
        (nn.LSTMCell(3, 4, dtype=dtype, rng=0), lambda: np.ones((2, 3), dtype=dtype)),
        (nn.GRUCell(3, 4, dtype=dtype, rng=0), lambda: np.ones((2, 3), dtype=dtype)),
        (nn.RNN(nn.LSTMCell(3, 4, dtype=dtype, rng=0)), lambda: np.ones((2, 5, 3), dtype=dtype)),
    ]


@pytest.mark.parametrize("which", range(7))
def test_float32_stays_float32_forward_and_backward(which):
    module, make_input = _all_modules(np.float32)[which]
    assert all(p.dtype == np.float32 for p in module.parameters())
    out = module(make_input())
    if isinstance(out, tuple):
        out = out[0]
    assert out.dtype == np.float32
    # a second step through the state (cells) keeps float32 too
    if isinstance(module, (nn.RNNCell, nn.GRUCell)):
        out = module(make_input(), out)
    (out * out).sum().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.dtype == np.float32, name


def test_float64_is_the_default_and_other_dtypes_are_refused():
    assert nn.Linear(2, 2).W.dtype == np.float64
    assert nn.GRUCell(2, 2).bh.dtype == np.float64
    with pytest.raises(TypeError, match="dtype.*floating"):
        nn.Linear(2, 2, dtype=np.int32)
    with pytest.raises(TypeError, match="dtype.*floating"):
        nn.Linear(3, 3, dtype=np.int64)


@pytest.mark.parametrize("make", [lambda rng: nn.Linear(3, 4, rng=rng), lambda rng: nn.Embedding(5, 3, rng=rng),
                                  lambda rng: nn.LSTMCell(3, 4, rng=rng), lambda rng: nn.GRUCell(2, 3, rng=rng)],
                         ids=["Linear", "Embedding", "LSTMCell", "GRUCell"])
def test_seeding_is_reproducible(make):
    def weights(m):
        return [p.data for p in m.parameters()]
    same_int = zip(weights(make(42)), weights(make(42)))
    assert all(np.array_equal(a, b) for a, b in same_int)
    same_gen = zip(weights(make(np.random.default_rng(42))), weights(make(np.random.default_rng(42))))
    assert all(np.array_equal(a, b) for a, b in same_gen)
    assert not np.array_equal(weights(make(1))[0], weights(make(2))[0])
    # a shared Generator moves on: two modules drawn from it differ
    g = np.random.default_rng(0)
    assert not np.array_equal(weights(make(g))[0], weights(make(g))[0])
    with pytest.raises(TypeError, match="rng"):
        make("seed")


def test_no_seed_draws_fresh_entropy():
    assert not np.array_equal(nn.Linear(3, 3).W.data, nn.Linear(3, 3).W.data)


@pytest.mark.parametrize("make", [lambda: nn.RNNCell(3, 4, "relu", rng=0), lambda: nn.LSTMCell(3, 4, rng=0),
                                  lambda: nn.GRUCell(3, 4, rng=0)], ids=["RNNCell", "LSTMCell", "GRUCell"])
def test_torch_weight_converters_work_from_numpy_dicts_without_torch(make):
    # the PyTorch layout (weight_ih (gates*H, D) ...) as plain numpy arrays: no torch needed
    cell = make()
    rng = np.random.default_rng(0)
    for p in cell.parameters():
        p.data[...] = rng.standard_normal(p.shape)
    d = nn.to_torch_state_dict(cell)
    rows = cell.Wx.shape[1]                      # gates * hidden_size
    assert d["weight_ih"].shape == (rows, 3) and d["weight_hh"].shape == (rows, 4)
    np.testing.assert_array_equal(d["weight_ih"], cell.Wx.data.T)
    kwargs = {"nonlinearity": "relu"} if isinstance(cell, nn.RNNCell) else {}
    again = nn.from_torch_cell(d, **kwargs)
    assert type(again) is type(cell) and getattr(again, "nonlinearity", "relu") == "relu"
    for (n, p), (_, q) in zip(cell.named_parameters(), again.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=n)
    if not isinstance(cell, nn.GRUCell):
        # one bias in ours: PyTorch's two are summed on the way in
        d["bias_hh"] = np.full_like(d["bias_hh"], 0.25)
        np.testing.assert_array_equal(nn.from_torch_cell(d, **kwargs).b.data, cell.b.data + 0.25)
    d["extra"] = np.zeros(2)
    with pytest.raises(KeyError, match="extra"):
        nn.from_torch_cell(d, **kwargs)
