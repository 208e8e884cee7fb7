"""Affine and embedding layers."""
import numpy as np

from ..tensor import Tensor, derived
from .init import as_dtype, as_rng, scaled_normal, zeros
from .module import Module, Parameter

__all__ = ["Linear", "Embedding"]


def as_input(x, dtype, name):
    """``x`` as a Tensor; numpy arrays and lists take the layer's dtype."""
    if isinstance(x, Tensor):
        if x.dtype.kind != "f":
            raise TypeError(f"{name}: input must be floating point, got dtype {x.dtype}")
        return x
    return Tensor(np.asarray(x, dtype=dtype))


class Linear(Module):
    """``y = x @ W + b`` with ``W`` of shape (in_features, out_features) and ``b`` of shape (out_features,)."""

    def __init__(self, in_features, out_features, bias=True, *, dtype=np.float64, rng=None):
        rng, dtype = as_rng(rng), as_dtype(dtype)
        self.in_features, self.out_features = in_features, out_features
        self.W = Parameter(scaled_normal(rng, in_features, (in_features, out_features), dtype))
        self.b = Parameter(zeros(out_features, dtype)) if bias else None

    def forward(self, x):
        """``x @ W + b`` for ``x`` of shape (..., in_features)."""
        x = as_input(x, self.W.dtype, "Linear")
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"Linear: input of shape {x.shape} has last axis "
                             f"{x.shape[-1] if x.ndim else None}, expected {self.in_features} (in_features)")
        y = x @ self.W
        return y + self.b if self.b is not None else y


class Embedding(Module):
    """Rows of ``W`` (num_embeddings, dim) picked by integer indices of any shape."""

    def __init__(self, num_embeddings, dim, *, dtype=np.float64, rng=None):
        rng, dtype = as_rng(rng), as_dtype(dtype)
        self.num_embeddings, self.dim = num_embeddings, dim
        # small normal vectors, as Deep Learning from Scratch 2 initialises its embeddings
        self.W = Parameter((rng.standard_normal((num_embeddings, dim)) * 0.01).astype(dtype))

    def forward(self, idx):
        """The rows of ``W`` at integer indices ``idx`` (any shape): shape ``idx.shape + (dim,)``."""
        if not isinstance(idx, Tensor):
            array = np.asarray(idx)
            if array.size == 0 and not isinstance(idx, np.ndarray):   # [] reads as float64: no indices at all
                array = array.astype(np.intp)
            idx = Tensor(array)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"Embedding: indices must be integers, got dtype {idx.dtype}")
        return self.W[derived(_embedding_rows, idx, count=self.num_embeddings)]


def _embedding_rows(idx, count):
    """``idx`` itself; IndexError naming the first index out of range(count)."""
    if idx.size and (idx.min() < 0 or idx.max() >= count):
        bad = idx[(idx < 0) | (idx >= count)].flat[0]
        raise IndexError(f"Embedding: index {bad} is out of range for {count} embeddings")
    return idx
