"""PyTorch as an oracle: cells, their gradients, the weight converters, optimisers and losses (float64, 1e-10)."""
import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import Tensor, nn, optim
from tinygrad_rnn import functional as F

torch = pytest.importorskip("torch")

ATOL = 1e-10   # float64 throughout; both sides compute the same expressions in a different order

KINDS = {
    "rnn_tanh": lambda d, h: torch.nn.RNNCell(d, h, nonlinearity="tanh"),
    "rnn_relu": lambda d, h: torch.nn.RNNCell(d, h, nonlinearity="relu"),
    "lstm": lambda d, h: torch.nn.LSTMCell(d, h),
    "gru": lambda d, h: torch.nn.GRUCell(d, h),
}


def _close(ours, theirs, what):
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else theirs
    assert ours.shape == theirs.shape, what
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=ATOL, err_msg=what)


def _torch_cell(kind, d, h, seed):
    torch.manual_seed(seed)
    cell = KINDS[kind](d, h).double()
    with torch.no_grad():                      # larger than the default init, so that every gate matters
        for p in cell.parameters():
            p.uniform_(-0.8, 0.8)
    return cell


@pytest.mark.parametrize("kind", KINDS)
def test_cell_outputs_and_all_gradients_equal_torch(kind):
    B, T, D, H = 3, 6, 4, 5
    tcell = _torch_cell(kind, D, H, seed=0)
    cell = nn.from_torch_cell(tcell)
    assert type(cell).__name__ == type(tcell).__name__ and cell.Wx.dtype == np.float64
    lstm = kind == "lstm"

    rng = np.random.default_rng(1)
    xs = rng.standard_normal((B, T, D))
    h0 = rng.standard_normal((B, H)) * 0.5
    c0 = rng.standard_normal((B, H)) * 0.5
    proj = rng.standard_normal((B, T, H))         # a loss in which every output takes part differently
    proj_c = rng.standard_normal((B, H))

    # ours
    x_ours, h_ours, c_ours = (Tensor(a, requires_grad=True) for a in (xs, h0, c0))
    hs, last = nn.unroll(cell, x_ours, (h_ours, c_ours) if lstm else h_ours)
    loss = (hs * proj).sum()
    if lstm:
        loss = loss + (last[1] * proj_c).sum()
    loss.backward()

    # torch, one step at a time
    x_t, h_t, c_t = (torch.tensor(a, requires_grad=True) for a in (xs, h0, c0))
    state = (h_t, c_t) if lstm else h_t
    outs = []
    for t in range(T):
        state = tcell(x_t[:, t], state)
        outs.append(state[0] if lstm else state)
    hs_t = torch.stack(outs, dim=1)
    loss_t = (hs_t * torch.tensor(proj)).sum()
    if lstm:
        loss_t = loss_t + (state[1] * torch.tensor(proj_c)).sum()
    loss_t.backward()

    _close(hs.data, hs_t, "hs")
    _close(np.array(loss.data), loss_t, "loss")
    if lstm:
        _close(last[1].data, state[1], "c")
    _close(x_ours.grad, x_t.grad, "d xs")
    _close(h_ours.grad, h_t.grad, "d h0")
    if lstm:
        _close(c_ours.grad, c_t.grad, "d c0")
    _close(cell.Wx.grad, tcell.weight_ih.grad.T, "d weight_ih")
    _close(cell.Wh.grad, tcell.weight_hh.grad.T, "d weight_hh")
    if kind == "gru":
        _close(cell.bx.grad, tcell.bias_ih.grad, "d bias_ih")
        _close(cell.bh.grad, tcell.bias_hh.grad, "d bias_hh")
    else:
        # b = bias_ih + bias_hh: all three have the same gradient
        _close(cell.b.grad, tcell.bias_ih.grad, "d bias_ih")
        _close(cell.b.grad, tcell.bias_hh.grad, "d bias_hh")
    if kind == "rnn_relu":
        assert 0.1 < (hs.data > 0).mean() < 0.9          # both sides of the kink are exercised


