"""Compiled compositions in a traced step: recorded as one event each, and written as calls of their functions.

While ``tracing.trace`` records a step, a compiled composition (``composite``)
runs its written programs and is recorded as ONE event: the node (for several
outputs, the hidden node they hang off), its parents and its outputs.  The
program then calls the composition's own functions, written once above the
step function (``tanh_forward``, ``tanh_backward``):

    (h_3,), tanh_saved_3 = tanh_forward(a_3)
    ...
    da_3, = tanh_backward(dh_3, *tanh_saved_3)

and adds the returned terms as the engine does (the whole-step writer's own
accumulation, term by term, in the engine's order).  The functions' source is
the composition's, with its names (the functions, parameters it could only call
``p0``, its constants) changed to the step's where the parser finds them
(``renamed``).  ``nn.unroll`` of a compiled step is written as a loop over
time (``unroll_loop``).
"""
import ast

import numpy as np

from .. import tensor as engine
from ..tensor import Tensor, _Scatter
from .backward import _ScatterCode
from .errors import GuardFailed, TraceError
from .recorder import Composite, Output, Unroll
from .objects import is_module, own_attributes
from .probes import attributes_of, function_reads, probe as _probe, shallow_probe

__all__ = ["record_composite", "record_unroll", "write_forward", "write_backward", "functions_called",
           "renamed"]


# ---------------------------------------------------------------------- recording
class _Paused:
    """The recorder switched off (the compiled programs run, and may be written, unrecorded)."""

    def __init__(self, recorder):
        self.recorder = recorder

    def __enter__(self):
        engine._tracer = None

    def __exit__(self, *exc):
        engine._tracer = self.recorder
        return False


def _note_reads(recorder, program, fn, owner):
    """What the traced program must check on later calls, as the composition checks it itself: the
    attributes its compiled ``program`` read when it was written, and the globals and closure values of
    ``fn``. A program written inside a trace noted nothing itself: then every attribute of its owner module
    is checked (a container by identity and the tensors and modules in it: a log kept on the module is not
    a reason to trace again)."""
    if owner is not None and (program is None or not program.compiled.watched):
        recorder.probes += [shallow_probe(attributes_of(owner), name, value)
                            for name, value in own_attributes(owner).items()]
    for noted, add in ((program, lambda: program.probes), (fn, lambda: [_probe(*r) for r in function_reads(fn)])):
        if noted is not None and noted not in recorder.noted_functions:
            recorder.noted_functions.add(noted)
            recorder.probes += add()


def record_composite(recorder, composite, owner, args, kwargs):
    """Run a compiled composition's programs and record it as one event (or plainly, recorded op by op)."""
    out = None
    with _Paused(recorder):
        program, tensors = composite.program_for(owner, args, kwargs)
    _note_reads(recorder, program, composite.fn, owner)
    with _Paused(recorder):
        if program is not None:
            try:
                out = program.run(tensors)
            except GuardFailed:
                out = None
    if out is None:
        return composite._plain(owner, args, kwargs)
    outs = (out,) if isinstance(out, Tensor) else tuple(out)
    _record(recorder, Composite, program, program.op, tuple(tensors) + tuple(program.params), outs)
    return out


def record_unroll(recorder, unroll_compiled, cell, xs, state, time_axis):
    """Run ``nn.unroll`` of a compiled step as one node and record it; None: run it step by step."""
    if not recorder.whole_step:
        return None
    with _Paused(recorder):
        result = unroll_compiled(cell, xs, state, time_axis)
    if result is None:
        return None
    hs, last = result
    if not hs._parents:          # made without a graph: the sequence is recorded step by step instead
        return None
    hub = hs._parents[0]
    _note_reads(recorder, hub._op.programs[0], hub._op.programs[0].composite.fn, cell if is_module(cell) else None)
    outs = (hs,) + (tuple(last) if isinstance(last, tuple) else (last,))
    _record(recorder, Unroll, hub._op, hub._op, hub._parents, outs)
    return result


def _record(recorder, kind, what, op, parents, outs):
    linked = outs[0].requires_grad
    # several outputs hang off a hidden node that carries the operation (Tensor._make_many)
    node = outs[0]._parents[0] if linked and outs[0]._op is not op else outs[0]
    for o in outs:
        recorder._seen(o)
    recorder.events.append(kind(node, what, parents, outs, linked))
    if node is not outs[0]:
        for i, o in enumerate(outs):
            recorder.events.append(Output(o, i, (node,), len(outs), True))


