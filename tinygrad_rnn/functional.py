"""Activations and losses, each a plain composition of Tensor operations.

None of these has a backward of its own: autograd differentiates the
composition.  Each is written so that no intermediate overflows anywhere in
the float range, so values and gradients stay finite (and exact at 0) for
inputs from -1e308 to 1e308 and at +-inf where the function has a limit.
The constants below (``sign`` arrays, shifts) are computed from the input's
values by small numpy functions through ``derived``; they carry no gradient,
which is correct because the composition is differentiated on each side of
x = 0 separately.  Going through ``derived`` (and ``decide`` for a branch)
rather than reading ``.data`` lets a traced program recompute them.

Each is also a compiled composition (``composite``): it runs as one graph node
whose forward and backward are written from the composition itself, with the
same numbers to the last bit.  ``with tinygrad_rnn.expanded():`` runs them
node by node.
"""
import numpy as np

from .composites import composite
from .tensor import Tensor, decide, derived, where

__all__ = ["tanh", "sigmoid", "relu", "softmax", "log_softmax", "cross_entropy", "mse_loss"]
__all__ += ["leaky_relu", "softplus", "logsumexp"]


def _float64(d):
    return d.astype(np.float64)


def _tensor(x):
    """``x`` as a floating Tensor: integers and booleans (which carry no gradient) become float64."""
    x = x if isinstance(x, Tensor) else Tensor(x)
    if x.dtype.kind in "biu":
        return derived(_float64, x)
    if x.dtype.kind != "f":
        raise TypeError(f"expected real numbers, got dtype {x.dtype}")
    return x


def _tanh_factors(d):
    """-sign(d), and the factor of d in expm1's argument: -2 sign(d), or -sign(d) for |d| > max/4."""
    ftype = d.dtype.type
    neg_sign = np.asarray(-np.copysign(ftype(1), d))   # +0.0 and -0.0 each count with their sign
    scale = np.asarray(neg_sign + neg_sign)   # an array even for 0-d d, so the line below can assign into it
    limit = np.finfo(ftype).max / 4
    if d.size and not np.abs(d).max() <= limit:     # (a NaN also takes this path)
        huge = np.abs(d) > limit
        scale[huge] = neg_sign[huge]
    return neg_sign, scale


_tanh_factors.outputs = ("neg_sign", "scale")   # their names in a traced program


def tanh(x):
    """tanh of ``x``, elementwise (a compiled composition, see ``_tanh``)."""
    return _tanh(_tensor(x))


@composite(name="tanh")
def _tanh(x):
    """tanh(x) = -sign(x) * e / (e + 2) with e = expm1(-2|x|), which lies in (-1, 0].

    expm1 keeps full precision near 0, so tanh(x) is x to the last bit for tiny
    x and its gradient at 0 is exactly 1.  The factor -2 sign(x) becomes
    -sign(x) where |x| is within a factor 4 of the largest float, so that
    -2|x| cannot overflow; expm1 is -1 there either way.
    """
    neg_sign, scale = derived(_tanh_factors, x)
    e = (x * scale).expm1()
    return (e * neg_sign) / (e + 2.0)


def _sigmoid_signs(d):
    """-sign(d) (-1 for d >= 0, +1 below), and where d >= 0."""
    positive = d >= 0
    return np.where(positive, -1.0, 1.0).astype(d.dtype), positive


_sigmoid_signs.outputs = ("flip", "positive")


def sigmoid(x):
    """The logistic function 1 / (1 + exp(-x)), elementwise (a compiled composition, see ``_sigmoid``)."""
    return _sigmoid(_tensor(x))


@composite(name="sigmoid")
def _sigmoid(x):
    """1 / (1 + exp(-x)) for x >= 0 and exp(x) / (1 + exp(x)) for x < 0: exp never overflows."""
    flip, positive = derived(_sigmoid_signs, x)
    e = (x * flip).exp()  # exp(-|x|), in [0, 1]
    return where(positive, 1.0, e) / (e + 1.0)


def _above_zero(d):
    return ~(d <= 0)   # NaN counts as above, so that it stays NaN


def relu(x):
    """max(x, 0); its gradient at 0 is 0, and NaN stays NaN."""
    return _relu(_tensor(x))


@composite(name="relu")
def _relu(x):
    return where(derived(_above_zero, x), x, 0.0)


