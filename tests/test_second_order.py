"""Second derivatives: ``grad(..., create_graph=True)`` differentiated again, against finite differences.

The property tests are not written again: every differentiable row of ``op_table.py``
(the table that the first-order tests in ``test_ops_gradients.py`` read) is run with
``check_second_order``, so that a new operation with a row gets a second-order test too.

``check_second_order(fn, *arrays, seed)``: with a random cotangent ``v`` for the output
and random weights ``w_i`` for the inputs' gradients, the scalar
``s(x) = sum_i <d<fn(x), v>/dx_i, w_i>`` is built with ``create_graph=True`` and
differentiated (a Hessian-vector product).  The reference is the central difference
of ``s`` computed from first-order gradients (no graph of the backward), step
``EPS = 1e-6``.  Tolerances, float64: ``|autograd - numeric| <= ATOL + RTOL * |numeric|``
with ``ATOL = 1e-5`` and ``RTOL = 1e-3`` (``gradgradcheck``'s defaults, as torch's): the
difference of two gradients divided by 2e-6 loses about six of float64's sixteen digits.
The inputs keep the first-order tests' domains (away from kinks, poles and ties).
"""
import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import Tensor, nn
from tinygrad_rnn import functional as F
import tinygrad_rnn.tensor as engine

import strategies
from op_table import DIFFERENTIABLE, property_test

EPS, ATOL, RTOL = 1e-6, 1e-5, 1e-3
SECOND_ORDER_EXAMPLES = 20   # each example differentiates ~100 first-order gradients


def leaf(a):
    return Tensor(np.array(a, dtype=np.float64), requires_grad=True)


def projected_gradient(fn, ts, v, w, create_graph):
    """``sum_i <d<fn(ts), v>/dt_i, w_i>``, a scalar Tensor (a constant 0 when no gradient reaches an input)."""
    grads = tg.grad(fn(*ts), ts, grad_outputs=v, create_graph=create_graph, allow_unused=True)
    terms = [(g * wi).sum() for g, wi in zip(grads, w) if g is not None]
    return sum(terms[1:], terms[0]) if terms else Tensor(0.0)


def check_second_order(fn, *arrays, seed=0):
    """Autograd's gradient of the projected first-order gradient equals its central differences."""
    rng = np.random.default_rng(seed)
    xs = [leaf(a) for a in arrays]
    out = fn(*xs)
    assert out.requires_grad and out.dtype == np.float64
    v = rng.standard_normal(out.shape)
    w = [rng.standard_normal(np.shape(a)) for a in arrays]
    s = projected_gradient(fn, xs, v, w, create_graph=True)
    if s.requires_grad:
        analytic = [np.zeros(x.shape) if g is None else g.data for x, g in zip(xs, tg.grad(s, xs, allow_unused=True))]
    else:   # the first derivatives are constants
        analytic = [np.zeros(x.shape) for x in xs]
    for i, a in enumerate(arrays):
        numeric = np.zeros(np.shape(a))
        for j in np.ndindex(numeric.shape):
            values = []
            for step in (EPS, -EPS):
                moved = [np.array(b, dtype=np.float64) for b in arrays]
                moved[i][j] += step
                values.append(projected_gradient(fn, [leaf(b) for b in moved], v, w, create_graph=False).item())
            numeric[j] = (values[0] - values[1]) / (2 * EPS)
        assert analytic[i].shape == numeric.shape
        np.testing.assert_allclose(analytic[i], numeric, rtol=RTOL, atol=ATOL,
                                   err_msg=f"second derivative for input {i} (shape {numeric.shape})")


def second_order_check(row, arrays, args, seed):
    check_second_order(row.bound(args), *arrays, seed=seed)


@pytest.mark.parametrize("row", DIFFERENTIABLE, ids=[row.name for row in DIFFERENTIABLE])
def test_second_derivatives(row):
    """The row's domain and arguments, with second derivatives checked instead of first ones."""
    property_test(row, second_order_check, "test_second_derivatives", max_examples=SECOND_ORDER_EXAMPLES)()


def test_check_second_order_fails_on_a_wrong_second_derivative(monkeypatch):
    """A control: sin's backward right in value but constant on the graph path fails the check."""
    break_sin(monkeypatch)
    with pytest.raises(AssertionError, match="second derivative"):
        check_second_order(lambda t: t.sin(), np.array([0.3, -1.0]))


def break_sin(monkeypatch):
    """The table's sin entry given ``wrong_sin_backward``, and the method made from the entry again."""
    monkeypatch.setattr(engine._PRIMITIVES["sin"], "grads", ((wrong_sin_backward, ("a",)),))
    monkeypatch.setattr(Tensor, "sin", engine._from_table("sin")(Tensor.sin.__wrapped__))