@pytest.mark.parametrize("kind", KINDS)
def test_round_trips(kind):
    D, H = 3, 4
    tcell = _torch_cell(kind, D, H, seed=2)
    cell = nn.from_torch_cell(tcell)
    x = np.random.default_rng(3).standard_normal((2, D))
    h = np.random.default_rng(4).standard_normal((2, H))
    state = (Tensor(h), Tensor(h * 0.5)) if kind == "lstm" else Tensor(h)
    tstate = (torch.tensor(h), torch.tensor(h * 0.5)) if kind == "lstm" else torch.tensor(h)

    # torch -> ours -> torch: the same function (RNN/LSTM biases merged into bias_ih)
    back = nn.to_torch_cell(cell)
    assert type(back) is type(tcell) and back.weight_ih.dtype == torch.float64
    a, b = back(torch.tensor(x), tstate), tcell(torch.tensor(x), tstate)
    for u, v in zip(a if kind == "lstm" else (a,), b if kind == "lstm" else (b,)):
        _close(u.detach().numpy(), v, "torch -> ours -> torch")
    ours = cell(x, state)
    _close((ours[0] if kind == "lstm" else ours).data, b[0] if kind == "lstm" else b, "ours vs torch")

    # ours -> torch state dict -> ours: exact
    d = nn.to_torch_state_dict(cell)
    assert d["weight_ih"].shape == tcell.weight_ih.shape and d["weight_hh"].shape == tcell.weight_hh.shape
    again = nn.from_torch_cell(d, nonlinearity=cell.nonlinearity if kind.startswith("rnn") else None)
    for (n, p), (_, q) in zip(cell.named_parameters(), again.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=n)
    if kind == "gru":
        np.testing.assert_array_equal(d["bias_hh"], tcell.bias_hh.detach().numpy())
    else:
        assert (d["bias_hh"] == 0).all()
        _close(d["bias_ih"], tcell.bias_ih + tcell.bias_hh, "merged bias")

    # a torch state_dict works as a source, and loading into an existing cell is in place
    target = type(cell)(D, H, **({"nonlinearity": cell.nonlinearity} if kind.startswith("rnn") else {}), rng=9)
    ids = [id(p.data) for p in target.parameters()]
    assert nn.from_torch_cell(tcell.state_dict(), target) is target
    assert [id(p.data) for p in target.parameters()] == ids
    for (n, p), (_, q) in zip(cell.named_parameters(), target.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=n)

    # a torch cell made by to_torch_cell into an existing torch cell
    fresh = KINDS[kind](D, H).double()
    nn.to_torch_cell(cell, fresh)
    b2 = fresh(torch.tensor(x), tstate)
    _close((b2[0] if kind == "lstm" else b2).detach().numpy(), b[0] if kind == "lstm" else b, "to_torch_cell(into)")


def test_nonlinearity_is_taken_from_the_torch_cell_and_checked():
    tcell = _torch_cell("rnn_relu", 2, 3, seed=0)
    assert nn.from_torch_cell(tcell).nonlinearity == "relu"
    with pytest.raises(ValueError, match="relu"):
        nn.from_torch_cell(tcell, nn.RNNCell(2, 3))
    with pytest.raises(ValueError, match="relu"):
        nn.from_torch_cell(tcell, nonlinearity="tanh")


def test_float32_torch_cells_give_float32_cells_unless_asked():
    tcell = torch.nn.GRUCell(2, 3)
    assert nn.from_torch_cell(tcell).Wx.dtype == np.float32
    assert nn.from_torch_cell(tcell, dtype=np.float64).Wx.dtype == np.float64


def test_single_layer_torch_rnn_modules_and_no_bias():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 4, batch_first=True).double()
    cell = nn.from_torch_cell(lstm)
    xs = np.random.default_rng(0).standard_normal((2, 5, 3))
    out, _ = lstm(torch.tensor(xs))
    _close(nn.unroll(cell, xs)[0].data, out, "nn.LSTM")
    nobias = torch.nn.RNNCell(3, 4, bias=False).double()
    c = nn.from_torch_cell(nobias)
    assert (c.b.data == 0).all()
    _close(c(xs[:, 0]).data, nobias(torch.tensor(xs[:, 0])), "bias=False")
    with pytest.raises(KeyError, match="unexpected keys"):
        nn.from_torch_cell(torch.nn.GRU(3, 4, num_layers=2).state_dict())


def test_converter_errors():
    tcell = _torch_cell("lstm", 3, 4, seed=0)
    with pytest.raises(ValueError, match="LSTMCell.*GRUCell"):
        nn.from_torch_cell(tcell, nn.GRUCell(3, 4))
    with pytest.raises(ValueError, match="input_size 3 and hidden_size 4"):
        nn.from_torch_cell(tcell, nn.LSTMCell(3, 5))
    d = {k: v.numpy() for k, v in tcell.state_dict().items()}
    d["bias_hh"] = d["bias_hh"][:-1]
    with pytest.raises(ValueError, match=r"bias_hh has shape \(15,\)"):
        nn.from_torch_cell(d)
    with pytest.raises(KeyError, match="weight_hh"):
        nn.from_torch_cell({"weight_ih": np.zeros((4, 3))})
    with pytest.raises(ValueError, match="gate blocks"):
        nn.from_torch_cell({"weight_ih": np.zeros((8, 3)), "weight_hh": np.zeros((8, 4))})
    with pytest.raises(TypeError, match="RNNCell, LSTMCell or GRUCell"):
        nn.to_torch_state_dict(nn.Linear(2, 2))


