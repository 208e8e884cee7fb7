"""The hand-derived references (tinygrad_rnn.reference) against finite differences and against autograd.

Tolerances:
- finite differences: central, eps = 1e-6, float64; an element passes when
  |hand - numeric| <= 1e-7 + 1e-6 * |numeric| (the truncation error is O(eps^2)
  and rounding O(1e-16 / eps) = O(1e-10) relative to the loss).
- autograd: the same network composed of Tensor operations; gradients agree to
  |hand - autograd| <= 1e-10 + 1e-10 * |autograd|.
"""
import ast
import pathlib

import numpy as np
import pytest
from hypothesis import given, strategies as st

from tinygrad_rnn import Tensor, stack
from tinygrad_rnn import functional as F
from tinygrad_rnn.reference import count_ones, hello_rnn, time_rnn

FD_ATOL, FD_RTOL = 1e-7, 1e-6
AG_ATOL, AG_RTOL = 1e-10, 1e-10


def central_diff(f, arrays, eps=1e-6):
    """Central differences of the scalar f() with respect to every element of each array (in place)."""
    out = []
    for a in arrays:
        g = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            old = a[i]
            a[i] = old + eps
            plus = f()
            a[i] = old - eps
            minus = f()
            a[i] = old
            g[i] = (plus - minus) / (2 * eps)
        out.append(g)
    return out


def assert_close(actual, expected, atol, rtol, what):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs {expected.shape}"
    err = np.abs(actual - expected) - (atol + rtol * np.abs(expected))
    assert np.all(err <= 0), (f"{what}: worst at {np.unravel_index(np.argmax(err), err.shape)}, "
                              f"max abs diff {np.abs(actual - expected).max():.3g}")


# ---------------------------------------------------------------- the reference is numpy only

def test_reference_never_imports_the_engine():
    root = pathlib.Path(hello_rnn.__file__).parent
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                # relative imports may reach sibling reference modules only (level 1)
                assert node.level <= 1, f"{path.name} imports from outside the reference package"
                names = [] if node.level == 1 else [node.module]
            else:
                continue
            for name in names:
                assert name == "numpy", f"{path.name} imports {name}: the reference must use numpy only"


# ---------------------------------------------------------------- hello: textbook numbers

def test_hello_loss_at_seed_reproduces_textbook():
    X, Y = hello_rnn.hello_data()
    assert hello_rnn.loss(hello_rnn.init_params(3), X, Y) == pytest.approx(12.062061261168791, abs=1e-12)
    assert hello_rnn.loss(hello_rnn.init_params(6), X, Y) == pytest.approx(15.950983723925223, abs=1e-12)


def test_hello_init_matches_global_seed_draws():
    # the original seeds the global generator; RandomState(seed) must draw the same numbers
    state = np.random.get_state()
    try:
        np.random.seed(230912)
        expected = [np.random.randn(4, 3), np.random.randn(3, 3), np.random.randn(1, 1),
                    np.random.randn(3, 4), np.random.randn(1, 1)]
    finally:
        np.random.set_state(state)
    params = hello_rnn.init_params(3)
    for name, e in zip(hello_rnn.PARAM_NAMES, expected):
        np.testing.assert_array_equal(params[name], e)


@pytest.mark.parametrize("hidden,final", [(3, 0.15103531464), (6, 0.04770066818)])
def test_hello_sgd_reaches_textbook_loss_and_reads_ello(hidden, final):
    X, Y = hello_rnn.hello_data()
    params, losses = hello_rnn.sgd_train(hello_rnn.init_params(hidden), X, Y, lr=0.005, steps=2000)
    assert losses[-1] == pytest.approx(final, abs=1e-10)
    assert hello_rnn.predict(params, X) == "ello"
    assert losses[-1] < losses[0]


def test_hello_original_typo_stalls_at_uniform():
    X, Y = hello_rnn.hello_data()
    params, losses = hello_rnn.sgd_train(hello_rnn.init_params(3), X, Y,
                                        grad_fn=hello_rnn.grads_single_target_typo)
    assert losses[-1] == pytest.approx(4 * np.log(4), abs=1e-3)
    _, ps = hello_rnn.forward(params, X)
    np.testing.assert_allclose(ps, 0.25, atol=0.01)       # every prediction collapsed to uniform


