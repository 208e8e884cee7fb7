"""Compiled compositions: a function of Tensors that runs as ONE graph node, and stays its own definition.

    @composite
    def cell(x, h):
        return F.tanh(x @ Wx + h @ Wh + b)

The first call for a given signature runs ``cell`` plainly while the engine
records it, and writes two numpy functions from the record (``tracing.vjp``):
the forward, and the backward that takes the outputs' gradients and returns
the inputs' (a vector-Jacobian product).  Later calls run those as one node
whose backward is the written backward.  The numbers are the plain
composition's to the last bit: the same numpy calls in the same order, and the
gradient terms handed back to the engine to be added exactly as the plain
graph would add them.

The signature is each Tensor argument's shape, dtype and ``requires_grad``, and
the other arguments' values (numbers, strings, None; an argument of another
kind runs the call plainly).  A call runs the composition plainly instead when

* a branch it took through ``tensor.decide`` goes the other way (a guard);
* a parameter it reads is no longer the same object (``cell.Wx = Parameter(...)``);
* a module attribute was set since it was written (``cell.nonlinearity = "relu"``),
  or a global or closure variable it reads names another object;

and it writes itself again for the new situation on the next call.  Values
that it reads around the Tensor operations (``.data``, numpy on tensor values)
would be frozen into the program: the first call checks the program on other
input values and raises ``TraceError`` when it does not reproduce the plain run.
What it reads from outside its arguments (globals and closure variables, also
those of the functions it calls: its own module's, compositions and the user's,
``tracing.probes.function_reads``; what the user's methods it reaches read; the
attributes of the modules and objects it reaches, private ones too) is checked
on every call: the same object, or for a numpy array or a number the same
value (``tracing.watch``).  ``.data`` read by the user's code, random draws and
a value it changes on every call are refused while it is written.

``with expanded():`` runs every composite as its plain composition, node by
node (for learning, pictures of every primitive, and checking).  While a step
is traced (``tracing.trace``), each composite is one call of its written
forward and backward functions in the program (``tracing.composite_calls``).
"""
import contextlib
import functools
import inspect
import types
import weakref

import numpy as np

from . import tensor as engine
from .tensor import Tensor
from .tracing.errors import GuardFailed, TraceError
from .tracing.probes import (_global_names, function_reads, run_again, probe as _probe, settled,
                             still_holds as _still_holds)
from .tracing.recorder import Derived, Op
from .tracing.vjp import NotCompiled, write_vjp

__all__ = ["composite", "expanded", "is_expanded", "Composite", "CompositeOp"]

_expanded = 0          # depth of `expanded()` blocks
_generation = [0]      # bumped whenever a module attribute is set: programs written before are checked again


def attribute_set():
    """Note that an attribute of some module was set (``nn.Module`` calls this)."""
    _generation[0] += 1


def is_expanded():
    """True inside ``expanded()``: composites run as their plain compositions."""
    return _expanded > 0


class expanded(contextlib.ContextDecorator):
    """Run every composite as its plain composition, node by node (context manager or decorator).

    ``with tinygrad_rnn.expanded(): loss = model(x)`` builds the graph of every
    primitive (for pictures, learning and checking); the numbers are the same
    as compiled, to the last bit.  Blocks nest.
    """

    def __enter__(self):
        """Start running composites plainly."""
        global _expanded
        _expanded += 1
        return self

    def __exit__(self, *exc):
        """Back to compiled composites (after the outermost block); exceptions propagate."""
        global _expanded
        _expanded -= 1
        return False


def composite(fn=None, *, name=None):
    """Mark ``fn`` (a function of Tensors, or a Module's method) as a composition compiled into one node.

    ``@composite`` or ``@composite(name="lstm_cell")``; the name is the node's
    operation (``node._op``) in pictures (default: the function's name).
    Returns a ``Composite``, called as ``fn`` is: its first call for each
    signature records ``fn`` and writes its forward and backward programs, and
    later calls run them as one graph node, with ``fn``'s numbers to the last
    bit (the module docstring lists the guards and what is refused).
    """
    if fn is None:
        return lambda f: Composite(f, name)
    return Composite(fn, name)


