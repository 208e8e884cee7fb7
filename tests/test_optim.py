"""SGD, Adam and clip_grad_norm against updates written out by hand (PyTorch's conventions)."""
import math

import numpy as np
import pytest

import tinygrad_rnn.nn as nn
import tinygrad_rnn.optim as optim
from tinygrad_rnn import Tensor


def grads_sequence(shape, steps, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for _ in range(steps)]


def test_sgd_is_p_minus_lr_g():
    p = nn.Parameter(np.array([1.0, -2.0, 3.0]))
    opt = optim.SGD([p], lr=0.1)
    expected = p.data.copy()
    for g in grads_sequence(3, 4):
        p.grad = g.copy()
        opt.step()
        expected = expected - 0.1 * g
        np.testing.assert_allclose(p.data, expected, rtol=0, atol=1e-15)


def test_sgd_momentum_by_hand():
    """PyTorch's convention: v_1 = g_1, v_t = mu v_{t-1} + g_t, p -= lr v_t."""
    p = nn.Parameter(np.zeros(3))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    expected, v = np.zeros(3), None
    for g in grads_sequence(3, 5):
        p.grad = g.copy()
        opt.step()
        v = g if v is None else 0.9 * v + g
        expected = expected - 0.1 * v
        np.testing.assert_allclose(p.data, expected, rtol=1e-15, atol=1e-16)


def test_adam_by_hand():
    p = nn.Parameter(np.array([0.5, -1.0]))
    lr, b1, b2, eps = 0.01, 0.8, 0.99, 1e-6
    opt = optim.Adam([p], lr=lr, betas=(b1, b2), eps=eps)
    m = v = np.zeros(2)
    expected = p.data.copy()
    for t, g in enumerate(grads_sequence(2, 6), start=1):
        p.grad = g.copy()
        opt.step()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        expected = expected - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        np.testing.assert_allclose(p.data, expected, rtol=1e-14)


def test_adam_first_step_moves_by_lr():
    """With bias correction, the first step is lr * g / (|g| + eps): about lr for every element."""
    p = nn.Parameter(np.zeros(4))
    p.grad = np.array([1e-3, -5.0, 200.0, 0.3])
    optim.Adam([p], lr=0.1, eps=1e-12).step()
    np.testing.assert_allclose(p.data, [-0.1, 0.1, -0.1, -0.1], rtol=1e-8)   # eps/|g| <= 1e-9


def test_parameters_without_grad_are_skipped():
    a, b = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(2))
    for opt in (optim.SGD([a, b], lr=1.0, momentum=0.5), optim.Adam([a, b], lr=1.0)):
        a.grad, b.grad = np.ones(2), None
        before = b.data.copy()
        opt.step()
        np.testing.assert_array_equal(b.data, before)


def test_adam_counts_steps_per_parameter():
    """A parameter that first gets a gradient at step 3 starts its own bias correction at 1, as PyTorch does."""
    a, b = nn.Parameter(np.zeros(1)), nn.Parameter(np.zeros(1))
    opt = optim.Adam([a, b], lr=0.1)
    for step in range(3):
        a.grad = np.ones(1)
        b.grad = np.array([2.0]) if step == 2 else None
        opt.step()
    np.testing.assert_allclose(b.data, [-0.1], rtol=1e-7)     # a first step: lr * g / |g|


def test_zero_grad_and_shared_parameters():
    lin = nn.Linear(2, 2, rng=0)
    opt = optim.SGD([lin.W, lin.b, lin.W], lr=0.1)      # a repeated parameter is updated once
    assert len(opt.params) == 2
    lin.W.grad = np.ones((2, 2))
    before = lin.W.data.copy()
    opt.step()
    np.testing.assert_allclose(lin.W.data, before - 0.1)
    opt.zero_grad()
    assert lin.W.grad is None and lin.b.grad is None