def test_hello_original_overwrite_stops_near_2_3():
    X, Y = hello_rnn.hello_data()
    _, losses = hello_rnn.sgd_train(hello_rnn.init_params(3), X, Y,
                                    grad_fn=hello_rnn.grads_overwritten_output)
    assert 2.0 < losses[-1] < 2.6                         # where correct SGD reaches 0.151


def test_hello_original_overwrite_differs_only_in_output_weights():
    X, Y = hello_rnn.hello_data()
    params = hello_rnn.init_params(3)
    _, good = hello_rnn.loss_and_grads(params, X, Y)
    bad = hello_rnn.grads_overwritten_output(params, X, Y)
    for k in ("Wxh", "Whh", "Bh"):
        np.testing.assert_array_equal(bad[k], good[k])
    assert np.abs(bad["Wy"] - good["Wy"]).max() > 0.1


def test_hello_by_gradient_is_zero():
    # softmax ignores a shift: the scalar output bias can never learn
    X, Y = hello_rnn.hello_data()
    _, grads = hello_rnn.loss_and_grads(hello_rnn.init_params(3), X, Y)
    assert abs(grads["By"].item()) < 1e-14


def test_hello_softmax_does_not_overflow():
    p = hello_rnn.softmax(np.array([[1000.0, 0.0, -1000.0, 999.0]]))
    assert np.all(np.isfinite(p)) and p.sum() == pytest.approx(1.0)


def test_hello_bad_inputs_give_clear_errors():
    X, Y = hello_rnn.hello_data()
    params = hello_rnn.init_params(3)
    with pytest.raises(ValueError, match="not in the alphabet"):
        hello_rnn.one_hot("help")
    with pytest.raises(ValueError, match="targets must have shape"):
        hello_rnn.loss(params, X, Y[:3])
    with pytest.raises(ValueError, match="inputs must be"):
        hello_rnn.forward(params, X[:, :3])
    with pytest.raises(KeyError, match="Whh"):
        hello_rnn.forward({k: v for k, v in params.items() if k != "Whh"}, X)


# ---------------------------------------------------------------- hello: gradients

def hello_fd(params, X, Y):
    arrays = [params[k] for k in hello_rnn.PARAM_NAMES]
    return dict(zip(hello_rnn.PARAM_NAMES, central_diff(lambda: hello_rnn.loss(params, X, Y), arrays)))


def hello_autograd(params, X, Y):
    """The same network composed of Tensor operations; returns (loss, grads)."""
    P = {k: Tensor(v, requires_grad=True) for k, v in params.items()}
    h = Tensor(np.zeros((1, params["Whh"].shape[0])))
    total = Tensor(0.0)
    for t in range(X.shape[0]):
        h = (Tensor(X[t:t + 1]) @ P["Wxh"] + h @ P["Whh"] + P["Bh"]).tanh()
        z = h @ P["Wy"] + P["By"]
        total = total + F.cross_entropy(z, Y[t:t + 1], reduction="sum")
    total.backward()
    return total.item(), {k: p.grad for k, p in P.items()}


@pytest.mark.parametrize("hidden", [3, 6])
def test_hello_bptt_matches_finite_differences(hidden):
    X, Y = hello_rnn.hello_data()
    params = hello_rnn.init_params(hidden)
    _, grads = hello_rnn.loss_and_grads(params, X, Y)
    numeric = hello_fd(params, X, Y)
    for k in hello_rnn.PARAM_NAMES:
        assert_close(grads[k], numeric[k], FD_ATOL, FD_RTOL, k)


@pytest.mark.parametrize("hidden", [3, 6])
def test_hello_bptt_matches_autograd(hidden):
    X, Y = hello_rnn.hello_data()
    params = hello_rnn.init_params(hidden)
    loss, grads = hello_rnn.loss_and_grads(params, X, Y)
    auto_loss, auto = hello_autograd(params, X, Y)
    assert auto_loss == pytest.approx(loss, abs=1e-12)
    for k in hello_rnn.PARAM_NAMES:
        assert_close(grads[k], auto[k], AG_ATOL, AG_RTOL, k)