_PLAIN = object()    # a signature that runs plainly (the reason is kept beside it)


class Composite:
    """A compiled composition (made by ``composite``): call it as the function it wraps.

    ``.fn`` is the plain composition, ``.name`` the node's operation name, and
    ``.reasons`` maps each signature that runs plainly (never compiled) to why.
    """

    def __init__(self, fn, name=None):
        if not callable(fn):
            raise TypeError(f"composite: expected a function, got {type(fn).__name__}")
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.name = name or fn.__name__.strip("_") or "composite"
        self._programs = {}                           # for plain functions: signature -> _Program
        self._by_owner = {}     # for methods: weak reference to the owner -> (its id, {signature: _Program})
        self.reasons = {}                             # signature -> why it runs plainly

    def __get__(self, owner, kind=None):
        return self if owner is None else types.MethodType(self, owner)

    def __repr__(self):
        return f"<composite {self.name}>"

    def __call__(self, *args, **kwargs):
        tracer = engine._tracer
        if _expanded or tracer is not None and not tracer.whole_step:
            return self.fn(*args, **kwargs)
        owner = None
        if args and _is_owner(args[0]):
            owner, args = args[0], args[1:]
        if tracer is not None:      # a traced step: one call of the written programs (tracing.composite_calls)
            return tracer.composite(self, owner, args, kwargs)
        program, tensors = self.program_for(owner, args, kwargs)
        if program is None:
            return self._plain(owner, args, kwargs)
        try:
            out = program.run(tensors)
        except GuardFailed:
            # the program was written on values that took another branch (NaN logits on a first call, say):
            # once it has missed more often than it ran, the next call writes it again from its own values
            program.misses += 1
            return self._plain(owner, args, kwargs)
        program.runs += 1
        return out

    def program_for(self, owner, args, kwargs):
        """``(program, tensors)``: the written program for these arguments (written now if needed) and
        their Tensors in order; ``(None, None)`` when this call runs plainly."""
        key, tensors = _signature(args, kwargs)
        if key is None:
            return None, None
        key += (engine._grad_enabled,)   # a program written under no_grad() has no backward
        programs = self._programs if owner is None else self._owner_programs(owner)
        program = programs.get(key)
        if program is None or (program is not _PLAIN and (program.misses > program.runs + 1
                                                           or not program.still_valid(owner))):
            program = programs[key] = self._write(owner, args, kwargs, tensors, key)
        if program is _PLAIN or _aliased(tensors, program.param_ids):
            return None, None
        return program, tensors

    def _owner_programs(self, owner):
        """The programs written for ``owner``, dropped with it.  The weak reference's callback is the
        dict's own ``pop``, which runs no Python code: a Python callback runs whenever the owner happens
        to be collected, and a Ctrl-C that lands inside one is lost with a traceback."""
        entry = self._by_owner.get(weakref.ref(owner))
        if entry is None:
            entry = self._by_owner[weakref.ref(owner, self._by_owner.pop)] = (id(owner), {})
        return entry[1] if entry[0] == id(owner) else {}   # another owner that compares equal: none kept

    def _plain(self, owner, args, kwargs):
        return self.fn(*args, **kwargs) if owner is None else self.fn(owner, *args, **kwargs)

    def _caller(self, owner, refill):
        """The plain composition as a function of the Tensor arguments alone (the others fixed)."""
        owner = None if owner is None else weakref.proxy(owner)

        def call(*tensors):
            new_args, new_kwargs = refill(tensors)
            return self._plain(owner, new_args, new_kwargs)
        return call

    def _bound(self, owner):
        return self.fn if owner is None else types.MethodType(self.fn, owner)

    def _write(self, owner, args, kwargs, tensors, key):
        """Record the composition on fresh leaves of the arguments and write its programs."""
        leaves = [Tensor(t.data, requires_grad=t.requires_grad) for t in tensors]
        call = self._caller(owner, _refiller(_skeleton(args), _skeleton(kwargs)))
        try:
            compiled = write_vjp(call, leaves, self.name, _argument_names(self.fn, args, kwargs, len(tensors)),
                                 shown=self._bound(owner))
        except NotCompiled as e:
            self.reasons[key] = str(e)
            return _PLAIN
        try:
            program = _Program(self, compiled, owner, call)
        except NotCompiled as e:
            self.reasons[key] = str(e)
            return _PLAIN
        program.reads, program.probes = settled(program.reads), settled(program.probes)
        run_again(program.reads + program.probes, lambda: program.check_on_other_values(call, leaves))
        compiled.recorder = None    # the record holds the example's whole graph: not needed any more
        return program


