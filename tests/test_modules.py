"""Module, Parameter, Linear and Embedding: discovery, state dicts, checkpoints, dtypes, seeding, gradients."""
import zipfile

import numpy as np
import pytest

from tinygrad_rnn import Tensor, gradcheck, nn
from tinygrad_rnn import functional as F
from tinygrad_rnn.nn.module import read_npz

GRAD_TOL = dict(eps=1e-6, atol=1e-7, rtol=1e-5)   # central differences in float64


class Block(nn.Module):
    def __init__(self):
        self.first = nn.Linear(2, 3, rng=0)
        self.scale = nn.Parameter(np.ones(3))
        self.layers = [nn.Linear(3, 3, rng=1), nn.Linear(3, 1, bias=False, rng=2)]
        self.extra = {"gain": nn.Parameter(np.full(1, 2.0)), "inner": (nn.Parameter(np.zeros(2)),)}
        self.not_a_param = Tensor(np.ones(2), requires_grad=True)   # a plain Tensor is not trained
        self._hidden = nn.Parameter(np.ones(4))                     # private attributes are skipped
        self.count = 3

    def forward(self, x):
        h = self.first(x) * self.scale
        for layer in self.layers:
            h = F.tanh(layer(h))
        return h * self.extra["gain"]


def test_parameter_is_a_float_tensor_requiring_grad():
    p = nn.Parameter([1, 2, 3])
    assert isinstance(p, Tensor) and p.requires_grad and p.dtype == np.float64
    assert nn.Parameter(np.ones(2, dtype=np.float32)).dtype == np.float32
    assert nn.Parameter(Tensor([1.0, 2.0])).shape == (2,)


def test_named_parameters_walks_attributes_lists_tuples_and_dicts_in_order():
    block = Block()
    names = [name for name, _ in block.named_parameters()]
    assert names == ["first.W", "first.b", "scale", "layers.0.W", "layers.0.b", "layers.1.W",
                     "extra.gain", "extra.inner.0"]
    params = block.parameters()
    assert len(params) == 8 and all(a is b for a, (_, b) in zip(params, block.named_parameters()))
    assert params[0] is block.first.W and params[-1] is block.extra["inner"][0]
    assert all(isinstance(p, nn.Parameter) for p in params)
    assert [name for name, _ in block.named_parameters(prefix="net.")][0] == "net.first.W"


def test_a_shared_parameter_is_listed_once_under_its_first_name():
    class Tied(nn.Module):
        def __init__(self):
            self.embed = nn.Embedding(5, 3, rng=0)
            self.out = nn.Linear(3, 5, rng=1)
            self.out.W = self.embed.W            # weight tying: (5, 3) used twice
            self.again = [self.embed]
    tied = Tied()
    named = list(tied.named_parameters())
    assert [n for n, _ in named] == ["embed.W", "out.b"]
    assert named[0][1] is tied.embed.W
    assert len(tied.parameters()) == 2


def test_zero_grad_clears_every_gradient():
    block = Block()
    loss = block(np.ones((4, 2))).sum() + block.extra["inner"][0].sum()   # inner is not in forward
    loss.backward()
    assert all(p.grad is not None for p in block.parameters())
    block.zero_grad()
    assert all(p.grad is None for p in block.parameters())


def test_forward_is_required():
    with pytest.raises(NotImplementedError, match="forward"):
        nn.Module()(1)


def test_state_dict_round_trip_copies_arrays():
    a, b = Block(), Block()
    for p in b.parameters():
        p.data[...] = np.random.default_rng(7).standard_normal(p.shape)
    state = b.state_dict()
    assert list(state) == [n for n, _ in b.named_parameters()]
    state["scale"][0] = 123.0                    # a copy: changing it leaves the module alone
    assert b.scale.data[0] != 123.0
    ids = [id(p.data) for p in a.parameters()]
    assert a.load_state_dict(b.state_dict()) is a
    assert [id(p.data) for p in a.parameters()] == ids        # filled in place
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=n)
    # Tensors are accepted as values too
    a.load_state_dict({n: Tensor(v * 0 + 1) for n, v in b.state_dict().items()})
    assert all((p.data == 1).all() for p in a.parameters())


def _snapshot(module):
    return {n: p.data.copy() for n, p in module.named_parameters()}


def _unchanged(module, snap):
    return all(np.array_equal(p.data, snap[n]) for n, p in module.named_parameters())


def test_load_state_dict_missing_key_names_it_and_changes_nothing():
    block = Block()
    snap = _snapshot(block)
    state = {n: v + 1 for n, v in block.state_dict().items()}
    del state["layers.0.b"]
    with pytest.raises(nn.StateDictError, match=r"missing keys.*'layers.0.b'.*\(3,\)") as info:
        block.load_state_dict(state)
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert _unchanged(block, snap)


def test_load_state_dict_extra_key_names_it_and_changes_nothing():
    block = Block()
    snap = _snapshot(block)
    state = {n: v + 1 for n, v in block.state_dict().items()}
    state["layers.2.W"] = np.ones((3, 3))
    with pytest.raises(nn.StateDictError, match=r"unexpected keys.*'layers.2.W'"):
        block.load_state_dict(state)
    assert _unchanged(block, snap)


def test_load_state_dict_wrong_shape_names_key_and_both_shapes_and_changes_nothing():
    block = Block()
    snap = _snapshot(block)
    state = {n: v + 1 for n, v in block.state_dict().items()}
    state["layers.1.W"] = np.ones((1, 3))        # the last key: every key before it passed
    with pytest.raises(nn.StateDictError) as info:
        block.load_state_dict(state)
    message = str(info.value)
    assert "'layers.1.W'" in message and "(1, 3)" in message and "(3, 1)" in message
    assert _unchanged(block, snap)


