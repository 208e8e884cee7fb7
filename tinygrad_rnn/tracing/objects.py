"""Where the user's state can be, for the tracer's watch: which objects are modules, which code and classes
are the user's, and what can be reached from the values a traced function reads (``reachable``)."""
import collections
import inspect
import os
import sys
import types

import numpy as np

from ..tensor import Tensor

MISSING = object()       # what a read finds where nothing is
SEQUENCES = (list, tuple, collections.deque)


def is_module(v):
    """Whether ``v`` is a module: an instance whose class defines ``named_parameters`` (looked up without
    running a ``__getattr__`` of the object's)."""
    return not isinstance(v, type) and inspect.isfunction(inspect.getattr_static(type(v), "named_parameters", None))


def users(module_name):
    """Whether a module of this name is the user's: not the engine's, numpy's or Python's own library (code
    without a module, such as a program the tracer runs with exec, is no one's)."""
    top = (module_name or "").partition(".")[0]
    return bool(top) and top not in ("tinygrad_rnn", "numpy") and top not in sys.stdlib_module_names


def internal(cls):
    """A class whose instances hold no state of the user's: the engine's, the tracer's, numpy's, Python's
    (but for the namespaces that hold settings), another installed library's."""
    module = getattr(cls, "__module__", "") or ""
    top = module.partition(".")[0]
    if f"{module}.{cls.__name__}" in ("types.SimpleNamespace", "argparse.Namespace"):
        return False
    if top == "tinygrad_rnn":
        return module.startswith(("tinygrad_rnn.tensor", "tinygrad_rnn.tracing", "tinygrad_rnn.composites"))
    file = getattr(sys.modules.get(module), "__file__", "")
    return top == "numpy" or top in sys.stdlib_module_names or installed(file)


def installed(path):
    """Whether ``path`` is a file of an installed library (under site-packages)."""
    return bool({"site-packages", "dist-packages"} & set((path or "").split(os.sep)))


# ---------------------------------------------------------------------- where the user's state can be
_LEAVES = (Tensor, np.ndarray, np.generic, np.random.Generator, np.random.RandomState, type, types.ModuleType,
           types.BuiltinFunctionType, str, bytes, int, float, complex, bool, type(None))


_own = object.__getattribute__     # an attribute read past any hook or __getattr__ of the object's class


def own_attributes(obj):
    """``obj``'s instance dict ({} if it has none), read without running a ``__getattr__`` of its own."""
    try:
        own = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        return {}
    return own if isinstance(own, dict) else {}


def slot_value(obj, name):
    try:
        return object.__getattribute__(obj, name)
    except AttributeError:                      # a slot not set
        return MISSING


def _slots(obj):
    names = [n for cls in type(obj).__mro__ for n in cls.__dict__.get("__slots__", ())
             if isinstance(cls.__dict__.get(n), types.MemberDescriptorType)]
    return [(n, slot_value(obj, n)) for n in names]


def reachable(values, limit=5000):
    """The modules, the other objects of the user's, and the user's functions that can be reached from
    ``values``: through attributes (``__dict__`` or ``__slots__``), containers and bound methods (at most
    ``limit`` objects). Objects of the engine, numpy or Python's library are not entered."""
    modules, objects, functions, seen, stack = [], [], [], set(), list(values)
    while stack and len(seen) < limit:
        v = stack.pop()
        if id(v) in seen or isinstance(v, _LEAVES):
            continue
        seen.add(id(v))
        if isinstance(v, types.FunctionType):
            if users(v.__module__):
                functions.append(v)
        elif isinstance(v, types.MethodType):
            stack += [v.__self__, v.__func__]
        elif isinstance(v, (*SEQUENCES, set, frozenset)):
            stack += list(v)
        elif isinstance(v, dict):
            stack += list(v.values())
        elif not internal(type(v)) and inspect.getattr_static(type(v), "__get__", None) is None:
            (modules if is_module(v) else objects).append(v)
            stack += list(own_attributes(v).values()) + [x for _, x in _slots(v)]
    return modules, objects, functions