class _Program:
    """The written programs of one signature, and the guards that say they still apply."""

    def __init__(self, composite, compiled, owner, call):
        self.composite, self.compiled = composite, compiled
        self.name = composite.name
        self.op = CompositeOp(composite.name, call, len(compiled.params))
        self.params = compiled.params
        self.param_ids = {id(p) for p in self.params}
        fn = composite.fn
        self.paths = [_find(p, owner, fn, composite.name) for p in self.params]
        self.reads = [_probe(*read) for read in function_reads(fn)]
        read = {(id(p.source), p.key) for p in self.reads}
        # module attributes (private ones too) it read while written; what reads has is not checked twice
        self.probes = [p for p in compiled.probes if (id(p.source), p.key) not in read]
        self.generation = _generation[0]
        self.runs = self.misses = 0     # calls it ran, and calls whose values failed its guards
        self.outside_arrays(owner)

    # ------------------------------------------------------------------ guards
    def still_valid(self, owner):
        """The parameters, globals and closure values it read are the same objects, no module attribute set."""
        if self.generation != _generation[0]:
            return False
        for p, path in zip(self.params, self.paths):
            if _resolve(path, owner, self.composite.fn) is not p:
                return False
        return all(map(_still_holds, self.reads)) and all(map(_still_holds, self.probes))

    def outside_arrays(self, owner):
        """A module's arrays are checked by value on every call (the probes noted while the program was
        written); written inside another recording, where none are noted, a composition that uses an
        array constant of a module that holds arrays runs plainly instead."""
        if self.compiled.watched or owner is None or \
                not any(isinstance(v, np.ndarray) for v in vars(owner).values()):
            return
        made = {id(t) for e in self.compiled.recorder.events if isinstance(e, Derived) for t in e.made}
        for event in self.compiled.recorder.events:
            if isinstance(event, Op) and any(p._op == "const" and id(p) not in made and p.ndim
                                             for p in event.parents):
                raise NotCompiled(f"{self.name} reads an array constant, and its module holds arrays")

    def check_on_other_values(self, call, leaves):
        """Run the program and the plain composition on other input values: they must agree.

        A value computed around the Tensor operations (``.data``, numpy on tensor
        values) agrees on the example it was written from, but not on others.
        """
        rng = np.random.default_rng(1)
        with np.errstate(all="ignore"):
            others = [Tensor(_other_values(t.data, rng), requires_grad=t.requires_grad) for t in leaves]
            try:
                with expanded():
                    want = call(*others)
            except Exception:      # values outside the composition's domain: nothing to compare
                return
            try:
                got, _ = self.compiled.forward(*[t.data for t in others], *[p.data for p in self.params])
            except GuardFailed:    # another branch: such a call runs plainly anyway
                return
        want = (want,) if isinstance(want, Tensor) else tuple(want)
        from .tracing.verify import _same
        if not all(_same(g, w.data) for g, w in zip(got, want)):
            raise TraceError(f"composite {self.name}: the compiled program does not reproduce the composition "
                             f"on other input values. It seems to use tensor values outside Tensor operations "
                             f"(for example .data, or numpy on them), which would freeze them into the "
                             f"program; compute them with Tensor operations (tensor.derived / tensor.decide), "
                             f"or run it undecorated")

    # ------------------------------------------------------------------ running
    def run(self, tensors):
        compiled = self.compiled
        params = self.params
        outs, saved = compiled.forward(*[t.data for t in tensors], *[p.data for p in params])
        parents = tuple(tensors) + tuple(params)
        if not (engine._grad_enabled and compiled.differentiable):
            made = tuple(Tensor._make(o, (), None, self.op) for o in outs)
        elif compiled.single:
            backward = compiled.backwards[(True,)]
            return Tensor._make(outs[0], parents, lambda g: backward(g, *saved), self.op)
        else:
            backwards = compiled.backwards

            def backward(gs):
                return backwards[tuple(g is not None for g in gs)](*[g for g in gs if g is not None], *saved)
            made = Tensor._make_many(outs, parents, backward, self.op)
        return made[0] if compiled.single else made

    @property
    def source(self):
        return self.compiled.source