def test_load_state_dict_refuses_non_numbers():
    lin = nn.Linear(2, 2, rng=0)
    state = lin.state_dict()
    state["b"] = np.array(["a", "b"])
    with pytest.raises(nn.StateDictError, match="'b'.*dtype"):
        lin.load_state_dict(state)


def test_save_and_load_npz_round_trip(tmp_path):
    a, b = Block(), Block()
    for p in a.parameters():
        p.data += 0.5
    path = tmp_path / "block.npz"
    a.save(path)
    assert path.exists()
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == sorted(n for n, _ in a.named_parameters())
    assert b.load(path) is b
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=n)
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


def test_load_float32_module(tmp_path):
    a = nn.Linear(3, 2, dtype=np.float32, rng=0)
    a.save(tmp_path / "a.npz")
    b = nn.Linear(3, 2, dtype=np.float32, rng=1).load(tmp_path / "a.npz")
    assert b.W.dtype == np.float32
    np.testing.assert_array_equal(a.W.data, b.W.data)


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


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.99])
def test_truncated_file_is_a_clear_value_error(tmp_path, fraction):
    good = tmp_path / "good.npz"
    nn.Linear(4, 3, rng=0).save(good)
    raw = good.read_bytes()
    bad = tmp_path / "cut.npz"
    bad.write_bytes(raw[:int(len(raw) * fraction)])
    with pytest.raises(ValueError, match="cut.npz"):
        nn.Linear(4, 3).load(bad)


def test_flipped_bytes_inside_an_array_are_caught(tmp_path):
    good = tmp_path / "good.npz"
    nn.Linear(4, 3, rng=0).save(good)
    raw = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as z:
        info = z.getinfo("W.npy")
    # a byte in the middle of W's data: the zip's CRC no longer matches
    pos = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size - 8
    raw[pos] ^= 0xFF
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="flipped.npz"):
        nn.Linear(4, 3).load(bad)


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


def test_npy_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "single.npy"
    np.save(path, np.ones(3))
    with pytest.raises(ValueError, match="single array"):
        nn.Linear(2, 2).load(path)


def test_object_arrays_are_refused_never_unpickled(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, W=np.array([{"a": 1}, None], dtype=object), b=np.zeros(2))
    with pytest.raises(ValueError, match="pickle"):
        read_npz(path)
    lin = nn.Linear(2, 2, rng=0)
    snap = _snapshot(lin)
    with pytest.raises(ValueError, match="objects.npz"):
        lin.load(path)
    assert _unchanged(lin, snap)


def test_a_plain_pickle_file_is_refused(tmp_path):
    import pickle
    path = tmp_path / "model.npz"
    path.write_bytes(pickle.dumps({"W": [1, 2]}))
    with pytest.raises(ValueError, match="model.npz"):
        nn.Linear(2, 2).load(path)


def test_linear_shapes_and_values():
    lin = nn.Linear(3, 4, rng=0)
    assert lin.W.shape == (3, 4) and lin.b.shape == (4,)
    x = np.random.default_rng(1).standard_normal((5, 3))
    lin.b.data[...] = np.arange(4.0)
    np.testing.assert_allclose(lin(x).data, x @ lin.W.data + lin.b.data, rtol=1e-14)
    assert lin(np.ones((2, 6, 3))).shape == (2, 6, 4)
    assert lin(np.ones(3)).shape == (4,)
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


def test_embedding_shapes_and_rows():
    emb = nn.Embedding(6, 4, rng=0)
    assert emb.W.shape == (6, 4)
    idx = np.array([[0, 5, 2], [2, 2, 1]])
    out = emb(idx)
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out.data, emb.W.data[idx])
    assert emb([1, 2]).shape == (2, 4)
    assert emb(3).shape == (4,)
    assert emb(Tensor(np.array([4, 0]))).shape == (2, 4)
    assert emb(np.zeros((2, 0), dtype=np.int64)).shape == (2, 0, 4)


def test_embedding_bad_indices():
    emb = nn.Embedding(6, 4, rng=0)
    with pytest.raises(TypeError, match="integers.*float64"):
        emb(np.array([1.0, 2.0]))
    with pytest.raises(TypeError, match="integers"):
        emb(Tensor(np.array([1.0])))
    with pytest.raises(IndexError, match="index 6.*6 embeddings"):
        emb(np.array([[0, 6]]))
    with pytest.raises(IndexError, match="index -1"):
        emb(np.array([-1]))


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
    with pytest.raises(TypeError, match="floating"):
        nn.Linear(2, 2, dtype=np.int32)


@pytest.mark.parametrize("make", [lambda rng: nn.Linear(3, 4, rng=rng), lambda rng: nn.Embedding(5, 3, rng=rng),
                                  lambda rng: nn.LSTMCell(3, 4, rng=rng), lambda rng: nn.GRUCell(2, 3, rng=rng)])
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


def test_gradcheck_embedding_with_repeated_indices():
    emb = nn.Embedding(5, 3, rng=0)
    idx = np.array([[1, 3, 1], [1, 0, 3]])      # row 1 three times, row 3 twice, rows 2 and 4 never
    assert gradcheck(lambda: F.tanh(emb(idx) * 10.0), params={"W": emb.W}, **GRAD_TOL)
    emb.zero_grad()
    emb(idx).sum().backward()
    np.testing.assert_array_equal(emb.W.grad[:, 0], [1, 3, 0, 2, 0])


@pytest.mark.parametrize("make", [lambda: nn.RNNCell(3, 4, "relu", rng=0), lambda: nn.LSTMCell(3, 4, rng=0),
                                  lambda: nn.GRUCell(3, 4, rng=0)])
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