@given(hidden=st.integers(1, 4), seed=st.integers(0, 2 ** 31 - 1),
       text=st.text(alphabet="helo", min_size=2, max_size=6))
def test_hello_bptt_matches_autograd_any_sequence(hidden, seed, text):
    X, Y = hello_rnn.one_hot(text[:-1]), hello_rnn.one_hot(text[1:])
    params = hello_rnn.init_params(hidden, seed=seed)
    loss, grads = hello_rnn.loss_and_grads(params, X, Y)
    auto_loss, auto = hello_autograd(params, X, Y)
    assert auto_loss == pytest.approx(loss, rel=1e-12, abs=1e-12)
    for k in hello_rnn.PARAM_NAMES:
        assert_close(grads[k], auto[k], AG_ATOL, AG_RTOL, k)


def test_hello_hidden_grads_match_autograd_retained_grads():
    X, Y = hello_rnn.hello_data()
    params = hello_rnn.init_params(3)
    P = {k: Tensor(v, requires_grad=True) for k, v in params.items()}
    h = Tensor(np.zeros((1, 3)))
    total, hs = Tensor(0.0), []
    for t in range(4):
        h = (Tensor(X[t:t + 1]) @ P["Wxh"] + h @ P["Whh"] + P["Bh"]).tanh()
        hs.append(h.retain_grad())                         # keep dE/dh_t on the intermediate
        total = total + F.cross_entropy(h @ P["Wy"] + P["By"], Y[t:t + 1], reduction="sum")
    total.backward()
    expected = hello_rnn.hidden_grads(params, X, Y)
    assert_close(expected, np.concatenate([h.grad for h in hs]), AG_ATOL, AG_RTOL, "dE/dh_t")


def test_hello_original_mistakes_disagree_with_finite_differences():
    X, Y = hello_rnn.hello_data()
    params = hello_rnn.init_params(3)
    numeric = hello_fd(params, X, Y)
    for bad in (hello_rnn.grads_single_target_typo, hello_rnn.grads_overwritten_output):
        g = bad(params, X, Y)
        assert np.abs(g["Wy"] - numeric["Wy"]).max() > 1e-2, bad.__name__


# ---------------------------------------------------------------- DLFS2 TimeRNN

def rnn_weights(D, H, seed):
    rs = np.random.RandomState(seed)
    return rs.randn(D, H) / np.sqrt(D), rs.randn(H, H) / np.sqrt(H), rs.randn(H) * 0.1


def time_rnn_autograd(Wx, Wh, b, xs, dhs, h0=None):
    """Autograd of sum(hs * dhs): its gradients are what TimeRNN.backward(dhs) returns."""
    P = [Tensor(a, requires_grad=True) for a in (Wx, Wh, b)]
    xt = Tensor(xs, requires_grad=True)
    N, T, _ = xs.shape
    h = Tensor(np.zeros((N, Wh.shape[0])) if h0 is None else h0, requires_grad=True)
    first = h
    hs = []
    for t in range(T):
        h = (h @ P[1] + xt[:, t, :] @ P[0] + P[2]).tanh()
        hs.append(h)
    out = (stack(hs, axis=1) * Tensor(dhs)).sum()
    out.backward()
    return [p.grad for p in P], xt.grad, first.grad, stack(hs, axis=1).data


def test_rnn_step_matches_finite_differences():
    Wx, Wh, b = rnn_weights(3, 4, 0)
    rs = np.random.RandomState(1)
    x, h_prev, dh = rs.randn(2, 3), rs.randn(2, 4), rs.randn(2, 4)
    layer = time_rnn.RNN(Wx, Wh, b)
    layer.forward(x, h_prev)
    dx, dh_prev = layer.backward(dh)
    f = lambda: float(np.sum(time_rnn.RNN(Wx, Wh, b).forward(x, h_prev) * dh))
    numeric = central_diff(f, [Wx, Wh, b, x, h_prev])
    for got, num, name in zip(layer.grads + [dx, dh_prev], numeric, ["Wx", "Wh", "b", "x", "h_prev"]):
        assert_close(got, num, FD_ATOL, FD_RTOL, name)


