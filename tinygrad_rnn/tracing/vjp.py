"""A composition written as two numpy functions: its forward, and its vector-Jacobian product.

``write_vjp(fn, inputs, name)`` runs ``fn`` once on fresh leaves while the
engine reports every operation (as ``tracing.trace`` does), then writes

* ``<name>_forward(inputs..., params...) -> (outputs, saved)``: the forward
  lines, keeping only the values the backward reads (``saved``);
* one ``<name>_backward(d_outputs..., saved...)`` for each set of outputs that
  can receive a gradient: the engine's backward over the composition's nodes,
  same order, same formulas.  It returns, for each input and parameter, the
  terms of its gradient one by one (``None``, an array, or a list of them) and
  leaves the adding to the engine, which adds them exactly as it would have
  added them had the composition run node by node: so a compiled composition
  gives the plain one's gradients to the last bit, wherever it sits in a graph.

Every forward line and every backward's terms are checked against the eager
engine on the example inputs before the programs are handed out.
"""
import contextlib
import itertools

import numpy as np

from .. import tensor as engine
from ..tensor import Tensor
from .backward import _ScatterCode
from .errors import GuardFailed, TraceError
from .passes import reuse_buffers, with_frees, without_dead
from .recorder import Op, _Recorder, _Recording
from .verify import _same
from .writer import _Writer
from .objects import is_module
from .watch import _SLOT_DATA, _Watch

__all__ = ["write_vjp", "Compiled"]

MAX_OUTPUTS = 3   # a backward is written for each non-empty set of outputs: 2**n - 1 of them


class NotCompiled(Exception):
    """The composition runs fine, but not as one node (the message says why); it runs plainly instead."""


