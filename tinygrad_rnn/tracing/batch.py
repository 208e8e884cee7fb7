"""A rewrite of a recorded step that a traced program may make: input products batched over time.

In an unrolled cell, ``x_t @ Wx`` for every step t takes a slice of one
sequence tensor ``xs`` and multiplies it by the same weight.  None of these
products depends on the recurrence, so they can be made as one product
``xs @ Wx`` before the loop, each step taking its slice of the result; the
backward then makes one product for ``dxs`` and one for ``dWx`` instead of one
per step.  That is fewer, larger matrix products: faster, and equal to the
step-by-step ones up to rounding (the sums are taken in another order), which
is why a program uses it only when asked (``trace(..., rewrite=True)``) and
checks every value against the engine's to rounding.

It works on the recorded events (``recorder.Op`` and the others), before any
line is written.  The rewritten graph is no longer the engine's, so its
backward order comes from the events (``order_of``).
"""
import numpy as np

from ..tensor import _by_creation, _constant, _folded_matmul
from .recorder import NODES, Op

__all__ = ["batch_time_products", "order_of"]


def _time_slice(event):
    """``(sequence, axis, position)`` when ``event`` takes one position along one axis of a 3-D tensor."""
    if not isinstance(event, Op) or event.op != "index" or len(event.parents) != 1:
        return None
    given, basic = event.attrs
    source = event.parents[0]
    if not basic or source.ndim != 3:
        return None
    parts = given if isinstance(given, tuple) else (given,)
    ints = [i for i, p in enumerate(parts) if isinstance(p, (int, np.integer)) and not isinstance(p, bool)]
    full = all(isinstance(p, slice) and p == slice(None) for i, p in enumerate(parts) if i not in ints)
    if len(ints) != 1 or not full or ints[0] >= 2:   # a time or batch position, never the feature axis
        return None
    return source, ints[0], int(parts[ints[0]])


def batch_time_products(events):
    """The events with each group of ``slice_t(xs) @ W`` (two or more, same xs, axis and W) made from one product.

    The product ``P = xs @ W`` is put where the group's first product was; each
    ``x_t @ W`` becomes the slice ``P[..., t, ...]`` of it.  Other events are kept.
    """
    slices = {}
    for event in events:
        found = _time_slice(event)
        if found is not None:
            slices[id(event.tensor)] = found
    groups = {}
    for i, event in enumerate(events):
        if isinstance(event, Op) and event.op == "matmul":
            a, w = event.parents
            found = slices.get(id(a))
            if found is not None and w.ndim == 2:
                source, axis, _ = found
                groups.setdefault((id(source), axis, id(w)), []).append(i)
    replace, insert = {}, {}
    for (_, axis, _), members in groups.items():
        if len(members) < 2:
            continue
        first = events[members[0]]
        source, _, _ = slices[id(first.parents[0])]
        w = first.parents[1]
        product = _constant(_folded_matmul(source.data, w.data))
        product.name = "xW"
        product.requires_grad = source.requires_grad or w.requires_grad
        product._seq = first.tensor._seq - 0.5      # after xs and W, before every product it replaces
        insert[members[0]] = Op(product, "matmul", (source, w), None, product.requires_grad)
        for i in members:
            event = events[i]
            _, _, position = slices[id(event.parents[0])]
            index = (slice(None), position) if axis == 1 else position
            replace[i] = Op(event.tensor, "index", (product,), (index, True), event.linked)
    out = []
    for i, event in enumerate(events):
        if i in insert:
            out.append(insert[i])
        out.append(replace.get(i, event))
    return out


def order_of(events):
    """The backward order over ``events``' graph, as the engine orders its own: every tensor reachable from
    the roots through parents needing a gradient, newest first."""
    records = {id(e.tensor): e for e in events if isinstance(e, NODES)}

    def order(*roots):
        found = {id(r): r for r in roots}
        stack = list(found.values())
        while stack:
            event = records.get(id(stack.pop()))
            if event is None or not event.linked:      # a leaf, or not part of the graph
                continue
            for p in event.parents:
                if p.requires_grad and id(p) not in found:
                    found[id(p)] = p
                    stack.append(p)
        return sorted(found.values(), key=_by_creation, reverse=True)
    return order