def test_time_rnn_matches_finite_differences_and_autograd():
    N, T, D, H = 2, 5, 3, 4
    Wx, Wh, b = rnn_weights(D, H, 2)
    rs = np.random.RandomState(3)
    xs, dhs = rs.randn(N, T, D), rs.randn(N, T, H)
    layer = time_rnn.TimeRNN(Wx, Wh, b)
    hs = layer.forward(xs)
    dxs = layer.backward(dhs)
    assert hs.dtype == np.float64 and dxs.dtype == np.float64     # no float32 buffers
    f = lambda: float(np.sum(time_rnn.TimeRNN(Wx, Wh, b).forward(xs) * dhs))
    numeric = central_diff(f, [Wx, Wh, b, xs])
    for got, num, name in zip(layer.grads + [dxs], numeric, ["Wx", "Wh", "b", "xs"]):
        assert_close(got, num, FD_ATOL, FD_RTOL, name)
    auto, auto_dx, auto_dh0, auto_hs = time_rnn_autograd(Wx, Wh, b, xs, dhs)
    np.testing.assert_allclose(hs, auto_hs, rtol=0, atol=1e-14)
    for got, a, name in zip(layer.grads + [dxs, layer.dh], auto + [auto_dx, auto_dh0],
                            ["Wx", "Wh", "b", "xs", "dh0"]):
        assert_close(got, a, AG_ATOL, AG_RTOL, name)


def test_time_rnn_stateful_is_truncated_bptt():
    N, T, D, H = 2, 3, 3, 4
    Wx, Wh, b = rnn_weights(D, H, 4)
    rs = np.random.RandomState(5)
    xs, dhs = rs.randn(N, 2 * T, D), rs.randn(N, T, H)
    full = time_rnn.TimeRNN(Wx, Wh, b).forward(xs)
    layer = time_rnn.TimeRNN(Wx, Wh, b, stateful=True)
    layer.forward(xs[:, :T])
    h_carried = layer.h.copy()
    second = layer.forward(xs[:, T:])
    # forward connection kept: the second chunk continues the full sequence
    np.testing.assert_allclose(second, full[:, T:], rtol=0, atol=1e-14)
    # backward cut: the chunk's gradients are those of a sequence that starts from a constant h
    layer.backward(dhs)
    auto, _, auto_dh0, _ = time_rnn_autograd(Wx, Wh, b, xs[:, T:], dhs, h0=h_carried)
    for got, a, name in zip(layer.grads + [layer.dh], auto + [auto_dh0], ["Wx", "Wh", "b", "dh0"]):
        assert_close(got, a, AG_ATOL, AG_RTOL, name)
    layer.reset_state()
    np.testing.assert_allclose(layer.forward(xs[:, :T]), full[:, :T], rtol=0, atol=1e-14)


def test_time_rnn_not_stateful_restarts_from_zero():
    Wx, Wh, b = rnn_weights(3, 4, 6)
    xs = np.random.RandomState(7).randn(2, 3, 3)
    layer = time_rnn.TimeRNN(Wx, Wh, b)
    np.testing.assert_array_equal(layer.forward(xs), layer.forward(xs))


def test_time_rnn_rejects_wrong_feature_size():
    layer = time_rnn.TimeRNN(*rnn_weights(3, 4, 0))
    with pytest.raises(ValueError, match="features"):
        layer.forward(np.zeros((2, 5, 4)))


def small_lm(seed=0):
    V, D, H, N, T = 7, 3, 4, 2, 4
    model = time_rnn.SimpleRnnlm(V, D, H, seed=seed)
    rs = np.random.RandomState(seed + 1)
    xs, ts = rs.randint(0, V, (N, T)), rs.randint(0, V, (N, T))
    xs[0, :2] = 3                                          # a repeated word: its embedding gradients add
    return model, xs, ts


def test_simple_rnnlm_matches_finite_differences():
    model, xs, ts = small_lm()
    model.forward(xs, ts)
    model.backward()
    got = model.named_grads()

    def f():
        model.reset_state()                                # stateful: every evaluation from h = 0
        return model.forward(xs, ts)
    params = model.named_params()
    numeric = central_diff(f, [params[k] for k in model.NAMES])
    for k, num in zip(model.NAMES, numeric):
        assert_close(got[k], num, FD_ATOL, FD_RTOL, k)


