"""Values changed outside the graph: each case ends in a clear error or the right numbers, never stale ones.

In-place edits of arrays a live graph saved, and edge inputs of the engine
(empty matmuls, numpy errors in binary operations, NaN logits).
"""
import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import Tensor, nn, optim
from tinygrad_rnn import functional as F
from tinygrad_rnn.checking import numerical_grad


def _square_sum():
    W = Tensor(np.full((1, 1), 2.0), requires_grad=True, name="W")
    return W, (W @ W).sum()


# ---------------------------------------------------------------------- 1. recorded data edited in place
def test_a_raw_write_into_a_saved_leaf_is_refused_while_the_graph_lives():
    W, loss = _square_sum()
    with pytest.raises(ValueError, match="read-only"):
        W.data[...] = 10
    loss.backward()
    assert W.grad[0, 0] == 4.0                     # the gradient at the recorded value, not 20
    W.data[...] = 10                               # the graph is freed: writable again
    assert W.data[0, 0] == 10


def test_a_raw_write_into_an_intermediate_is_refused():
    x = Tensor(np.array([0.5, 1.0]), requires_grad=True)
    y = x.exp()                                    # exp's backward reads its own result
    z = y * y
    with pytest.raises(ValueError, match="read-only"):
        y.data += 1
    z.sum().backward()
    np.testing.assert_allclose(x.grad, 2 * np.exp(2 * x.data), rtol=1e-15)


def test_an_input_array_of_the_caller_is_copied_not_locked_or_shared():
    mask = np.array([1.0, 0.0, 2.0])
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    y = (x * mask).sum()
    mask[...] = 7.0                                # the caller's own array stays theirs
    y.backward()
    np.testing.assert_array_equal(x.grad, [1.0, 0.0, 2.0])


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1), lambda ps: optim.Adam(ps, lr=0.1)])
def test_an_optimiser_step_between_two_backwards_of_a_kept_graph_is_named(make):
    W, loss = _square_sum()
    loss.backward(retain_graph=True)
    make([W]).step()
    with pytest.raises(RuntimeError, match=r"'W' of shape \(1, 1\).*changed in place.*'matmul'"):
        loss.backward()


def test_load_state_dict_between_forward_and_backward_is_named():
    lin = nn.Linear(2, 2, rng=0)
    loss = lin(Tensor(np.ones((1, 2)))).sum()
    lin.load_state_dict({k: v + 1 for k, v in lin.state_dict().items()})
    with pytest.raises(RuntimeError, match=r"the tensor of shape \(2,? ?2?\).*changed in place.*operation '(add|matmul)'"):
        loss.backward()


def test_module_load_between_forward_and_backward_is_named(tmp_path):
    lin = nn.Linear(2, 2, rng=0)
    lin.save(tmp_path / "w.npz")
    loss = lin(Tensor(np.ones((1, 2)))).sum()
    lin.load(tmp_path / "w.npz")
    with pytest.raises(RuntimeError, match="changed in place"):
        loss.backward()


def test_a_graph_made_after_the_write_is_not_refused():
    W, loss = _square_sum()
    loss.backward()
    optim.SGD([W], lr=0.5).step()                  # W = 2 - 0.5 * 4 = 0
    W.grad = None
    (W @ W + W).sum().backward()
    assert W.grad[0, 0] == 1.0


def test_optimisers_and_gradcheck_keep_working_in_normal_use():
    W = Tensor(np.array([[1.0, -2.0], [0.5, 3.0]]), requires_grad=True)
    opt = optim.Adam([W], lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        (W @ W).sum().backward()
        opt.step()
    x = Tensor(np.array([0.3, -0.7]), requires_grad=True)
    loss = (x * x).sum()                           # a live graph from x while x is perturbed
    numeric = numerical_grad(lambda t: (t * t).sum(), x)[0]
    np.testing.assert_allclose(numeric, 2 * x.data, rtol=1e-8)
    with pytest.raises(RuntimeError, match="changed in place"):
        loss.backward()                            # perturbing in place is a write: the old graph refuses
    assert tg.checking.gradcheck(lambda t: (t * t).sum(), x)
