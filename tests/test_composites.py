"""Compiled compositions (``tinygrad_rnn.composite``) and the compiled unroll equal the plain composition
bit for bit, in values and gradients, and fall back to it whenever what they were written for changes."""
import weakref

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_rnn as tg
from tinygrad_rnn import Tensor, TraceError, composite, expanded, nn
from tinygrad_rnn import functional as F
from tinygrad_rnn.nn import Parameter
from tinygrad_rnn.nn.compiled_unroll import per_step

import strategies as S
from test_tracing import _composition, composition_inputs, op_lists


def _same(a, b, what):
    assert (a is None) == (b is None), what
    if a is not None:
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape, what
        assert np.array_equal(a, b, equal_nan=True), f"{what}: not bit for bit equal"


def _run(fn, inputs, leaves):
    for t in leaves:
        t.grad = None
    out = fn(*inputs)
    outs = out if isinstance(out, tuple) else (out,)
    outs[0].backward()
    return [o.data.copy() for o in outs] + [t.grad for t in leaves]


# ---------------------------------------------------------------------- random compositions
@settings(deadline=None)
@given(ops=op_lists, dtype=st.sampled_from([np.float64, np.float32]), data=st.data())
def test_random_compositions_compiled_equal_the_plain_ones_bit_for_bit(ops, dtype, data):
    fn, params = _composition(ops, dtype)
    x, y, k, lab, prob = data.draw(composition_inputs(dtype))
    inputs = [x, Tensor(y), k, Tensor(lab), Tensor(prob)]      # Tensors: the compiled call's arguments
    leaves = [x] + params
    with np.errstate(all="ignore"):
        with expanded():
            want = _run(fn, inputs, leaves)
        compiled = composite(fn, name="random")
        for call in range(2):                                   # the call that writes it, and one that reuses it
            got = _run(compiled, inputs, leaves)
            for n, (g, w) in enumerate(zip(got, want)):
                _same(g, w, f"call {call}, result {n} of {[op for op, _, _ in ops]}")


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "relu", "softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(deadline=None, max_examples=30)
@given(data=st.data())
def test_library_elementwise_composites_equal_the_plain_ones(name, dtype, data):
    x = Tensor(data.draw(S.any_array(S.floats(-30.0, 30.0))).astype(dtype), requires_grad=True)
    fn = getattr(F, name)
    seed = data.draw(st.integers(0, 2**16))
    weights = np.random.default_rng(seed).standard_normal(x.shape).astype(dtype)
    if name in ("softmax", "log_softmax") and x.ndim == 0:
        return

    def loss(t):
        return (fn(t) * Tensor(weights)).sum()
    with expanded():
        want = _run(loss, [x], [x])
    for _ in range(2):
        _same(_run(loss, [x], [x])[1], want[1], name)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_losses_compiled_equal_the_plain_ones(reduction, dtype):
    rng = np.random.default_rng(3)
    logits = Tensor(rng.standard_normal((4, 5)).astype(dtype), requires_grad=True)
    labels = rng.integers(0, 5, 4)
    probs = rng.dirichlet(np.ones(5), 4).astype(dtype)
    target = Tensor(rng.standard_normal((4, 5)).astype(dtype))
    for loss in (lambda z: F.cross_entropy(z, labels, reduction=reduction).sum(),
                 lambda z: F.cross_entropy(z, probs, reduction=reduction).sum(),
                 lambda z: F.mse_loss(z, target, reduction=reduction).sum()):
        with expanded():
            want = _run(loss, [logits], [logits])
        for _ in range(2):
            got = _run(loss, [logits], [logits])
            _same(got[0], want[0], "loss")
            _same(got[1], want[1], "gradient")


def test_a_library_composite_is_one_node_and_expanded_is_many():
    x = Tensor(np.linspace(-2, 2, 6), requires_grad=True)
    y = F.tanh(x)
    assert y._op == "tanh" and y._parents == (x,)
    with expanded():
        z = F.tanh(x)
    assert z._op != "tanh" and z._parents[0] is not x      # built from primitives: several nodes


# ---------------------------------------------------------------------- cells and the compiled unroll
CELLS = {"rnn": lambda d: nn.RNNCell(3, 4, rng=0, dtype=d), "relu": lambda d: nn.RNNCell(3, 4, "relu", rng=0, dtype=d),
         "lstm": lambda d: nn.LSTMCell(3, 4, rng=0, dtype=d), "gru": lambda d: nn.GRUCell(3, 4, rng=0, dtype=d)}


