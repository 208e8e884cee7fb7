"""Hypothesis strategies shared by the gradient property tests.

Everything is float64 with small shapes (at most 3 axes of at most 3 elements)
so that central differences are accurate and each example is cheap.  Shapes
include 0-d arrays and size-1 axes.  Values are drawn so that they shrink
towards simple numbers: kinked functions get inputs built as sign * magnitude
(or on a grid) rather than by filtering, which hypothesis shrinks poorly.

The operations' own domains are the rows of ``op_table.py``.
"""
import contextlib

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

MAX_DIMS = 3
MAX_SIDE = 3

def compiled_or_expanded(compiled):
    """A context in which compositions run compiled (one node each: the default) or expanded, node by node."""
    import tinygrad_rnn
    return contextlib.nullcontext() if compiled else tinygrad_rnn.expanded()


# ---------------------------------------------------------------- values
def floats(lo=-3.0, hi=3.0):
    """Finite float64 values in [lo, hi]."""
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=64)


def away_from_zero(lo=0.1, hi=3.0):
    """Values with lo <= |x| <= hi, either sign: away from the kink of relu/abs and the pole of 1/x."""
    return st.builds(lambda sign, m: sign * m, st.sampled_from([1.0, -1.0]), floats(lo, hi))


def grid(lo=-30, hi=30, step=0.1):
    """Multiples of ``step``: drawn unique, any two differ by at least ``step`` (for max ties)."""
    return st.integers(lo, hi).map(lambda k: k * step)


