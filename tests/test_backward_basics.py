"""Core backward behaviour: accumulation, error messages (deep graphs and freeing: test_graph_memory.py)."""
import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import Tensor


def test_retain_graph_accumulates():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_array_equal(x.grad, 4 * x.data)


def test_non_scalar_backward_needs_grad():
    x = Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError):
        (x * 2).backward()


def test_shape_error_names_operation_and_shapes():
    a = Tensor(np.ones((2, 3)))
    b = Tensor(np.ones((4, 5)))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 5\)"):
        a + b


def test_requires_grad_on_integers_is_type_error():
    with pytest.raises(TypeError):
        Tensor(np.arange(3), requires_grad=True)


def test_float32_graph_stays_float32():
    x = Tensor(np.ones((2, 2), np.float32), requires_grad=True)
    y = (tg.functional.tanh(x * 2 + 1) @ x).sum()
    assert y.dtype == np.float32
    y.backward()
    assert x.grad.dtype == np.float32
