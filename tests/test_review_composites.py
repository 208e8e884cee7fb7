"""Adversarial checks of compiled compositions and the compiled unroll.

Each test states a promise of ``composite`` / ``nn.unroll`` (values and gradients equal to the plain
composition bit for bit; guards that fall back to it when what the program was written for changes)
and tries to break it.  Gradients are also checked against float64 central differences.
"""
import contextlib

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import Tensor, composite, expanded, nn
from tinygrad_rnn import functional as F
from tinygrad_rnn.nn import Parameter
from tinygrad_rnn.nn.compiled_unroll import per_step

# a module-level array whose name is also an attribute name read by a composite below (``self.W``)
W = np.linspace(0.1, 2.0, 4000)
SCALE = 2.0
K = 2.0


def _weights(t):
    """A fixed, non-uniform projection to a scalar (so that every output element gets its own weight)."""
    return Tensor(W[:t.size].reshape(t.shape))


def _wsum(t):
    return (t * _weights(t)).sum()


def _grads(build, leaves):
    for t in leaves:
        t.grad = None
    build().backward()
    return [None if t.grad is None else t.grad.copy() for t in leaves]


def _assert_same(got, want):
    for i, (a, b) in enumerate(zip(got, want)):
        assert (a is None) == (b is None), f"gradient {i}: one is None"
        if a is not None:
            assert a.dtype == b.dtype and a.shape == b.shape
            assert np.array_equal(a, b), f"gradient {i}: differs by {np.abs(a - b).max()}"


def _rand(seed, *shape, requires_grad=True):
    return Tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=requires_grad)


# ---------------------------------------------------------------------- names read by a composite
class _NamedLikeGlobal(nn.Module):
    def __init__(self):
        self.W = Parameter(np.random.default_rng(0).standard_normal((3, 4)))

    @composite
    def forward(self, x):
        return F.tanh(x @ self.W)


def test_an_attribute_named_like_a_global_array_is_not_taken_for_that_global():
    # ``self.W`` puts "W" in the code's names; the module-level array W is not read by the function
    m = _NamedLikeGlobal()
    x = _rand(1, 2, 3)
    y = m(x)
    assert y._op == "forward"
    with expanded():
        want = m(x)
    assert np.array_equal(y.data, want.data)


# ---------------------------------------------------------------------- one tensor in two places
@composite
def _three_terms(a, b):
    return a * 0.1 + b * 0.7 + b * 0.3


def test_the_same_tensor_as_two_arguments_gives_the_plain_gradient_bit_for_bit():
    x = _rand(2, 200)
    _three_terms(x, x)
    got = _grads(lambda: _wsum(_three_terms(x, x)), [x])
    with expanded():
        want = _grads(lambda: _wsum(_three_terms(x, x)), [x])
    _assert_same(got, want)


class _ParamAlsoArgument(nn.Module):
    def __init__(self):
        self.W = Parameter(np.random.default_rng(3).standard_normal(200))

    @composite
    def forward(self, x, V):
        return self.W * 0.3 + V * 0.7 + self.W * 0.1 + self.W * x


def test_a_parameter_also_passed_as_an_argument_gives_the_plain_gradient_bit_for_bit():
    m = _ParamAlsoArgument()
    x = _rand(4, 200)
    m(x, m.W)
    got = _grads(lambda: _wsum(m(x, m.W)), [x, m.W])
    with expanded():
        want = _grads(lambda: _wsum(m(x, m.W)), [x, m.W])
    _assert_same(got, want)


def test_lstm_unroll_with_one_tensor_as_h0_and_c0_gives_the_plain_gradient_bit_for_bit():
    cell = nn.LSTMCell(3, 4, rng=2)
    xsd = np.random.default_rng(5).standard_normal((2, 6, 3))
    zd = np.random.default_rng(6).standard_normal((2, 4))
    results = []
    for ctx in (contextlib.nullcontext, per_step, expanded):
        xs, z = Tensor(xsd, requires_grad=True), Tensor(zd, requires_grad=True)
        leaves = [xs, z] + cell.parameters()

        def loss(ctx=ctx, xs=xs, z=z):
            with ctx():
                hs, (_, c) = nn.unroll(cell, xs, (z, z))
            return _wsum(hs) + _wsum(c) + _wsum(z) * 0.7
        results.append(_grads(loss, leaves))
    _assert_same(results[0], results[2])
    _assert_same(results[1], results[2])