def test_converters_do_not_import_torch():
    import pathlib
    source = (pathlib.Path(nn.__file__).parent / "torch_weights.py").read_text()
    top_level = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert not any("torch" in line for line in top_level)


def _trajectories(make_ours, make_theirs, steps=6, skip=None):
    """Parameters after each step, from both frameworks, on the same smooth loss."""
    rng = np.random.default_rng(0)
    w0, v0, a = rng.standard_normal((3, 2)), rng.standard_normal(2), rng.standard_normal((4, 3))
    w, v = nn.Parameter(w0), nn.Parameter(v0)
    tw, tv = torch.tensor(w0, requires_grad=True), torch.tensor(v0, requires_grad=True)
    opt, topt = make_ours([w, v]), make_theirs([tw, tv])
    ours, theirs = [], []
    for step in range(steps):
        use_v = skip is None or step not in skip        # v gets no gradient on skipped steps
        loss = F.tanh(Tensor(a) @ w).sum() * 0.5 + ((w * w).sum() + ((v * v).sum() if use_v else 0)) * 0.25
        if use_v:
            loss = loss + (F.tanh(Tensor(a) @ w) * v).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        tloss = (torch.tanh(torch.tensor(a) @ tw).sum() * 0.5
                 + ((tw * tw).sum() + ((tv * tv).sum() if use_v else 0)) * 0.25)
        if use_v:
            tloss = tloss + (torch.tanh(torch.tensor(a) @ tw) * tv).sum()
        topt.zero_grad(set_to_none=True)
        tloss.backward()
        topt.step()
        ours.append((w.data.copy(), v.data.copy()))
        theirs.append((tw.detach().numpy().copy(), tv.detach().numpy().copy()))
    return ours, theirs


@pytest.mark.parametrize("name, make_ours, make_theirs", [
    ("sgd", lambda ps: optim.SGD(ps, lr=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1)),
    ("momentum", lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9),
     lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)),
    ("adam", lambda ps: optim.Adam(ps, lr=0.05), lambda ps: torch.optim.Adam(ps, lr=0.05)),
    ("adam_betas", lambda ps: optim.Adam(ps, lr=0.02, betas=(0.5, 0.9), eps=1e-6),
     lambda ps: torch.optim.Adam(ps, lr=0.02, betas=(0.5, 0.9), eps=1e-6)),
])
@pytest.mark.parametrize("skip", [None, {0, 1, 3}])
def test_optimiser_trajectories_equal_torch(name, make_ours, make_theirs, skip):
    ours, theirs = _trajectories(make_ours, make_theirs, skip=skip)
    for step, ((w, v), (tw, tv)) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(w, tw, rtol=0, atol=ATOL, err_msg=f"{name} step {step} w")
        np.testing.assert_allclose(v, tv, rtol=0, atol=ATOL, err_msg=f"{name} step {step} v")
    assert not np.allclose(ours[0][0], ours[-1][0])      # the parameters did move


def test_clip_grad_norm_equals_torch():
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal((3, 4)) * 3, rng.standard_normal(5)]
    ours = [nn.Parameter(np.zeros(g.shape)) for g in grads]
    theirs = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for p, t, g in zip(ours, theirs, grads):
        p.grad, t.grad = g.copy(), torch.tensor(g)
    total = optim.clip_grad_norm(ours, 2.0)
    ttotal = torch.nn.utils.clip_grad_norm_(theirs, 2.0)
    assert abs(total - float(ttotal)) < ATOL
    for p, t in zip(ours, theirs):
        _close(p.grad, t.grad, "clipped grad")


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_log_softmax_and_softmax_equal_torch(axis):
    x = np.random.default_rng(2).standard_normal((3, 4, 5)) * 5
    x[0, 0, 0] = 700.0                                   # large logits stay finite on both sides
    proj = np.random.default_rng(3).standard_normal(x.shape)
    ours, theirs = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out, tout = F.log_softmax(ours, axis=axis), torch.log_softmax(theirs, dim=axis)
    _close(out.data, tout, "log_softmax")
    (out * proj).sum().backward()
    (tout * torch.tensor(proj)).sum().backward()
    _close(ours.grad, theirs.grad, "d log_softmax")
    _close(F.softmax(Tensor(x), axis=axis).data, torch.softmax(torch.tensor(x), dim=axis), "softmax")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("targets", ["indices", "probabilities"])
