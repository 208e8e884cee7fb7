"""The checks of a written program against the eager engine.

Every forward line's value is checked as it is written (``forward.py``), the
final gradients against the eager backward (``writer.py``); here: the compiled
function run on the example inputs (``replays``), and on other values of every
input next to ``fn`` run eagerly on them (``check_on_other_values``).
"""
import numpy as np

from ..tensor import Tensor
from .errors import GuardFailed, TraceError

__all__ = ["replays", "check_on_other_values"]


class _Mismatch(Exception):
    """A rewritten program's value strays from the engine's by more than rounding."""


def _close(a, b):
    """Equal in dtype and shape, and in value to rounding: 1e-12 (float64) or 1e-4 (float32) of the largest."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind not in "fc":
        return np.array_equal(a, b)
    tol = 1e-12 if a.dtype.itemsize >= 8 else 1e-4
    finite = np.isfinite(b)
    if not np.array_equal(np.isfinite(a), finite) or not np.array_equal(a[~finite], b[~finite], equal_nan=True):
        return False
    scale = np.abs(b[finite]).max(initial=0.0)
    return bool(np.all(np.abs(a[finite] - b[finite]) <= tol * scale))


def _same(a, b):
    """Equal in dtype, shape and every bit of value (NaN equal to NaN)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")


def replays(function, inputs, params, outs, grads_by_name, eager_grads, agrees):
    """Whether the compiled program, run on the example inputs, gives the eager results.

    ``grads_by_name``: the leaf (input or parameter) of each gradient the program returns, by name.
    """
    try:
        got, grads = function(*[t.data for t in inputs], *[p.data for p in params])
    except GuardFailed:
        return False
    return (all(agrees(np.asarray(g), np.asarray(o.data)) for g, o in zip(got, outs)) and
            all(agrees(np.array(grads[name], dtype=leaf.dtype), eager_grads[id(leaf)])
                for name, leaf in grads_by_name.items()))


def check_on_other_values(fn, inputs, params, variant, backward, agrees):
    """The program against ``fn`` run eagerly on other values of every input.

    Every check so far used the example inputs.  A value that ``fn`` computes
    around the Tensor operations is frozen into the program and still agrees
    there, and so can a wrong program on examples that are all zeros; on other
    values neither does.  Floats get new values and signs, integers other values
    within the range the example spans (token ids stay valid ids), booleans are
    drawn anew.
    """
    rng = np.random.default_rng(0)
    others = []
    for t in inputs:
        d = t.data
        if d.dtype.kind == "f":
            d = (rng.standard_normal(d.shape) * (1 + np.abs(d))).astype(d.dtype)   # new signs too
        elif d.dtype.kind in "iu" and d.size and d.min() < d.max():
            lo, span = int(d.min()), int(d.max()) - int(d.min()) + 1   # every element moves, within range
            d = (lo + (d - lo + rng.integers(1, span, d.shape)) % span).astype(d.dtype)
        elif d.dtype.kind == "b":
            d = rng.random(d.shape) < 0.5
        others.append(Tensor(d, requires_grad=t.requires_grad))
    leaves = [t for t in others if t.requires_grad] + [p for p in params if p.requires_grad]
    stashed = [p.grad for p in params]
    with np.errstate(all="ignore"):
        try:
            out = fn(*others)
            outs = out if isinstance(out, (tuple, list)) else (out,)
            if backward:
                for p in params:
                    p.grad = None
                outs[0].backward()
            want = [np.asarray(o.data) for o in outs]
            want_grads = {id(t): t.grad for t in leaves}
        except Exception:     # values this function does not take (a domain error, say): no check
            return
        finally:
            for p, g in zip(params, stashed):
                p.grad = g
        try:
            got, grads = variant.function(*[t.data for t in others], *[p.data for p in params])
        except GuardFailed:   # another branch: such a call runs eagerly anyway
            return
    leaves_now = variant.grad_leaves(others)
    agree = all(agrees(np.asarray(g), w) for g, w in zip(got, want)) and all(
        agrees(np.array(g, dtype=leaf.dtype), want_grads.get(id(leaf)))
        for leaf, g in zip(leaves_now, grads.values()))
    if not agree:
        raise TraceError("trace: the program does not reproduce fn on other input values. fn seems to use "
                         "tensor values outside Tensor operations (for example .data, or numpy on them), "
                         "which freezes them into the program; compute them with Tensor operations, or "
                         "pass them in as inputs")