class CompositeOp(str):
    """The operation of a compiled composition's node: its name, and a way to see inside it.

    ``node._op`` is this string (``"tanh"``, ``"lstm_cell"``); ``expand(node)``
    runs the plain composition again on the node's input values, for pictures.
    """

    def __new__(cls, name, call, n_params):
        op = super().__new__(cls, name)
        op.call, op.n_params = call, n_params
        return op

    def expand(self, node):
        """``(inputs, outputs)``: fresh leaves with the values of ``node``'s Tensor inputs, and the plain
        composition's outputs on them, node by node (a tuple for several outputs).  ``node`` must still
        have its graph (before backward, or kept with ``retain_graph=True``)."""
        leaves = [Tensor(t.data, requires_grad=t.requires_grad) for t in self._inputs(node)]
        return leaves, self._run(leaves)

    def replay(self, node):
        """The plain composition's outputs on ``node``'s own input Tensors (not copies), node by node:
        their graph leads to those inputs and to the parameters, so a backward that builds a graph
        (``tinygrad_rnn.grad(..., create_graph=True)``) differentiates the composition through it."""
        return self._run(self._inputs(node))

    def _inputs(self, node):
        parents = node._parents
        if not parents:
            raise RuntimeError(f"{self}: the node's graph has been freed; expand it before backward() "
                               f"or keep the graph with retain_graph=True")
        return parents[:len(parents) - self.n_params]

    def _run(self, inputs):
        with expanded():
            return self.call(*inputs)


# ---------------------------------------------------------------------- signatures
def _aliased(tensors, param_ids):
    """Whether one tensor is two of the arguments, or an argument and a parameter the program reads.

    The program was written with a leaf of its own for each: the gradient terms of such a tensor would be
    added argument by argument, not in the order of the plain graph, and the sum could differ in the last
    bit.  Such a call runs plainly.
    """
    ids = {id(t) for t in tensors}
    return len(ids) < len(tensors) or not ids.isdisjoint(param_ids)


def _is_owner(x):
    """A Module (or any object with parameters) that a method is bound to."""
    return hasattr(x, "named_parameters") and not isinstance(x, Tensor)


_STATIC = (int, float, str, bool, type(None))


def _signature(args, kwargs):
    """(key, tensors): the Tensor arguments in order, and what the program is written for; (None, None)
    when an argument is of a kind the signature cannot hold (the call then runs plainly)."""
    key, tensors = [], []
    for a in args:
        if not _add_to_signature(a, key, tensors):
            return None, None
    for k in sorted(kwargs):
        key.append(k)
        if not _add_to_signature(kwargs[k], key, tensors):
            return None, None
    return tuple(key), tensors


# module-level and recursive, not nested closures: a closure that calls itself is a reference cycle, and
# with the cyclic collector paused (nn.unroll pauses it) the arguments it holds would outlive the call
def _add_to_signature(x, key, tensors):
    if isinstance(x, Tensor):
        tensors.append(x)
        key.append((x.data.shape, x.data.dtype, x.requires_grad))
    elif isinstance(x, (tuple, list)):
        key.append((type(x), len(x)))
        return all(_add_to_signature(y, key, tensors) for y in x)
    elif isinstance(x, float):
        # by its bits: -0.0 == 0.0 (yet 1 / -0.0 is -inf), and nan != nan would write a program per call
        key.append((type(x), x.hex()))
    elif isinstance(x, _STATIC):
        key.append((type(x), x))
    else:
        return False
    return True


class _Hole:
    """Where a Tensor argument was, in a call's arguments kept for later."""