# ---------------------------------------------------------------------- the written functions
def _safe(name):
    return "".join(c if c.isalnum() else "_" for c in name).strip("_") or "composite"


def _suffix(pattern):
    """The backward function's suffix for the outputs that receive a gradient (as ``tracing.vjp`` names it)."""
    return "_" + "".join("1" if p else "0" for p in pattern) if len(pattern) > 1 else ""


def _functions(writer, compiled):
    """``(forward name, {pattern: backward name})`` of a compiled composition in the program, written once.

    Its source is copied with the functions renamed where two compositions share
    a name, parameters named after the step's, and its constants renamed after
    it (``renamed``: no other character changes); its helpers join the program's.
    """
    key = id(compiled)
    if key in writer.composite_functions:
        return writer.composite_functions[key]
    old = _safe(compiled.name)
    taken = {base for base, _, _ in writer.composite_functions.values()}
    for k in range(1, 1000):
        base = old if k == 1 else f"{old}{k}"
        names = [f"{base}_forward"] + [f"{base}_backward{_suffix(p)}" for p in compiled.backwards]
        if base not in taken and not any(n in writer.used for n in names):
            break
    writer.used.update(names)
    namespace = {"np": np, "GuardFailed": GuardFailed, "_Scatter": _Scatter}
    for helper in compiled.helpers:
        namespace[writer._use(helper)] = helper
    tree = ast.parse(compiled.source)
    renames = {f"{old}_forward": names[0]} if base != old else {}
    renames.update({f"{old}_backward{_suffix(p)}": f"{base}_backward{_suffix(p)}"
                    for p in compiled.backwards if base != old})
    renames.update(_parameter_names(writer, compiled, tree))
    for name, value in compiled.constants.items():
        renames[name] = new = writer._reserve(f"{base}_{name}")
        writer.constants[new] = namespace[new] = value
        writer.ns[new] = value
    text = renamed(compiled.source, renames)
    if "_Scatter" in _read(tree) and _Scatter not in writer.helpers:
        writer.helpers.append(_Scatter)
        writer.ns["_Scatter"] = _Scatter
    exec(compile(text, f"<traced {base}>", "exec"), namespace)
    for n in names:
        writer.ns[n] = namespace[n]
    for node in ast.parse(text).body:       # each function on its own: the program shows those it calls
        writer.composite_sources.append((node.name, ast.get_source_segment(text, node)))
    backwards = {p: f"{base}_backward{_suffix(p)}" for p in compiled.backwards}
    writer.composite_functions[key] = (base, names[0], backwards)
    return writer.composite_functions[key]


def _read(tree):
    """Every name that ``tree`` reads, assigns or takes as a parameter."""
    return {n.id if isinstance(n, ast.Name) else n.arg for n in ast.walk(tree) if isinstance(n, (ast.Name, ast.arg))}


def _parameter_names(writer, compiled, tree):
    """Parameters that the composition could only call ``p0, p1, ...`` take their names in the step, and so
    do the names made from them (``g_p0``, the term of its gradient)."""
    forward = next(node for node in tree.body if node.name.endswith("_forward"))
    args = forward.args.args
    taken, renames = _read(tree), {}
    for arg, p in zip(args[len(args) - len(compiled.params):], compiled.params):
        old, new = arg.arg, writer.var.get(id(p))
        if old[:1] == "p" and old[1:].isdigit() and new and new not in taken:
            for name in sorted(taken):
                if name == old or name.endswith("_" + old):
                    renames[name] = name[:len(name) - len(old)] + new
            taken.update(renames.values())
    return renames


def renamed(source, names):
    """``source`` with the identifiers in ``names`` (old: new) renamed where the parser finds them.

    Variables, parameters and the functions defined are renamed; every other
    character (numbers, spacing, attributes such as ``.T``) stays as it is.
    """
    spots = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name) and node.id in names:
            spots.append((node.lineno, node.col_offset, node.id))
        elif isinstance(node, ast.arg) and node.arg in names:
            spots.append((node.lineno, node.col_offset, node.arg))
        elif isinstance(node, ast.FunctionDef) and node.name in names:
            spots.append((node.lineno, node.col_offset + len("def "), node.name))
    lines = [line.encode() for line in source.split("\n")]    # the parser's columns count bytes
    for lineno, col, old in sorted(spots, reverse=True):
        line = lines[lineno - 1]
        lines[lineno - 1] = line[:col] + names[old].encode() + line[col + len(old.encode()):]
    return "\n".join(line.decode() for line in lines)