def test_simple_rnnlm_matches_autograd():
    model, xs, ts = small_lm(3)
    loss = model.forward(xs, ts)
    model.backward()
    got = model.named_grads()
    P = {k: Tensor(v, requires_grad=True) for k, v in model.named_params().items()}
    e = P["embed.W"][xs]
    N, T = xs.shape
    h = Tensor(np.zeros((N, P["rnn.Wh"].shape[0])))
    logits = []
    for t in range(T):
        h = (h @ P["rnn.Wh"] + e[:, t, :] @ P["rnn.Wx"] + P["rnn.b"]).tanh()
        logits.append(h @ P["affine.W"] + P["affine.b"])
    total = F.cross_entropy(stack(logits, axis=1), ts)
    total.backward()
    assert total.item() == pytest.approx(loss, abs=1e-12)
    for k in model.NAMES:
        assert_close(got[k], P[k].grad, AG_ATOL, AG_RTOL, k)


def test_simple_rnnlm_init_follows_the_book():
    model = time_rnn.SimpleRnnlm(50, 20, 30, seed=0)
    p = model.named_params()
    assert p["embed.W"].std() == pytest.approx(0.01, rel=0.1)
    assert p["rnn.Wx"].std() == pytest.approx(1 / np.sqrt(20), rel=0.1)
    assert p["rnn.Wh"].std() == pytest.approx(1 / np.sqrt(30), rel=0.1)
    assert not p["rnn.b"].any() and not p["affine.b"].any()


def test_truncated_batches_advance_once_per_time_step():
    corpus = np.arange(41)
    batches = list(time_rnn.truncated_batches(corpus, batch_size=2, time_size=5))
    assert len(batches) == 4                               # 40 inputs // (2 * 5)
    xs0, ts0 = batches[0]
    np.testing.assert_array_equal(xs0, [[0, 1, 2, 3, 4], [20, 21, 22, 23, 24]])
    np.testing.assert_array_equal(ts0, xs0 + 1)
    np.testing.assert_array_equal(batches[1][0], [[5, 6, 7, 8, 9], [25, 26, 27, 28, 29]])
    with pytest.raises(ValueError, match="too short"):
        list(time_rnn.truncated_batches(np.arange(5), batch_size=2, time_size=5))


# ---------------------------------------------------------------- count the ones

def test_count_ones_data_and_exact_solution():
    X, t = count_ones.make_data()
    assert X.shape == (100, 10) and set(np.unique(X)) <= {0.0, 1.0}
    np.testing.assert_array_equal(t, X.sum(axis=1))
    assert count_ones.loss(X, t, 1.0, 1.0) == 0.0
    assert count_ones.loss_and_grads(X, t, 1.0, 1.0)[1:] == (0.0, 0.0)


@pytest.mark.parametrize("w_x,w_rec", [(0.5, 0.8), (1.2, 1.05), (-0.3, 0.4)])
def test_count_ones_grads_match_finite_differences(w_x, w_rec):
    X, t = count_ones.make_data(20, 6, seed=2)
    w = np.array([w_x, w_rec])
    _, dw_x, dw_rec = count_ones.loss_and_grads(X, t, w_x, w_rec)
    (num,) = central_diff(lambda: count_ones.loss(X, t, w[0], w[1]), [w])
    assert_close([dw_x, dw_rec], num, FD_ATOL, FD_RTOL, "count_ones")


