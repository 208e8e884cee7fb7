"""Probes: a value that a traced function read from outside, and how a later call checks it still holds.

A probe is ``(source, key, kind, want)``: where the value is read from (a dict,
a list, a closure cell when ``key`` is None, else an object whose attribute
``key`` is read), and what must still be there. ``function_reads`` and
``code_reads`` say what a function reads (its closure cells, its globals, the
attributes it reads of a global module or class of the user's).
"""
import dis
import functools
import inspect
import operator
import types
import weakref

import numpy as np

from ..tensor import Tensor
from .errors import TraceError
from .objects import MISSING as _MISSING, SEQUENCES as _SEQUENCES, _own, internal, is_module, own_attributes, \
    slot_value, users

_ITEMS = 64     # a container of more (not all plain) is checked by identity and its tensors and modules


def _simple(v):
    return v is None or isinstance(v, (bool, int, float, complex, str, bytes)) or (
        isinstance(v, tuple) and all(_simple(x) for x in v))


# ---------------------------------------------------------------------- making and checking probes
class _Attributes:
    """An object's instance attributes as a probe's source, through a weak reference: a check kept for a
    module must not keep the module alive (its attributes may lead back to it)."""
    __slots__ = ("ref",)

    def __init__(self, obj):
        _own(obj, "__dict__")                   # (AttributeError for an object without one)
        self.ref = weakref.ref(obj)

    def get(self, key, default):
        obj = self.ref()
        return default if obj is None else _own(obj, "__dict__").get(key, default)


def attributes_of(obj):
    """The source for a probe of ``obj``'s instance attributes: weak where ``obj`` can be referred to so."""
    try:
        return _Attributes(obj)
    except (AttributeError, TypeError):         # no __dict__, or no weak references to it
        return own_attributes(obj)


class _Same:
    """What an identity check holds: the object through a weak reference where it can (a bound method: its
    function, and its object weakly), else the object itself."""
    __slots__ = ("ref", "func")

    def __init__(self, value):
        self.func = value.__func__ if isinstance(value, types.MethodType) else None
        target = value.__self__ if self.func is not None else value
        try:
            self.ref = weakref.ref(target)
        except TypeError:
            self.ref = lambda: target

    def holds(self, value):
        target = self.ref()                     # (None once it is gone: then nothing is the same as it)
        if self.func is None:
            return target is not None and value is target
        return target is not None and isinstance(value, types.MethodType) and value.__func__ is self.func \
            and value.__self__ is target


def _reader(source, key):
    """A function of no arguments that reads ``source[key]`` as it is now (``_MISSING`` if it is not there)."""
    if key is None:
        return lambda: source.cell_contents
    if isinstance(source, (dict, types.MappingProxyType, _Attributes)):
        return functools.partial(source.get, key, _MISSING)
    if isinstance(source, _SEQUENCES):
        return lambda: source[key] if key < len(source) else _MISSING
    if isinstance(source, (type, types.ModuleType)):   # a module's or class's attribute (a class's through its bases)
        return functools.partial(getattr, source, key, _MISSING)
    return functools.partial(slot_value, source, key)  # an object's slot


def _equal(want, value):
    return value.__class__ is want.__class__ and (value == want or value != value and want != want)   # NaN


def _equal_array(want, value):
    return isinstance(value, np.ndarray) and value.shape == want.shape and value.dtype == want.dtype \
        and np.array_equal(value, want, equal_nan=want.dtype.kind in "fc")


def _equal_entries(want, value):
    obj, entries = want
    return value is obj and value == entries


def _equal_items(want, value):
    obj, n, probes = want
    return value is obj and len(value) == n and all(p.holds() for p in probes)


def _same_parts(want, value):
    obj, parts = want
    if value is not obj:
        return False
    items = value.values() if isinstance(value, dict) else value
    now = tuple(x for x in items if isinstance(x, Tensor) or is_module(x))
    return len(now) == len(parts) and all(a is b for a, b in zip(now, parts))


_TESTS = {"eq": _equal, "array": _equal_array, "entries": _equal_entries, "items": _equal_items, "is": _same_parts,
          "absent": lambda want, value: value is _MISSING}   # an instance that read its class's value has none


