"""Traced steps: run a function once, and write its forward and backward out as straight numpy code.

``trace(fn, *example_inputs)`` calls ``fn`` eagerly while the engine reports
every operation to a recorder, runs the backward pass the engine would run for
``fn``'s first output, and writes both as one Python function of numpy calls:
one line per operation, named after the tensors (``h_3``, ``dh_3``, ``dWh``).
Calling the returned ``Program`` with new inputs of the same shapes and dtypes
runs that function: no Tensor and no graph node is made, and the results are
the eager engine's to the last bit (each line is the numpy call the engine
makes, in the engine's order; while the program is written, every forward
line's value and the final gradients are checked against the eager run).

What the program may assume, and how it is held to it:

* shapes and dtypes of inputs and parameters: checked on every call; other
  ones trace again (one program per signature is kept);
* branches a composition takes on values (``tensor.decide``): each is a guard
  in the code; when one fails, that call runs eagerly instead;
* values computed from data (signs, masks, shifts): recomputed in the code
  (``tensor.derived``), never frozen;
* numpy arrays and numbers ``fn`` reads from outside are constants, copied
  when the program is written;
* everything else ``fn`` reads must be an input or a parameter.  A tensor made
  before tracing that is neither is refused (its value would be frozen), and
  turning a traced tensor into a Python value (``item()``, ``float()``,
  ``bool()``, ``numpy()``) raises, because code that branches on it would not
  be replayed.

Before a program is handed out it is also run on other values of every input
(floats, integers within their range, booleans) next to ``fn`` run eagerly on
them.  While tracing, ``.data`` read outside the package and random draws are
refused, and what ``fn`` reads from outside (closure, globals, module
attributes) is noted: a later call where it changed traces again.

Parameters (tensors that require grad and were made before tracing) are read
afresh on every call, so an optimiser's updates are seen (a Parameter
replaced on a module makes the next call trace again); their gradients are accumulated
into ``.grad`` exactly as ``backward()`` does, an input made by the caller's
graph hands its gradient on into it, and under ``no_grad()`` a call computes
values only.
"""
import ast
import contextlib
import copy
import dis
import inspect
import itertools
import keyword
import re
import sys
import textwrap

import numpy as np

from . import tensor as engine
from .tensor import Tensor, _unbroadcast
from .trace_rewrite import batch_time_products

__all__ = ["trace", "Program", "TraceError", "GuardFailed"]


class TraceError(RuntimeError):
    """``fn`` does something a traced program cannot replay faithfully; the message says what."""


class GuardFailed(Exception):
    """A branch taken while tracing does not hold for these inputs (the call then runs eagerly)."""


def trace(fn, *example_inputs, backward=True, names=None, rewrite=False):
    """Trace ``fn(*example_inputs)`` and return a ``Program`` that replays it for new inputs.

    ``fn`` takes Tensors (numpy arrays and numbers given here become Tensors)
    and returns a Tensor or a tuple of Tensors.  With ``backward=True`` the
    program also does ``outputs[0].backward()``: the first output must have one
    element.  ``names`` (a Module, or a dict name -> Tensor) names parameters in
    the source; otherwise a parameter's ``name`` or ``p0, p1, ...`` is used.
    ``rewrite=True`` lets the program make the products of inputs with a weight
    for all time steps at once (``trace_rewrite``): faster, and equal to the
    engine up to rounding (1e-12 of each value's scale in float64) instead of
    to the last bit.
    """
    return Program(fn, example_inputs, backward=backward, names=names, rewrite=rewrite)


def _as_value(x, where):
    """A Tensor as it is; anything else as a numeric numpy array."""
    if isinstance(x, Tensor):
        return x
    array = np.asarray(x)
    if array.dtype.kind not in "fbiu":
        raise TypeError(f"{where}: inputs must be Tensors, numpy arrays or numbers, got {type(x).__name__}")
    return array


def _signature(values):
    """What a program is written for: each value's shape, dtype and whether it needs a gradient."""
    return tuple([(v.shape, v.dtype, v.__class__ is not np.ndarray and v.requires_grad) for v in values])