def _max_along(d, axis):
    return d.max(axis=axis, keepdims=True)


_max_along.outputs = ("top",)


def _no_overflow(d, top):
    """Whether every maximum is finite and no ``d - top`` can overflow."""
    return bool(np.isfinite(top).all() and d.min() >= np.maximum(top.max(), 0) - np.finfo(d.dtype).max)


def _lifting_shift(d, axis):
    """The constant added to min(d, max float) by the careful path of ``_shifted``."""
    big = np.finfo(d.dtype).max
    top = np.clip(d, -big, big).max(axis=axis, keepdims=True)
    lo = np.maximum(top, 0) - big
    lift = np.where((d < lo) & (d > -np.inf), lo - d, 0)
    return lift - top


def _not_above(d, limit):
    return ~(d > limit)   # NaN counts as not above


def _shifted(x, axis):
    """x minus its (constant) maximum along ``axis``, never overflowing.

    When every maximum is finite and no difference can overflow (the usual
    case), this is just ``x - max``.  Otherwise +inf is limited to the largest
    float (so softmax has its limit there), and finite values so far below the
    maximum that ``x - max`` would overflow are lifted by a constant to the
    largest float below it: exp of that is 0 already, and the gradient still
    flows to them (log_softmax's derivative there is 1).  -inf stays -inf.
    """
    top = derived(_max_along, x, axis=axis)
    if decide(_no_overflow, x, top):
        return x - top
    # where rather than clip: a NaN passes its gradient on, so its whole row's gradient is NaN (as PyTorch's)
    big = float(np.finfo(x.dtype).max)
    return where(derived(_not_above, x, limit=big), x, big) + derived(_lifting_shift, x, axis=axis)


