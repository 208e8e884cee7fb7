"""Deep graphs and memory: 100,000 steps without recursion, and the graph is freed by backward.

Memory is measured with tracemalloc (Python and numpy allocations).  The graph
of 100,000 steps takes tens of megabytes; after backward the traced memory must
be back within 1 MiB of where it started (the leaf's gradient and interpreter
noise), and reference counting alone (the garbage collector switched off) must
free the nodes: the graph has no reference cycles.
"""
import gc
import tracemalloc
import weakref

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import Tensor
from tinygrad_rnn import functional as F

STEPS = 100_000
MiB = 1 << 20


class gc_off:
    def __enter__(self):
        self.was = gc.isenabled()
        gc.collect()
        gc.disable()

    def __exit__(self, *exc):
        if self.was:
            gc.enable()


def test_a_recurrence_of_100000_nodes_differentiates_without_recursion_error():
    # h_t = a * h_{t-1} + x (two nodes a step): dh_T/dx = (1 - a^T) / (1 - a), x is reused every step
    a, steps = 0.9999, STEPS // 2
    x = Tensor(np.array([1.0, -2.0]), requires_grad=True)
    h = Tensor(np.zeros(2))
    for _ in range(steps):
        h = h * a + x
    h.sum().backward()
    np.testing.assert_allclose(x.grad, (1 - a ** steps) / (1 - a), rtol=1e-9)


def test_a_100000_step_chain_of_compositions():
    x = Tensor(np.array(0.5), requires_grad=True)
    y = x
    for _ in range(STEPS // 5):       # tanh is five nodes: 100,000 nodes in all
        y = F.tanh(y)
    y.backward()
    # d/dx of tanh applied n times, by the chain rule in plain numpy
    v, grad = 0.5, 1.0
    for _ in range(STEPS // 5):
        v = np.tanh(v)
        grad *= 1 - v * v
    np.testing.assert_allclose(x.grad, grad, rtol=1e-9)


def test_memory_returns_after_backward():
    x = Tensor(np.ones(4), requires_grad=True)
    with gc_off():
        tracemalloc.start()
        try:
            start = tracemalloc.get_traced_memory()[0]
            y = x
            for _ in range(STEPS):
                y = y * 1.0001
            loss = y.sum()
            built = tracemalloc.get_traced_memory()[0]
            loss.backward()
            after_backward = tracemalloc.get_traced_memory()[0]   # the output still exists
            del y, loss
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
    assert built - start > 10 * MiB, "the measurement should see the graph"
    assert after_backward - start < 1 * MiB, f"{(after_backward - start) / MiB:.1f} MiB still held after backward"
    assert after - start < 1 * MiB, f"{(after - start) / MiB:.1f} MiB still held after deleting the output"
    np.testing.assert_allclose(x.grad, 1.0001 ** STEPS, rtol=1e-9)


def test_the_graph_is_freed_by_backward():
    x = Tensor(np.ones(3), requires_grad=True)
    with gc_off():
        middle = F.sigmoid(x * 2.0)
        probe = weakref.ref(middle)
        out = (middle * x).sum()
        del middle
        assert probe() is not None            # the output's graph holds it
        out.backward()
        assert probe() is None                # freed by backward although `out` still exists
        del out


def test_retain_graph_keeps_it_until_the_output_goes():
    x = Tensor(np.ones(3), requires_grad=True)
    with gc_off():
        middle = x.exp()
        probe = weakref.ref(middle)
        out = (middle * 3.0).sum()
        del middle
        out.backward(retain_graph=True)
        assert probe() is not None
        out.backward()                        # the second backward may free it
        assert probe() is None
        np.testing.assert_allclose(x.grad, 2 * 3.0 * np.e)


def test_deleting_the_output_frees_an_unused_graph():
    x = Tensor(np.ones(3), requires_grad=True)
    with gc_off():
        middle = F.tanh(x) @ x
        probe = weakref.ref(middle)
        out = middle * 2.0
        del middle
        assert probe() is not None
        del out
        assert probe() is None


def test_no_grad_records_nothing():
    x = Tensor(np.ones(3), requires_grad=True)
    with gc_off(), tg.no_grad():
        middle = x * 2.0
        probe = weakref.ref(middle)
        out = middle + 1.0
        del middle
        assert probe() is None and not out.requires_grad


def test_a_second_backward_through_the_freed_graph_says_why():
    x = Tensor(np.ones(2), requires_grad=True)
    h = x
    for _ in range(10):
        h = F.tanh(h)
    loss = h.sum()
    loss.backward()
    grad = x.grad.copy()
    with pytest.raises(RuntimeError, match="freed.*retain_graph"):
        loss.backward()
    np.testing.assert_array_equal(x.grad, grad)    # nothing was accumulated by the failed call