class Probe:
    """A value read from ``source[key]`` (an attribute, a dict entry, a list item, a closure cell when
    ``key`` is None) and what must still be there (``kind``: eq, array, entries, items, is, same, absent;
    ``want``). ``holds()`` reads it again and tests it: made once, here, as one function (a program checks
    its probes on every call)."""
    __slots__ = ("source", "key", "kind", "want", "read", "holds")

    def __init__(self, source, key, kind, want):
        self.source, self.key, self.kind, self.want = source, key, kind, want
        self.read = read = _reader(source, key)
        # the common cases (an attribute or a dict entry that is the same object, or an equal number), in one call
        if isinstance(source, _Attributes) and kind in ("same", "eq") and (kind == "eq" or want.func is None):
            self.holds = _attribute_check(source.ref, key, kind, want)
        elif isinstance(source, dict) and kind == "same" and want.func is None:
            self.holds = lambda get=source.get, target=want.ref: get(key, _MISSING) is target()
        else:
            test = want.holds if kind == "same" else functools.partial(_TESTS[kind], want)

            def holds():
                try:
                    return test(read())
                except ValueError:               # an emptied closure cell
                    return False
            self.holds = holds


def _attribute_check(owner, key, kind, want):
    if kind == "same":
        def holds(target=want.ref):
            obj, then = owner(), target()
            return then is not None and (_MISSING if obj is None else _own(obj, "__dict__").get(key, _MISSING)) is then
    else:
        def holds(cls=want.__class__):
            obj = owner()
            value = _MISSING if obj is None else _own(obj, "__dict__").get(key, _MISSING)
            return value.__class__ is cls and (value == want or value != value and want != want)   # NaN
    return holds


still_holds = operator.methodcaller("holds")


def settled(probes):
    """``probes`` after the traced call, each that no longer holds probed again as it is now (a value fn
    set once, such as a lazily made constant, is the state from then on), and those of objects that are
    gone (the call's own temporaries) dropped."""
    return [p if p.holds() else probe(p.source, p.key, p.read()) for p in probes
            if not (isinstance(p.source, _Attributes) and p.source.ref() is None)]


def run_again(probes, run):
    """Run ``run`` (fn again, on other values), then check the settled ``probes``: a value that fn changes on
    every call and also reads is refused by name (a program cannot repeat the change: a counter, a log, a
    running statistic), before any error of ``run`` itself, which such a change would explain."""
    try:
        run()
        error = None
    except TraceError as e:
        error = e
    changed = next((p for p in probes if not p.holds()), None)
    if changed is not None:
        raise TraceError(f"trace: fn changes {describe(changed)} on every call, and also reads it: a program "
                         f"cannot repeat the change, so its numbers would go stale. Keep such state outside fn: "
                         f"pass it in as an input and return its new value.") from None
    if error is not None:
        raise error


def probe(source, key, value, depth=2):
    """How a later call checks that ``source[key]`` still holds what the trace read: equal for plain values
    and arrays, the same object otherwise; a list, tuple, deque or dict the same one, holding what it held
    (``depth`` levels down); a set the same one with equal members."""
    if _simple(value):
        return Probe(source, key, "eq", value)
    if isinstance(value, np.ndarray):
        return Probe(source, key, "array", value.copy())
    if isinstance(value, (set, frozenset)) and all(map(_simple, value)):
        return Probe(source, key, "entries", (value, set(value)))
    if isinstance(value, (*_SEQUENCES, dict)):
        items = list(value.items() if isinstance(value, dict) else enumerate(value))
        if all(_simple(k) and _simple(v) for k, v in items):     # settings: equal entries
            return Probe(source, key, "entries", (value, value if isinstance(value, tuple) else value.copy()))
        if depth and len(items) <= _ITEMS:
            return Probe(source, key, "items", (value, len(items), [probe(value, k, v, depth - 1) for k, v in items]))
        return shallow_probe(source, key, value)
    return Probe(source, key, "same", _Same(value))


def shallow_probe(source, key, value):
    """A probe of a container by identity, and of the tensors and modules directly in it (what is in it
    otherwise may change: for a value that nothing says fn reads, such as its owner's log)."""
    if not isinstance(value, (*_SEQUENCES, dict, set, frozenset)):
        return probe(source, key, value)
    items = value.values() if isinstance(value, dict) else value
    return Probe(source, key, "is", (value, tuple(v for v in items if isinstance(v, Tensor) or is_module(v))))


def describe(p):
    """The name a message gives to what ``p`` checks."""
    source, key = p.source, p.key
    if key is None:
        return "a closed-over variable"
    if isinstance(source, dict) and "__name__" in source:
        return f"the global {key!r} of {source['__name__']}"
    return f"{key!r}"


