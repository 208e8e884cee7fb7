"""One trace: record ``fn`` on the example inputs, run the eager backward, write and check the program."""

from .. import tensor as engine
from ..tensor import Tensor
from .batch import batch_time_products, order_of
from .errors import TraceError, Unsupported
from .probes import run_again, settled
from .recorder import NODES, _Recorder, _Recording
from .verify import _close, _Mismatch, _same, check_on_other_values
from .watch import _Watch
from .writer import _Writer


def write_variant(fn, inputs, backward, names, rewrite=False):
    """The program (a ``program._Variant``) of ``fn`` on the Tensors ``inputs``.

    The whole step is recorded with each compiled composition as one call; one the
    writer cannot express as calls is recorded again, in primitives.
    """
    try:
        return _write(fn, inputs, backward, names, rewrite, whole_step=True)
    except Unsupported:
        return _write(fn, inputs, backward, names, rewrite, whole_step=False)


def _write(fn, inputs, want_backward, names, rewrite, whole_step):
    recorder = _Recorder(whole_step)
    start = next(engine._creation_counter)   # tensors made from here on were made by fn
    watch = _Watch(fn)
    with _Recording(recorder), watch:
        out = fn(*inputs)
    single = not isinstance(out, (tuple, list))
    outs = (out,) if single else tuple(out)
    for o in outs:
        if not isinstance(o, Tensor):
            raise TraceError(f"trace: fn must return a Tensor or a tuple of Tensors, got {type(o).__name__}")
    root = outs[0]
    backward = want_backward and root.requires_grad
    if want_backward and not root.requires_grad:
        raise TraceError("trace: the first output does not require grad, so there is no backward to "
                         "trace; pass backward=False for a forward-only program")
    if backward and root.size != 1:
        raise TraceError(f"trace: the first output has shape {root.shape}; backward needs a single "
                         f"element (reduce it, e.g. .sum(), or pass backward=False)")
    eager_grads = _eager_gradients(root, inputs, recorder.events) if backward else {}
    variant, agrees = None, _same
    if rewrite:
        events = batch_time_products(recorder.events)
        writer = _Writer(fn, inputs, names, recorder, start, events, _close, order_of(events))
        try:
            variant, agrees = writer.write(outs, single, backward, eager_grads), _close
        except _Mismatch:
            pass   # the rewritten program strays too far: the plain one is written instead
    if variant is None:
        writer = _Writer(fn, inputs, names, recorder, start, recorder.events, _same)
        variant = writer.write(outs, single, backward, eager_grads)
    variant.probes = settled(watch.probes + recorder.probes)
    run_again(variant.probes, lambda: check_on_other_values(fn, inputs, writer.params, variant, backward, agrees))
    for t in writer.params:     # the trace's own graph is dropped here: parameters are writable again
        engine._unlock(t)
    return variant


def _eager_gradients(root, inputs, events):
    """The engine's gradients of ``root`` for every leaf of the recording, leaving ``.grad`` as it was."""
    leaves = {id(t): t for t in inputs if t.requires_grad}
    for event in events:
        if isinstance(event, NODES):
            leaves.update((id(p), p) for p in event.parents if p.requires_grad and p.is_leaf)
    stashed = {key: t.grad for key, t in leaves.items()}
    for t in leaves.values():
        t.grad = None
    try:
        root.backward(retain_graph=True)
        return {key: t.grad for key, t in leaves.items()}
    finally:
        for key, t in leaves.items():
            t.grad = stashed[key]