# ---------------------------------------------------------------- shapes
def shapes(min_dims=0, max_dims=MAX_DIMS, min_side=1, max_side=MAX_SIDE):
    """Array shapes, 0-d included by default, size-1 axes likely."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def arrays(shape, elements=None):
    """float64 arrays of ``shape`` (a tuple or a strategy of tuples)."""
    return hnp.arrays(np.float64, shape, elements=elements if elements is not None else floats())


def any_array(elements=None, **shape_kw):
    return arrays(shapes(**shape_kw), elements)


@st.composite
def broadcast_pair(draw, left=None, right=None, num_shapes=2):
    """Arrays whose shapes broadcast together (numpy rules, 0-d and size-1 axes included)."""
    shp = draw(hnp.mutually_broadcastable_shapes(num_shapes=num_shapes, min_dims=0, max_dims=MAX_DIMS,
                                                 max_side=MAX_SIDE))
    elems = [left, right] + [None] * (num_shapes - 2)
    return tuple(draw(arrays(s, e)) for s, e in zip(shp.input_shapes, elems))


@st.composite
def matmul_pair(draw):
    """Operands of ``@``: 1-D (vector) either side, 2-D, and batched N-D with broadcast batch axes."""
    shp = draw(hnp.mutually_broadcastable_shapes(signature=np.matmul.signature, max_dims=2, max_side=MAX_SIDE))
    a_shape, b_shape = shp.input_shapes
    return draw(arrays(a_shape)), draw(arrays(b_shape))


@st.composite
def batched_matmul_pair(draw):
    """Batched operands with at least one batch axis on one side (N-D @ N-D, N-D @ 2-D, 2-D @ N-D, ...)."""
    batch = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2, max_side=MAX_SIDE))
    a_batch, b_batch = batch.input_shapes
    if not a_batch and not b_batch:
        a_batch = (draw(st.integers(1, MAX_SIDE)),)
    n, k, m = (draw(st.integers(1, MAX_SIDE)) for _ in range(3))
    a_shape, b_shape = a_batch + (n, k), b_batch + (k, m)
    # sometimes a 1-D operand against a batched one (numpy treats it as a row / a column)
    if not a_batch and draw(st.booleans()):
        a_shape = (k,)
    elif not b_batch and draw(st.booleans()):
        b_shape = (k,)
    return draw(arrays(a_shape)), draw(arrays(b_shape))


@st.composite
def array_and_axis(draw, elements=None, min_dims=0):
    """An array and an ``axis`` argument: None, an int (negative too) or a tuple of axes."""
    x = draw(any_array(elements, min_dims=min_dims))
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none" or x.ndim == 0:
        return x, None
    if kind == "int":
        return x, draw(st.integers(-x.ndim, x.ndim - 1))
    return x, draw(hnp.valid_tuple_axes(x.ndim, min_size=1))


@st.composite
def array_and_new_shape(draw):
    """An array and a shape with the same number of elements (size-1 axes added, axes regrouped, -1)."""
    x = draw(any_array())
    dims = list(x.shape)
    dims = draw(st.permutations(dims)) if dims else []
    for _ in range(draw(st.integers(0, 2))):
        dims.insert(draw(st.integers(0, len(dims))), 1)
    if len(dims) >= 2 and draw(st.booleans()):       # merge two neighbours
        i = draw(st.integers(0, len(dims) - 2))
        dims[i:i + 2] = [dims[i] * dims[i + 1]]
    if dims and draw(st.booleans()):
        dims[draw(st.integers(0, len(dims) - 1))] = -1
    return x, tuple(dims)


@st.composite
def array_and_permutation(draw):
    x = draw(any_array())
    return x, tuple(draw(st.permutations(range(x.ndim))))


@st.composite
def array_and_basic_index(draw):
    """Basic indexing: ints (negative too), slices with steps, Ellipsis, None (new axes)."""
    x = draw(any_array())
    return x, draw(hnp.basic_indices(x.shape, allow_newaxis=True, allow_ellipsis=True))


@st.composite
def array_and_integer_index(draw):
    """Integer-array indexing; the indices repeat often, so gradients must accumulate."""
    x = draw(any_array(min_dims=1))
    idx = draw(hnp.integer_array_indices(x.shape, result_shape=shapes(min_dims=1, max_dims=2, max_side=4)))
    return x, idx


@st.composite
def array_and_mixed_index(draw):
    """A slice on the first axis and a list of (repeated) integers on the second: ``x[:, [1, 1, 0]]``."""
    x = draw(any_array(min_dims=2))
    rows = draw(st.lists(st.integers(-x.shape[1], x.shape[1] - 1), min_size=1, max_size=4))
    return x, (slice(None), rows)


@st.composite
def array_and_mask(draw):
    x = draw(any_array(min_dims=1))
    return x, draw(hnp.arrays(np.bool_, x.shape))


@st.composite
def arrays_to_join(draw, same_shape=False):
    """1-3 arrays for ``stack`` (same shape) or ``concat`` (same shape except along ``axis``), and the axis."""
    base = draw(shapes(min_dims=0 if same_shape else 1))
    count = draw(st.integers(1, 3))
    if same_shape:
        axis = draw(st.integers(-len(base) - 1, len(base)))
        return [draw(arrays(base)) for _ in range(count)], axis
    axis = draw(st.integers(-len(base), len(base) - 1))
    out = []
    for _ in range(count):
        shp = list(base)
        shp[axis] = draw(st.integers(0, MAX_SIDE))    # empty pieces too
        out.append(draw(arrays(tuple(shp))))
    return out, axis


@st.composite
def clip_case(draw, array_bounds=False):
    """x, lo, hi with every x at least 0.05 away from both bounds (the gradient jumps there)."""
    x = draw(any_array(grid(-30, 30, 0.1)))
    lo = draw(st.integers(-30, 10)) * 0.1 + 0.05
    hi = lo + draw(st.integers(0, 30)) * 0.1
    if array_bounds:  # per-element bounds, broadcast against x
        shape = draw(hnp.broadcastable_shapes(x.shape, max_side=MAX_SIDE))
        offsets = draw(hnp.arrays(np.float64, shape, elements=grid(-5, 5, 0.1)))
        lo, hi = lo + offsets, hi + offsets
    which = draw(st.sampled_from(["both", "lo", "hi"]))
    return x, (None if which == "hi" else lo), (None if which == "lo" else hi)


@st.composite
def cross_entropy_case(draw, probabilities=None):
    """logits, target (class indices or probability rows), axis."""
    shape = draw(shapes(min_dims=1))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    logits = draw(arrays(shape, floats(-5, 5)))
    rest = shape[:axis % len(shape)] + shape[axis % len(shape) + 1:]
    if probabilities is None:
        probabilities = draw(st.booleans())
    if not probabilities:
        return logits, draw(hnp.arrays(np.int64, rest, elements=st.integers(0, shape[axis] - 1))), axis
    if draw(st.booleans()):  # one-hot rows, as the textbooks write targets
        hot = draw(hnp.arrays(np.int64, rest, elements=st.integers(0, shape[axis] - 1)))
        target = (np.moveaxis(np.arange(shape[axis]) == hot[..., None], -1, axis % len(shape))).astype(np.float64)
        return logits, target, axis
    raw = draw(arrays(shape, floats(0.01, 1.0)))
    return logits, raw / raw.sum(axis=axis, keepdims=True), axis


# ---------------------------------------------------------------- more helpers for the property tests
def seeds():
    """A seed for a numpy Generator (cotangents, random conditions); shrinks towards 0."""
    return st.integers(0, 2**32 - 1)


@st.composite
def array_and_one_axis(draw, elements=None, min_dims=1):
    """An array with at least ``min_dims`` axes and one valid axis (negative too), for softmax-like functions."""
    x = draw(any_array(elements, min_dims=min_dims))
    return x, draw(st.integers(-x.ndim, x.ndim - 1))


def whole_range(width=64):
    """Any float of that width: huge, tiny, subnormal, signed zeros, +-inf (no NaN), and the
    interesting points where exp or 2x would overflow listed explicitly so they are always tried."""
    info = np.finfo(np.float64 if width == 64 else np.float32)
    top, sub = float(info.max), float(info.smallest_subnormal)
    special = [0.0, -0.0, np.inf, -np.inf, top, -top, top / 2, -top / 2, sub, -sub,
               float(info.tiny), 1.0, -1.0, 20.0, -20.0, 88.75, -88.75, 89.0, -104.0, 710.0, -710.0, 746.0, -746.0]
    if width == 32:
        special = [v for v in special if not np.isfinite(v) or abs(v) <= top]
    return st.one_of(st.sampled_from(special),
                     st.floats(-40.0, 40.0, width=width),
                     st.floats(allow_nan=False, allow_infinity=True, width=width))


def whole_range_arrays(dtype=np.float64, max_dims=2, max_side=4):
    width = 64 if np.dtype(dtype) == np.float64 else 32
    return hnp.arrays(dtype, shapes(max_dims=max_dims, max_side=max_side), elements=whole_range(width))


@st.composite
def distinct_array_and_axis(draw):
    """Distinct values on a 0.1 grid (the maximum is unique and 0.1 clear of the runner-up) and an
    ``axis`` argument: None, an int or a tuple."""
    x = draw(hnp.arrays(np.float64, shapes(), elements=grid(), unique=True))
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none" or x.ndim == 0:
        return x, None
    if kind == "int":
        return x, draw(st.integers(-x.ndim, x.ndim - 1))
    return x, draw(hnp.valid_tuple_axes(x.ndim, min_size=1))


# ---------------------------------------------------------------- shapes for squeeze, unsqueeze and broadcasting
@st.composite
def array_and_squeeze_axis(draw):
    """An array with size-1 axes likely, and ``axis``: None, or an int or tuple naming size-1 axes only."""
    x = draw(any_array())
    ones = [i for i, n in enumerate(x.shape) if n == 1]
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none" or not ones:
        return x, None
    negative = draw(st.booleans())
    pick = [i - x.ndim if negative else i for i in ones]
    if kind == "int":
        return x, draw(st.sampled_from(pick))
    return x, tuple(draw(st.lists(st.sampled_from(pick), min_size=1, unique=True)))


@st.composite
def array_and_new_axis(draw):
    """An array and a place for a new axis: -ndim-1 <= axis <= ndim."""
    x = draw(any_array())
    return x, draw(st.integers(-x.ndim - 1, x.ndim))


@st.composite
def broadcast_source_and_target(draw):
    """(source, target): a shape and a shape it broadcasts to (leading axes added, size-1 axes widened)."""
    target = draw(shapes())
    keep = draw(st.integers(0, len(target)))
    source = [draw(st.sampled_from([1, n])) for n in target[len(target) - keep:]]
    return tuple(source), target


@st.composite
def untied_pair(draw):
    """Two arrays that broadcast together and never tie: one on the grid k/10, the other on (k + 1/2)/10,
    so they differ by at least 0.05 everywhere (maximum and minimum have a kink where they tie)."""
    shp = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=MAX_DIMS, max_side=MAX_SIDE))
    a = draw(arrays(shp.input_shapes[0], grid(-30, 30, 0.1)))
    b = draw(arrays(shp.input_shapes[1], grid(-30, 30, 0.1).map(lambda v: v + 0.05)))
    return (a, b) if draw(st.booleans()) else (b, a)