class Program:
    """A traced ``fn``: call it as ``fn`` would be called; it returns the outputs' values as arrays.

    ``source`` is the generated code of the latest signature, ``save(path)`` writes
    it as a module that imports numpy only, ``fallbacks`` counts the calls that
    ran eagerly because a guard failed.
    """

    def __init__(self, fn, example_inputs, backward=True, names=None, rewrite=False):
        if not callable(fn):
            raise TypeError(f"trace: fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.backward = bool(backward)
        self.names = names
        self.rewrite = bool(rewrite)
        self.fallbacks = 0
        self.retraces = 0
        self._variants = {}
        self._latest = self._trace([_as_value(x, "trace") for x in example_inputs])

    # ------------------------------------------------------------------ calling
    def __call__(self, *inputs):
        """Run the program: ``fn``'s outputs, as arrays.

        With ``backward``, the gradients are added into the parameters' ``.grad``, as eager ``backward`` would.
        """
        if engine._tracer is not None:
            raise TraceError("a traced program was called while tracing: its result would be frozen into the "
                             "outer program; trace the outer function's eager code instead")
        values = [_as_value(x, "traced program") for x in inputs]
        if len(values) != len(self._latest.inputs):
            raise TypeError(f"traced program: expected {len(self._latest.inputs)} inputs, got {len(values)}")
        variant = self._variants.get(_signature(values))
        if variant is not None and not all(map(_still_holds, variant.probes)):
            self._variants.clear()          # a module attribute, closed-over value or array changed: trace again
            self.retraces += 1
            variant = None
        if variant is None or _signature(variant.params) != variant.param_signature:
            if not engine.is_grad_enabled():
                return self._eager(values)  # under no_grad() a new signature is run for its values only
            variant = self._trace(values)   # other shapes or dtypes: a program of their own
        self._latest = variant
        try:
            outputs, grads = variant.function(*[v.data if isinstance(v, Tensor) else v for v in values],
                                              *[p.data for p in variant.params])
        except GuardFailed:
            self.fallbacks += 1
            return self._eager(values)
        if engine.is_grad_enabled():    # under no_grad() a call computes values only, as eager would
            later = []
            kept = _kept_arrays(variant, values, outputs, grads.values())
            for leaf, g in zip(variant.grad_leaves(values), grads.values()):
                if leaf.is_leaf:
                    _deposit(leaf, g, kept)
                else:                   # an input made by the caller's own graph: the gradient goes on
                    later.append((leaf, g))
            for i, (leaf, g) in enumerate(later):
                leaf.backward(g, retain_graph=i < len(later) - 1)
        return outputs[0] if variant.single else tuple(outputs)

    def _eager(self, values):
        out = self.fn(*[v if isinstance(v, Tensor) else Tensor(v) for v in values])
        outs = out if isinstance(out, (tuple, list)) else (out,)
        if self.backward and engine.is_grad_enabled() and outs[0].requires_grad:
            outs[0].backward()
        values = tuple(o.data for o in outs)
        return values[0] if not isinstance(out, (tuple, list)) else values

    def _trace(self, values):
        # every input a leaf of its own, even one given twice or one that is the result of a graph: the
        # trace never reaches into the caller's graph (a call hands the input's gradient on to it)
        tensors = [Tensor(v, requires_grad=isinstance(v, Tensor) and v.requires_grad) for v in values]
        # rewrite=True trades the last bit for speed: the compositions are written as their primitives,
        # so that the products of every time step with a weight can be made as one
        from .composites import expanded
        with expanded() if self.rewrite else contextlib.nullcontext():
            variant = _Writer(self.fn, tensors, self.backward, self.names, self.rewrite).write()
        self._variants[_signature(values)] = variant
        return variant

    # ------------------------------------------------------------------ reading
    @property
    def source(self):
        """The generated code: the forward, then the backward, one line per operation."""
        return self._latest.source

    def save(self, path):
        """Write the latest program as a standalone module (numpy only, constants inline)."""
        with open(path, "w") as f:
            f.write(self._latest.module_source())
        return path


def _kept_arrays(variant, values, outputs, grads):
    """ids of the arrays a gradient must not be handed over as: inputs, parameters, outputs, the
    program's constants, and any array returned for two arguments (each leaf must own its ``.grad``)."""
    kept = {id(v.data if isinstance(v, Tensor) else v) for v in values}
    kept.update(id(p.data) for p in variant.params)
    kept.update(id(o) for o in outputs)
    kept.update(id(c) for c in variant.constants.values())
    seen = set()
    for g in grads:
        (kept if id(g) in seen else seen).add(id(g))
    return kept


def _deposit(leaf, g, kept):
    """Add a gradient into ``leaf.grad`` as backward() does.

    An array the program made for this call alone (not a view, not kept) becomes
    ``.grad`` uncopied, as the engine hands over the buffers its backward allocated.
    """
    if leaf.grad is not None:
        leaf.grad += g
    elif g.__class__ is np.ndarray and g.base is None and g.dtype == leaf.data.dtype and id(g) not in kept:
        leaf.grad = g
    else:
        leaf.grad = np.array(g, dtype=leaf.data.dtype)


# ---------------------------------------------------------------------- what fn reads from outside
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


# ---------------------------------------------------------------------- recording
class _Recorder:
    """Receives every operation from the engine while ``fn`` runs."""

    whole_step = False   # True while a whole step is traced: compiled compositions are one event each

    def __init__(self):
        self.events = []       # ("op", tensor, op, parents, attrs) / ("derived", ...) / ("decide", ...) / ("copy", ...)
        self.step = None       # the time step the next operations belong to (set by nn.unroll)
        self.labels = {}       # id(tensor) -> name given by the code that made it (h, c, x)
        self.steps = {}        # id(tensor) -> its time step
        self.probes = []       # what compiled compositions read from outside, checked on later calls

    def _seen(self, t):
        self.steps[id(t)] = self.step

    def record(self, t, op, parents, attrs):
        self._seen(t)
        self.events.append(("op", t, op, parents, attrs, t._backward is not None))

    def derived(self, made, fn, tensors, params):
        for t in made:
            self._seen(t)
        self.events.append(("derived", made, fn, tensors, params))

    def decide(self, value, fn, tensors, params):
        self.events.append(("decide", value, fn, tensors, params))

    def copied(self, new, source):
        self._seen(new)
        self.events.append(("copy", new, source))

    def label(self, t, name):
        self.labels.setdefault(id(t), name)

    def composite(self, composite, owner, args, kwargs):
        """A compiled composition called while a whole step is traced: run and recorded as one event."""
        from .trace_composites import record_composite
        return record_composite(self, composite, owner, args, kwargs)

    def unroll(self, unroll_compiled, cell, xs, state, time_axis):
        """``nn.unroll`` of a compiled step: one event for the sequence, or None to run it step by step."""
        from .trace_composites import record_unroll
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


# ---------------------------------------------------------------------- writing the program
_SHORT = {"matmul": "mm", "index": "ix", "reshape": "rs", "transpose": "tr", "detach": "det",
          "less": "lt", "less_equal": "le", "greater": "gt",
          "greater_equal": "ge", "equal": "eq", "not_equal": "ne"}
_COMPARE = {"less": "<", "less_equal": "<=", "greater": ">", "greater_equal": ">=", "equal": "==",
            "not_equal": "!="}
# how the engine's primitives (its table, engine._PRIMITIVES) are written: the elementwise ones as their
# ufuncs (also for writing a result into the buffer of an input that dies there), binary ones with their
# operator, neg as a prefix, the others as a call
_PRIMITIVES = engine._PRIMITIVES
_UFUNC = {n: f"np.{p.forward.__name__}" for n, p in _PRIMITIVES.items() if isinstance(p.forward, np.ufunc)}
_BINARY = {n: p.symbol for n, p in _PRIMITIVES.items() if n in _UFUNC and p.symbol and len(p.grads) == 2}
_PREFIX = {n: p.symbol for n, p in _PRIMITIVES.items() if n in _UFUNC and p.symbol and len(p.grads) == 1}
_UNARY = {n: _UFUNC[n] for n, p in _PRIMITIVES.items() if n in _UFUNC and not p.symbol and len(p.grads) == 1}
_BINARY_UFUNC = {n: _UFUNC[n] for n, p in _PRIMITIVES.items() if n in _UFUNC and p.several}
# the name of the tuple of gradients that one call gives (``several``)
_GRADS_NAME = {"matmul": "mm_grads", "concat": "pieces", "stack": "pieces"}
# operations whose result is a new array (not a view of an input): its buffer may be reused
_FRESH = set(_UFUNC) | {"matmul", "where", "stack", "concat"}
_VIEWS = {"index", "reshape", "transpose", "detach"}
_VIEWS |= {"broadcast_to", "sum_to"}   # sum_to to the same shape is its input itself
_SHORT.update(broadcast_to="bcast", sum_to="summed")


def _identifier(name):
    """A variable name from ``name``: never starting with ``_`` (the helpers' names do)."""
    name = re.sub(r"\W", "_", str(name)).lstrip("_")
    if not name or name[0].isdigit():
        name = "t_" + name
    return name + "_" if keyword.iskeyword(name) else name


class _Variant:
    """One written program: its code, the function compiled from it, and what it reads."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def grad_leaves(self, inputs):
        return [inputs[i] if kind == "input" else self.params[i] for kind, i in self.grad_targets]

    def module_source(self):
        """The code as a module: numpy, the helper functions it calls, its constants, the function."""
        parts = ['"""' + self.doc + '"""', "import numpy as np", ""]
        parts.append("\n\nclass GuardFailed(Exception):\n"
                     "    \"\"\"A branch taken while tracing does not hold for these inputs.\"\"\"\n")
        for helper in self.helpers:
            parts.append("\n" + inspect.getsource(helper).rstrip() + "\n")
        for name, value in self.constants.items():
            parts.append(f"{name} = {_array_literal(value)}")
        parts.append("\n\n" + self.source)
        return "\n".join(parts) + "\n"


def _array_literal(a):
    """Code that makes ``a`` again, bit for bit: ``np.zeros(...)`` when all of it is +0.0, else its bytes."""
    a = np.asarray(a)
    if a.dtype.kind in "fiub" and not np.signbit(a).any() and not a.any():
        return f"np.zeros({a.shape!r}, dtype=np.{a.dtype.name})"
    return (f"np.frombuffer(bytes.fromhex({a.tobytes().hex()!r}), dtype={a.dtype.str!r})"
            f".reshape({a.shape!r}).copy()")


class _Writer:
    """Records ``fn`` on given inputs and writes its program, checking every line against the eager run."""

    def __init__(self, fn, inputs, backward, names, rewrite=False):
        self.fn, self.inputs, self.want_backward, self.names = fn, inputs, backward, names
        self.rewrite = rewrite

    # ------------------------------------------------------------------ names
    def _reserve(self, base, step=None):
        """A new variable name from ``base`` (and the time step), with ``d`` + it kept free for its gradient."""
        base = _identifier(base)
        for k in itertools.count(1):
            stem = base if k == 1 else f"{base}{k}"
            name = stem if step is None else f"{stem}_{step}"
            if name not in self.used and "d" + name not in self.used:
                self.used.update((name, "d" + name))
                return name

    def _param_names(self):
        """Names for parameters: from ``names``, else from the modules ``fn`` refers to (``cell.Wx``)."""
        if self.names is not None:
            pairs = self.names.named_parameters() if hasattr(self.names, "named_parameters") else self.names.items()
            return {id(p): name for name, p in pairs}
        found = {}
        fn = self.fn
        owner = getattr(fn, "__self__", None)
        modules = [("", owner)] if hasattr(owner, "named_parameters") else []
        try:
            seen = inspect.getclosurevars(getattr(fn, "__func__", fn))
            refs = {**seen.globals, **seen.nonlocals}
        except (TypeError, ValueError):
            refs = {}
        modules += [(name + ".", m) for name, m in refs.items() if hasattr(m, "named_parameters")]
        for prefix, module in modules:
            for name, p in module.named_parameters():
                found.setdefault(id(p), prefix + name)
        return found

    # ------------------------------------------------------------------ the run
    def write(self):
        from .trace_composites import Unsupported
        try:
            return self._write(whole_step=True)
        except Unsupported:     # a compiled part the writer cannot express as calls: written in primitives
            return self._write(whole_step=False)

    def _write(self, whole_step):
        recorder = _Recorder()
        recorder.whole_step = whole_step
        start = next(engine._creation_counter)   # tensors made from here on were made by fn
        stashed = {}
        watch = _Watch(self.fn)
        with _Recording(recorder), watch:
            out = self.fn(*self.inputs)
        self.probes = watch.probes + recorder.probes
        single = not isinstance(out, (tuple, list))
        outs = (out,) if single else tuple(out)
        for o in outs:
            if not isinstance(o, Tensor):
                raise TraceError(f"trace: fn must return a Tensor or a tuple of Tensors, got {type(o).__name__}")
        root = outs[0]
        backward = self.want_backward and root.requires_grad
        if self.want_backward and not root.requires_grad:
            raise TraceError("trace: the first output does not require grad, so there is no backward to "
                             "trace; pass backward=False for a forward-only program")
        if backward and root.size != 1:
            raise TraceError(f"trace: the first output has shape {root.shape}; backward needs a single "
                             f"element (reduce it, e.g. .sum(), or pass backward=False)")
        leaves = {id(t): t for t in self.inputs if t.requires_grad}
        for event in recorder.events:
            if event[0] in ("op", "composite", "unroll"):
                leaves.update((id(p), p) for p in event[3] if p.requires_grad and p.is_leaf)
        eager_grads = {}
        if backward:
            stashed = {key: t.grad for key, t in leaves.items()}
            for t in leaves.values():
                t.grad = None
            try:
                root.backward(retain_graph=True)
                eager_grads = {key: t.grad for key, t in leaves.items()}
            finally:
                for key, t in leaves.items():
                    t.grad = stashed[key]
        self.recorder, self.start = recorder, start
        variant = None
        if self.rewrite:
            try:
                variant = self._generate(batch_time_products(recorder.events), outs, single, backward,
                                         eager_grads, _close)
            except _Mismatch:
                pass   # the rewritten program strays too far: the plain one is written instead
        if variant is None:
            variant = self._generate(recorder.events, outs, single, backward, eager_grads, _same)
        self._check_on_other_values(variant, backward)
        for t in self.params:     # the trace's own graph is dropped here: parameters are writable again
            engine._unlock(t)
        return variant

    def _check_on_other_values(self, variant, backward):
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
        for t in self.inputs:
            d = t.data
            if d.dtype.kind == "f":
                d = (rng.standard_normal(d.shape) * (1 + np.abs(d))).astype(d.dtype)   # new signs too
            elif d.dtype.kind in "iu" and d.size and d.min() < d.max():
                lo, span = int(d.min()), int(d.max()) - int(d.min()) + 1   # every element moves, within range
                d = (lo + (d - lo + rng.integers(1, span, d.shape)) % span).astype(d.dtype)
            elif d.dtype.kind == "b":
                d = rng.random(d.shape) < 0.5
            others.append(Tensor(d, requires_grad=t.requires_grad))
        leaves = [t for t in others if t.requires_grad] + [p for p in self.params if p.requires_grad]
        stashed = [p.grad for p in self.params]
        with np.errstate(all="ignore"):
            try:
                out = self.fn(*others)
                outs = out if isinstance(out, (tuple, list)) else (out,)
                if backward:
                    for p in self.params:
                        p.grad = None
                    outs[0].backward()
                want = [np.asarray(o.data) for o in outs]
                want_grads = {id(t): t.grad for t in leaves}
            except Exception:     # values this function does not take (a domain error, say): no check
                return
            finally:
                for p, g in zip(self.params, stashed):
                    p.grad = g
            try:
                got, grads = variant.function(*[t.data for t in others], *[p.data for p in self.params])
            except GuardFailed:   # another branch: such a call runs eagerly anyway
                return
        leaves_now = variant.grad_leaves(others)
        agree = all(self.agrees(np.asarray(g), w) for g, w in zip(got, want)) and all(
            self.agrees(np.array(g, dtype=leaf.dtype), want_grads.get(id(leaf)))
            for leaf, g in zip(leaves_now, grads.values()))
        if not agree:
            raise TraceError("trace: the program does not reproduce fn on other input values. fn seems to use "
                             "tensor values outside Tensor operations (for example .data, or numpy on them), "
                             "which freezes them into the program; compute them with Tensor operations, or "
                             "pass them in as inputs")

    def _generate(self, events, outs, single, backward, eager_grads, agrees):
        """Write the program for ``events``; ``agrees(written, eager)`` checks every value on the way."""
        self.events, self.agrees = events, agrees
        # for writing results into dying buffers: arrays this program made (fresh), elementwise lines,
        # which variables may share memory (a view and its base; a derived value and its arguments)
        self.fresh, self.elementwise, self.aliases, self.stacks = set(), {}, {}, {}
        self.used = {"np", "GuardFailed"}
        self.lines = []             # (code, kind) where kind is "forward" or "backward"
        self.ns = {"np": np, "GuardFailed": GuardFailed}
        self.var = {}               # id(tensor) -> variable name
        self.helpers = []
        self.constants = {}
        self.params = []
        self.composite_functions, self.composite_sources, self.saved_of = {}, [], {}
        root = outs[0]
        given = getattr(self.fn, "__name__", "step")
        self.function_name = self._reserve("step" if given == "<lambda>" else given)
        arg_names = self._argument_names()
        for t, name in zip(self.inputs, arg_names):
            self.var[id(t)] = name
            self.ns[name] = t.data
        self.param_names = self._param_names()
        for event in events:
            self._forward(event)
        output_names = [self._name_of(o) for o in outs]
        grad_targets, grad_names = [], []
        if backward:
            self._grad_leaves()
            final = self._backward(root)
            for leaf in self.inputs + self.params:     # in the function's argument order
                if id(leaf) not in final:
                    continue
                gname = final[id(leaf)]
                expected = eager_grads.get(id(leaf))
                if expected is None or not agrees(np.array(self.ns[gname], dtype=leaf.dtype), expected):
                    if agrees is _close:
                        raise _Mismatch()
                    raise TraceError(f"trace: internal check failed: the written backward's gradient for "
                                     f"{self.var[id(leaf)]} differs from the engine's")
                grad_targets.append(self._leaf_kind(leaf))
                grad_names.append((self.var[id(leaf)], gname))
        source, function = self._assemble(arg_names, output_names, grad_names, reuse=True)
        if not self._replays(function, outs, grad_names, eager_grads, agrees):
            source, function = self._assemble(arg_names, output_names, grad_names, reuse=False)
            if not self._replays(function, outs, grad_names, eager_grads, agrees):
                if agrees is _close:
                    raise _Mismatch()
                raise TraceError("trace: internal check failed: the written program does not give the "
                                 "engine's results")
        if self.composite_sources:      # the compositions' functions it calls, written once, above it
            from .trace_composites import functions_called
            source = functions_called(self, source) + source
        return _Variant(inputs=list(self.inputs), params=self.params, probes=getattr(self, "probes", []),
                        param_signature=_signature(self.params),
                        grad_targets=grad_targets, source=source, function=function, single=single,
                        helpers=self.helpers, constants=self.constants, doc=self.doc)

    def _argument_names(self):
        try:
            params = [p for p in inspect.signature(self.fn).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            names = [p.name for p in params][:len(self.inputs)]
        except (TypeError, ValueError):
            names = []
        names += [f"x{i}" for i in range(len(names), len(self.inputs))]
        return [self._reserve(n) for n in names]

    # ------------------------------------------------------------------ forward
    def _name_of(self, t, partners=()):
        """The variable holding ``t``: an input, a recorded result, a parameter or a constant.

        ``partners`` are the other operands of the operation that reads ``t`` now.
        """
        key = id(t)
        if key in self.var:
            return self.var[key]
        if t.requires_grad and t._seq < self.start and t.is_leaf:
            name = self._reserve(self.param_names.get(key) or t.name or f"p{len(self.params)}")
            self.params.append(t)
            self.var[key] = name
            self.ns[name] = t.data
            return name
        if t._seq < self.start and t._seq >= 0:
            what = ("the result of operations done before tracing (its graph lies outside the program)"
                    if t.requires_grad else "neither an input nor a parameter")
            raise TraceError(f"trace: fn reads a tensor of shape {t.shape} ({t.dtype}) made before tracing "
                             f"that is {what}; its value would be frozen into the program. Pass it as an "
                             f"input (and return its new value as an output if it changes).")
        if t.requires_grad:
            raise TraceError(f"trace: fn makes a tensor that requires grad (shape {t.shape}) inside the "
                             f"traced function; make parameters outside it")
        # a number lifted to the dtype of every other operand may be written as a Python float
        lifted = t._seq < 0 and all(p.dtype == t.dtype for p in partners if p is not t)
        name = self._constant(t.data, self.recorder.labels.get(key, "const"), lifted)
        if name.isidentifier():
            self.var[key] = name
        return name

    def _constant(self, value, base="const", lifted=False):
        """A constant's text: a number written out, or the name of a copy of the array."""
        value = np.asarray(value)
        if value.ndim == 0 and value.dtype.kind == "f" and np.isfinite(value):
            # a number an operation lifted to its other operand's dtype can be a plain Python float (it
            # takes that dtype); any other keeps its own dtype, as a numpy scalar does
            text = repr(float(value))
            if not (lifted and value.dtype == np.float64):
                text = f"np.{value.dtype.name}({text})"
            return f"({text})" if text.startswith("-") else text
        name = self._reserve(base)
        self.constants[name] = value = value.copy()   # frozen as it is now, like every constant
        self.ns[name] = value
        return name

    def _emit(self, code, kind="forward"):
        exec(compile(code, "<trace>", "exec"), self.ns)
        self.lines.append((code, kind))

    def _use(self, fn):
        """Make the module-level function ``fn`` (and the ones it calls) callable from the code."""
        name = fn.__name__
        if self.ns.get(name, fn) is not fn:
            raise TraceError(f"trace: the function {name!r} and a variable of the program have the same name; "
                             f"rename the function or the label")
        if fn not in self.helpers:
            self.helpers.append(fn)
            self.used.update((name, "d" + name))
            self.ns[name] = fn
            globals_read = {i.argval for i in dis.get_instructions(fn) if i.opname == "LOAD_GLOBAL"}
            for other_name in sorted(globals_read):   # helpers that the helper calls, from its own module
                other = fn.__globals__.get(other_name)
                if inspect.isfunction(other) and other.__module__ == fn.__module__:
                    self._use(other)
        return name

    def _new_var(self, t, base):
        key = id(t)
        label = self.recorder.labels.get(key) or t.name
        step = self.recorder.steps.get(key)
        name = self._reserve(label or base, step)
        self.var[key] = name
        return name

    def _forward(self, event):
        kind = event[0]
        if kind == "op":
            _, t, op, parents, attrs, _ = event
            args = [self._name_of(p, parents) for p in parents]
            if op == "index":   # a boolean mask picks as many elements as it has True: a guard on that count
                for p, arg in zip(parents[1:], args[1:]):
                    if p.dtype == bool:
                        count = int(np.count_nonzero(p.data))
                        self._emit(f"if np.count_nonzero({arg}) != {count}: "
                                   f"raise GuardFailed('np.count_nonzero({arg}) != {count}')")
            name = self._new_var(t, _SHORT.get(op, op))
            code = self._forward_code(name, op, args, parents, attrs, t)
            self._emit(code)
            value = self.ns[name]
            if op in _FRESH and value.__class__ is np.ndarray:
                self.fresh.add(name)
                if op in _UFUNC and value.ndim:
                    self.elementwise[name] = (op, args)
            elif op in _VIEWS:
                self._alias(name, args[0])
            if op == "stack":
                self.stacks[name] = (args, attrs[1])
            if not self.agrees(self.ns[name], t.data):
                if self.agrees is _close:
                    raise _Mismatch()
                raise TraceError(f"trace: internal check failed: the written line {code!r} does not give "
                                 f"the engine's value")
        elif kind == "derived":
            _, made, fn, tensors, params = event
            function = self._use(fn)          # first, so that no variable takes the function's name
            args = [self._name_of(p) for p in tensors] + self._keyword_args(params)
            bases = getattr(fn, "outputs", None) or [fn.__name__.strip("_")] * len(made)
            names = [self._new_var(t, base) for t, base in zip(made, bases)]
            for n in names:          # fn may hand back its argument itself (a checked index array does)
                for arg in args:
                    self._alias(n, arg)
            self._emit(f"{', '.join(names)}{',' if len(names) == 1 else ''} = {function}({', '.join(args)})"
                       if len(names) > 1 else f"{names[0]} = {function}({', '.join(args)})")
        elif kind == "decide":
            _, value, fn, tensors, params = event
            value = value.item() if isinstance(value, np.generic) else value
            if not isinstance(value, (bool, int, str, type(None))):
                raise TraceError(f"trace: a branch on {fn.__name__} has a value of type "
                                 f"{type(value).__name__}, which cannot be written as a guard")
            args = [self._name_of(p) for p in tensors] + self._keyword_args(params)
            call = f"{self._use(fn)}({', '.join(args)})"
            self._emit(f"if {call} != {value!r}: raise GuardFailed({call!r})")
        elif kind == "copy":
            _, new, source = event
            src = self._name_of(source)
            self._emit(f"{self._new_var(new, 'copy')} = np.array({src})")
        else:                    # a compiled composition, or an unrolled sequence of one (trace_composites)
            from .trace_composites import write_forward
            write_forward(self, event)

    def _forward_code(self, name, op, args, parents, attrs, t):
        a = args[0] if args else None
        if op in _BINARY:
            return f"{name} = {a} {_BINARY[op]} {args[1]}"
        if op in _COMPARE:
            return f"{name} = np.asarray({a} {_COMPARE[op]} {args[1]})"
        if op in _PREFIX:
            return f"{name} = {_PREFIX[op]}{a}"
        if op in _UNARY:
            return f"{name} = {_UNARY[op]}({a})"
        if op == "matmul":
            if parents[0].ndim == 2 and parents[1].ndim == 2:
                return f"{name} = {a} @ {args[1]}"
            if parents[0].ndim > 2 and parents[1].ndim == 2:   # rows of a stack times one matrix, folded
                m = int(np.prod(parents[0].shape[:-1]))
                return f"{name} = ({a}.reshape({m}, {parents[0].shape[-1]}) @ {args[1]}).reshape({t.shape!r})"
            return f"{name} = {self._use(engine._folded_matmul)}({a}, {args[1]})"
        if op == "sum":
            axis, keepdims = attrs
            return f"{name} = np.asarray({a}.sum({_axis_kw(axis, keepdims)}))"
        if op == "max":
            axis, keepdims = attrs
            return f"{name} = {self._use(engine._max)}({a}, {axis!r}, {keepdims!r})"
        if op == "reshape":
            return f"{name} = {a}.reshape({attrs[0]!r})"
        if op == "transpose":
            return f"{name} = {a}.transpose({attrs[0]!r})"
        if op == "index":
            expr = f"{a}[{self._index_source(attrs[0], parents[1:], args[1:])}]"
            value = eval(expr, self.ns)
            return f"{name} = {expr}" if value.__class__ is np.ndarray else f"{name} = np.asarray({expr})"
        if op == "clip":
            has_lo, has_hi = attrs
            bounds = iter(args[1:])
            lo = next(bounds) if has_lo else "None"
            hi = next(bounds) if has_hi else "None"
            return f"{name} = {self._use(engine._clip)}({a}, {lo}, {hi})"
        if op == "concat":
            return f"{name} = np.concatenate([{', '.join(args)}], axis={attrs[0]!r})"
        if op == "stack":
            return f"{name} = np.stack([{', '.join(args)}], axis={attrs[0]!r})"
        if op == "where":
            return f"{name} = np.where({args[2]}, {a}, {args[1]})"
        if op == "detach":
            return f"{name} = {a}"
        if op in _BINARY_UFUNC:
            return f"{name} = {_BINARY_UFUNC[op]}({a}, {args[1]})"
        if op == "broadcast_to":
            return f"{name} = np.broadcast_to({a}, {attrs[0]!r})"
        if op == "sum_to":
            return f"{name} = {self._use(_unbroadcast)}({a}, {attrs[0]!r})"
        raise TraceError(f"trace: the operation {op!r} is not one of the engine's own, which are the only ones "
                         f"a traced program can write; run this function eagerly")

    def _index_source(self, idx, tensors, names):
        by_tensor = {id(t): n for t, n in zip(tensors, names)}
        parts = idx if isinstance(idx, tuple) else (idx,)
        out = []
        for p in parts:
            if isinstance(p, Tensor):
                out.append(by_tensor[id(p)])
            elif isinstance(p, slice):
                out.append(_slice_source(p))
            elif p is None:
                out.append("None")
            elif p is Ellipsis:
                out.append("...")
            elif isinstance(p, (bool, np.bool_)):
                out.append(repr(bool(p)))
            elif isinstance(p, (int, np.integer)):
                out.append(repr(int(p)))
            else:
                out.append(self._constant(np.asarray(p)))
        if not out:
            return "()"
        text = ", ".join(out)
        return text + "," if len(out) == 1 and isinstance(idx, tuple) else text

    # ------------------------------------------------------------------ backward
    def _grad_leaves(self):
        """Leaves that ``backward`` would give a gradient: inputs and parameters requiring grad."""
        self.leaf_by_id = {}
        for t in self.inputs + self.params:
            if t.requires_grad:
                self.leaf_by_id[id(t)] = t
        return list(self.leaf_by_id.values())

    def _leaf_kind(self, leaf):
        for i, t in enumerate(self.inputs):
            if t is leaf:
                return ("input", i)
        return ("param", next(i for i, p in enumerate(self.params) if p is leaf))

    def _backward(self, root):
        """Write the engine's backward: same order, same formulas, same accumulation."""
        records = {id(e[1]): e for e in self.events if e[0] in ("op", "composite", "unroll", "output")}
        order = _recorded_order(records, [root])

        grads = {id(root): "d" + self.var[id(root)]}
        owned = set()
        self._emit(f"{grads[id(root)]} = np.ones_like({self.var[id(root)]})", "backward")
        final = {}
        for node in order:
            key = id(node)
            g = grads.pop(key, None)
            if g is None:
                continue
            event = records.get(key)
            if event is None or not event[5]:      # a leaf: its gradient is complete
                if key in self.leaf_by_id:
                    final[key] = g
                continue
            owned.discard(key)
            if event[0] != "op":
                from .trace_composites import write_backward
                write_backward(self, grads, owned, event, g)
                continue
            _, t, op, parents, attrs, _ = event
            for i, piece in self._backward_pieces(op, g, parents, attrs, t):
                parent = parents[i]
                if not parent.requires_grad:
                    continue
                self._accumulate(grads, owned, parent, piece)
        return final

    def _accumulate(self, grads, owned, parent, piece):
        pkey = id(parent)
        dname = "d" + self._name_of(parent)
        shape, dtype = parent.data.shape, parent.data.dtype
        if isinstance(piece, _ScatterCode):
            if pkey not in owned:
                before = grads.get(pkey)
                self._emit(f"{dname} = np.zeros_like({self._name_of(parent)})" if before is None else
                           f"{dname} = np.array({before}, dtype=np.{dtype.name})", "backward")
                owned.add(pkey)
            self._emit(piece.code(dname), "backward")
            grads[pkey] = dname
            return
        value = eval(piece, self.ns)
        if pkey not in grads and value.__class__ is np.ndarray and value.shape == shape and value.dtype == dtype:
            if piece.isidentifier() and pkey not in self.leaf_by_id:
                grads[pkey] = piece      # the same array handed on (add's backward): no new name needed
            else:
                self._emit(f"{dname} = {piece}", "backward")
                grads[pkey] = dname
            return
        if value.shape != shape:
            piece = f"{self._use(_unbroadcast)}({piece}, {shape!r})"   # as the engine's _accumulate
        if np.result_type(value) != dtype:
            piece = f"({piece}).astype(np.{dtype.name})"
        if pkey not in grads:
            self._emit(f"{dname} = {piece}", "backward")
        elif pkey in owned:
            self._emit(f"{dname} += {piece}", "backward")
        else:
            total = f"{grads[pkey]} + {piece}"
            # two 0-d arrays add to a numpy scalar, which a later `+=` could not update in place
            self._emit(f"{dname} = " + (f"np.asarray({total})" if shape == () else total), "backward")
            owned.add(pkey)
        grads[pkey] = dname

    def _backward_pieces(self, op, g, parents, attrs, t):
        """(parent index, code) for each input's gradient: calls of the functions of ``op``'s table entry."""
        v = [self._name_of(p, parents) for p in parents]
        if op == "index":
            given, basic = attrs
            return [(0, _ScatterCode(self._index_source(given, parents[1:], v[1:]), g, basic))]
        prim = _PRIMITIVES.get(op)
        if prim is None:
            raise TraceError(f"trace: the backward of {op!r} cannot be traced")
        bounds = iter(v[1:])
        values = {"a": v[0], "b": v[1] if len(v) > 1 else None, "mask": v[2] if len(v) > 2 else None,
                  "out": self.var[id(t)], "shape_a": parents[0].shape,
                  "shape_b": parents[1].shape if len(parents) > 1 else None}
        if op == "clip":     # the bounds given are inputs after x; a missing one is None
            values.update(lo=next(bounds) if attrs[0] else "None", hi=next(bounds) if attrs[1] else "None")
        values.update(zip(("attr0", "attr1"), attrs or ()))
        # two matrices: one function per input, as the engine's backward picks; other matmuls: one call
        if prim.several and (op != "matmul" or not (parents[0].ndim == 2 and parents[1].ndim == 2)):
            fn, reads = prim.several
            extra = [p.requires_grad for p in parents] if op == "matmul" else []
            both = self._reserve(_GRADS_NAME.get(op, f"{op}_grads"))
            self._emit(f"{both} = {self._call(fn, g, *(values[r] for r in reads), *extra)}", "backward")
            return [(i, f"{both}[{i}]") for i in range(len(parents))]
        return [(i, g if fn is None else self._call(fn, g, *(values[r] for r in reads)))
                for i, (fn, reads) in enumerate(prim.grads) if parents[i].requires_grad]

    def _call(self, fn, g, *args):
        """The code of the engine's function ``fn`` on ``g`` (a name) and ``args`` (names; else values).

        A function that only returns an expression of its arguments and numpy is written as that
        expression, its parameters replaced by the arguments (``_mul_grad(dh, w)`` is ``dh * w``): the
        same operations in the same order, without a call per line.  Any other is called.
        """
        texts = [g] + [x if isinstance(x, str) else repr(x) for x in args]
        body = _expression_of(fn)
        if body is None:
            return f"{self._use(fn)}({', '.join(texts)})"
        params, expr = body
        given = dict(zip(params, texts), m="np")
        code = ast.unparse(_Substitute({k: ast.parse(v, mode="eval").body for k, v in given.items()}).visit(expr))
        # an expression with an operator weaker than * keeps its own order inside a longer line
        loose = isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Add, ast.Sub)) or \
            isinstance(expr, (ast.Compare, ast.BoolOp, ast.IfExp, ast.Lambda))
        return f"({code})" if loose else code

    # ------------------------------------------------------------------ the function
    def _replays(self, function, outs, grad_names, eager_grads, agrees):
        """Whether the compiled program, run on the example inputs, gives the eager results."""
        try:
            got, grads = function(*[t.data for t in self.inputs], *[p.data for p in self.params])
        except GuardFailed:
            return False
        leaves = {self.var[id(t)]: t for t in self.inputs + self.params}
        return (all(agrees(np.asarray(g), np.asarray(o.data)) for g, o in zip(got, outs)) and
                all(agrees(np.array(grads[name], dtype=leaves[name].dtype), eager_grads[id(leaves[name])])
                    for name, _ in grad_names))

    def _keyword_args(self, params):
        """``name=value`` for a derived function's parameters: a literal where Python can read one back."""
        out = []
        for k, v in params.items():
            try:
                literal = ast.literal_eval(repr(v)) == v and type(ast.literal_eval(repr(v))) is type(v)
            except (ValueError, SyntaxError, TypeError):
                literal = False
            out.append(f"{k}={v!r}" if literal else f"{k}={self._named_constant(v)}")
        return out

    def _named_constant(self, value):
        name = self._reserve("const")
        self.constants[name] = value = np.array(value)
        self.ns[name] = value
        return name

    def _alias(self, a, b):
        """Note that variables ``a`` and ``b`` may share memory."""
        if a.isidentifier() and b.isidentifier():
            self.aliases.setdefault(a, set()).add(b)
            self.aliases.setdefault(b, set()).add(a)

    def _sharing(self, name):
        """Every variable that may share memory with ``name``, through any chain of aliases."""
        found, todo = set(), [name]
        while todo:
            for other in self.aliases.get(todo.pop(), ()):
                if other not in found and other != name:
                    found.add(other)
                    todo.append(other)
        return found

    def _stack_in_place(self, lines):
        """Make each stacked result straight into its slot of the stack, allocated first (``out=``).

        ``hs = np.stack([h_0, h_1, ...])`` copies states that the program keeps
        anyway; instead ``hs`` is allocated before the first of them and each is
        written into its slice (``h_1 = np.tanh(a_1, out=hs[:, 1])``), ``h_1``
        then being that slice.  Only for parts that are new arrays of one shape
        and dtype, each made by one line of its own.
        """
        defined = {}
        for i, line in enumerate(lines):
            defined.setdefault(line.split(" = ", 1)[0], i)
        out = list(lines)
        for stack_name, (parts, axis) in self.stacks.items():
            values = [self.ns.get(p) for p in parts]
            if (stack_name not in defined or len(set(parts)) != len(parts) or
                    not all(p in self.fresh and not self.aliases.get(p) and p in defined for p in parts) or
                    not all(v.__class__ is np.ndarray and v.shape == values[0].shape and
                            v.dtype == values[0].dtype for v in values)):
                continue
            whole = self.ns[stack_name]
            out[defined[stack_name]] = None
            first = min(defined[p] for p in parts)
            out[first] = f"{stack_name} = np.empty({whole.shape!r}, dtype=np.{whole.dtype.name})\n" + out[first]
            for k, part in enumerate(parts):
                slot = f"{stack_name}[{', '.join([':'] * axis + [str(k)])}]"
                i = defined[part]
                line = out[i].rsplit("\n", 1)
                head, body = (line[0] + "\n", line[1]) if len(line) == 2 else ("", line[0])
                if part in self.elementwise:
                    op, args = self.elementwise.pop(part)
                    body = f"{part} = {_UFUNC[op]}({', '.join(args)}, out={slot})"
                else:
                    body = f"{slot} = {body.split(' = ', 1)[1]}\n{part} = {slot}"
                out[i] = head + body
                self._alias(part, stack_name)
                self.fresh.discard(part)
        # the lines made here are split into statements; a loop stays one statement
        return [piece for i, line in enumerate(out) if line is not None
                for piece in (line.split("\n") if line != lines[i] else [line])]

    def _reuse_buffers(self, lines, keep):
        """Write an elementwise result into the buffer of an input that dies on that line (``out=``).

        Only for a buffer the program made itself (never an input, a parameter or
        a constant), that is not a view and that no live view looks into, with
        the result's shape and dtype; the values are the same, memory is not taken.
        """
        last = {}
        for i, line in enumerate(lines):
            for n in ast.walk(ast.parse(line)):
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
                    last[n.id] = i
        for name in keep:
            last[name] = len(lines)
        out = list(lines)
        for i, line in enumerate(lines):
            target = line.split(" = ", 1)[0]
            if target not in self.elementwise:
                continue
            op, args = self.elementwise[target]
            result = self.ns[target]
            for arg in args:
                value = self.ns.get(arg)
                if (arg in self.fresh and last.get(arg) == i and
                        all(last.get(other, -1) <= i for other in self._sharing(arg)) and
                        value.__class__ is np.ndarray and value.shape == result.shape and
                        value.dtype == result.dtype):
                    out[i] = f"{target} = {_UFUNC[op]}({', '.join(args)}, out={arg})"
                    self.fresh.add(target)
                    break
        return out

    def _assemble(self, arg_names, output_names, grad_names, reuse):
        name = self.function_name
        params = [self.var[id(p)] for p in self.params]
        shapes = ", ".join(f"{n} {t.shape} {t.dtype}" for n, t in zip(arg_names + params, self.inputs + self.params))
        self.doc = (f"Forward and backward of {getattr(self.fn, '__qualname__', name)}, traced for {shapes}; "
                    f"returns (outputs, gradients by argument name).")
        keep = set(output_names) | {g for _, g in grad_names}
        lines, kinds = _without_dead([code for code, _ in self.lines], keep, [kind for _, kind in self.lines])
        if reuse:
            before = len(lines)
            lines = self._stack_in_place(lines)
            kinds = ["forward"] * (len(lines) - before) + kinds   # the lines added are all forward ones
            lines = self._reuse_buffers(lines, keep)
        body = _with_frees(lines, keep, kinds)
        # an output that is (a view of) an argument or a constant is handed out as a copy of its own
        outside = [self.ns[n] for n in arg_names + params] + list(self.constants.values())
        returned = [f"np.array({n})" if n in self.ns and any(np.may_share_memory(self.ns[n], a) for a in outside)
                    else n for n in output_names]
        outs = ", ".join(returned) + ("," if len(output_names) == 1 else "")
        grads = ", ".join(f"{name!r}: {g}" for name, g in grad_names)
        source = "\n".join([f"def {name}({', '.join(arg_names + params)}):",
                            f'    """{self.doc}"""'] + ["    " + line.replace("\n", "\n    ") for line in body] +
                           [f"    return ({outs}), {{{grads}}}", ""])
        namespace = {k: v for k, v in self.ns.items()
                     if k == "np" or k == "GuardFailed" or k in self.constants or callable(v)}
        exec(compile(source, f"<traced {name}>", "exec"), namespace)
        return source, namespace[name]