def test_cross_entropy_equals_torch(reduction, targets):
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((6, 5)) * 3
    if targets == "indices":
        target = rng.integers(0, 5, size=6)
        ttarget = torch.tensor(target)
    else:
        target = rng.dirichlet(np.ones(5), size=6)
        ttarget = torch.tensor(target)
    ours, theirs = Tensor(logits, requires_grad=True), torch.tensor(logits, requires_grad=True)
    loss = F.cross_entropy(ours, target, reduction=reduction)
    tloss = torch.nn.functional.cross_entropy(theirs, ttarget, reduction=reduction)
    _close(np.asarray(loss.data), tloss, "cross_entropy")
    w = rng.standard_normal(loss.shape)
    (loss * w).sum().backward()
    (tloss * torch.tensor(w)).sum().backward()
    _close(ours.grad, theirs.grad, "d cross_entropy")


def test_cross_entropy_over_a_sequence_equals_torch():
    # (batch, time, classes) with the classes on the last axis; torch wants them on axis 1
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((2, 7, 4))
    target = rng.integers(0, 4, size=(2, 7))
    ours, theirs = Tensor(logits, requires_grad=True), torch.tensor(logits, requires_grad=True)
    loss = F.cross_entropy(ours, target)
    tloss = torch.nn.functional.cross_entropy(theirs.permute(0, 2, 1), torch.tensor(target))
    _close(np.asarray(loss.data), tloss, "sequence cross_entropy")
    loss.backward()
    tloss.backward()
    _close(ours.grad, theirs.grad, "d sequence cross_entropy")


# the operations added beside the first contract; ties and kinks included, where both sides state the same
# convention (a tie of maximum/minimum splits the gradient equally; min of a row with ties shares it)
TIES = np.array([[0.5, -1.0, 2.0, 2.0], [0.0, 3.0, -1.0, -1.0], [1.5, -0.5, 0.25, 4.0]])
NEW_OPS = {
    "sin": (lambda t: t.sin(), lambda t: t.sin()),
    "cos": (lambda t: t.cos(), lambda t: t.cos()),
    "log1p": (lambda t: (t * t).log1p(), lambda t: (t * t).log1p()),
    "min": (lambda t: t.min(axis=1), lambda t: t.amin(dim=1)),
    "min all": (lambda t: (-t).min(), lambda t: (-t).amin()),
    "flatten": (lambda t: t.flatten() * 2.0, lambda t: t.flatten() * 2.0),
    "unsqueeze squeeze": (lambda t: t.unsqueeze(1).squeeze(1).unsqueeze(-1),
                          lambda t: t.unsqueeze(1).squeeze(1).unsqueeze(-1)),
    "broadcast_to": (lambda t: t[0].broadcast_to((2, 4)) * t[1], lambda t: t[0].broadcast_to((2, 4)) * t[1]),
    "sum_to": (lambda t: t.sum_to((1, 4)), lambda t: t.sum(dim=0, keepdim=True)),
    "maximum": (lambda t: tg.maximum(t, t[::-1]), lambda t: torch.maximum(t, t.flip(0))),
    "minimum": (lambda t: tg.minimum(t, 2.0), lambda t: torch.minimum(t, torch.tensor(2.0, dtype=t.dtype))),
    "leaky_relu": (lambda t: F.leaky_relu(t, 0.2), lambda t: torch.nn.functional.leaky_relu(t, 0.2)),
    "softplus": (lambda t: F.softplus(t * 300.0), lambda t: torch.nn.functional.softplus(t * 300.0)),
    "logsumexp": (lambda t: F.logsumexp(t, axis=0), lambda t: torch.logsumexp(t, dim=0)),
}


@pytest.mark.parametrize("name", NEW_OPS)
def test_added_operations_equal_torch(name):
    ours, theirs = NEW_OPS[name]
    x = Tensor(TIES, requires_grad=True)
    y = ours(x)
    proj = np.random.default_rng(2).standard_normal(y.shape)
    (y * proj).sum().backward()
    xt = torch.tensor(TIES, requires_grad=True)
    yt = theirs(xt)
    (yt * torch.tensor(proj)).sum().backward()
    _close(y.data, yt, name)
    _close(x.grad, xt.grad, f"d {name}")
