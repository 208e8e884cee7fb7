"""SGD, SGD with momentum, Adam and clip_grad_norm against the formulas written out by hand."""
import math

import numpy as np
import pytest

from tinygrad_rnn import Tensor, nn, optim


def _grads(steps, shape, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for _ in range(steps)]


def test_sgd_is_p_minus_lr_g():
    p = nn.Parameter(np.array([1.0, -2.0, 3.0]))
    opt = optim.SGD([p], lr=0.1)
    expected = p.data.copy()
    for g in _grads(4, 3):
        p.grad = g.copy()
        opt.step()
        expected = expected - 0.1 * g
        np.testing.assert_allclose(p.data, expected, rtol=0, atol=1e-15)


def test_sgd_momentum_keeps_a_velocity():
    p = nn.Parameter(np.zeros((2, 2)))
    opt = optim.SGD([p], lr=0.05, momentum=0.9)
    expected, v = p.data.copy(), None
    for g in _grads(5, (2, 2), seed=1):
        p.grad = g.copy()
        opt.step()
        v = g if v is None else 0.9 * v + g      # the first step's velocity is the gradient itself
        expected = expected - 0.05 * v
        np.testing.assert_allclose(p.data, expected, rtol=0, atol=1e-14)


def test_adam_matches_the_formulas():
    lr, b1, b2, eps = 0.01, 0.8, 0.95, 1e-6
    p = nn.Parameter(np.array([0.5, -1.0, 2.0, 0.0]))
    opt = optim.Adam([p], lr=lr, betas=(b1, b2), eps=eps)
    x, m, v = p.data.copy(), np.zeros(4), np.zeros(4)
    for t, g in enumerate(_grads(6, 4, seed=2), start=1):
        p.grad = g.copy()
        opt.step()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        x = x - lr * m_hat / (np.sqrt(v_hat) + eps)
        np.testing.assert_allclose(p.data, x, rtol=0, atol=1e-14)
    # the first step moves every coordinate with a non-zero gradient by about lr
    q = nn.Parameter(np.zeros(3))
    q.grad = np.array([1e-3, -5.0, 100.0])
    optim.Adam([q], lr=0.1).step()
    np.testing.assert_allclose(q.data, [-0.1, 0.1, -0.1], rtol=1e-4)


def test_adam_counts_steps_per_parameter_when_one_has_no_gradient():
    a, b = nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(2))
    opt = optim.Adam([a, b], lr=0.1)
    a.grad = np.ones(2)
    opt.step()                                   # b has no gradient: untouched, its step count not advanced
    assert (b.data == 0).all()
    a.grad, b.grad = np.ones(2), np.full(2, 3.0)
    opt.step()
    # b's first own step: bias correction of step 1, so it moves by lr exactly (up to eps)
    np.testing.assert_allclose(b.data, [-0.1, -0.1], rtol=1e-7)


def test_parameters_without_gradient_are_skipped():
    a, b = nn.Parameter(np.ones(3)), nn.Parameter(np.ones(3))
    for opt in (optim.SGD([a, b], lr=0.5), optim.SGD([a, b], lr=0.5, momentum=0.5), optim.Adam([a, b])):
        a.grad, b.grad = np.ones(3), None
        before = b.data.copy()
        opt.step()
        np.testing.assert_array_equal(b.data, before)
        assert b.grad is None
        a.data[...] = 1.0


def test_shared_parameters_are_updated_once():
    p = nn.Parameter(np.zeros(2))
    opt = optim.SGD([p, p], lr=1.0)
    p.grad = np.ones(2)
    opt.step()
    np.testing.assert_array_equal(p.data, [-1.0, -1.0])


def test_zero_grad():
    params = [nn.Parameter(np.ones(2)), nn.Parameter(np.ones(3))]
    for opt in (optim.SGD(params, lr=0.1), optim.Adam(params)):
        for p in params:
            p.grad = np.ones(p.shape)
        opt.zero_grad()
        assert all(p.grad is None for p in params)


