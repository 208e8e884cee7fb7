"""What ``fn`` reads from outside while it is traced, and how a later call checks it still holds.

``_Watch`` notes the closure cells and globals ``fn`` and the functions it calls
read, and the attributes it reads of the objects reachable from them (each
becomes a probe, checked on every later call: a change traces again), refuses
``.data`` read by code outside the package, and sees random draws.
"""
import dis
import inspect
import random
import sys
import types

import numpy as np

from ..tensor import Tensor
from .errors import TraceError

_SLOT_DATA = Tensor.__dict__["data"]   # the slot descriptor of Tensor.data
_MISSING = object()


def _simple(v):
    return v is None or isinstance(v, (bool, int, float, complex, str, bytes)) or (
        isinstance(v, tuple) and all(_simple(x) for x in v))


_ITEMS = 64     # a container of more (not all plain) is checked by identity and its tensors and modules


def _probe(source, key, value, depth=2):
    """How a later call checks that ``source[key]`` (a dict entry or list item, or a closure cell when key
    is None) still holds what the trace read: equal for plain values and arrays, the same object
    otherwise; a list, tuple or dict the same one, holding what it held (``depth`` levels down)."""
    if _simple(value):
        return (source, key, "eq", value)
    if isinstance(value, np.ndarray):
        return (source, key, "array", value.copy())
    if isinstance(value, (list, tuple, dict)):
        items = list(value.items() if isinstance(value, dict) else enumerate(value))
        if all(_simple(k) and _simple(v) for k, v in items):     # settings: equal entries
            return (source, key, "entries", (value, value.copy() if isinstance(value, (list, dict)) else value))
        if depth and len(items) <= _ITEMS:
            return (source, key, "items", (value, len(items), [_probe(value, k, v, depth - 1) for k, v in items]))
        parts = tuple(v for _, v in items if isinstance(v, Tensor) or hasattr(v, "named_parameters"))
        return (source, key, "is", (value, parts))
    return (source, key, "is", (value, ()))


def _read(source, key):
    if key is None:
        return source.cell_contents
    if isinstance(source, (list, tuple)):
        return source[key] if key < len(source) else _MISSING
    return source.get(key, _MISSING)


def _still_holds(probe):
    source, key, kind, want = probe
    try:
        value = _read(source, key)
    except ValueError:                           # an emptied closure cell
        return False
    if kind == "absent":                         # an instance that read its class's value has none of its own
        return value is _MISSING
    if kind == "eq":
        return value.__class__ is want.__class__ and value == want
    if kind == "array":
        return isinstance(value, np.ndarray) and value.shape == want.shape and value.dtype == want.dtype \
            and np.array_equal(value, want, equal_nan=want.dtype.kind in "fc")
    if kind == "entries":
        obj, entries = want
        return value is obj and value == entries
    if kind == "items":
        obj, n, probes = want
        return value is obj and len(value) == n and all(map(_still_holds, probes))
    obj, parts = want
    if value is not obj:
        return False
    if parts:
        items = value.values() if isinstance(value, dict) else value
        now = tuple(x for x in items if isinstance(x, Tensor) or hasattr(x, "named_parameters"))
        return len(now) == len(parts) and all(a is b for a, b in zip(now, parts))
    return True