# ---------------------------------------------------------------------- static arguments
@composite
def _divide(x, s):
    return x / s


def test_a_static_argument_of_minus_zero_is_not_taken_for_zero():
    x = Tensor(np.ones(2), requires_grad=True)
    with np.errstate(divide="ignore"):
        _divide(x, 0.0)
        _divide(x, 0.0)
        got = _divide(x, -0.0).data
    assert np.array_equal(got, [-np.inf, -np.inf])


def test_a_nan_static_argument_is_written_once():
    f = composite(lambda x, s: x * s, name="nan_scale")
    x = _rand(7, 3)
    for _ in range(3):
        y = f(x, float("nan"))
    assert np.isnan(y.data).all()
    assert len(f._programs) == 1


# ---------------------------------------------------------------------- guards that do not see a change
def _helper(x):
    return x * SCALE


@composite
def _through_helper(x):
    return _helper(x) + 1


def test_a_global_read_by_a_called_helper_is_guarded():
    global SCALE
    x = _rand(8, 3)
    _through_helper(x)
    old = SCALE
    try:
        SCALE = 3.0
        assert np.array_equal(_through_helper(x).data, (x.data * 3.0) + 1)
    finally:
        SCALE = old


@composite
def _inner(x):
    return x * K


@composite
def _outer(x):
    return _inner(x) + 1


def test_a_global_read_by_a_nested_composite_is_guarded():
    global K
    x = _rand(9, 3)
    _outer(x)
    old = K
    try:
        K = 5.0
        assert np.array_equal(_outer(x).data, x.data * 5.0 + 1)
    finally:
        K = old


class _Switch(nn.Module):
    def __init__(self):
        self.W = Parameter(np.random.default_rng(10).standard_normal((3, 3)))
        self._act = "tanh"
        self.cfg = {"act": "tanh"}
        self.layers = [Parameter(np.random.default_rng(11).standard_normal((3, 3)))]

    @composite
    def private(self, x):
        y = x @ self.W
        return F.tanh(y) if self._act == "tanh" else F.relu(y)

    @composite
    def by_dict(self, x):
        y = x @ self.W
        return F.tanh(y) if self.cfg["act"] == "tanh" else F.relu(y)

    @composite
    def stack(self, x):
        for V in self.layers:
            x = F.tanh(x @ V)
        return x


def _after_change(method, change):
    m = _Switch()
    x = _rand(12, 2, 3)
    getattr(m, method)(x)
    change(m)
    got = getattr(m, method)(x).data
    with expanded():
        want = getattr(m, method)(x).data
    return got, want


def test_a_private_module_attribute_read_by_a_composite_is_guarded():
    got, want = _after_change("private", lambda m: setattr(m, "_act", "relu"))
    assert np.array_equal(got, want)


def test_a_dict_attribute_changed_in_place_is_guarded():
    got, want = _after_change("by_dict", lambda m: m.cfg.update(act="relu"))
    assert np.array_equal(got, want)


def test_a_parameter_list_appended_to_is_guarded():
    extra = Parameter(np.random.default_rng(13).standard_normal((3, 3)))
    got, want = _after_change("stack", lambda m: m.layers.append(extra))
    assert np.array_equal(got, want)


@composite
def _branch_on_data(x):
    return x * 2 if x.data.max() < 1e3 else x * 3


def test_a_branch_on_data_is_refused_or_guarded():
    x = _rand(14, 3)
    try:
        _branch_on_data(x)
    except tg.TraceError:
        return                      # refused: that is a right answer too
    big = Tensor(np.full(3, 1e4), requires_grad=True)
    assert np.array_equal(_branch_on_data(big).data, np.full(3, 3e4))


