"""Fused tanh, sigmoid and cross-entropy: one graph node each, with a hand-written backward.

The compositions in ``functional.py`` are the definition and the default.  A
composition builds several nodes (tanh: five); on long sequences of small
matrices the cost of creating and walking those nodes is most of the time
of a training step.  These fused versions are an opt-in speed path that the
tests hold to the compositions (1e-12 in values and gradients)::

    with tinygrad_rnn.fused.enabled():
        loss = train_step()          # F.tanh, F.sigmoid, F.cross_entropy run fused

``F.cross_entropy`` calls the fused version only for the common case (finite
logits whose shifted values cannot overflow); infinities and huge spreads take
the composition, which is stable over the whole float range.
"""
import contextlib

import numpy as np

from .tensor import Tensor

__all__ = ["enabled", "is_enabled", "tanh", "sigmoid", "cross_entropy"]

_enabled = False


def is_enabled():
    """True inside ``fused.enabled()``."""
    return _enabled


class enabled(contextlib.ContextDecorator):
    """Run ``F.tanh``, ``F.sigmoid`` and ``F.cross_entropy`` fused (context manager or decorator).

    ``enabled(False)`` switches them off again inside an enabled region.
    """

    def __init__(self, on=True):
        self.on = bool(on)
        self._saved = []

    def __enter__(self):
        global _enabled
        self._saved.append(_enabled)
        _enabled = self.on
        return self

    def __exit__(self, *exc):
        global _enabled
        _enabled = self._saved.pop()
        return False


def tanh(x):
    """np.tanh, with d tanh = 1 - tanh**2."""
    y = np.tanh(x.data)
    return Tensor._make(y, (x,), lambda g: (g * (1 - y * y),), "tanh")


def _sigmoid(d):
    """1 / (1 + exp(-d)) from exp(-|d|), which never overflows."""
    e = np.exp(-np.abs(d))
    return np.where(d >= 0, 1, e) / (1 + e)


def sigmoid(x):
    """The logistic function, with d sigmoid = y (1 - y)."""
    y = _sigmoid(x.data)
    return Tensor._make(y, (x,), lambda g: (g * (y * (1 - y)),), "sigmoid", (_sigmoid,))


def _cross_entropy(d, target, top, axis, reduction):
    """The loss, and the softmax that its gradient needs (made in place: one array of the logits' size)."""
    z = d - top
    if target.dtype.kind == "f":
        e = np.exp(z)
        total = e.sum(axis=axis, keepdims=True)
        loss = -((z - np.log(total)) * target.astype(d.dtype, copy=False)).sum(axis=axis)
    else:   # the target class's z, picked from rows with the classes last, before z becomes exp(z)
        rows = (z if axis == d.ndim - 1 else np.moveaxis(z, axis, -1)).reshape(-1, d.shape[axis])
        picked = rows[np.arange(len(rows)), target.reshape(-1)].reshape(target.shape)
        e = np.exp(z, out=z)
        total = e.sum(axis=axis, keepdims=True)
        loss = -(picked - np.log(total).squeeze(axis))
    if reduction == "mean":
        loss = np.asarray(loss.sum() / d.dtype.type(max(loss.size, 1)))
    elif reduction == "sum":
        loss = np.asarray(loss.sum())
    e /= total
    return loss, e


def _cross_entropy_backward(g, p, target, axis, reduction):
    """d loss_i / d logits_i = softmax_i * sum(target_i) - target_i (sum(target_i) = 1 for indices)."""
    count = int(np.prod(p.shape[:axis] + p.shape[axis + 1:]))
    if reduction == "mean":
        g = g / p.dtype.type(max(count, 1))
    # the weight of each position: one number for a reduced loss, else g with the class axis put back
    w = g if np.ndim(g) == 0 else np.expand_dims(g, axis)
    if target.dtype.kind == "f":
        target = target.astype(p.dtype, copy=False)
        return p * (target.sum(axis=axis, keepdims=True) * w) - target * w
    grad = p * w
    if axis == p.ndim - 1:   # the usual layout: one row per position, a plain fancy index (fast)
        rows = grad.reshape(-1, p.shape[-1])   # a view: grad is a fresh array
        rows[np.arange(len(rows)), target.reshape(-1)] -= w if np.ndim(w) == 0 else w.reshape(-1)
    else:
        index = np.expand_dims(target, axis)
        np.put_along_axis(grad, index, np.take_along_axis(grad, index, axis=axis) - w, axis=axis)
    return grad


def cross_entropy(logits, target, axis, reduction, top):
    """Softmax cross-entropy in one node.

    ``F.cross_entropy`` has checked ``target`` (a Tensor of integer class indices
    with the logits' shape without ``axis``, or of float probabilities with the
    logits' shape) and ``reduction``, and passes ``top`` (a Tensor), the maximum
    along ``axis``, only when ``logits - top`` cannot overflow.
    """
    out, p = _cross_entropy(logits.data, target.data, top.data, axis, reduction)
    t = target.data
    return Tensor._make(out, (logits, target, top), lambda g: (_cross_entropy_backward(g, p, t, axis, reduction),),
                        "cross_entropy", (_cross_entropy, _cross_entropy_backward, axis, reduction))