def test_a_real_loss_goes_down():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((20, 3)), rng.standard_normal((20, 1)) + 1.0
    for make in (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.5), lambda ps: optim.Adam(ps, lr=0.05)):
        lin = nn.Linear(3, 1, rng=1)
        opt = make(lin.parameters())
        losses = []
        for _ in range(30):
            loss = ((lin(x) - y) * (lin(x) - y)).sum() * (1 / 20)
            losses.append(float(loss.data))
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1), lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: optim.Adam(ps, lr=0.1)])
def test_float32_stays_float32(make):
    p = nn.Parameter(np.ones(3, dtype=np.float32))
    opt = make([p])
    data_id = id(p.data)
    for g in _grads(3, 3):
        p.grad = g.astype(np.float32)
        opt.step()
    assert p.dtype == np.float32 and p.data.dtype == np.float32 and id(p.data) == data_id
    for state in (getattr(opt, "m", []), getattr(opt, "v", []), getattr(opt, "velocity", [])):
        assert all(s is None or s.dtype == np.float32 for s in state)


def test_updates_are_in_place():
    p = nn.Parameter(np.ones(3))
    view = p.data
    opt = optim.Adam([p], lr=0.1)
    p.grad = np.ones(3)
    opt.step()
    assert view is p.data and (view < 1).all()


@pytest.mark.parametrize("lr", [0, -0.1, float("nan"), float("inf"), True, "0.1", None])
def test_bad_learning_rates(lr):
    p = nn.Parameter(np.ones(2))
    with pytest.raises(ValueError, match="lr"):
        optim.SGD([p], lr=lr)
    with pytest.raises(ValueError, match="lr"):
        optim.Adam([p], lr=lr)


def test_numpy_scalar_learning_rates_are_fine():
    p = nn.Parameter(np.ones(2))
    optim.SGD([p], lr=np.float32(0.1))
    optim.Adam([p], lr=np.float64(0.1))


@pytest.mark.parametrize("betas", [(1.0, 0.999), (0.9, 1.0), (-0.1, 0.9), (0.9,), 0.9, (0.9, 0.99, 0.9), ("a", "b")])
def test_bad_betas(betas):
    with pytest.raises(ValueError, match="betas"):
        optim.Adam([nn.Parameter(np.ones(2))], betas=betas)


def test_other_bad_arguments():
    p = nn.Parameter(np.ones(2))
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="empty"):
        optim.Adam(iter([]))
    with pytest.raises(ValueError, match="momentum"):
        optim.SGD([p], lr=0.1, momentum=-0.5)
    with pytest.raises(ValueError, match="eps"):
        optim.Adam([p], eps=0)
    with pytest.raises(TypeError, match="Tensors"):
        optim.SGD([np.ones(2)], lr=0.1)
    with pytest.raises(ValueError, match="does not require grad"):
        optim.Adam([Tensor(np.ones(2))])


def test_clip_grad_norm_scales_to_max_norm_and_returns_the_norm_before():
    a, b = nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros((2, 1)))
    a.grad, b.grad = np.array([3.0, 0.0]), np.array([[0.0], [4.0]])   # joint norm 5
    total = optim.clip_grad_norm([a, b], max_norm=1.0)
    assert isinstance(total, float) and total == 5.0
    scale = 1.0 / (5.0 + 1e-6)
    np.testing.assert_allclose(a.grad, [3 * scale, 0], rtol=1e-15)
    np.testing.assert_allclose(b.grad, [[0], [4 * scale]], rtol=1e-15)
    new_norm = math.sqrt((a.grad ** 2).sum() + (b.grad ** 2).sum())
    assert new_norm <= 1.0 and new_norm == pytest.approx(1.0, abs=1e-6)


def test_clip_grad_norm_does_nothing_below_the_threshold():
    a = nn.Parameter(np.zeros(3))
    a.grad = np.array([0.1, -0.2, 0.2])                                # norm 0.3
    before = a.grad.copy()
    assert optim.clip_grad_norm([a], max_norm=1.0) == pytest.approx(0.3, rel=1e-15)
    np.testing.assert_array_equal(a.grad, before)


def test_clip_grad_norm_skips_missing_gradients_and_keeps_float32():
    a, b = nn.Parameter(np.zeros(2, dtype=np.float32)), nn.Parameter(np.zeros(2))
    a.grad = np.array([30.0, 40.0], dtype=np.float32)
    total = optim.clip_grad_norm((p for p in [a, b]), max_norm=5.0)   # a generator is fine
    assert total == pytest.approx(50.0) and b.grad is None
    assert a.grad.dtype == np.float32
    np.testing.assert_allclose(a.grad, [3.0, 4.0], rtol=1e-6)
    with pytest.raises(ValueError, match="max_norm"):
        optim.clip_grad_norm([a], max_norm=0)