def _global_names(code):
    """The global names that ``code`` (and the lambdas and comprehensions in it) loads.

    Not ``co_names``: that also holds every attribute name (``self.W`` lists ``W``), which would take an
    unrelated global of the same name for something the function reads.
    """
    names = {ins.argval for ins in dis.get_instructions(code) if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(_global_names(const))
    return sorted(names)


def _followed(inner, wrapped, fn):
    """Whether the reads of ``inner``, a function that ``fn`` calls, are ``fn``'s too: a wrapped one (a
    composition), one of ``fn``'s module, or one of the user's (not the package's, not numpy's)."""
    if not inspect.isfunction(inner):
        return False
    module = inner.__module__ or ""
    return wrapped or module == fn.__module__ or not module.startswith(("tinygrad_rnn", "numpy"))


def function_reads(fn, depth=3, seen=None):
    """``(source, key, value)`` for each closure cell (``key`` None) and global that ``fn`` reads.

    The functions it calls are followed (``depth`` levels; see ``_followed``): a global that a helper
    reads decides the numbers as much as one that ``fn`` reads.
    """
    fn = inspect.unwrap(fn)
    code = getattr(fn, "__code__", None)
    seen = set() if seen is None else seen
    if code is None or id(fn) in seen:
        return []
    seen.add(id(fn))
    out = []
    for _, cell in zip(code.co_freevars, fn.__closure__ or ()):
        try:
            out.append((cell, None, cell.cell_contents))
        except ValueError:                      # a cell not filled yet
            pass
    globals_ = fn.__globals__
    out += [(globals_, var, globals_[var]) for var in _global_names(code) if var in globals_]
    if depth:
        for _, _, value in list(out):
            inner = inspect.unwrap(value) if callable(value) else value
            if _followed(inner, inner is not value, fn):
                out += function_reads(inner, depth - 1, seen)
    return out


_LEAVES = (Tensor, np.ndarray, np.generic, np.random.Generator, np.random.RandomState, type, types.ModuleType,
           types.BuiltinFunctionType, types.FunctionType, str, bytes, int, float, complex, bool, type(None))


def _reachable(values, limit=5000):
    """The modules (anything with ``named_parameters``) and the other objects with attributes that can be
    reached from ``values``: through attributes, containers and bound methods (at most ``limit`` objects)."""
    modules, objects, seen, stack = [], [], set(), list(values)
    while stack and len(seen) < limit:
        v = stack.pop()
        if id(v) in seen or isinstance(v, _LEAVES):
            continue
        seen.add(id(v))
        if isinstance(v, types.MethodType):
            stack += [v.__self__, v.__func__]
        elif isinstance(v, (list, tuple, set, frozenset)):
            stack += list(v)
        elif isinstance(v, dict):
            stack += list(v.values())
        elif hasattr(v, "__dict__") and not callable(getattr(type(v), "__get__", None)):
            (modules if hasattr(v, "named_parameters") else objects).append(v)
            stack += list(vars(v).values())
    return modules, objects


def _internal(cls):
    """A class of the engine's, the tracer's or numpy's: what fn reads of them is not the user's state."""
    module = getattr(cls, "__module__", "") or ""
    return module.startswith(("tinygrad_rnn.tensor", "tinygrad_rnn.tracing", "tinygrad_rnn.composites", "numpy"))


def _rng_states(objects):
    return [(g, g.bit_generator.state if isinstance(g, np.random.Generator) else g.get_state(legacy=False))
            for g in objects]


class _Watch:
    """While ``fn`` is traced: note what it reads from outside (each read becomes a check on later calls),
    refuse ``.data`` read by code outside the package, and see random draws (numpy's global generator,
    generators ``fn`` reaches, an unseeded ``default_rng``, Python's ``random``).

    Read from outside: the closure cells and globals of ``fn`` and of the functions it calls
    (``function_reads``), and every attribute that the traced call reads of a module or another object
    reachable from those: an instance's own, or a plain value of its class (then also that the instance
    has not set one of its own since).
    """

    def __init__(self, fn):
        self.fn = fn
        self.probes = []
        self.seen = set()
        self.unseeded = False
        # set on entering: the random generators' states, the classes' own __getattribute__, default_rng
        self.rng_before, self.global_before, self.python_before = [], None, None
        self.saved, self.default_rng = [], np.random.default_rng

    def _roots(self):
        """``(source, key, value)``: fn's closure cells and globals (and its helpers'), and its owner."""
        fn = getattr(self.fn, "__func__", self.fn)
        owner = getattr(self.fn, "__self__", None)
        if owner is None and hasattr(self.fn, "named_parameters"):   # a Module traced as fn: its forward
            owner, fn = self.fn, type(self.fn).forward
        found = function_reads(getattr(fn, "__func__", fn))
        if owner is not None:
            found.append(({"self": owner}, "self", owner))
        return found

    def _watch_reads(self, modules, objects):
        """Note the attributes that the call reads of these modules and objects: through a hook on each
        module's base class (the one that defines named_parameters) and on each other object's class. An
        object whose class takes no hook (a built-in type such as SimpleNamespace, or one with its own
        ``__getattribute__``) has all its attributes noted now instead."""
        classes = [cls for m in modules for cls in type(m).__mro__ if "named_parameters" in cls.__dict__]
        classes += [type(o) for o in objects if not _internal(type(o))]
        hooked = set()

        def getattribute(obj, name, _get=object.__getattribute__):
            if (id(obj), name) not in self.seen:
                self.seen.add((id(obj), name))
                self._note_attribute(obj, name)
            return _get(obj, name)
        for cls in dict.fromkeys(classes):
            if cls.__getattribute__ is not object.__getattribute__:
                continue
            before = cls.__dict__.get("__getattribute__")
            try:
                cls.__getattribute__ = getattribute
            except TypeError:                   # a built-in type
                continue
            self.saved.append((cls, before))
            hooked.add(cls)
        for o in objects:
            if not _internal(type(o)) and not any(cls in hooked for cls in type(o).__mro__):
                own = vars(o)
                for name, value in own.items():
                    self._note(own, name, value)

    def _note(self, source, key, value):
        self.probes.append(_probe(source, key, value))
        if isinstance(value, (np.random.Generator, np.random.RandomState)):
            self.rng_before += _rng_states([value])

    def _note_attribute(self, obj, name):
        """A check for the attribute ``name`` of ``obj``, which the traced call read."""
        try:
            own = object.__getattribute__(obj, "__dict__")
        except AttributeError:                  # an object with __slots__
            own = {}
        if name in own:
            self._note(own, name, own[name])
            return
        for cls in type(obj).__mro__:
            if name in cls.__dict__:
                value = cls.__dict__[name]
                if not callable(getattr(type(value), "__get__", None)):    # a plain value, not a method
                    self.probes.append((own, name, "absent", None))
                    self._note(cls.__dict__, name, value)
                return

    def __enter__(self):
        watch = self
        roots = self._roots()
        for source, key, value in roots:
            self._note(source, key, value)
        # the modules and objects reachable from fn, found before the call: their attribute reads are noted
        modules, objects = _reachable([v for _, _, v in roots])
        self.rng_before += _rng_states([v for o in modules + objects for v in vars(o).values()
                                        if isinstance(v, (np.random.Generator, np.random.RandomState))])
        self.global_before = np.random.get_state(legacy=False)
        self.python_before = random.getstate()
        self._watch_reads(modules, objects)
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
        if self.unseeded or moved or not _same_state(self.global_before, global_now) or \
                random.getstate() != self.python_before:
            raise TraceError(
                "trace: fn draws random numbers (numpy's global generator, a Generator it can reach, an "
                "unseeded default_rng, or Python's random); the draws would be frozen into the program, the "
                "same mask on every call. Draw the mask (or the noise) outside fn with your generator and pass "
                "it in as an input: trace(step, x, y, mask) and call program(x, y, rng.random(shape) < p).")
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

