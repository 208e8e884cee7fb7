"""The code writer: names, constants and helpers, one ``Line`` per operation, then the function.

A ``_Writer`` is made for one recording (the events, in the order they happened)
and writes its program once (``write``): the forward (``forward.py``), the
backward (``backward.py``), the passes over the lines (``passes.py``), and the
compiled function, each value checked against the eager run on the way.
"""
import ast
import inspect
import itertools
import keyword
import textwrap

import numpy as np

from .. import tensor as engine
from .backward import _BackwardLines
from .errors import GuardFailed, TraceError
from .forward import _ForwardLines
from .lines import Line
from .objects import is_module
from .passes import reuse_buffers, stack_in_place, with_frees, without_dead
from .probes import _global_names
from .verify import _close, _Mismatch, replays


def _identifier(name):
    """A variable name from ``name``: never starting with ``_`` (the helpers' names do)."""
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in str(name)).lstrip("_")
    if not name or name[0].isdigit():
        name = "t_" + name
    return name + "_" if keyword.iskeyword(name) else name


class _Writer(_ForwardLines, _BackwardLines):
    """Writes the program of one recording of ``fn`` on ``inputs``, checking every line against the eager run.

    ``recorder``: the recording (labels and time steps name the variables);
    ``start``: the first creation number of the recording (older tensors are
    parameters, or refused); ``events``: the recorder's events, or a rewrite of
    them; ``agrees(written, eager)``: the check of every value; ``order``: the
    backward order of the events' graph (the engine's own by default).
    """

    def __init__(self, fn, inputs, names, recorder, start, events, agrees, order=None,
                 builtins=("np", "GuardFailed"), function_name=None):
        self.fn, self.inputs, self.names = fn, inputs, names
        self.recorder, self.start, self.events, self.agrees = recorder, start, events, agrees
        self.order = order or engine._topological_order
        # for writing results into dying buffers: arrays this program made (fresh), which variables may
        # share memory (a view and its base; a derived value and its arguments), the stacks made of parts
        self.fresh, self.aliases, self.stacks = set(), {}, {}
        self.used = set(builtins)
        self.lines = []             # Line records, forward then backward
        known = {"np": np, "GuardFailed": GuardFailed, "_Scatter": engine._Scatter}
        self.ns = {k: known[k] for k in builtins}   # the example's values by variable name, as lines run
        self.var = {}               # id(tensor) -> variable name
        self.helpers = []
        self.constants = {}
        self.params = []
        self.leaf_by_id = {}
        self.composite_functions, self.composite_sources, self.saved_of = {}, [], {}
        self.doc = ""
        given = getattr(fn, "__name__", "step")
        self.function_name = function_name or self._reserve("step" if given == "<lambda>" else given)
        self.arg_names = self._argument_names()
        for t, name in zip(inputs, self.arg_names):
            self.var[id(t)] = name
            self.ns[name] = t.data
        self.param_names = self._param_names()

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
            pairs = self.names.named_parameters() if is_module(self.names) else self.names.items()
            return {id(p): name for name, p in pairs}
        found = {}
        fn = self.fn
        owner = getattr(fn, "__self__", None)
        modules = [("", owner)] if is_module(owner) else []
        try:
            seen = inspect.getclosurevars(getattr(fn, "__func__", fn))
            refs = {**seen.globals, **seen.nonlocals}
        except (TypeError, ValueError):
            refs = {}
        modules += [(name + ".", m) for name, m in refs.items() if is_module(m)]
        for prefix, module in modules:
            for name, p in module.named_parameters():
                found.setdefault(id(p), prefix + name)
        return found

    def _argument_names(self):
        try:
            params = [p for p in inspect.signature(self.fn).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            names = [p.name for p in params][:len(self.inputs)]
        except (TypeError, ValueError):
            names = []
        names += [f"x{i}" for i in range(len(names), len(self.inputs))]
        return [self._reserve(n) for n in names]

    def _name_of(self, t, partners=()):
        """The variable holding ``t``: an input, a recorded result, a parameter or a constant.

        ``partners`` are the other operands of the operation that reads ``t`` now.
        """
        key = id(t)
        if key in self.var:
            return self.var[key]
        constant = t._op == "const"
        if t.requires_grad and t._seq < self.start and t.is_leaf:
            name = self._reserve(self.param_names.get(key) or t.name or f"p{len(self.params)}")
            self.params.append(t)
            self.var[key] = name
            self.ns[name] = t.data
            return name
        if t._seq < self.start and not constant:
            what = ("the result of operations done before tracing (its graph lies outside the program)"
                    if t.requires_grad else "neither an input nor a parameter")
            raise TraceError(f"trace: fn reads a tensor of shape {t.shape} ({t.dtype}) made before tracing "
                             f"that is {what}; its value would be frozen into the program. Pass it as an "
                             f"input (and return its new value as an output if it changes).")
        if t.requires_grad:
            raise TraceError(f"trace: fn makes a tensor that requires grad (shape {t.shape}) inside the "
                             f"traced function; make parameters outside it")
        # a number lifted to the dtype of every other operand may be written as a Python float
        lifted = constant and all(p.dtype == t.dtype for p in partners if p is not t)
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

    def _new_var(self, t, base):
        key = id(t)
        label = self.recorder.labels.get(key) or t.name
        step = self.recorder.steps.get(key)
        name = self._reserve(label or base, step)
        self.var[key] = name
        return name

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
            for other_name in _global_names(fn.__code__):   # helpers that the helper calls, from its own module
                other = fn.__globals__.get(other_name)
                if inspect.isfunction(other) and other.__module__ == fn.__module__:
                    self._use(other)
        return name

    def _alias(self, a, b):
        """Note that variables ``a`` and ``b`` may share memory."""
        if a.isidentifier() and b.isidentifier():
            self.aliases.setdefault(a, set()).add(b)
            self.aliases.setdefault(b, set()).add(a)

    # ------------------------------------------------------------------ lines
    def _run(self, line):
        exec(compile(line.render(), "<trace>", "exec"), self.ns)
        self.lines.append(line)
        return line

    def _emit(self, code, kind="forward"):
        """A statement (a guard, ``+=``, a loop, ...): run now, in the example's namespace, and kept."""
        return self._run(Line.statement(code, kind))

    def _assign(self, target, expr, kind="forward"):
        return self._run(Line.assign(target, expr, kind))

    # ------------------------------------------------------------------ the program
    def write(self, outs, single, backward, eager_grads):
        """The program (a ``program._Variant``) for the events: forward, backward, passes, compiled.

        A writer writes once: its lines and names are those of this one program.
        """
        from .program import _signature, _Variant
        for event in self.events:
            self._forward(event)
        output_names = [self._name_of(o) for o in outs]
        grad_targets, grad_names = [], []
        if backward:
            self._grad_leaves()
            final = self._backward(outs[0])
            for leaf in self.inputs + self.params:     # in the function's argument order
                if id(leaf) not in final:
                    continue
                gname = final[id(leaf)]
                expected = eager_grads.get(id(leaf))
                if expected is None or not self.agrees(np.array(self.ns[gname], dtype=leaf.dtype), expected):
                    if self.agrees is _close:
                        raise _Mismatch()
                    raise TraceError(f"trace: internal check failed: the written backward's gradient for "
                                     f"{self.var[id(leaf)]} differs from the engine's")
                grad_targets.append(self._leaf_kind(leaf))
                grad_names.append((self.var[id(leaf)], gname))
        by_name = {self.var[id(t)]: t for t in self.inputs + self.params}
        by_name = {name: by_name[name] for name, _ in grad_names}
        for reuse in (True, False):
            source, function = self._assemble(output_names, grad_names, reuse)
            if replays(function, self.inputs, self.params, outs, by_name, eager_grads, self.agrees):
                break
        else:
            if self.agrees is _close:
                raise _Mismatch()
            raise TraceError("trace: internal check failed: the written program does not give the "
                             "engine's results")
        if self.composite_sources:      # the compositions' functions it calls, written once, above it
            from .composite_calls import functions_called
            source = functions_called(self, source) + source
        return _Variant(inputs=list(self.inputs), params=self.params, param_signature=_signature(self.params),
                        grad_targets=grad_targets, source=source, function=function, single=single,
                        helpers=self.helpers, constants=self.constants, doc=self.doc)

    def _assemble(self, output_names, grad_names, reuse):
        name = self.function_name
        arg_names = self.arg_names
        params = [self.var[id(p)] for p in self.params]
        shapes = ", ".join(f"{n} {t.shape} {t.dtype}" for n, t in zip(arg_names + params, self.inputs + self.params))
        self.doc = (f"Forward and backward of {getattr(self.fn, '__qualname__', name)}, traced for {shapes}; "
                    f"returns (outputs, gradients by argument name).")
        keep = set(output_names) | {g for _, g in grad_names}
        lines = without_dead(self.lines, keep)
        if reuse:
            aliases = {k: set(v) for k, v in self.aliases.items()}
            lines, fresh = stack_in_place(lines, self.stacks, self.fresh, aliases, self.ns)
            lines = reuse_buffers(lines, keep, fresh, aliases, self.ns)
        body = with_frees(lines, keep)
        # an output that is (a view of) an argument or a constant is handed out as a copy of its own
        outside = [self.ns[n] for n in arg_names + params] + list(self.constants.values())
        returned = [f"np.array({n})" if n in self.ns and any(np.may_share_memory(self.ns[n], a) for a in outside)
                    else n for n in output_names]
        outs = ", ".join(returned) + ("," if len(output_names) == 1 else "")
        grads = ", ".join(f"{name!r}: {g}" for name, g in grad_names)
        source = "\n".join([f"def {name}({', '.join(arg_names + params)}):",
                            f'    """{self.doc}"""'] + [textwrap.indent(line, "    ") for line in body] +
                           [f"    return ({outs}), {{{grads}}}", ""])
        namespace = {k: v for k, v in self.ns.items()
                     if k == "np" or k == "GuardFailed" or k in self.constants or callable(v)}
        exec(compile(source, f"<traced {name}>", "exec"), namespace)
        return source, namespace[name]