def _unrolled(cell, xs0, state0, use_last):
    xs = Tensor(xs0, requires_grad=True)
    inner = xs * 1.0                          # xs reaches the unroll through a graph of its own
    state = None if state0 is None else (
        tuple(Tensor(s, requires_grad=True) for s in state0) if isinstance(state0, tuple)
        else Tensor(state0, requires_grad=True))
    hs, last = nn.unroll(cell, inner, state)
    loss = (hs * hs).sum()
    if use_last:                              # the last state used after the unroll, and xs used again
        part = last[-1] if isinstance(last, tuple) else last
        loss = loss + (part * 3.0).sum() + (inner * 0.5).sum()
    for p in cell.parameters():
        p.grad = None
    loss.backward()
    states = () if state is None else state if isinstance(state, tuple) else (state,)
    return [hs.data, xs.grad] + [p.grad for p in cell.parameters()] + [s.grad for s in states]


@pytest.mark.parametrize("kind", sorted(CELLS))
@settings(deadline=None, max_examples=20)
@given(dtype=st.sampled_from([np.float64, np.float32]), batch=st.integers(1, 3), steps=st.integers(1, 6),
       given_state=st.booleans(), use_last=st.booleans(), seed=st.integers(0, 2**16))
def test_compiled_unroll_equals_step_by_step_and_expanded(kind, dtype, batch, steps, given_state, use_last, seed):
    cell = CELLS[kind](dtype)
    rng = np.random.default_rng(seed)
    xs0 = rng.standard_normal((batch, steps, 3)).astype(dtype)
    state0 = None
    if given_state:
        h = rng.standard_normal((batch, 4)).astype(dtype)
        state0 = (h, rng.standard_normal((batch, 4)).astype(dtype)) if kind == "lstm" else h
    got = _unrolled(cell, xs0, state0, use_last)
    with per_step():
        by_step = _unrolled(cell, xs0, state0, use_last)
    with expanded():
        want = _unrolled(cell, xs0, state0, use_last)
    for n, (g, b, w) in enumerate(zip(got, by_step, want)):
        _same(g, w, f"{kind} result {n} (compiled unroll)")
        _same(b, w, f"{kind} result {n} (a node per step)")


def test_the_compiled_unroll_is_one_node_and_time_major_works():
    cell = nn.LSTMCell(3, 4, rng=1)
    xs = Tensor(np.random.default_rng(0).standard_normal((5, 2, 3)), requires_grad=True)
    hs, (h, c) = nn.unroll(cell, xs, batch_first=False)
    assert hs.shape == (5, 2, 4) and hs._parents[0]._op == "unroll(lstm_cell)"
    assert h._parents[0] is hs._parents[0]
    (hs.sum() + c.sum()).backward()
    got = xs.grad.copy()
    xs.grad = None
    with per_step():
        hs2, (_, c2) = nn.unroll(cell, xs, batch_first=False)
    (hs2.sum() + c2.sum()).backward()
    _same(got, xs.grad, "time-major xs gradient")


def test_a_decorated_custom_cell_unrolls_compiled_and_equals_the_undecorated_one():
    rng = np.random.default_rng(5)
    Wx, Wh = Parameter(rng.standard_normal((3, 4))), Parameter(rng.standard_normal((4, 4)))

    def cell(x, h):
        return F.tanh(x @ Wx + h @ Wh) * 0.5 + h * 0.5
    xs0 = rng.standard_normal((2, 7, 3))

    def run(c):
        Wx.grad = Wh.grad = None
        xs = Tensor(xs0, requires_grad=True)
        hs, _ = nn.unroll(c, xs, Tensor(np.zeros((2, 4))))
        (hs * hs).sum().backward()
        return [hs.data, xs.grad, Wx.grad, Wh.grad], hs
    want, _ = run(cell)
    got, hs = run(composite(cell))
    for n, (g, w) in enumerate(zip(got, want)):
        _same(g, w, f"result {n}")


# ---------------------------------------------------------------------- guards and refusals
def test_shape_dtype_and_requires_grad_each_get_a_program_of_their_own():
    @composite
    def f(x):
        return (x * x).sum()
    for shape, dtype, rg in [((3,), np.float64, True), ((3,), np.float64, True), ((4,), np.float64, True),
                             ((4,), np.float32, True), ((4,), np.float32, False)]:
        x = Tensor(np.arange(np.prod(shape), dtype=dtype).reshape(shape), requires_grad=rg)
        out = f(x)
        assert out.dtype == dtype and out.requires_grad == rg
        if rg:
            out.backward()
            _same(x.grad, 2 * x.data, f"gradient for {shape} {dtype}")
    assert len(f._programs) == 4