def wrong_sin_backward(g, x, m=np):
    """cos(x) as a constant: right values, but its own derivative (-sin) is lost."""
    return g * (np.cos(x) if m is np else Tensor(np.cos(x.data)))


# ---------------------------------------------------------------- the functions themselves
def test_grad_returns_a_tuple_and_leaves_grad_alone():
    x, y = leaf([1.0, 2.0]), leaf(3.0)
    x.grad = np.array([5.0, 5.0])
    out = (x * y).sum()
    gx, gy = tg.grad(out, [x, y])
    assert isinstance(gx, Tensor) and not gx.requires_grad
    assert gx.data.tolist() == [3.0, 3.0] and gy.item() == 3.0
    assert x.grad.tolist() == [5.0, 5.0] and y.grad is None
    with pytest.raises(RuntimeError, match="freed"):     # retain_graph defaults to create_graph (False)
        tg.grad(out, x)


def test_grad_of_an_intermediate_and_several_outputs():
    x = leaf([1.0, -2.0])
    h = x * x
    a, b = h.sum(), (h * 3.0).sum()
    gh, gx = tg.grad([a, b], [h, x], grad_outputs=[np.array(1.0), np.array(2.0)])
    assert gh.data.tolist() == [7.0, 7.0]
    np.testing.assert_array_equal(gx.data, 7.0 * 2 * x.data)


def test_unused_inputs_raise_or_give_none():
    x, z = leaf([1.0]), leaf([2.0])
    out = (x * 2.0).sum()
    with pytest.raises(RuntimeError, match="do not depend on input 1.*allow_unused=True"):
        tg.grad(out, [x, z], retain_graph=True)
    gx, gz = tg.grad(out, [x, z], allow_unused=True)
    assert gx.data.tolist() == [2.0] and gz is None


def test_bad_arguments_are_named():
    x = leaf([1.0, 2.0])
    y = x * x
    with pytest.raises(RuntimeError, match="shape \\(2,\\); pass grad="):
        tg.grad(y, x)
    with pytest.raises(ValueError, match="grad has shape"):
        tg.grad(y, x, grad_outputs=np.ones(3))
    with pytest.raises(ValueError, match="1 grad_outputs for 2 outputs"):
        tg.grad([y, y], x, grad_outputs=[np.ones(2)])
    with pytest.raises(RuntimeError, match="input 0 .* does not require grad"):
        tg.grad(y.sum(), Tensor([1.0]))
    with pytest.raises(RuntimeError, match="output 0 .* does not require grad"):
        tg.grad(Tensor(1.0), x)
    with pytest.raises(TypeError, match="inputs must be a Tensor"):
        tg.grad(y.sum(), [x.data])
    with pytest.raises(ValueError, match="retain_graph=False cannot be honoured"):
        tg.grad(y.sum(), x, create_graph=True, retain_graph=False)


def test_create_graph_gives_a_differentiable_gradient_and_a_graph_kept():
    x = leaf([0.5, -1.5])
    y = (x ** 3).sum()
    gx, = tg.grad(y, x, create_graph=True)
    assert gx.requires_grad
    np.testing.assert_allclose(gx.data, 3 * x.data ** 2)
    hx, = tg.grad(gx.sum(), x)
    np.testing.assert_allclose(hx.data, 6 * x.data)
    gx2, = tg.grad(y, x)          # the forward graph was kept
    np.testing.assert_allclose(gx2.data, gx.data)


def test_grad_outputs_that_require_grad_are_part_of_the_graph():
    x, v = leaf([1.0, 2.0]), leaf([3.0, -1.0])
    gx, = tg.grad(x.exp(), x, grad_outputs=v, create_graph=True)   # v * exp(x)
    gv, = tg.grad(gx.sum(), v)
    np.testing.assert_allclose(gv.data, np.exp(x.data))


def test_backward_with_create_graph_fills_grad_with_arrays_equal_to_the_plain_backward():
    def loss(x, w):
        return F.tanh(x @ w).sum() + (w ** 2).sum() * x[0, 0]
    rng = np.random.default_rng(0)
    xa, wa = rng.standard_normal((2, 3)), rng.standard_normal((3, 4))
    plain = [leaf(xa), leaf(wa)]
    loss(*plain).backward()
    graph = [leaf(xa), leaf(wa)]
    out = loss(*graph)
    out.backward(create_graph=True)
    for p, g in zip(plain, graph):
        assert isinstance(g.grad, np.ndarray)
        np.testing.assert_allclose(g.grad, p.grad, rtol=1e-13, atol=1e-13)
    gx, = tg.grad(out, graph[0])    # the graph was kept
    np.testing.assert_allclose(gx.data, plain[0].grad, rtol=1e-13, atol=1e-13)
    with pytest.raises(ValueError, match="retain_graph=False"):
        out.backward(create_graph=True, retain_graph=False)