def _expression_of(fn):
    """(parameter names, a fresh copy of the returned expression) when ``fn``'s body is one ``return``
    of an expression that reads only its parameters and numpy (``np``); else None."""
    if fn not in _BODIES:
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]
        except (OSError, TypeError, SyntaxError):   # no source to read: it is called
            tree = None
        _BODIES[fn] = tree if isinstance(tree, ast.FunctionDef) else None
    tree = _BODIES[fn]
    if tree is None:
        return None
    body = tree.body[1:] if isinstance(tree.body[0], ast.Expr) and isinstance(tree.body[0].value, ast.Constant) \
        else tree.body
    if len(body) != 1 or not isinstance(body[0], ast.Return) or body[0].value is None:
        return None
    params = [a.arg for a in tree.args.args]
    names = {n.id for n in ast.walk(body[0].value) if isinstance(n, ast.Name)}
    if not names <= set(params) | {"np"}:
        return None
    return params, copy.deepcopy(body[0].value)


_BODIES = {}


class _Substitute(ast.NodeTransformer):
    """Replace each name that is a key of ``values`` by the expression it maps to."""

    def __init__(self, values):
        self.values = values

    def visit_Name(self, node):
        return copy.deepcopy(self.values[node.id]) if node.id in self.values else node


def _recorded_order(records, roots):
    """The engine's topological order over recorded events (which a rewrite may have changed): every
    tensor reachable from ``roots`` through parents needing a gradient, newest first."""
    found = {id(r): r for r in roots}
    stack = list(found.values())
    while stack:
        node = stack.pop()
        event = records.get(id(node))
        if event is None or not event[5]:      # a leaf, or not part of the graph
            continue
        for p in event[3]:
            if p.requires_grad and id(p) not in found:
                found[id(p)] = p
                stack.append(p)
    return sorted(found.values(), key=lambda t: t._seq, reverse=True)