def test_a_replaced_parameter_is_read_and_differentiated():
    cell = nn.RNNCell(2, 3, rng=0)
    x = Tensor(np.ones((1, 2)))
    cell(x).sum().backward()
    old = cell.Wx
    cell.Wx = Parameter(old.data * 2.0)
    out = cell(x)
    out.sum().backward()
    assert cell.Wx.grad is not None
    with expanded():
        want = cell(x)
    _same(out.data, want.data, "output after the parameter was replaced")


def test_a_changed_module_attribute_is_seen():
    cell = nn.RNNCell(2, 3, rng=0)
    cell.b.data[...] = -5.0
    x = Tensor(np.ones((1, 2)))
    assert (cell(x).data < 0).all()               # tanh
    cell.nonlinearity = "relu"
    assert (cell(x).data == 0).all()              # relu of a negative pre-activation


def test_a_rebound_global_or_closure_variable_is_seen():
    scale = [2.0]

    def make():
        factor = scale[0]

        @composite
        def f(x):
            return x * factor
        return f
    f = make()
    x = Tensor(np.ones(2))
    _same(f(x).data, np.full(2, 2.0), "first")
    f.fn.__closure__[0].cell_contents = 5.0        # rebinding the closure variable
    _same(f(x).data, np.full(2, 5.0), "after the closure variable changed")


def test_a_branch_through_decide_that_changes_runs_plainly():
    x = Tensor(np.array([[1.0, 2.0, 3.0]]), requires_grad=True)
    F.softmax(x).sum().backward()                  # written for the usual branch
    y = Tensor(np.array([[np.inf, 2.0, 3.0]]), requires_grad=True)
    out = F.softmax(y)
    with expanded():
        want = F.softmax(y)
    _same(out.data, want.data, "softmax with an infinite logit")


def test_reading_data_inside_a_composite_is_refused():
    @composite
    def f(x):
        return x * float(np.abs(x.data).max())     # a value taken around the Tensor operations
    with pytest.raises(TraceError, match=r"reads \.data|does not reproduce"):
        f(Tensor(np.array([1.0, -3.0]), requires_grad=True))


def test_a_numpy_array_from_outside_changed_in_place_gives_the_new_numbers():
    mask = np.array([1.0, 0.0])

    @composite
    def f(x):
        return x * mask
    x = Tensor(np.ones(2), requires_grad=True)
    _same(f(x).data, np.array([1.0, 0.0]), "first")
    mask[1] = 5.0                                 # in place: the program is written again
    _same(f(x).data, np.array([1.0, 5.0]), "after the array changed")


def test_no_grad_gives_values_and_composites_nest():
    @composite
    def inner(x):
        return F.tanh(x) * 2.0

    @composite
    def outer(x):
        return inner(x) + F.sigmoid(x)
    x = Tensor(np.linspace(-1, 1, 4), requires_grad=True)
    with tg.no_grad():
        v = outer(x)
    assert not v.requires_grad
    out = outer(x)
    out.sum().backward()
    got = x.grad.copy()
    x.grad = None
    with expanded():
        want = outer(x)
    want.sum().backward()
    _same(v.data, want.data, "no_grad value")
    _same(out.data, want.data, "value")
    _same(got, x.grad, "gradient")


def test_a_node_keeps_only_what_its_backward_reads():
    @composite
    def f(x):
        return ((x * 3.0) + 1.0).exp()             # the backward reads exp's result and nothing else
    x = Tensor(np.ones(5), requires_grad=True)
    y = f(x)
    program = next(iter(f._programs.values()))
    _, saved = program.compiled.forward(x.data)
    assert len(saved) == 1 and np.array_equal(saved[0], y.data)
    ref = weakref.ref(y)
    y.backward(np.ones(5))
    del y
    assert ref() is None


def test_a_module_array_attribute_changed_in_place_gives_the_new_numbers():
    class Scaled(nn.Module):
        def __init__(self):
            self.W = Parameter(np.ones((2, 2)))
            self.scale = np.array([1.0, 2.0])

        @composite
        def forward(self, x):
            return (x @ self.W) * self.scale
    m = Scaled()
    x = Tensor(np.ones((1, 2)))
    _same(m(x).data, np.array([[2.0, 4.0]]), "before")
    m.scale[1] = 5.0                              # in place: no attribute is set
    _same(m(x).data, np.array([[2.0, 10.0]]), "after the array changed in place")


