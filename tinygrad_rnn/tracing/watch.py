"""What ``fn`` reads from outside while it is traced (each read becomes a probe, ``probes.py``, checked
on every later call: a change traces again); ``.data`` read by code outside the package and random draws
are refused.  (A value that ``fn`` both reads and changes is taken as ``fn`` left it, or refused when it
changes again on the run on other values: ``probes.settled``, ``probes.run_again``.)

Noted: the closure cells and globals of ``fn`` and of the functions it names (``function_reads``), and
every attribute that the call reads of a module or another object of the user's reachable from those (seen
by a hook on their classes' ``__getattribute__``); a method or property of the user's that the call
reaches through that hook (``forward`` of a module) has its own reads noted the same way (``_note_code``).
"""
import random
import sys
import threading
import types

import numpy as np

from ..tensor import Tensor
from .errors import TraceError
from .objects import installed, is_module, own_attributes, reachable, slot_value, users
from .probes import Probe, attributes_of, function_reads, probe

_SLOT_DATA = Tensor.__dict__["data"]   # the slot descriptor of Tensor.data
_GENERATORS = (np.random.Generator, np.random.RandomState)


def _rng_states(objects):
    return [(g, g.bit_generator.state if isinstance(g, np.random.Generator) else g.get_state(legacy=False))
            for g in objects]