# ---------------------------------------------------------------------- what holds (checked against oracles)
@pytest.mark.parametrize("cls", [nn.RNNCell, nn.GRUCell, nn.LSTMCell])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("steps", [1, 4])
@pytest.mark.parametrize("h0", [None, False, True])
def test_compiled_unroll_equals_per_step_and_expanded_bit_for_bit(cls, batch_first, steps, h0):
    cell = cls(3, 4, rng=1)
    rng = np.random.default_rng(15)
    xsd = rng.standard_normal((2, steps, 3) if batch_first else (steps, 2, 3))
    hd, cd = rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    results, ops = [], []
    for ctx in (contextlib.nullcontext, per_step, expanded):
        xs = Tensor(xsd, requires_grad=True)
        leaves = [xs]
        state = None
        if h0 is not None:
            h = Tensor(hd, requires_grad=h0)
            state = [h, Tensor(cd, requires_grad=h0)] if cls is nn.LSTMCell else h
            leaves += state if isinstance(state, list) else [state]

        def loss(ctx=ctx, xs=xs, state=state):
            with ctx():
                hs, last = nn.unroll(cell, xs, state, batch_first=batch_first)
            ops.append(hs._op)
            first = hs[:, 0] if batch_first else hs[0]
            if isinstance(last, (tuple, list)):
                return _wsum(hs) + _wsum(last[0]) * 0.3 + _wsum(last[1]) + _wsum(first)
            return _wsum(hs) + _wsum(last) * 0.3 + _wsum(first)
        results.append(_grads(loss, leaves + cell.parameters()))
    assert ops[0].startswith("unroll(") and ops[1] == ops[2] == "stack"
    _assert_same(results[0], results[1])
    _assert_same(results[0], results[2])


def test_compiled_unroll_gradients_match_central_differences():
    cell = nn.LSTMCell(2, 3, rng=4)
    xs = _rand(16, 2, 5, 2)
    h, c = _rand(17, 2, 3), _rand(18, 2, 3)

    def f(xs, h, c):
        hs, (_, c_last) = nn.unroll(cell, xs, (h, c))
        return (hs[:, 2] * hs[:, 2]).sum() + c_last.sum()
    # float64, eps 1e-6: central differences are good to about 1e-9 here
    assert tg.gradcheck(f, xs, h, c, params=dict(cell.named_parameters()), atol=1e-7, rtol=1e-5)


def test_compiled_unroll_backward_twice_with_retain_graph_doubles_exactly():
    cell = nn.GRUCell(3, 4, rng=1)
    xs = _rand(19, 2, 5, 3)
    hs, last = nn.unroll(cell, xs)
    loss = (hs * hs).sum() + last.sum()
    loss.backward(retain_graph=True)
    once = [cell.Wx.grad.copy(), xs.grad.copy()]
    loss.backward()
    assert np.array_equal(cell.Wx.grad, 2 * once[0]) and np.array_equal(xs.grad, 2 * once[1])


def test_hessian_vector_product_through_a_compiled_unroll_matches_central_differences():
    cell = nn.RNNCell(3, 2, rng=4)
    xd = np.random.default_rng(20).standard_normal((1, 3, 3))
    hs, _ = nn.unroll(cell, Tensor(xd))
    assert hs._op.startswith("unroll(")
    (gW,) = tg.grad((hs ** 2).sum(), [cell.Wh], create_graph=True)
    v = np.random.default_rng(21).standard_normal(gW.shape)
    (hv,) = tg.grad((gW * Tensor(v)).sum(), [cell.Wh])
    w0 = cell.Wh.data.copy()

    def grad_at(w):
        cell.Wh.data = w
        cell.zero_grad()
        hs, _ = nn.unroll(cell, Tensor(xd))
        (hs ** 2).sum().backward()
        return cell.Wh.grad.copy()
    eps = 1e-6
    fd = (grad_at(w0 + eps * v) - grad_at(w0 - eps * v)) / (2 * eps)
    cell.Wh.data = w0
    np.testing.assert_allclose(hv.data, fd, atol=1e-8)   # differences of gradients: error ~1e-10