def _check_axis(x, axis, name):
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{name}: axis {axis} is out of range for shape {x.shape}")


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along ``axis``, computed on x - max(x)."""
    x = _tensor(x)
    _check_axis(x, axis, "softmax")
    return _softmax(x, axis)


@composite(name="softmax")
def _softmax(x, axis):
    e = _shifted(x, axis).exp()
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    """x - logsumexp(x) along ``axis``, computed on x - max(x)."""
    x = _tensor(x)
    _check_axis(x, axis, "log_softmax")
    return _log_softmax(x, axis)


@composite(name="log_softmax")
def _log_softmax(x, axis):
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
    t = target.data if isinstance(target, Tensor) else np.asarray(target)
    # a textbook's column of scores (classes, 1) for one example: the rows here are examples
    column = (f"; logits are (batch, classes) with the classes along the last axis: for a column of "
              f"scores pass z.T (shape {logits.shape[::-1]})"
              if logits.ndim == 2 and logits.shape[1] == 1 and logits.shape[0] > 1 and axis == 1 else "")
    if t.dtype.kind == "f":
        if t.shape != logits.shape:
            raise ValueError(f"cross_entropy: probability targets must have the logits' shape "
                             f"{logits.shape}, got {t.shape}{column}")
    elif t.dtype.kind in "iu":
        expected = logits.shape[:axis] + logits.shape[axis + 1:]
        if t.shape != expected:
            raise ValueError(f"cross_entropy: class-index targets must have shape {expected} "
                             f"(logits {logits.shape} without axis {axis}), got {t.shape}{column}")
    else:
        raise TypeError(f"cross_entropy: target must be integer class indices or float probabilities, "
                        f"got dtype {t.dtype}")
    _check_reduction(reduction, "cross_entropy")
    target = target if isinstance(target, Tensor) else Tensor(t)
    return _cross_entropy(logits, target, axis, reduction)


@composite(name="cross_entropy")
def _cross_entropy(logits, target, axis, reduction):
    if target.dtype.kind in "iu":
        target = derived(_class_indices, target, classes=logits.shape[axis])
    logp = _log_softmax.fn(logits, axis)
    if target.dtype.kind == "f":
        if target.dtype != logits.dtype:
            target = derived(_astype, target, dtype=logits.dtype.name)
        if decide(_any_neg_inf, logp):   # 0 * log(0) is 0 here, not NaN: an impossible class with no target mass
            logp = where(target != 0, logp, 0.0)
        loss = -(logp * target).sum(axis=axis)
    else:
        index = list(np.indices(target.shape, sparse=True))
        index.insert(axis, target)
        loss = -logp[tuple(index)]
    return _reduce(loss, reduction)


def _class_indices(t, classes):
    """``t`` itself; IndexError naming the first index out of range(classes)."""
    if t.size and (t.min() < 0 or t.max() >= classes):
        bad = t[(t < 0) | (t >= classes)].flat[0]
        raise IndexError(f"cross_entropy: class index {bad} is out of range for {classes} classes")
    return t


def _astype(d, dtype):
    return d.astype(dtype)


def _any_neg_inf(d):
    return bool(np.isneginf(d).any())


def mse_loss(pred, target, reduction="mean"):
    """Mean (or summed) squared difference; shapes must match exactly."""
    pred = _tensor(pred)
    _check_reduction(reduction, "mse_loss")
    target_shape = np.shape(target.data if isinstance(target, Tensor) else target)
    if pred.shape != target_shape:
        raise ValueError(f"mse_loss: pred has shape {pred.shape} but target has shape {target_shape}")
    if not isinstance(target, Tensor):
        target = np.asarray(target, dtype=pred.dtype)   # plain data takes pred's dtype: float32 stays float32
    if not isinstance(target, Tensor):
        target = Tensor(np.asarray(target, dtype=pred.dtype))   # plain data takes pred's dtype: float32 stays float32
    return _mse_loss(pred, target, reduction)


@composite(name="mse_loss")
def _mse_loss(pred, target, reduction):
    diff = pred - target
    return _reduce(diff * diff, reduction)


# The Tensor methods are these same compositions.
Tensor.tanh = tanh
Tensor.sigmoid = sigmoid
Tensor.relu = relu


def leaky_relu(x, negative_slope=0.01):
    """x for x > 0, ``negative_slope * x`` otherwise (so the gradient at 0 is the slope, as in torch);
    NaN stays NaN."""
    x = _tensor(x)
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float, np.floating, np.integer)):
        raise TypeError(f"leaky_relu: negative_slope must be a number, got {type(negative_slope).__name__}")
    if negative_slope == 0:      # relu, also at -inf (where -inf * 0 would be NaN)
        return relu(x)
    return x * derived(_leaky_factor, x, negative_slope=float(negative_slope))


def _leaky_factor(d, negative_slope):
    """1 where d > 0 (or NaN), the slope elsewhere: one product, which overflows nowhere it should not."""
    return np.where(_above_zero(d), 1, negative_slope).astype(d.dtype)


def softplus(x):
    """log(1 + exp(x)), as max(x, 0) + log1p(exp(-|x|)): exp never overflows, the value is x to the last
    bit for large x and exp(x) for very negative x, and the gradient is sigmoid(x) (0.5 exactly at 0)."""
    x = _tensor(x)
    flip, positive = derived(_sigmoid_signs, x)
    return where(positive, x, 0.0) + (x * flip).exp().log1p()


def _logsumexp_shifts(d, axis, keepdims):
    """For logsumexp along ``axis``: ``lo``, below which values are raised (exp of them is 0 already, and
    d - c could overflow), ``c``, the largest value with +-inf counted as +-max float, subtracted before
    exp, and the constant added to the log: c, or the maximum itself where that is infinite."""
    big = np.finfo(d.dtype).max
    c = np.clip(d, -big, big).max(axis=axis, keepdims=True)
    lo = np.maximum(c, 0) - big
    top = d.max(axis=axis, keepdims=True)
    shift = np.where(np.isinf(top), top, c)
    return lo, c, shift if keepdims else np.squeeze(shift, axis=axis)


_logsumexp_shifts.outputs = ("lo", "top", "shift")


def logsumexp(x, axis=-1, keepdims=False):
    """log(sum(exp(x))) along ``axis``, computed on x minus its maximum, so that nothing overflows over
    the whole float range: +inf in a row gives +inf, a row of -inf gives -inf (gradients 0 there), an
    empty axis gives -inf.  The gradient is softmax(x)."""
    x = _tensor(x)
    _check_axis(x, axis, "logsumexp")
    if x.shape[axis] == 0:        # the sum of no exponentials is 0
        return x.sum(axis=axis, keepdims=keepdims) + float("-inf")
    lo, c, shift = derived(_logsumexp_shifts, x, axis=axis, keepdims=keepdims)
    big = float(np.finfo(x.dtype).max)
    return ((x.clip(lo, big) - c).exp().sum(axis=axis, keepdims=keepdims).log()) + shift