def functions_called(writer, body):
    """The source of the compositions' functions that ``body`` (the step function's code) calls, in order."""
    called = {node.func.id for node in ast.walk(ast.parse(body))
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    return "".join(text + "\n\n\n" for name, text in writer.composite_sources if name in called)


def _tuple(names):
    return ", ".join(names) + ("," if len(names) == 1 else "")


def _check(writer, name, tensor, what):
    if not writer.agrees(writer.ns[name], tensor.data):
        raise TraceError(f"trace: internal check failed: the call of {what} does not give the engine's value")


# ---------------------------------------------------------------------- forward
def write_forward(writer, event):
    if isinstance(event, Composite):
        _forward_call(writer, event)
    elif isinstance(event, Unroll):
        from .unroll_loop import forward_loop
        forward_loop(writer, event)
    # an Output event is written with its composition


def _forward_call(writer, event):
    node, program, parents, outs, _ = event
    args = [writer._name_of(p) for p in parents]
    base, forward, _ = _functions(writer, program.compiled)
    names = [writer._new_var(o, base) for o in outs]
    saved = writer._reserve(f"{base}_saved", writer.recorder.steps.get(id(outs[0])))
    writer._emit(f"({_tuple(names)}), {saved} = {forward}({', '.join(args)})")
    for n, o in zip(names, outs):
        _check(writer, n, o, forward)
    for n in names + [saved]:        # what it returns and keeps may be its arguments' arrays
        for a in args + names:
            if a != n:
                writer._alias(n, a)
    writer.saved_of[id(node)] = saved


# ---------------------------------------------------------------------- backward
def write_backward(writer, grads, owned, event, g):
    if isinstance(event, Output):     # an output's gradient, into its node's list, as the engine's _Slot does
        slots = grads.setdefault(id(event.parents[0]), [None] * event.count)
        slots[event.index] = g
    elif isinstance(event, Composite):
        _backward_call(writer, grads, owned, event, g)
    else:
        from .unroll_loop import backward_loop
        backward_loop(writer, grads, owned, event, g)


class _RuntimeScatter(_ScatterCode):
    """A term that the composition's backward returns as a ``_Scatter`` (the gradient of an indexing)."""

    def __init__(self, code):
        self.g = code

    def code(self, buffer):
        return f"{self.g}.add_into({buffer})"


def _add_terms(writer, grads, owned, parent, code, value):
    """Add a term (None, an array, a ``_Scatter`` or a list of them) for ``parent`` as the engine adds it."""
    pieces = [(f"{code}[{k}]", v) for k, v in enumerate(value)] if isinstance(value, list) else [(code, value)]
    for piece, v in pieces:
        writer._accumulate(grads, owned, parent, _RuntimeScatter(piece) if isinstance(v, _Scatter) else piece)


def _backward_call(writer, grads, owned, event, g):
    node, program, parents, outs, _ = event
    gs = g if isinstance(g, list) else [g]
    pattern = tuple(x is not None for x in gs)
    _, _, backwards = _functions(writer, program.compiled)
    step = writer.recorder.steps.get(id(outs[0]))
    call = f"{backwards[pattern]}({', '.join(x for x in gs if x is not None)}, *{writer.saved_of[id(node)]})"
    values = eval(call, writer.ns)
    targets, later = [], []
    for parent, value in zip(parents, values):
        key = id(parent)
        if value is None or not parent.requires_grad:
            targets.append("_")
        elif key not in grads and value.__class__ is np.ndarray and value.shape == parent.data.shape \
                and value.dtype == parent.data.dtype:
            targets.append("d" + writer._name_of(parent))     # the engine's first gradient, handed on as it is
            grads[key] = targets[-1]
        else:
            targets.append(writer._reserve("g_" + writer._name_of(parent), step))
            later.append((parent, targets[-1], value))
    writer._emit(f"{_tuple(targets)} = {call}", "backward")
    for parent, name, value in later:
        _add_terms(writer, grads, owned, parent, name, value)


