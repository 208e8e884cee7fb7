"""Activations and losses, each a plain composition of Tensor operations.

None of these has a backward of its own: autograd differentiates the
composition.  Each is written so that no intermediate overflows anywhere in
the float range, so values and gradients stay finite (and exact at 0) for
inputs from -1e308 to 1e308 and at +-inf where the function has a limit.
The constants below (``sign`` arrays, shifts) are plain numpy arrays computed
from the input's values; they carry no gradient, which is correct because the
composition is differentiated on each side of x = 0 separately.
"""
import numpy as np

from . import fused
from .tensor import Tensor, where

__all__ = ["tanh", "sigmoid", "relu", "softmax", "log_softmax", "cross_entropy", "mse_loss"]


def _tensor(x):
    """``x`` as a floating Tensor: integers and booleans (which carry no gradient) become float64."""
    x = x if isinstance(x, Tensor) else Tensor(x)
    if x.dtype.kind in "biu":
        return Tensor(x.data.astype(np.float64))
    if x.dtype.kind != "f":
        raise TypeError(f"expected real numbers, got dtype {x.dtype}")
    return x


def tanh(x):
    """tanh(x) = -sign(x) * e / (e + 2) with e = expm1(-2|x|), which lies in (-1, 0].

    expm1 keeps full precision near 0, so tanh(x) is x to the last bit for tiny
    x and its gradient at 0 is exactly 1.  The factor -2 sign(x) becomes
    -sign(x) where |x| is within a factor 4 of the largest float, so that
    -2|x| cannot overflow; expm1 is -1 there either way.
    """
    x = _tensor(x)
    if fused.is_enabled():
        return fused.tanh(x)
    d = x.data
    ftype = d.dtype.type
    neg_sign = -np.copysign(ftype(1), d)      # -sign(x); +0.0 and -0.0 each count with their sign
    scale = np.asarray(neg_sign + neg_sign)   # an array even for 0-d x, so the line below can assign into it
    limit = np.finfo(ftype).max / 4
    if d.size and not np.abs(d).max() <= limit:     # (a NaN also takes this path)
        huge = np.abs(d) > limit
        scale[huge] = neg_sign[huge]
    e = (x * scale).expm1()
    return (e * neg_sign) / (e + 2.0)


def sigmoid(x):
    """1 / (1 + exp(-x)) for x >= 0 and exp(x) / (1 + exp(x)) for x < 0: exp never overflows."""
    x = _tensor(x)
    if fused.is_enabled():
        return fused.sigmoid(x)
    positive = x.data >= 0
    e = (x * np.where(positive, -1.0, 1.0).astype(x.dtype)).exp()  # exp(-|x|), in [0, 1]
    return where(positive, 1.0, e) / (e + 1.0)


def relu(x):
    """max(x, 0); its gradient at 0 is 0, and NaN stays NaN."""
    x = _tensor(x)
    return where(~(x.data <= 0), x, 0.0)


def _safe_max(d, axis):
    """The maximum of ``d`` along ``axis`` (kept), when every ``d - max`` is a finite float; else None."""
    top = d.max(axis=axis, keepdims=True)
    if np.isfinite(top).all() and d.min() >= np.maximum(top.max(), 0) - np.finfo(d.dtype).max:
        return top
    return None


def _shifted(x, axis):
    """x minus its (constant) maximum along ``axis``, never overflowing.

    When every maximum is finite and no difference can overflow (the usual
    case), this is just ``x - max``.  Otherwise +inf is limited to the largest
    float (so softmax has its limit there), and finite values so far below the
    maximum that ``x - max`` would overflow are lifted by a constant to the
    largest float below it: exp of that is 0 already, and the gradient still
    flows to them (log_softmax's derivative there is 1).  -inf stays -inf.
    """
    d = x.data
    top = _safe_max(d, axis)
    if top is not None:
        return x - top
    big = np.finfo(d.dtype).max
    top = np.clip(d, -big, big).max(axis=axis, keepdims=True)
    lo = np.maximum(top, 0) - big
    lift = np.where((d < lo) & (d > -np.inf), lo - d, 0)
    return x.clip(None, big) + (lift - top)


