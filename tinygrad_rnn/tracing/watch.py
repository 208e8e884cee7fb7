"""What ``fn`` reads from outside while it is traced, and how a later call checks it still holds.

``_Watch`` notes the module attributes, closure cells and globals ``fn`` reads
(each becomes a probe, checked on every later call: a change traces again),
refuses ``.data`` read by code outside the package, and sees random draws.
"""
import inspect
import sys

import numpy as np

from ..tensor import Tensor
from .errors import TraceError

_SLOT_DATA = Tensor.__dict__["data"]   # the slot descriptor of Tensor.data
_MISSING = object()


def _simple(v):
    return v is None or isinstance(v, (bool, int, float, complex, str, bytes)) or (
        isinstance(v, tuple) and all(_simple(x) for x in v))


def _probe(source, key, value):
    """How a later call checks that ``source[key]`` (a dict entry, or a closure cell when key is None)
    still holds what the trace read: equal for plain values and arrays, the same object otherwise."""
    if _simple(value):
        return (source, key, "eq", value)
    if isinstance(value, np.ndarray):
        return (source, key, "array", value.copy())
    if isinstance(value, dict) and all(_simple(k) and _simple(v) for k, v in value.items()):
        return (source, key, "dict", (value, dict(value)))   # settings: the same dict, with equal entries
    parts = ()
    if isinstance(value, (list, tuple, dict)):   # a container's tensors and modules, one level down
        items = value.values() if isinstance(value, dict) else value
        parts = tuple(x for x in items if isinstance(x, Tensor) or hasattr(x, "named_parameters"))
    return (source, key, "is", (value, parts))


def _still_holds(probe):
    source, key, kind, want = probe
    try:
        value = source.cell_contents if key is None else source.get(key, _MISSING)
    except ValueError:                           # an emptied closure cell
        return False
    if kind == "eq":
        return value.__class__ is want.__class__ and value == want
    if kind == "array":
        return isinstance(value, np.ndarray) and value.shape == want.shape and value.dtype == want.dtype \
            and np.array_equal(value, want, equal_nan=want.dtype.kind in "fc")
    if kind == "dict":
        obj, entries = want
        return value is obj and value == entries
    obj, parts = want
    if value is not obj:
        return False
    if parts:
        items = value.values() if isinstance(value, dict) else value
        now = tuple(x for x in items if isinstance(x, Tensor) or hasattr(x, "named_parameters"))
        return len(now) == len(parts) and all(a is b for a, b in zip(now, parts))
    return True


def _rng_states(objects):
    return [(g, g.bit_generator.state if isinstance(g, np.random.Generator) else g.get_state(legacy=False))
            for g in objects]