def _skeleton(x):
    """``x`` with each Tensor in it replaced by a ``_Hole`` (so that a kept call holds no tensor)."""
    if isinstance(x, Tensor):
        return _Hole()
    if isinstance(x, (tuple, list)):
        return type(x)(_skeleton(y) for y in x)
    if isinstance(x, dict):
        return {k: _skeleton(v) for k, v in x.items()}
    return x


def _refill(x, fresh):
    """``x`` with each hole in it filled by the next of the iterator ``fresh``."""
    if isinstance(x, _Hole):
        return next(fresh)
    if isinstance(x, (tuple, list)):
        return type(x)(_refill(y, fresh) for y in x)
    return x


def _refiller(args, kwargs):
    """A function putting new Tensors where the Tensors of ``args`` and ``kwargs`` were."""
    def refill(new):
        fresh = iter(new)
        new_args = tuple(_refill(a, fresh) for a in args)
        return new_args, {k: _refill(kwargs[k], fresh) for k in sorted(kwargs)}
    return refill


def _argument_names(fn, args, kwargs, count):
    """Names for the Tensor arguments in the code: the parameter's name (``h``, ``c`` for a pair ``state``)."""
    try:
        params = [p.name for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    if params and params[0] == "self":
        params = params[1:]
    names = []
    for i, a in enumerate(args):
        _tensor_names(a, params[i] if i < len(params) else f"x{i}", names)
    for k in sorted(kwargs):
        _tensor_names(kwargs[k], k, names)
    return names[:count] + [f"x{i}" for i in range(len(names), count)]


def _tensor_names(x, name, names):
    if isinstance(x, Tensor):
        names.append(name)
    elif isinstance(x, (tuple, list)):
        for i, y in enumerate(x):
            _tensor_names(y, f"{name}{i}", names)


def _other_values(d, rng):
    """Values like ``d`` but different: new floats (signs too), integers within d's range, random booleans."""
    if d.dtype.kind == "f":
        return (rng.standard_normal(d.shape) * (1 + np.abs(d))).astype(d.dtype)
    if d.dtype.kind in "iu" and d.size:
        return rng.integers(d.min(), d.max(), size=d.shape, endpoint=True).astype(d.dtype)
    if d.dtype.kind == "b":
        return rng.random(d.shape) < 0.5
    return d.copy()


# ---------------------------------------------------------------------- where parameters come from
def _find(p, owner, fn, name):
    """How ``fn`` reaches the parameter ``p``: through its owner's attributes, a closure cell or a global."""
    roots = []
    if owner is not None:
        roots.append((("owner",), owner))
    code = getattr(fn, "__code__", None)
    if code is not None:
        for var, cell in zip(code.co_freevars, fn.__closure__ or ()):
            try:
                roots.append((("cell", var), cell.cell_contents))
            except ValueError:
                pass
        for var in _global_names(code):
            if var in fn.__globals__:
                roots.append((("global", var), fn.__globals__[var]))
    for root, value in roots:
        parts = _path_to(p, value, 3)
        if parts is not None:
            return root, parts
    raise TraceError(f"composite {name}: reads a parameter of shape {p.shape} that later calls could not find "
                     f"again (it is not an attribute of the module, a closure variable or a global of the "
                     f"function); pass it as an argument")


def _path_to(p, value, depth):
    """The keys leading from ``value`` to ``p`` through modules, dicts, lists and tuples; None if none."""
    if value is p:
        return ()
    if _is_owner(value):
        for dotted, q in value.named_parameters():
            if q is p:
                return tuple(dotted.split("."))
    elif depth and isinstance(value, (dict, list, tuple)):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            rest = _path_to(p, item, depth - 1)
            if rest is not None:
                return (key,) + rest
    return None


def _resolve(path, owner, fn):
    root, parts = path
    if root[0] == "owner":
        value = owner
    elif root[0] == "cell":
        value = fn.__closure__[fn.__code__.co_freevars.index(root[1])].cell_contents
    else:
        value = fn.__globals__.get(root[1])
    for part in parts:
        if isinstance(value, (list, tuple)):
            index = int(part)
            value = value[index] if -len(value) <= index < len(value) else None
        elif isinstance(value, dict):
            value = value.get(part)
        else:
            value = getattr(value, part, None)
    return value