def _check_axis(x, axis, name):
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{name}: axis {axis} is out of range for shape {x.shape}")


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along ``axis``, computed on x - max(x)."""
    x = _tensor(x)
    _check_axis(x, axis, "softmax")
    e = _shifted(x, axis).exp()
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    """x - logsumexp(x) along ``axis``, computed on x - max(x)."""
    x = _tensor(x)
    _check_axis(x, axis, "log_softmax")
    z = _shifted(x, axis)
    return z - z.exp().sum(axis=axis, keepdims=True).log()


def _check_reduction(reduction, name):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', not {reduction!r}")


def _reduce(loss, reduction):
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


def cross_entropy(logits, target, axis=-1, reduction="mean"):
    """Cross-entropy of ``softmax(logits)`` against class indices or probabilities.

    ``target`` is either integers with the shape of ``logits`` without ``axis``
    (numpy array, list or integer Tensor), or floats with the shape of
    ``logits`` (one-hot rows or any distribution).
    """
    logits = _tensor(logits)
    if logits.ndim == 0:
        raise ValueError("cross_entropy: logits must have at least one dimension (the classes)")
    _check_axis(logits, axis, "cross_entropy")
    axis = axis % logits.ndim
    t = np.asarray(target.data if isinstance(target, Tensor) else target)
    if t.dtype.kind == "f":
        if t.shape != logits.shape:
            raise ValueError(f"cross_entropy: probability targets must have the logits' shape "
                             f"{logits.shape}, got {t.shape}")
    elif t.dtype.kind in "iu":
        expected = logits.shape[:axis] + logits.shape[axis + 1:]
        if t.shape != expected:
            raise ValueError(f"cross_entropy: class-index targets must have shape {expected} "
                             f"(logits {logits.shape} without axis {axis}), got {t.shape}")
        classes = logits.shape[axis]
        if t.size and (t.min() < 0 or t.max() >= classes):
            bad = t[(t < 0) | (t >= classes)].flat[0]
            raise IndexError(f"cross_entropy: class index {bad} is out of range for {classes} classes")
    else:
        raise TypeError(f"cross_entropy: target must be integer class indices or float probabilities, "
                        f"got dtype {t.dtype}")
    _check_reduction(reduction, "cross_entropy")
    if fused.is_enabled():
        top = _safe_max(logits.data, axis)
        if top is not None:   # infinities and huge spreads take the composition's careful path
            return fused.cross_entropy(logits, t, axis, reduction, top)
    logp = log_softmax(logits, axis=axis)
    if t.dtype.kind == "f":
        t = t.astype(logits.dtype, copy=False)
        if np.isneginf(logp.data).any():   # 0 * log(0) is 0 here, not NaN: an impossible class with no target mass
            logp = where(t != 0, logp, 0.0)
        loss = -(logp * t).sum(axis=axis)
    else:
        index = list(np.indices(t.shape, sparse=True))
        index.insert(axis, t)
        loss = -logp[tuple(index)]
    return _reduce(loss, reduction)


def mse_loss(pred, target, reduction="mean"):
    """Mean (or summed) squared difference; shapes must match exactly."""
    pred = _tensor(pred)
    _check_reduction(reduction, "mse_loss")
    target_shape = np.shape(target.data if isinstance(target, Tensor) else target)
    if pred.shape != target_shape:
        raise ValueError(f"mse_loss: pred has shape {pred.shape} but target has shape {target_shape}")
    if not isinstance(target, Tensor):
        target = np.asarray(target, dtype=pred.dtype)   # plain data takes pred's dtype: float32 stays float32
    diff = pred - target
    return _reduce(diff * diff, reduction)


# The Tensor methods are these same compositions.
Tensor.tanh = tanh
Tensor.sigmoid = sigmoid
Tensor.relu = relu