class _Watch:
    """While ``fn`` is traced: note what it reads from outside, refuse ``.data`` read by code outside the
    package, and see random draws (numpy's global generator, generators ``fn`` reaches, an unseeded
    ``default_rng``, Python's ``random``)."""

    def __init__(self, fn):
        self.fn = fn
        self.probes = []
        self.noted = set()          # (id(source), key) already probed
        self.seen = set()           # (id(object), attribute) already noted by the class hook
        self.codes = set()          # code objects whose reads are noted
        self.unseeded = False
        self.thread = threading.get_ident()
        # set on entering: the random generators' states, the classes' own __getattribute__, default_rng
        self.rng_before, self.global_before, self.python_before = [], None, None
        self.saved, self.default_rng = [], np.random.default_rng
        self.hooked = set()

        def getattribute(obj, name, _get=object.__getattribute__):   # the hook on the watched classes
            if (id(obj), name) not in self.seen:
                self.seen.add((id(obj), name))
                self._note_attribute(obj, name)
            return _get(obj, name)
        self.getattribute = getattribute

    def _roots(self):
        """``(source, key, value)``: fn's closure cells and globals (and its helpers'), and its owner."""
        fn = getattr(self.fn, "__func__", self.fn)
        owner = getattr(self.fn, "__self__", None)
        if owner is None and is_module(self.fn):                    # a Module traced as fn: its forward
            owner, fn = self.fn, type(self.fn).forward
        found = function_reads(getattr(fn, "__func__", fn))
        if owner is not None:
            found.append(({"self": owner}, "self", owner))
        return found

    def _note(self, source, key, value, owner=None):
        """A probe of ``source[key]`` (an attribute of ``owner`` when it is given: read through a weak
        reference to it)."""
        if (id(source if owner is None else owner), key) in self.noted:
            return
        self.noted.add((id(source if owner is None else owner), key))
        self.probes.append(probe(source if owner is None else attributes_of(owner), key, value))
        if isinstance(value, _GENERATORS):
            self.rng_before += _rng_states([value])

    def _note_attribute(self, obj, name):
        """A check for the attribute ``name`` of ``obj``, which the traced call read."""
        own = own_attributes(obj)
        if name == "__dict__":                  # vars(obj) by the user's code: all of it (the package's own
            if not users(sys._getframe(2).f_globals.get("__name__")):   # bookkeeping, parameters() say, is not)
                self.seen.discard((id(obj), name))
                return
            for key, value in own.items():
                self._note(own, key, value, obj)
        elif name in own:
            self._note(own, name, own[name], obj)
        else:
            for cls in type(obj).__mro__:
                if name in cls.__dict__:
                    value = cls.__dict__[name]
                    if isinstance(value, types.MemberDescriptorType):      # a slot
                        self._note(obj, name, slot_value(obj, name))
                    elif not callable(getattr(type(value), "__get__", None)):   # a plain value of the class
                        self.probes.append(Probe(attributes_of(obj), name, "absent", None))
                        self._note(type(obj), name, value)
                    else:                                   # a method or property: what its code reads
                        self._note_code(value.fget if isinstance(value, property) else
                                        getattr(value, "__func__", value))
                    return

    def _hook_classes(self, modules, objects):
        """Note the attributes that the call reads of these modules and objects: through a hook on each
        module's base class (the one that defines named_parameters) and on each other object's class. An
        object whose class takes no hook (a built-in type such as SimpleNamespace, or one with its own
        ``__getattribute__``) has all its attributes noted now instead."""
        classes = [cls for m in modules for cls in type(m).__mro__ if "named_parameters" in cls.__dict__]
        classes += [type(o) for o in objects]
        getattribute = self.getattribute
        for cls in dict.fromkeys(classes):
            if cls in self.hooked or cls.__getattribute__ is not object.__getattribute__:
                continue
            before = cls.__dict__.get("__getattribute__")
            try:
                cls.__getattribute__ = getattribute
            except Exception:                   # noqa: BLE001 - a built-in type, a metaclass that refuses
                continue
            if cls.__dict__.get("__getattribute__") is not getattribute:   # a metaclass that ignored it
                continue
            self.saved.append((cls, before))
            self.hooked.add(cls)
        for o in objects:
            if not any(cls in self.hooked for cls in type(o).__mro__):
                own = own_attributes(o)
                for name, value in own.items():
                    self._note(own, name, value, o)

    def _unhook(self):
        for cls, before in self.saved:
            try:
                if before is None:
                    del cls.__getattribute__
                else:
                    cls.__getattribute__ = before
            except Exception:                   # noqa: BLE001 - the others are restored all the same
                pass
        self.saved, self.hooked = [], set()
        self.getattribute = None                # (it refers to this watch: no cycle outlives the trace)

    def _note_code(self, fn):
        """A method or property of the user's that the call reaches (``forward`` of a module, a settings
        object's method): the globals it reads and the attributes it reads of global modules, classes and
        objects, and those of the functions it names (``function_reads``), noted as it is first reached
        (before it runs); the classes of the objects found are watched from then on."""
        code = getattr(fn, "__code__", None)
        if code is None or code in self.codes or not users(fn.__module__) or installed(code.co_filename):
            return
        self.codes.add(code)
        reads = function_reads(fn, depth=2)
        for source, key, value in reads:
            self._note(source, key, value)
        modules, objects, _ = reachable([value for _, _, value in reads])
        self._hook_classes(modules, objects)

    def __enter__(self):
        watch = self
        roots = self._roots()
        for source, key, value in roots:
            self._note(source, key, value)
        # the modules, objects and functions reachable from fn, found before the call
        modules, objects, functions = reachable([v for _, _, v in roots])
        for f in functions:
            for source, key, value in function_reads(f, depth=0):
                self._note(source, key, value)
        self.rng_before += _rng_states([v for o in modules + objects for v in own_attributes(o).values()
                                        if isinstance(v, _GENERATORS)])
        self.global_before = np.random.get_state(legacy=False)
        self.python_before = random.getstate()
        try:
            self._hook_classes(modules, objects)
        except BaseException:
            self._unhook()
            raise
        self.default_rng = np.random.default_rng

        def default_rng(seed=None, _make=self.default_rng):
            if seed is None:
                watch.unseeded = True
            return _make(seed)
        np.random.default_rng = default_rng
        Tensor.data = property(_read_data(self.thread), _SLOT_DATA.__set__)
        return self

    def __exit__(self, exc_type, *exc):
        Tensor.data = _SLOT_DATA
        np.random.default_rng = self.default_rng
        self._unhook()
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



def _read_data(thread):
    """``Tensor.data`` while tracing in ``thread``: refused there for code outside the package."""
    def read(t):
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if threading.get_ident() == thread and not (caller == "tinygrad_rnn" or caller.startswith("tinygrad_rnn.")):
            raise TraceError("trace: fn reads .data of a tensor while tracing; the value it computes from it "
                             "would be frozen into the program. Use Tensor operations (or .shape, .dtype), or "
                             "compute the value outside fn and pass it in as an input.")
        return _SLOT_DATA.__get__(t, Tensor)
    return read