class _ScatterCode:
    """The gradient of an indexing: added into the input's gradient buffer at the index."""

    def __init__(self, index, g, basic):
        self.index, self.g, self.basic = index, g, basic

    def code(self, buffer):
        if self.basic:
            return f"{buffer}[{self.index}] += {self.g}"
        return f"np.add.at({buffer}, np.s_[{self.index}], {self.g})"


def _slice_source(s):
    """``start:stop:step`` as written in an index."""
    def part(v):
        return "" if v is None else repr(int(v))
    text = f"{part(s.start)}:{part(s.stop)}"
    return text if s.step is None else f"{text}:{part(s.step)}"


def _axis_kw(axis, keepdims):
    parts = []
    if axis is not None:
        parts.append(f"axis={axis!r}")
    if keepdims:
        parts.append("keepdims=True")
    return ", ".join(parts)


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


def _without_dead(lines, keep, kinds):
    """Drop assignments whose value nothing reads (every operation is pure; guards and ``+=`` stay)."""
    live, out = set(keep), []
    for line, kind in reversed(list(zip(lines, kinds))):
        tree = ast.parse(line).body[0]
        stores = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        if isinstance(tree, ast.Assign) and stores and not stores & live:
            continue
        live |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        out.append((line, kind))
    out.reverse()
    return [line for line, _ in out], [kind for _, kind in out]


def _with_frees(lines, keep, kinds):
    """The lines with ``del`` after the last use of each temporary, so memory goes back early."""
    last = {}
    assigned = []
    for i, line in enumerate(lines):
        tree = ast.parse(line)
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        for n in names:
            last[n] = i
        assigned.append({n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)})
    frees = {}
    defined = set().union(*assigned) if assigned else set()
    for n, i in last.items():
        if n in defined and n not in keep:
            frees.setdefault(i, []).append(n)
    out = []
    for i, line in enumerate(lines):
        if i and kinds[i] == "backward" and kinds[i - 1] == "forward":
            out.append("# backward")
        out.append(line)
        if i in frees:
            out.append("del " + ", ".join(sorted(frees[i])))
    return (["# forward"] if lines else []) + out