class Compiled:
    """What ``write_vjp`` made for one signature: the programs, and what they read."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def write_vjp(fn, inputs, name, arg_names, shown=None):
    """Record ``fn(*inputs)`` and write its forward and backward programs (a ``Compiled``).

    ``arg_names`` name the inputs in the code; ``shown`` is the function the user
    wrote (its closure and module name the parameters), ``fn`` by default.
    """
    recorder = _Recorder()
    start = next(engine._creation_counter)
    # what the composition reads from outside (module attributes, closure cells, globals) becomes checks
    # on later calls; .data read by the user's code and random draws are refused (as trace does)
    watch = _Watch(shown or fn) if Tensor.__dict__["data"] is _SLOT_DATA else contextlib.nullcontext()
    with watch, _Recording(recorder):
        out = fn(*inputs)
    # (not the owner itself: the program is kept per owner, weakly, and must not keep it alive)
    probes = [p for p in getattr(watch, "probes", []) if p.key != "self"]
    single = isinstance(out, Tensor)
    outs = (out,) if single else tuple(out) if isinstance(out, (tuple, list)) else None
    if outs is None or not outs or not all(isinstance(o, Tensor) for o in outs):
        raise NotCompiled(f"{name} returns {type(out).__name__}, not a Tensor or a tuple of Tensors")
    if len({id(o) for o in outs}) < len(outs):
        raise NotCompiled(f"{name} returns the same tensor twice")
    if any(o._seq < start or o._op == "const" for o in outs):
        raise NotCompiled(f"{name} returns one of its inputs (or a tensor made before it) as it is")
    differentiable = [o.requires_grad for o in outs]
    if any(differentiable) and not all(differentiable):
        raise NotCompiled(f"{name} returns outputs with and without gradient")
    if len(outs) > MAX_OUTPUTS and any(differentiable):
        raise NotCompiled(f"{name} has {len(outs)} outputs (at most {MAX_OUTPUTS} are compiled)")
    rng = np.random.default_rng(0)
    seeds = [rng.standard_normal(o.shape).astype(o.dtype) for o in outs]
    patterns = [p for p in itertools.product((False, True), repeat=len(outs)) if any(p)] \
        if all(differentiable) else []
    def make():
        return _VjpWriter(shown or fn, inputs, name, recorder, start, outs, arg_names)
    written, forward_source, backward_sources = _write(make, patterns, seeds)
    return Compiled(name=name, single=single, n_outputs=len(outs), differentiable=any(differentiable),
                    params=written.params, forward=written.forward, backwards=written.backwards,
                    source=forward_source + "\n" + "\n".join(backward_sources),
                    helpers=written.helpers, constants=written.constants, recorder=recorder, probes=probes,
                    watched=isinstance(watch, _Watch))


def _write(make, patterns, seeds):
    """The forward function and one backward function per pattern of outputs with a gradient.

    Each pattern's backward is written by a writer of its own (``make()``), whose forward lines,
    written the same way every time, have the same names; the last one writes the functions.
    """
    saved_by = {}
    for pattern in patterns or [()]:
        writer = make()
        forward_lines = list(writer.lines)
        if pattern:
            with np.errstate(all="ignore"):   # random output gradients may overflow where real ones do not
                returns = writer._vjp(pattern, seeds)
            backward_lines = writer.lines[len(forward_lines):]
            saved_by[pattern] = (writer._saved(forward_lines, backward_lines), backward_lines, returns)
    output_names = [writer._name_of(o) for o in writer.outs]
    saved_all = sorted({n for saved, _, _ in saved_by.values() for n in saved},
                       key=writer._definition_order(forward_lines))
    forward_source, writer.forward = writer._function(
        f"{_safe(writer.name)}_forward", writer.arg_names + writer.param_args, forward_lines,
        keep=output_names + saved_all, returns=f"({_tuple(output_names)}), ({_tuple(saved_all)})", forward=True)
    backward_sources = []
    for pattern, (_, lines, returns) in saved_by.items():
        seeds_in = [writer.seed_names[i] for i, want in enumerate(pattern) if want]
        suffix = "".join("1" if p else "0" for p in pattern) if len(pattern) > 1 else ""
        source, function = writer._function(
            f"{_safe(writer.name)}_backward{suffix and '_' + suffix}", seeds_in + saved_all, lines,
            keep=[n for r in returns for n in r], returns=_returns(returns), forward=False)
        writer.backwards[pattern] = function
        backward_sources.append(source)
    with np.errstate(all="ignore"):
        writer._check(patterns, seeds)
    return writer, forward_source, backward_sources


class _VjpWriter(_Writer):
    """The whole-step writer, driven to write a forward and backward functions instead of one step.

    Made, it has written the forward lines; ``_vjp`` adds the backward lines of one pattern of outputs.
    """

    def __init__(self, fn, inputs, name, recorder, start, outs, arg_names):
        owner = getattr(fn, "__self__", None)
        self.name, self.outs, self.given_names = name, outs, arg_names
        super().__init__(fn, inputs, owner if is_module(owner) else None, recorder, start,
                         recorder.events, _same, builtins=("np", "GuardFailed", "_Scatter"),
                         function_name=_safe(name))
        self.forward, self.backwards = None, {}
        self.leaf_terms, self.seed_names = {}, []
        for event in self.events:
            self._forward(event)
        self.param_args = [self.var[id(p)] for p in self.params]

    def _argument_names(self):
        return [self._reserve(n) for n in self.given_names]

    def _name_of(self, t, partners=()):
        # a tensor made outside that is not a parameter (a module attribute holding a graph's result, a
        # constant Tensor): the composition stays correct when run plainly, so it is not compiled
        if id(t) not in self.var and t._op != "const" and t._seq < self.start and not (t.requires_grad and
                                                                                        t.is_leaf):
            raise NotCompiled(f"{self.name} reads a tensor of shape {t.shape} made outside it that is "
                              f"not a parameter")
        return super()._name_of(t, partners)

    def _vjp(self, pattern, seeds):
        """The backward lines from the outputs in ``pattern``; returns each leaf's list of term names."""
        self._grad_leaves()
        self.leaf_terms = {id(t): [] for t in self.inputs + self.params}
        grads = {}
        for o, want, seed in zip(self.outs, pattern, seeds):
            dname = "d" + self.var[id(o)]
            self.seed_names.append(dname)
            if want:
                grads[id(o)] = dname
                self.ns[dname] = seed
        records = {id(e.tensor): e for e in self.events if isinstance(e, Op)}
        owned = set()
        for node in engine._topological_order(*[o for o, want in zip(self.outs, pattern) if want]):
            key = id(node)
            g = grads.pop(key, None)
            if g is None:
                continue
            event = records.get(key)
            if event is None or not event.linked:
                continue
            owned.discard(key)
            for i, piece in self._backward_pieces(event.op, g, event.parents, event.attrs, event.tensor):
                if event.parents[i].requires_grad:
                    self._accumulate(grads, owned, event.parents[i], piece)
        return [self.leaf_terms[id(t)] for t in self.inputs + self.params]

    def _accumulate(self, grads, owned, parent, piece):
        """Inside the composition as the engine adds; a term for an input or a parameter is handed out."""
        if id(parent) not in self.leaf_terms:
            return super()._accumulate(grads, owned, parent, piece)
        terms = self.leaf_terms[id(parent)]
        name = self._reserve("g_" + self._name_of(parent))
        if isinstance(piece, _ScatterCode):
            add = self._use(piece.scatter[not piece.basic])
            self._emit(f"{name} = _Scatter(np.s_[{piece.index}], {piece.g}, {add})", "backward")
        else:
            self._emit(f"{name} = {piece}", "backward")
        terms.append(name)

    # ------------------------------------------------------------------ functions
    def _saved(self, forward_lines, backward_lines):
        """The forward's values (and arguments) that the backward lines read."""
        defined = set(self.arg_names) | set(self.param_args)
        for line in forward_lines:
            defined.update(line.writes)
        read = set()
        for line in backward_lines:
            read |= line.reads
        return read & defined

    def _definition_order(self, forward_lines):
        order = {n: i for i, n in enumerate(self.arg_names + self.param_args)}
        for i, line in enumerate(forward_lines):
            for n in line.writes:      # as written: the same order every run
                order.setdefault(n, len(order) + i)
        return lambda n: order.get(n, len(order))

    def _function(self, name, args, lines, keep, returns, forward):
        lines = without_dead(lines, set(keep))
        if forward:
            lines = reuse_buffers(lines, set(keep), self.fresh, self.aliases, self.ns)
        body = [line for line in with_frees(lines, set(keep) | set(args)) if not line.startswith("#")]
        source = "\n".join([f"def {name}({', '.join(args)}):"] + ["    " + line for line in body] +
                           [f"    return {returns}", ""])
        namespace = {k: v for k, v in self.ns.items()
                     if k in ("np", "GuardFailed", "_Scatter") or k in self.constants or callable(v)}
        exec(compile(source, f"<composite {self.name}>", "exec"), namespace)
        return source, namespace[name]

    # ------------------------------------------------------------------ the check against the engine
    def _check(self, patterns, seeds):
        """Outputs and each backward's gradients, on the example inputs, equal the engine's bit for bit."""
        arrays = [t.data for t in self.inputs] + [p.data for p in self.params]
        try:
            outs, saved = self.forward(*arrays)
        except GuardFailed:
            raise TraceError(f"composite {self.name}: internal check failed: a guard fails on the example "
                             f"it was written from") from None
        if not all(_same(a, o.data) for a, o in zip(outs, self.outs)):
            raise TraceError(f"composite {self.name}: internal check failed: the forward program does not give "
                             f"the engine's values")
        leaves = [t for t in self.inputs + self.params]
        for pattern in patterns:
            want = _engine_vjp(self.outs, pattern, seeds, leaves)
            got = self.backwards[pattern](*[s for s, w in zip(seeds, pattern) if w], *saved)
            for leaf, terms, expected in zip(leaves, got, want):
                if not _same_total(leaf, terms, expected):
                    raise TraceError(f"composite {self.name}: internal check failed: the backward's gradient "
                                     f"for {self.var[id(leaf)]} differs from the engine's")