def test_trains_a_linear_model():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 3))
    y = x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3
    for make in (lambda p: optim.SGD(p, lr=0.1, momentum=0.9), lambda p: optim.Adam(p, lr=0.1)):
        lin = nn.Linear(3, 1, rng=1)
        opt = make(lin.parameters())
        for _ in range(200):
            loss = ((lin(x) - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert loss.item() < 1e-4


@pytest.mark.parametrize("bad", [0, -0.1, float("nan"), float("inf"), "0.1", True, None])
def test_bad_learning_rate(bad):
    for cls in (optim.SGD, optim.Adam):
        with pytest.raises(ValueError, match="lr must be a positive number"):
            cls([nn.Parameter(np.ones(1))], lr=bad)


def test_numpy_learning_rate_accepted():
    assert optim.SGD([nn.Parameter(np.ones(1))], lr=np.float32(0.5)).lr == 0.5


def test_other_bad_arguments():
    p = nn.Parameter(np.ones(1))
    with pytest.raises(ValueError, match="momentum"):
        optim.SGD([p], lr=0.1, momentum=-0.5)
    with pytest.raises(ValueError, match="eps"):
        optim.Adam([p], eps=0)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="empty"):
        optim.Adam(iter([]))
    with pytest.raises(TypeError, match="must be Tensors, got ndarray"):
        optim.SGD([np.ones(1)], lr=0.1)
    with pytest.raises(ValueError, match="does not require grad"):
        optim.Adam([Tensor(np.ones(1))])


def test_clip_grad_norm_scales_when_above():
    a, b = nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(1))
    a.grad, b.grad = np.array([3.0, 0.0]), np.array([4.0])
    total = optim.clip_grad_norm([a, b], 1.0)
    assert isinstance(total, float) and total == 5.0
    scale = 1.0 / (5.0 + 1e-6)
    np.testing.assert_allclose(a.grad, [3 * scale, 0.0], rtol=1e-15)
    np.testing.assert_allclose(b.grad, [4 * scale], rtol=1e-15)
    assert math.sqrt((a.grad ** 2).sum() + (b.grad ** 2).sum()) <= 1.0


def test_clip_grad_norm_leaves_small_gradients_and_skips_none():
    a, b = nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(2))
    a.grad = np.array([0.3, 0.4])
    grad = a.grad
    assert optim.clip_grad_norm([a, b], 1.0) == pytest.approx(0.5, rel=1e-15)
    assert a.grad is grad and np.array_equal(a.grad, [0.3, 0.4]) and b.grad is None
    assert optim.clip_grad_norm([b], 1.0) == 0.0


def test_clip_grad_norm_float32_in_place():
    a = nn.Parameter(np.zeros(3, dtype=np.float32))
    a.grad = np.full(3, 10.0, dtype=np.float32)
    grad = a.grad
    total = optim.clip_grad_norm([a], 2.0)
    assert total == pytest.approx(math.sqrt(300), rel=1e-6)
    assert a.grad is grad and a.grad.dtype == np.float32
    assert np.linalg.norm(a.grad) == pytest.approx(2.0, rel=1e-5)


@pytest.mark.parametrize("bad", [0, -1.0])
def test_clip_grad_norm_bad_max(bad):
    with pytest.raises(ValueError, match="max_norm must be positive"):
        optim.clip_grad_norm([nn.Parameter(np.ones(1))], bad)


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: optim.SGD(ps, lr=0.1),
                                  lambda ps: optim.Adam(ps, lr=0.05)], ids=["momentum", "sgd", "adam"])
def test_state_dict_resumes_exactly(make, tmp_path):
    def grads(step):
        rng = np.random.default_rng(step)
        # the second parameter sits out step 1, so per-parameter state matters
        return rng.standard_normal(3), (None if step == 1 else rng.standard_normal((2, 2)))

    a, b = nn.Parameter(np.ones(3)), nn.Parameter(np.zeros((2, 2)))
    opt = make([a, b])
    for step in range(3):
        a.grad, b.grad = grads(step)
        opt.step()
    np.savez(tmp_path / "opt.npz", **opt.state_dict())
    saved = a.data.copy(), b.data.copy()
    for step in range(3, 6):
        a.grad, b.grad = grads(step)
        opt.step()

    a2, b2 = nn.Parameter(saved[0]), nn.Parameter(saved[1])
    opt2 = make([a2, b2])
    with np.load(tmp_path / "opt.npz", allow_pickle=False) as f:
        assert opt2.load_state_dict(dict(f)) is opt2
    for step in range(3, 6):
        a2.grad, b2.grad = grads(step)
        opt2.step()
    assert np.array_equal(a.data, a2.data) and np.array_equal(b.data, b2.data)


