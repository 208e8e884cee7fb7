"""The recorder: what the engine reports while ``fn`` runs, kept as a list of named events.

The engine has one observer hook (``tensor._tracer``).  While a trace records,
it holds a ``_Recorder``: every operation (``Tensor._make``), every derived
constant and decided branch (``tensor.derived``, ``tensor.decide``), every copy
(``Tensor(t)``), every label and time step is reported to it, and it appends
one event per report.  The writer reads the events by name.
"""
from typing import Any, NamedTuple

from .. import tensor as engine
from .errors import TraceError

__all__ = ["Op", "Derived", "Decide", "Copy", "Composite", "Unroll", "Output"]


class Op(NamedTuple):
    """A primitive: ``tensor`` made by ``op`` from ``parents``; ``attrs`` its other arguments;
    ``linked`` whether the result is in the graph (a parent needs a gradient)."""
    tensor: Any
    op: str
    parents: tuple
    attrs: Any
    linked: bool


class Derived(NamedTuple):
    """Constants ``made`` by the numpy function ``fn`` from ``tensors`` (``tensor.derived``)."""
    made: tuple
    fn: Any
    tensors: tuple
    params: dict


class Decide(NamedTuple):
    """A branch taken on ``value = fn(*tensors, **params)`` (``tensor.decide``): a guard in the program."""
    value: Any
    fn: Any
    tensors: tuple
    params: dict


class Copy(NamedTuple):
    """``Tensor(source)``: a new tensor holding a copy of ``source``'s values."""
    tensor: Any
    source: Any


class Composite(NamedTuple):
    """A compiled composition called as one node (``composite_calls``): ``tensor`` is its node."""
    tensor: Any
    program: Any
    parents: tuple
    outs: tuple
    linked: bool


class Unroll(NamedTuple):
    """``nn.unroll`` of a compiled step, as one node for the whole sequence (``unroll_loop``)."""
    tensor: Any
    program: Any
    parents: tuple
    outs: tuple
    linked: bool


class Output(NamedTuple):
    """Output ``index`` of ``count`` of a node with several outputs (``parents`` is that node)."""
    tensor: Any
    index: int
    parents: tuple
    count: int
    linked: bool


NODES = (Op, Composite, Unroll, Output)   # the events that make a tensor of the graph


class _Recorder:
    """Receives every operation from the engine while ``fn`` runs."""

    def __init__(self, whole_step=False):
        self.whole_step = whole_step   # True while a whole step is traced: compiled compositions are one event
        self.events = []       # Op, Derived, Decide, Copy, Composite, Unroll, Output, in the order they happened
        self.step = None       # the time step the next operations belong to (set by nn.unroll)
        self.labels = {}       # id(tensor) -> name given by the code that made it (h, c, x)
        self.steps = {}        # id(tensor) -> its time step
        self.probes = []       # what compiled compositions read from outside, checked on later calls
        self.noted_functions = set()   # compositions whose outside reads are already probes

    def _seen(self, t):
        self.steps[id(t)] = self.step

    def record(self, t, op, parents, attrs):
        self._seen(t)
        self.events.append(Op(t, op, parents, attrs, t._backward is not None))

    def derived(self, made, fn, tensors, params):
        for t in made:
            self._seen(t)
        self.events.append(Derived(made, fn, tensors, params))

    def decide(self, value, fn, tensors, params):
        self.events.append(Decide(value, fn, tensors, params))

    def copied(self, new, source):
        self._seen(new)
        self.events.append(Copy(new, source))

    def label(self, t, name):
        self.labels.setdefault(id(t), name)

    def composite(self, composite, owner, args, kwargs):
        """A compiled composition called while a whole step is traced: run and recorded as one event."""
        from .composite_calls import record_composite
        return record_composite(self, composite, owner, args, kwargs)

    def unroll(self, unroll_compiled, cell, xs, state, time_axis):
        """``nn.unroll`` of a compiled step: one event for the sequence, or None to run it step by step."""
        from .composite_calls import record_unroll
        return record_unroll(self, unroll_compiled, cell, xs, state, time_axis)

    def value_error(self, how):
        return TraceError(f"{how} on a tensor while tracing: a traced program cannot replay Python code "
                          f"that depends on tensor values. Keep the value a Tensor, or compute it outside "
                          f"the traced function and pass it in as an input.")


class _Recording:
    """Install a recorder in the engine for the duration of a ``with`` block."""

    def __init__(self, recorder):
        self.recorder = recorder

    def __enter__(self):
        if engine._tracer is not None:
            raise TraceError("trace: already tracing (a traced function cannot trace another)")
        engine._tracer = self.recorder

    def __exit__(self, *exc):
        engine._tracer = None
        return False