# ---------------------------------------------------------------------- what a function reads
# Both read a code object's bytecode, which never changes: each is read once (a trace asks for the same
# functions again and again, and disassembling is most of what a trace costs otherwise).
@functools.lru_cache(maxsize=4096)
def _global_names(code):
    """The global names that ``code`` (and the lambdas and comprehensions in it) loads.

    Not ``co_names``: that also holds every attribute name (``self.W`` lists ``W``), which would take an
    unrelated global of the same name for something the function reads.
    """
    names = {ins.argval for ins in dis.get_instructions(code) if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(_global_names(const))
    return tuple(sorted(names))


@functools.lru_cache(maxsize=4096)
def _global_attributes(code, loads=("LOAD_GLOBAL", "LOAD_NAME")):
    """``(name, attribute)`` for each ``NAME.attr`` that ``code`` reads (``othermod.CONST``), NAME a global
    (``loads``: or a closure variable, with ``LOAD_DEREF``)."""
    found, before = set(), None
    for ins in dis.get_instructions(code):
        if before is not None and ins.opname in ("LOAD_ATTR", "LOAD_METHOD"):
            found.add((before, ins.argval))
        if ins.opname not in ("COPY", "DUP_TOP"):     # (NAME.attr += 1 copies NAME before reading attr)
            before = ins.argval if ins.opname in loads else None
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found.update(_global_attributes(const, loads))
    return tuple(sorted(found))


def _attribute_read(owner, attr):
    """``(source, key, value)`` for ``owner.attr`` read by a function: an attribute of a module or class of
    the user's, or one of an object of the user's (its own, or a plain value of its class, then also that
    the object has none of its own); none for anything else."""
    out = []
    if isinstance(owner, types.ModuleType):
        mine = users(owner.__name__)
    elif isinstance(owner, type):
        mine = users(getattr(owner, "__module__", None))
    else:
        mine = not internal(type(owner)) and not callable(owner)
        own = own_attributes(owner)
        if mine and attr in own:
            return [(attributes_of(owner), attr, own[attr])]
        if mine:
            out.append((attributes_of(owner), attr, _MISSING))
        owner = type(owner)                     # a value of its class, read through it
    if not mine:
        return []
    try:
        value = getattr(owner, attr, _MISSING)
    except Exception:                           # noqa: BLE001 - a lazy module's __getattr__: not a plain value
        return []
    if callable(getattr(type(value), "__get__", None)) and not isinstance(owner, types.ModuleType):
        return []                               # a method, a property: the code it runs is watched itself
    return out + [(owner, attr, value)]


def code_reads(code, globals_):
    """``(source, key, value)`` for each global that ``code`` loads, and each attribute it reads of a global
    module or class of the user's (``othermod.CONST``, ``Config.SCALE``)."""
    out = [(globals_, var, globals_[var]) for var in _global_names(code) if var in globals_]
    for var, attr in _global_attributes(code):
        if var in globals_:
            out += _attribute_read(globals_[var], attr)
    return out


def function_reads(fn, depth=3, seen=None):
    """``(source, key, value)`` for each closure cell (``key`` None) and global that ``fn`` reads.

    The functions it names are followed (``depth`` levels): a composition (a wrapped function), one of
    ``fn``'s module, or one of the user's: a global that a helper reads decides the numbers as much as one
    that ``fn`` reads.
    """
    fn = inspect.unwrap(fn)
    code = getattr(fn, "__code__", None)
    seen = set() if seen is None else seen
    if code is None or id(fn) in seen:
        return []
    seen.add(id(fn))
    out, cells = [], {}
    for name, cell in zip(code.co_freevars, fn.__closure__ or ()):
        try:
            out.append((cell, None, cell.cell_contents))
            cells[name] = cell.cell_contents
        except ValueError:                      # a cell not filled yet
            pass
    out += code_reads(code, fn.__globals__)
    for var, attr in _global_attributes(code, ("LOAD_DEREF",)):
        if var in cells:
            out += _attribute_read(cells[var], attr)
    if depth:
        for _, _, value in list(out):
            inner = inspect.unwrap(value) if callable(value) else value
            if inspect.isfunction(inner) and (inner is not value or inner.__module__ == fn.__module__ or
                                              users(inner.__module__)):
                out += function_reads(inner, depth - 1, seen)
    return out