def _engine_vjp(outs, pattern, seeds, leaves):
    """The engine's gradients of ``sum(out * seed)`` over the outputs in ``pattern``, for each leaf."""
    stashed = [t.grad for t in leaves]
    for t in leaves:
        t.grad = None
    try:
        total = None
        for o, want, seed in zip(outs, pattern, seeds):
            if want:
                part = (o * engine._constant(seed)).sum()
                total = part if total is None else total + part
        total.backward(retain_graph=True)
        return [t.grad for t in leaves]
    finally:
        for t, g in zip(leaves, stashed):
            t.grad = g


def _same_total(leaf, terms, expected):
    """The terms added up as the engine adds them equal ``expected`` (None: no gradient at all)."""
    if terms is None:
        return expected is None or not leaf.requires_grad
    grads, owned = {}, set()
    engine._accumulate(grads, owned, leaf, list(terms) if isinstance(terms, list) else [terms])
    total = grads.get(id(leaf))
    if total is None:
        return expected is None
    return expected is not None and _same(np.array(total, dtype=leaf.dtype), expected)


def _tuple(names):
    return ", ".join(names) + ("," if len(names) == 1 else "")


def _returns(terms):
    """The backward's return: for each input and parameter None, its one term, or the list of its terms."""
    parts = ["None" if not t else t[0] if len(t) == 1 else f"[{', '.join(t)}]" for t in terms]
    return f"({_tuple(parts)})"


def _safe(name):
    return "".join(c if c.isalnum() else "_" for c in name).strip("_") or "composite"