class _Watch:
    """While ``fn`` is traced: note the module attributes, closure cells and globals it reads (each
    becomes a check on later calls), refuse ``.data`` read by code outside the package, and see
    random draws (numpy's global generator, generators ``fn`` reaches, an unseeded ``default_rng``)."""

    def __init__(self, fn):
        self.fn = fn
        self.probes = []
        self.seen = set()
        self.bases = []
        self.unseeded = False
        # set on entering: the random generators' states, the classes' own __getattribute__, default_rng
        self.rng_before, self.global_before, self.saved, self.default_rng = [], None, [], np.random.default_rng

    def _module_classes(self, modules):
        for m in modules:
            for cls in type(m).__mro__:    # the base class that defines named_parameters
                if "named_parameters" in cls.__dict__ and cls not in self.bases:
                    self.bases.append(cls)

    def _roots(self):
        fn = getattr(self.fn, "__func__", self.fn)
        owner = getattr(self.fn, "__self__", None)
        if owner is None and hasattr(self.fn, "named_parameters"):   # a Module traced as fn: its forward
            owner, fn = self.fn, getattr(type(self.fn).forward, "__func__", type(self.fn).forward)
            fn = getattr(fn, "fn", fn)                                  # a composite forward: its function
        found = []
        code = getattr(fn, "__code__", None)
        if code is not None:
            for _, cell in zip(code.co_freevars, fn.__closure__ or ()):
                try:
                    found.append((cell, None, cell.cell_contents))
                except ValueError:
                    pass
            names = set(code.co_names)
            found += [(fn.__globals__, n, fn.__globals__[n]) for n in sorted(names) if n in fn.__globals__]
        if owner is not None:
            found.append(({"self": owner}, "self", owner))
        return found

    def __enter__(self):
        watch = self
        roots = self._roots()
        for source, key, value in roots:
            if not (inspect.ismodule(value) or inspect.isfunction(value) or inspect.isclass(value) or
                    inspect.isbuiltin(value)):
                self.probes.append(_probe(source, key, value))
        # the module classes reachable from fn, found before the call: their attribute reads are noted
        modules = [v for _, _, v in roots if hasattr(v, "named_parameters") and not inspect.isclass(v)]
        stack = list(modules)
        while stack:
            m = stack.pop()
            for v in vars(m).values():
                for x in (v if isinstance(v, (list, tuple)) else v.values() if isinstance(v, dict) else (v,)):
                    if hasattr(x, "named_parameters") and not inspect.isclass(x) and x not in modules:
                        modules.append(x)
                        stack.append(x)
        self._module_classes(modules)
        generators = [v for _, _, v in roots if isinstance(v, (np.random.Generator, np.random.RandomState))]
        for m in modules:
            generators += [v for v in vars(m).values() if isinstance(v, (np.random.Generator, np.random.RandomState))]
        self.rng_before = _rng_states(generators)
        self.global_before = np.random.get_state(legacy=False)
        self.saved = [(cls, cls.__dict__.get("__getattribute__")) for cls in self.bases]
        for cls in self.bases:
            def getattribute(obj, name, _get=object.__getattribute__):
                d = _get(obj, "__dict__")
                if name in d and (id(obj), name) not in watch.seen:
                    watch.seen.add((id(obj), name))
                    watch.probes.append(_probe(d, name, d[name]))
                    if isinstance(d[name], (np.random.Generator, np.random.RandomState)):
                        watch.rng_before += _rng_states([d[name]])
                return _get(obj, name)
            cls.__getattribute__ = getattribute
        self.default_rng = np.random.default_rng

        def default_rng(seed=None, _make=self.default_rng):
            if seed is None:
                watch.unseeded = True
            return _make(seed)
        np.random.default_rng = default_rng
        Tensor.data = property(_read_data, _SLOT_DATA.__set__)
        return self

    def __exit__(self, exc_type, *exc):
        Tensor.data = _SLOT_DATA
        np.random.default_rng = self.default_rng
        for cls, before in self.saved:
            if before is None:
                del cls.__getattribute__
            else:
                cls.__getattribute__ = before
        if exc_type is not None:
            return False
        global_now = np.random.get_state(legacy=False)
        moved = [g for g, state in self.rng_before if not _same_state(_rng_states([g])[0][1], state)]
        if self.unseeded or moved or not _same_state(self.global_before, global_now):
            raise TraceError(
                "trace: fn draws random numbers (numpy's global generator, a Generator it can reach, or an "
                "unseeded default_rng); the draws would be frozen into the program, the same mask on every "
                "call. Draw the mask (or the noise) outside fn with your generator and pass it in as an "
                "input: trace(step, x, y, mask) and call program(x, y, rng.random(shape) < p).")
        return False


def _flatten_state(state):
    out = []
    for v in state.values() if isinstance(state, dict) else state:
        out += _flatten_state(v) if isinstance(v, dict) else [v]
    return out


def _same_state(a, b):
    a, b = _flatten_state(a), _flatten_state(b)
    return len(a) == len(b) and all(np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y
                                    for x, y in zip(a, b))


def _read_data(t):
    caller = sys._getframe(1).f_globals.get("__name__", "")
    if not (caller == "tinygrad_rnn" or caller.startswith("tinygrad_rnn.")):
        raise TraceError("trace: fn reads .data of a tensor while tracing; the value it computes from it "
                         "would be frozen into the program. Use Tensor operations (or .shape, .dtype), or "
                         "compute the value outside fn and pass it in as an input.")
    return _SLOT_DATA.__get__(t, Tensor)