def test_a_compiled_unroll_kept_with_retain_graph_gives_the_same_gradients_twice():
    cell = nn.GRUCell(3, 4, rng=2)
    xs = Tensor(np.random.default_rng(1).standard_normal((2, 6, 3)), requires_grad=True)
    hs, _ = nn.unroll(cell, xs)
    loss = (hs * hs).sum()
    loss.backward(retain_graph=True)
    first = [xs.grad.copy()] + [p.grad.copy() for p in cell.parameters()]
    loss.backward()
    for a, b in zip(first, [xs.grad] + [p.grad for p in cell.parameters()]):
        _same(b, a * 2, "the second backward adds the same gradients again")


def test_a_module_is_freed_after_its_compiled_step_ran():
    import gc
    cell = nn.LSTMCell(3, 4, rng=0)
    hs, last = nn.unroll(cell, Tensor(np.ones((2, 3, 3))))
    (hs * hs).sum().backward()
    refs = [weakref.ref(cell)] + [weakref.ref(p) for p in cell.parameters()]
    del cell, hs, last                            # the graph (which holds the cell) goes too
    gc.collect()
    # the programs are kept per module, weakly, and go with it: nothing holds its weights any more
    assert [r() for r in refs] == [None] * len(refs)
    assert len(nn.LSTMCell.step._by_owner) == 0


def test_modules_made_and_freed_in_turn_each_run_their_own_weights():
    import gc
    from tinygrad_rnn.nn.cells import RNNCell
    xs = np.linspace(-1, 1, 18).reshape(2, 3, 3)
    gc.collect()
    alive = len(RNNCell.step._by_owner)     # cells that other tests keep
    for seed in range(6):          # a freed module's id is often reused by the next one
        cell = nn.RNNCell(3, 4, rng=seed)
        hs, _ = nn.unroll(cell, Tensor(xs))
        with expanded():
            want, _ = nn.unroll(cell, Tensor(xs))
        np.testing.assert_array_equal(hs.data, want.data)
        del cell, hs, want
        gc.collect()
    # what was written for modules that are gone went with them
    assert len(RNNCell.step._by_owner) == alive


def test_modules_that_compare_equal_still_run_their_own_weights():
    class Alike(nn.RNNCell):
        def __eq__(self, other):
            return True

        def __hash__(self):
            return 0
    xs = np.linspace(-1, 1, 18).reshape(2, 3, 3)
    cells = [Alike(3, 4, rng=seed) for seed in range(3)]
    for cell in cells + cells:
        hs, _ = nn.unroll(cell, Tensor(xs))
        with expanded():
            want, _ = nn.unroll(cell, Tensor(xs))
        np.testing.assert_array_equal(hs.data, want.data)


def test_an_input_the_outputs_do_not_depend_on_gets_no_gradient():
    @composite
    def f(x, y):
        return x * 2.0                            # y is an input, but nothing flows to it
    x, y = Tensor(np.ones(3), requires_grad=True), Tensor(np.ones(3), requires_grad=True)
    for _ in range(2):                            # the call that writes it, and one that reuses it
        x.grad = y.grad = None
        f(x, y).sum().backward()
        _same(x.grad, np.full(3, 2.0), "x")
        assert y.grad is None


def test_a_program_written_on_an_unusual_first_call_is_written_again_once_ordinary_calls_keep_missing_it():
    """A first call whose values take another branch (NaN logits) writes the program for that branch;
    the ordinary calls after it fail its guard and run plainly (the right numbers), and after a few such
    misses the program is written again from an ordinary call, which then runs compiled."""
    labels = np.array([0, 6])
    first = Tensor(np.full((2, 7), np.nan), requires_grad=True)       # a shape no other test uses
    assert np.isnan(F.cross_entropy(first, labels).item())
    ops = []
    for i in range(6):
        x = Tensor(np.linspace(-2.0, 2.0, 14).reshape(2, 7) + i, requires_grad=True)
        loss = F.cross_entropy(x, labels)
        ops.append(loss._op)
        loss.backward()
        with expanded():
            y = Tensor(x.data, requires_grad=True)
            plain = F.cross_entropy(y, labels)
            plain.backward()
        assert loss.item() == plain.item() and np.array_equal(x.grad, y.grad)    # bit for bit, either way
    assert ops[0] != "cross_entropy" and ops[-1] == "cross_entropy", ops