@pytest.mark.parametrize("w_x,w_rec", [(0.5, 0.8), (1.2, 1.05)])
def test_count_ones_grads_match_autograd(w_x, w_rec):
    X, t = count_ones.make_data()
    wx, wr = Tensor(w_x, requires_grad=True), Tensor(w_rec, requires_grad=True)
    S = Tensor(np.zeros(X.shape[0]))
    states = []
    for k in range(X.shape[1]):
        S = S * wr + Tensor(X[:, k]) * wx
        S.retain_grad()
        states.append(S)
    L = F.mse_loss(S, t)
    L.backward()
    loss, dw_x, dw_rec = count_ones.loss_and_grads(X, t, w_x, w_rec)
    assert L.item() == pytest.approx(loss, rel=1e-13)
    assert_close([dw_x, dw_rec], [wx.grad.item(), wr.grad.item()], AG_ATOL, AG_RTOL, "weights")
    _, _, dS = count_ones.backward(X, t, count_ones.forward_states(X, w_x, w_rec), w_rec)
    auto_dS = np.stack([s.grad for s in states], axis=1)
    assert_close(dS[:, 1:], auto_dS, AG_ATOL, AG_RTOL, "state gradients")
    # the original's per-state gradients are N times too large
    orig = count_ones.per_sample_state_grads(X, t, w_x, w_rec)
    np.testing.assert_allclose(orig[:, 1:], X.shape[0] * auto_dS, rtol=1e-10)


def test_count_ones_rejects_bad_shapes():
    X, t = count_ones.make_data(5, 3)
    with pytest.raises(ValueError, match="targets must have shape"):
        count_ones.loss(X, t[:4], 1.0, 1.0)
    with pytest.raises(ValueError, match="samples, steps"):
        count_ones.forward_states(X[0], 1.0, 1.0)


# ---------------------------------------------------------------- the references against tinygrad_rnn.nn

def _load_cell(cell, **weights):
    for name, value in weights.items():
        getattr(cell, name).data[...] = value
    return cell


@given(N=st.integers(1, 3), T=st.integers(1, 5), D=st.integers(1, 4), H=st.integers(1, 4),
       seed=st.integers(0, 2 ** 31 - 1))
def test_time_rnn_equals_nn_rnncell_unrolled(N, T, D, H, seed):
    from tinygrad_rnn import nn
    Wx, Wh, b = rnn_weights(D, H, seed)
    rs = np.random.RandomState(seed ^ 1)
    xs, dhs, h0 = rs.randn(N, T, D), rs.randn(N, T, H), rs.randn(N, H)
    layer = time_rnn.TimeRNN(Wx, Wh, b)
    layer.set_state(h0)
    layer.stateful = True                                  # start from h0, as a carried state
    hs = layer.forward(xs)
    dxs = layer.backward(dhs)
    cell = _load_cell(nn.RNNCell(D, H), Wx=Wx, Wh=Wh, b=b)
    x, h = Tensor(xs, requires_grad=True), Tensor(h0, requires_grad=True)
    out, _ = nn.unroll(cell, x, state=h)
    (out * Tensor(dhs)).sum().backward()
    np.testing.assert_allclose(out.data, hs, rtol=0, atol=1e-13)
    for got, auto, name in zip(layer.grads + [dxs, layer.dh], [cell.Wx.grad, cell.Wh.grad, cell.b.grad,
                                                                x.grad, h.grad], ["Wx", "Wh", "b", "xs", "h0"]):
        assert_close(got, auto, AG_ATOL, AG_RTOL, name)


def lstm_weights(D, H, seed):
    rs = np.random.RandomState(seed)
    return rs.randn(D, 4 * H) / np.sqrt(D), rs.randn(H, 4 * H) / np.sqrt(H), rs.randn(4 * H) * 0.5


def test_lstm_layout_adapters_are_inverse_and_move_whole_blocks():
    Wx, Wh, b = lstm_weights(2, 3, 0)
    back = time_rnn.ifgo_lstm_to_book(*time_rnn.book_lstm_to_ifgo(Wx, Wh, b))
    for a, c in zip((Wx, Wh, b), back):
        np.testing.assert_array_equal(a, c)
    _, _, ours = time_rnn.book_lstm_to_ifgo(Wx, Wh, b)
    H = 3
    np.testing.assert_array_equal(ours[:H], b[2 * H:3 * H])          # i
    np.testing.assert_array_equal(ours[H:2 * H], b[:H])              # f
    np.testing.assert_array_equal(ours[2 * H:3 * H], b[H:2 * H])     # g
    np.testing.assert_array_equal(ours[3 * H:], b[3 * H:])           # o


