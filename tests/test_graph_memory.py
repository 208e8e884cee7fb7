"""Deep graphs, freeing the graph after backward, memory, retain_graph, no_grad and detach.

Memory is measured with tracemalloc (Python and numpy allocations).  Where a test
checks that something is freed, the garbage collector is switched off: reference
counting alone must free the nodes, because the graph has no reference cycles.
"""
import gc
import sys
import tracemalloc
import weakref

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import Tensor

STEPS = 100_000


class gc_off:
    def __enter__(self):
        self.was = gc.isenabled()
        gc.collect()
        gc.disable()

    def __exit__(self, *exc):
        if self.was:
            gc.enable()


def test_a_100000_step_chain_differentiates_without_recursion():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = x
    for i in range(STEPS):                 # 100,000 operations, each on the result of the one before
        y = y * 0.9999 if i % 2 else y + 0.0001
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)           # backward must not recurse, not even a little per node
    try:
        y.sum().backward()
    finally:
        sys.setrecursionlimit(limit)
    np.testing.assert_allclose(x.grad, [0.9999 ** (STEPS // 2)] * 2, rtol=1e-9)


def test_a_long_recurrence_over_a_sliced_sequence():
    """h_t = h_{t-1} * w + xs[t]: 20,000 slices of one input (depth 60,000), each step's gradient
    scattered back into one buffer, and 20,000 contributions accumulated into a 0-d weight."""
    steps = 20_000
    rng = np.random.default_rng(0)
    xs = Tensor(rng.standard_normal(steps), requires_grad=True)
    w = Tensor(0.5, requires_grad=True)
    h = Tensor(0.0)
    for t in range(steps):
        h = h * w + xs[t]
    h.backward()
    # dh_T/dxs[t] = w ** (T - 1 - t); dh_T/dw = sum_t h_{t-1} w^(T-1-t), from the same recurrence in numpy
    powers = 0.5 ** np.arange(steps - 1, -1, -1, dtype=np.float64)
    np.testing.assert_allclose(xs.grad, powers, rtol=1e-12, atol=0)
    hs = np.zeros(steps + 1)
    for t in range(steps):
        hs[t + 1] = hs[t] * 0.5 + xs.data[t]
    np.testing.assert_allclose(w.grad, (hs[:-1] * powers).sum(), rtol=1e-10)


def build_chain(x, steps):
    y = x
    for _ in range(steps):
        y = (y * 1.0001).tanh() + y * 0.5
    return y.sum()


def test_memory_returns_to_its_starting_level_after_backward():
    x = Tensor(np.linspace(-1, 1, 2000), requires_grad=True)     # 16 KB per intermediate array
    build_chain(x, 1).backward()       # tanh's program is written once, before: memory kept on purpose
    x.grad = None
    with gc_off():
        tracemalloc.start()
        try:
            start, _ = tracemalloc.get_traced_memory()
            loss = build_chain(x, 200)                    # about 1,800 intermediate arrays: ~30 MB held
            held, _ = tracemalloc.get_traced_memory()
            loss.backward()
            after_backward, peak = tracemalloc.get_traced_memory()   # the output is still alive here
            del loss
            end, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    graph = held - start
    assert graph > 10_000_000, f"the graph should hold megabytes while alive, held {graph} bytes"
    grad_bytes = x.grad.nbytes
    # what stays: x.grad and small bookkeeping, not the graph
    assert after_backward - start < grad_bytes + 0.02 * graph, (start, held, after_backward, peak)
    assert end - start < grad_bytes + 0.02 * graph, (start, held, end, peak)


def test_intermediates_die_after_backward_even_while_the_output_lives():
    x = Tensor([0.5, -0.5], requires_grad=True)
    mid = (x * 3.0).tanh()
    ref = weakref.ref(mid)
    out = (mid * mid).sum()
    del mid
    assert ref() is not None                  # the output's graph keeps it alive
    with gc_off():
        out.backward()
        assert ref() is None
    assert out.data.shape == () and x.grad is not None


def test_the_graph_is_freed_after_backward_and_deleting_the_output():
    x = Tensor(np.ones((3, 3)), requires_grad=True)
    mid = x @ x + 1.0
    refs = [weakref.ref(mid)]
    out = tg.functional.softmax(mid).sum()
    refs.append(weakref.ref(out))
    del mid
    with gc_off():
        out.backward()
        del out
        assert all(r() is None for r in refs)


def test_deleting_the_output_frees_an_unused_graph():
    x = Tensor(np.ones(3), requires_grad=True)
    with gc_off():
        middle = tg.functional.tanh(x) @ x
        probe = weakref.ref(middle)
        out = middle * 2.0
        del middle
        assert probe() is not None
        del out
        assert probe() is None


def test_retain_graph_keeps_it_until_the_output_goes():
    x = Tensor([1.0, 2.0], requires_grad=True)
    mid = x * x
    ref = weakref.ref(mid)
    out = (mid * 2.0).sum()
    del mid
    with gc_off():
        out.backward(retain_graph=True)
        assert ref() is not None
        out.backward()                         # the second backward frees it, although `out` lives
        assert ref() is None
    np.testing.assert_array_equal(x.grad, 2 * 4 * x.data)   # the second pass accumulates: twice d/dx 2x^2


def _the_same_output_again():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    return [x], y.backward


def _a_new_output_on_a_freed_part():
    x = Tensor([1.0, 2.0], requires_grad=True)
    w = Tensor([3.0, 4.0], requires_grad=True)
    h = x * w                   # shared by both losses
    (h * 2.0).sum().backward()
    second = (h * 3.0).sum() + (w * w).sum()
    return [x, w], second.backward


def _a_new_leaf_meets_a_freed_part():
    """The new leaf comes first in the backward order: nothing may be written to it before the error."""
    x, y = Tensor(np.ones(2), requires_grad=True), Tensor(np.ones(2), requires_grad=True)
    a = x * 2.0
    a.sum().backward()
    x.grad = None
    return [x, y], (y * 3.0 + a).sum().backward


def _grad_after_backward():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    return [x], lambda: tg.grad(y, x)


@pytest.mark.parametrize("make", [_the_same_output_again, _a_new_output_on_a_freed_part, _a_new_leaf_meets_a_freed_part,
                                  _grad_after_backward], ids=lambda f: f.__name__.strip("_"))
def test_backward_through_a_freed_graph_raises_says_why_and_touches_no_gradient(make):
    leaves, run = make()
    before = [None if t.grad is None else t.grad.copy() for t in leaves]
    with pytest.raises(RuntimeError, match="already been freed") as info:
        run()
    assert "retain_graph" in str(info.value)
    for t, b in zip(leaves, before):
        if b is None:
            assert t.grad is None
        else:
            np.testing.assert_array_equal(t.grad, b)


def test_detach_cuts_the_graph_for_truncated_bptt():
    w = Tensor(0.9, requires_grad=True)
    h = Tensor(1.0)
    for _ in range(3):                         # first segment
        h = h * w
    h.sum().backward()
    first = w.grad.copy()
    h = h.detach()                             # the first segment's graph is freed and cut off
    assert not h.requires_grad and h.is_leaf
    w.grad = None
    for _ in range(2):                         # second segment differentiates on its own
        h = h * w
    h.backward()
    np.testing.assert_allclose(first, 3 * 0.9 ** 2, rtol=1e-15)
    np.testing.assert_allclose(w.grad, 2 * 0.9 ** 3 * 0.9, rtol=1e-15)   # d/dw (c w^2) with c = w^3 held fixed


def test_no_grad_records_nothing():
    x = Tensor([1.0, 2.0], requires_grad=True)
    with gc_off(), tg.no_grad():
        middle = x * x
        probe = weakref.ref(middle)
        y = middle.exp().sum()
        del middle
        assert probe() is None                 # nothing holds the intermediate
        assert not tg.is_grad_enabled()
    assert tg.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf
    with pytest.raises(RuntimeError):
        y.backward()

    @tg.no_grad()
    def f(t):
        return t * 2.0
    assert not f(x).requires_grad
    assert (x * 2.0).requires_grad            # recording is back on after the decorated call


def test_no_grad_nests_and_restores_after_an_exception():
    with pytest.raises(ZeroDivisionError):
        with tg.no_grad():
            with tg.no_grad():
                pass
            assert not tg.is_grad_enabled()
            raise ZeroDivisionError
    assert tg.is_grad_enabled()