def test_state_dict_is_a_copy():
    p = nn.Parameter(np.ones(2))
    opt = optim.Adam([p])
    p.grad = np.ones(2)
    opt.step()
    state = opt.state_dict()
    state["m.0"][...] = 99.0
    assert not np.any(opt.m[0] == 99.0)


def test_load_state_dict_errors():
    p = nn.Parameter(np.ones(2))
    opt = optim.Adam([p])
    state = opt.state_dict()
    with pytest.raises(KeyError, match=r"missing keys \['v\.0'\]"):
        opt.load_state_dict({k: v for k, v in state.items() if k != "v.0"})
    with pytest.raises(KeyError, match=r"unexpected keys \['velocity\.0'\]"):
        opt.load_state_dict({**state, "velocity.0": np.zeros(2)})
    with pytest.raises(ValueError, match=r"'m\.0' has shape \(3,\), expected \(2,\)"):
        opt.load_state_dict({**state, "m.0": np.zeros(3)})
    with pytest.raises(KeyError, match=r"unexpected keys \['velocity\.0'\]"):
        optim.SGD([p], lr=0.1).load_state_dict({"velocity.0": np.zeros(2)})   # no momentum, no velocity
    with pytest.raises(ValueError, match=r"'velocity\.0' has shape \(3,\)"):
        optim.SGD([p], lr=0.1, momentum=0.5).load_state_dict({"velocity.0": np.zeros(3)})


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1), lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: optim.Adam(ps, lr=0.1)])
def test_float32_stays_float32(make):
    p = nn.Parameter(np.ones(3, dtype=np.float32))
    opt = make([p])
    data_id = id(p.data)
    for g in grads_sequence(3, 3):
        p.grad = g.astype(np.float32)
        opt.step()
    assert p.dtype == np.float32 and p.data.dtype == np.float32 and id(p.data) == data_id
    for state in (getattr(opt, "m", []), getattr(opt, "v", []), getattr(opt, "velocity", [])):
        assert all(s is None or s.dtype == np.float32 for s in state)


def test_zero_grad():
    params = [nn.Parameter(np.ones(2)), nn.Parameter(np.ones(3))]
    for opt in (optim.SGD(params, lr=0.1), optim.Adam(params)):
        for p in params:
            p.grad = np.ones(p.shape)
        opt.zero_grad()
        assert all(p.grad is None for p in params)


@pytest.mark.parametrize("betas", [(1.0, 0.999), (0.9, 1.0), (-0.1, 0.9), (0.9,), 0.9, (0.9, 0.99, 0.9), ("a", "b")])
def test_bad_betas(betas):
    with pytest.raises(ValueError, match="betas"):
        optim.Adam([nn.Parameter(np.ones(2))], betas=betas)


def test_clip_grad_norm_skips_missing_gradients_and_keeps_float32():
    a, b = nn.Parameter(np.zeros(2, dtype=np.float32)), nn.Parameter(np.zeros(2))
    a.grad = np.array([30.0, 40.0], dtype=np.float32)
    total = optim.clip_grad_norm((p for p in [a, b]), max_norm=5.0)   # a generator is fine
    assert total == pytest.approx(50.0) and b.grad is None
    assert a.grad.dtype == np.float32
    np.testing.assert_allclose(a.grad, [3.0, 4.0], rtol=1e-6)
    with pytest.raises(ValueError, match="max_norm"):
        optim.clip_grad_norm([a], max_norm=0)