def test_lstm_step_matches_finite_differences():
    Wx, Wh, b = lstm_weights(3, 2, 1)
    rs = np.random.RandomState(2)
    x, h, c, dh, dc = rs.randn(2, 3), rs.randn(2, 2), rs.randn(2, 2), rs.randn(2, 2), rs.randn(2, 2)
    layer = time_rnn.LSTM(Wx, Wh, b)
    layer.forward(x, h, c)
    dx, dh_prev, dc_prev = layer.backward(dh, dc)

    def f():
        h2, c2 = time_rnn.LSTM(Wx, Wh, b).forward(x, h, c)
        return float(np.sum(h2 * dh) + np.sum(c2 * dc))
    numeric = central_diff(f, [Wx, Wh, b, x, h, c])
    for got, num, name in zip(layer.grads + [dx, dh_prev, dc_prev], numeric,
                              ["Wx", "Wh", "b", "x", "h_prev", "c_prev"]):
        assert_close(got, num, FD_ATOL, FD_RTOL, name)


def test_time_lstm_matches_finite_differences():
    N, T, D, H = 2, 4, 3, 2
    Wx, Wh, b = lstm_weights(D, H, 3)
    rs = np.random.RandomState(4)
    xs, dhs = rs.randn(N, T, D), rs.randn(N, T, H)
    layer = time_rnn.TimeLSTM(Wx, Wh, b)
    layer.forward(xs)
    dxs = layer.backward(dhs)
    f = lambda: float(np.sum(time_rnn.TimeLSTM(Wx, Wh, b).forward(xs) * dhs))
    numeric = central_diff(f, [Wx, Wh, b, xs])
    for got, num, name in zip(layer.grads + [dxs], numeric, ["Wx", "Wh", "b", "xs"]):
        assert_close(got, num, FD_ATOL, FD_RTOL, name)


@given(N=st.integers(1, 3), T=st.integers(1, 5), D=st.integers(1, 3), H=st.integers(1, 3),
       seed=st.integers(0, 2 ** 31 - 1))
def test_time_lstm_equals_nn_lstmcell_unrolled(N, T, D, H, seed):
    from tinygrad_rnn import nn
    Wx, Wh, b = lstm_weights(D, H, seed)
    rs = np.random.RandomState(seed ^ 1)
    xs, dhs, h0, c0 = rs.randn(N, T, D), rs.randn(N, T, H), rs.randn(N, H), rs.randn(N, H)
    layer = time_rnn.TimeLSTM(Wx, Wh, b, stateful=True)
    layer.set_state(h0, c0)
    hs = layer.forward(xs)
    dxs = layer.backward(dhs)
    ours = dict(zip(("Wx", "Wh", "b"), time_rnn.book_lstm_to_ifgo(Wx, Wh, b)))
    cell = _load_cell(nn.LSTMCell(D, H), **ours)
    x = Tensor(xs, requires_grad=True)
    h, c = Tensor(h0, requires_grad=True), Tensor(c0, requires_grad=True)
    out, _ = nn.unroll(cell, x, state=(h, c))
    (out * Tensor(dhs)).sum().backward()
    np.testing.assert_allclose(out.data, hs, rtol=0, atol=1e-13)
    auto = dict(zip(("Wx", "Wh", "b"), time_rnn.ifgo_lstm_to_book(cell.Wx.grad, cell.Wh.grad, cell.b.grad)))
    for got, a, name in zip(layer.grads + [dxs, layer.dh, layer.dc],
                            [auto["Wx"], auto["Wh"], auto["b"], x.grad, h.grad, c.grad],
                            ["Wx", "Wh", "b", "xs", "h0", "c0"]):
        assert_close(got, a, AG_ATOL, AG_RTOL, name)


def test_time_lstm_stateful_carries_h_and_c():
    Wx, Wh, b = lstm_weights(2, 3, 5)
    xs = np.random.RandomState(6).randn(2, 6, 2)
    full = time_rnn.TimeLSTM(Wx, Wh, b).forward(xs)
    layer = time_rnn.TimeLSTM(Wx, Wh, b, stateful=True)
    layer.forward(xs[:, :2])
    layer.forward(xs[:, 2:4])
    np.testing.assert_allclose(layer.forward(xs[:, 4:]), full[:, 4:], rtol=0, atol=1e-14)