# ---------------------------------------------------------------- gradgradcheck
def test_gradgradcheck_passes_on_primitives_and_compositions():
    rng = np.random.default_rng(1)
    x, w = leaf(rng.standard_normal((2, 3))), leaf(rng.standard_normal((3, 2)))
    assert tg.gradgradcheck(lambda a, b: F.softmax(a @ b, axis=-1) * a.sum(), x, w)
    assert tg.gradgradcheck(lambda a: F.log_softmax(a.sin() ** 2, axis=0), x)
    assert tg.gradgradcheck(lambda a, b: a @ b, x, w)      # bilinear: the second derivatives w.r.t. one are 0


def test_gradgradcheck_catches_a_wrong_second_derivative_that_gradcheck_misses(monkeypatch):
    break_sin(monkeypatch)
    x = leaf([0.4, -1.1, 2.0])
    assert tg.gradcheck(lambda t: t.sin(), x)
    with pytest.raises(tg.GradcheckError, match=r"(?s)second derivatives: .*input 0 \(shape \(3,\)\): worst element "
                                                r"at index \(2,\)"):
        tg.gradgradcheck(lambda t: t.sin(), x)


def test_gradgradcheck_needs_an_input_that_requires_grad():
    with pytest.raises(ValueError, match="no input has requires_grad"):
        tg.gradgradcheck(lambda t: t * t, Tensor([1.0]))


# ---------------------------------------------------------------- compiled compositions and the unroll
def hvp_against_differences(loss_of, params, direction):
    """(autograd H @ d, central difference of the gradient along d) for the tensors ``params``."""
    grads = tg.grad(loss_of(), params, create_graph=True)
    along = sum(((g * d).sum() for g, d in zip(grads, direction)), Tensor(0.0))
    hvp = [h.data for h in tg.grad(along, params)]
    eps, saved = 1e-6, [p.data.copy() for p in params]

    def gradient_at(sign):
        for p, d, v in zip(params, direction, saved):
            engine._writable(p)[...] = v + sign * eps * d
        return [g.data for g in tg.grad(loss_of(), params)]
    plus, minus = gradient_at(1), gradient_at(-1)
    for p, v in zip(params, saved):
        engine._writable(p)[...] = v
    return hvp, [(a - b) / (2 * eps) for a, b in zip(plus, minus)]


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("cell_kind", ["RNNCell", "LSTMCell", "GRUCell"])
def test_hessian_vector_products_through_unrolled_cells(cell_kind, compiled):
    """The compiled unroll (one node for the sequence) and its cells are differentiated twice, through
    the parameters and the inputs, as the plain graph is."""
    rng = np.random.default_rng(3)
    cell = getattr(nn, cell_kind)(2, 3, rng=np.random.default_rng(0))
    xs = leaf(rng.standard_normal((2, 4, 2)))
    params = [p for _, p in cell.named_parameters()] + [xs]

    def loss_of():
        with strategies.compiled_or_expanded(compiled):
            hs, _ = nn.unroll(cell, xs, batch_first=True)
        return (hs * hs.sin()).sum()

    if compiled:   # the sequence is one node
        assert isinstance(nn.unroll(cell, xs, batch_first=True)[0]._parents[0]._op, tg.composites.CompositeOp)
    direction = [rng.standard_normal(p.shape) for p in params]
    hvp, numeric = hvp_against_differences(loss_of, params, direction)
    for (name, _), h, n in zip(list(cell.named_parameters()) + [("xs", None)], hvp, numeric):
        np.testing.assert_allclose(h, n, rtol=1e-4, atol=1e-6, err_msg=name)


def test_a_compiled_node_is_differentiated_twice_on_its_own_inputs():
    """A composite node's second derivative goes through its plain composition run on the node's inputs."""
    @tg.composite
    def cell(x, h, w):
        return F.tanh(x @ w + h) * h
    rng = np.random.default_rng(5)
    x, h, w = leaf(rng.standard_normal((2, 3))), leaf(rng.standard_normal((2, 3))), leaf(rng.standard_normal((3, 3)))
    cell(x, h, w)                      # the first call writes the program
    out = cell(x, h, w)
    assert isinstance(out._op, tg.composites.CompositeOp)
    assert tg.gradgradcheck(cell, x, h, w)
