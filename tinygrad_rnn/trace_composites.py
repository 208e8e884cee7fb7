"""Compiled compositions in a traced step: one call each, and a loop over time for an unrolled sequence.

While ``tracing.trace`` records a step, a compiled composition (``composite``)
runs its written programs and is recorded as ONE event: the node (for several
outputs, the hidden node they hang off), its parents and its outputs.  The
program then calls the composition's own functions, written once above the
step function (``tanh_forward``, ``tanh_backward``):

    (h_3,), tanh_saved_3 = tanh_forward(a_3)
    ...
    da_3, = tanh_backward(dh_3, *tanh_saved_3)

and adds the returned terms as the engine does (the whole-step writer's own
accumulation, term by term, in the engine's order).

``nn.unroll`` of a compiled step is one node for the sequence
(``nn.compiled_unroll``); here it becomes a loop over ``t`` calling the step's
forward, and a loop from ``T - 1`` down to 0 calling its backward, adding the
gradients in the order that node's backward adds them.  Steps whose code
differs (the last one, which has no future; the first, when the initial state
needs no gradient) are written apart, so the program's length does not grow
with ``T``.  Every value is still checked against the eager run, bit for bit.
"""
import ast
import re

import numpy as np

from . import tensor as engine
from .tensor import Tensor, _Scatter, _unbroadcast
from .tracing.backward import _ScatterCode
from .tracing.errors import GuardFailed, TraceError
from .tracing.recorder import Composite, Output, Unroll
from .tracing.watch import _probe

__all__ = ["record_composite", "record_unroll", "write_forward", "write_backward", "Unsupported",
           "functions_called"]


class Unsupported(Exception):
    """A compiled part whose gradient terms the writer does not express as calls; the step is written in
    primitives instead."""


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


def _note_reads(recorder, owner, fn):
    """What the traced program must check on later calls, as it would had the composition run plainly:
    the owner module's attributes (read here, so that the trace's watch notes them), and the globals and
    closure values of ``fn``."""
    if owner is not None:
        for name in list(vars(owner)):
            getattr(owner, name)
    code = getattr(fn, "__code__", None)
    noted = recorder.noted_functions
    if code is None or fn in noted:
        return
    noted.add(fn)
    for cell in fn.__closure__ or ():
        try:
            recorder.probes.append(_probe(cell, None, cell.cell_contents))
        except ValueError:
            pass
    for name in code.co_names:
        value = fn.__globals__.get(name)
        if name in fn.__globals__ and not callable(value) and type(value).__name__ != "module":
            recorder.probes.append(_probe(fn.__globals__, name, value))


def record_composite(recorder, composite, owner, args, kwargs):
    """Run a compiled composition's programs and record it as one event (or plainly, recorded op by op)."""
    _note_reads(recorder, owner, composite.fn)
    out = None
    with _Paused(recorder):
        program, tensors = composite.program_for(owner, args, kwargs)
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
    _note_reads(recorder, cell if hasattr(cell, "named_parameters") else None, hub._op.programs[0].composite.fn)
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
    """The backward function's suffix for the outputs that receive a gradient (as ``vjp_writer`` names it)."""
    return "_" + "".join("1" if p else "0" for p in pattern) if len(pattern) > 1 else ""


def _functions(writer, compiled):
    """``(forward name, {pattern: backward name})`` of a compiled composition in the program, written once.

    Its source is copied with the functions renamed where two compositions share
    a name, and its constants renamed after it; its helpers join the program's.
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
    renames = {}
    for name, value in compiled.constants.items():
        renames[name] = new = writer._reserve(f"{base}_{name}")
        writer.constants[new] = namespace[new] = value
        writer.ns[new] = value
    text = re.sub(rf"\b{old}_(forward|backward\w*)\b", rf"{base}_\1", compiled.source)
    text = _parameter_names(writer, compiled, text)
    if renames:
        text = re.sub(r"\b(" + "|".join(map(re.escape, renames)) + r")\b", lambda m: renames[m.group(1)], text)
    if re.search(r"\b_Scatter\b", text) and _Scatter not in writer.helpers:
        writer.helpers.append(_Scatter)
        writer._use(engine._scatter_add)       # what its add_into calls
        writer._use(engine._scatter_add_at)
        writer.ns["_Scatter"] = _Scatter
    exec(compile(text, f"<traced {base}>", "exec"), namespace)
    for n in names:
        writer.ns[n] = namespace[n]
    for node in ast.parse(text).body:       # each function on its own: the program shows those it calls
        writer.composite_sources.append((node.name, ast.get_source_segment(text, node)))
    backwards = {p: f"{base}_backward{_suffix(p)}" for p in compiled.backwards}
    writer.composite_functions[key] = (base, names[0], backwards)
    return writer.composite_functions[key]


def _parameter_names(writer, compiled, text):
    """Parameters that the composition could only call ``p0, p1, ...`` take their names in the step."""
    args = next(node for node in ast.parse(text).body if node.name.endswith("_forward")).args.args
    for arg, p in zip(args[len(args) - len(compiled.params):], compiled.params):
        new = writer.var.get(id(p))
        if re.fullmatch(r"p\d+", arg.arg) and new and not re.search(rf"\b{new}\b", text):
            text = re.sub(rf"(?<![A-Za-z0-9]){arg.arg}\b", new, text)
    return text


def functions_called(writer, body):
    """The source of the compositions' functions that ``body`` (the step function's code) calls, in order."""
    return "".join(text + "\n\n\n" for name, text in writer.composite_sources
                   if re.search(rf"\b{name}\(", body))


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
        _forward_loop(writer, event)
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


def _at(time_axis, t):
    return f"[:, {t}]" if time_axis == 1 else f"[{t}]"


def _forward_loop(writer, event):
    hub, op, parents, outs, _ = event
    programs, axis = op.programs, op.time_axis
    steps, n = len(programs), len(outs) - 1
    if len({id(p) for p in parents}) < len(parents) or any(p is not programs[-1] for p in programs[1:]):
        raise Unsupported("an unrolled sequence whose parts repeat")
    xs = writer._name_of(parents[0])
    state0 = [writer._name_of(p) for p in parents[1:1 + n]]
    params = [writer._name_of(p) for p in parents[1 + n:]]
    state = [writer._new_var(o, "h" if n <= 2 and j == 0 else "c" if n == 2 else f"s{j}")
             for j, o in enumerate(outs[1:])]
    hs_steps, saved, saved_t = writer._reserve("hs_steps"), writer._reserve("saved"), writer._reserve("saved_t")
    t = writer._reserve("t")
    fns = [_functions(writer, p.compiled)[1] for p in (programs[-1], programs[0])][::-1]   # the loop's first
    for s, s0 in zip(state, state0):
        writer._emit(f"{s} = {s0}")
    writer._emit(f"{hs_steps}, {saved} = [], []")

    def body(forward, at, indent):
        call = f"({_tuple(state)}), {saved_t} = {forward}({xs}{at}, {', '.join(state + params)})"
        return "\n".join(indent + line for line in
                         [call, f"{hs_steps}.append({state[0]})", f"{saved}.append({saved_t})"])
    start = 0
    if programs[0] is not programs[-1] or steps == 1:   # the first step has a program of its own
        for line in body(fns[0], _at(axis, 0), "").split("\n"):
            writer._emit(line)
        start = 1
    if start < steps:
        writer._emit(f"for {t} in range({start}, {steps}):\n" + body(fns[-1], _at(axis, t), "    "))
    hs = writer._new_var(outs[0], "hs")
    writer._emit(f"{hs} = np.stack({hs_steps}, axis={axis})")
    for name in state + [hs, hs_steps, saved]:      # all may hold the arrays of xs, the state, each other
        for other in [xs] + state0 + state + [hs, hs_steps, saved]:
            if other != name:
                writer._alias(name, other)
    for name, o in zip([hs] + state, outs):
        _check(writer, name, o, fns[-1])
    writer.saved_of[id(hub)] = (saved, t, state)


# ---------------------------------------------------------------------- backward
def write_backward(writer, grads, owned, event, g):
    if isinstance(event, Output):     # an output's gradient, into its node's list, as the engine's _Slot does
        slots = grads.setdefault(id(event.parents[0]), [None] * event.count)
        slots[event.index] = g
    elif isinstance(event, Composite):
        _backward_call(writer, grads, owned, event, g)
    else:
        _backward_loop(writer, grads, owned, event, g)


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


def _conv(writer, code, value, like):
    """``code`` as the engine makes a term fit its tensor: summed down to its shape, cast to its dtype."""
    if isinstance(value, _Scatter):
        raise Unsupported("a gradient term that scatters into a state or an input")
    if value.shape != like.shape:
        code = f"{writer._use(_unbroadcast)}({code}, {like.shape!r})"
    if value.dtype != like.dtype:
        code = f"({code}).astype(np.{like.dtype.name})"
    return code


def _fold(writer, terms, like):
    """The sum of ``terms`` [(code, value)] in order, each made to fit ``like`` (engine._accumulate's order)."""
    return " + ".join(_conv(writer, c, v, like) for c, v in terms)


def _backward_loop(writer, grads, owned, event, g):
    """The unrolled sequence's backward as nn.compiled_unroll writes it: steps T-1 .. 0, the same additions."""
    hub, op, parents, outs, _ = event
    programs, axis = op.programs, op.time_axis
    steps, n = len(programs), len(outs) - 1
    saved, t, state = writer.saved_of[id(hub)]
    xs, state0, params = parents[0], parents[1:1 + n], parents[1 + n:]
    dhs, dlast = g[0], g[1:]
    saved_values = writer.ns[saved]
    dhs_value = writer.ns[dhs] if dhs is not None else None
    seeds = [writer._reserve(f"d{s}_t") for s in state]
    dnext = [writer._reserve(f"dnext_{s}" if n > 1 else "dnext") for s in state]
    dx = writer._reserve("dx_t")
    terms_of = [writer._reserve(f"g_{writer._name_of(p)}") for p in params]
    x_like = Tensor.__new__(Tensor)
    x_like.data = np.empty(xs.data[(slice(None), 0) if axis == 1 else 0].shape, xs.data.dtype)
    dxs = None
    # each parameter's gradient: "absent", "held" (an array not ours) or "owned", as the engine tracks it
    held = ["owned" if id(p) in owned else "held" if id(p) in grads else "absent" for p in params]
    blocks, carried = [], None
    for step in range(steps - 1, -1, -1):
        at = _at(axis, t)
        lines, seed_values = [], []
        for j, like in enumerate(outs[1:]):
            terms = []
            if step == steps - 1 and dlast[j] is not None:
                terms.append((dlast[j], writer.ns[dlast[j]]))
            if j == 0 and dhs is not None:
                terms.append((f"{dhs}{at}", dhs_value[(slice(None), step) if axis == 1 else step]))
            if carried is not None and carried[j] is not None:
                c = carried[j]
                terms += [(f"{dnext[j]}[{k}]", v) for k, v in enumerate(c)] if isinstance(c, list) \
                    else [(dnext[j], c)]
            if terms:
                lines.append(f"{seeds[j]} = {_fold(writer, terms, like)}")
                seed_values.append(_sum(terms, like))
            else:
                seed_values.append(None)
        if all(v is None for v in seed_values):
            raise Unsupported("a step of an unrolled sequence that receives no gradient")
        pattern = tuple(v is not None for v in seed_values)
        program = programs[step]
        backward = _functions(writer, program.compiled)[2][pattern]
        terms = program.compiled.backwards[pattern](*[v for v in seed_values if v is not None],
                                                    *saved_values[step])
        gx, carried, gp = terms[0], list(terms[1:1 + n]), terms[1 + n:]
        names = [dx if xs.requires_grad and gx is not None else "_"]
        names += [d if c is not None else "_" for d, c in zip(dnext, carried)]
        names += [nm if v is not None else "_" for nm, v in zip(terms_of, gp)]
        seed_args = [s for s, v in zip(seeds, seed_values) if v is not None]
        lines.append(f"{_tuple(names)} = {backward}({', '.join(seed_args)}, *{saved}[{t}])")
        if names[0] != "_":
            pieces = [(f"{dx}[{k}]", v) for k, v in enumerate(gx)] if isinstance(gx, list) else [(dx, gx)]
            if len(pieces) == 1 and gx.__class__ is np.ndarray and gx.shape == x_like.shape and \
                    gx.dtype == xs.dtype:
                code = dx
            else:
                code = _fold(writer, pieces, x_like)
            if dxs is None:
                dxs = _scatter_buffer(writer, grads, owned, xs)
            lines.append(f"{dxs}{at} += {code}")
        for j, (p, v) in enumerate(zip(params, gp)):
            if v is None:
                continue
            pieces = [(f"{terms_of[j]}[{k}]", u) for k, u in enumerate(v)] if isinstance(v, list) \
                else [(terms_of[j], v)]
            dname = "d" + writer._name_of(p)
            for raw, u in pieces:
                code = _conv(writer, raw, u, p)
                if held[j] == "absent":     # an array of its own (a copy unless converted): added into from here on
                    lines.append(f"{dname} = {code}" if code != raw else f"{dname} = np.array({code})")
                elif held[j] == "held":
                    lines.append(f"{dname} = {grads[id(p)]} + {code}")
                else:
                    lines.append(f"{dname} += {code}")
                held[j] = "owned"
        if blocks and blocks[-1][0] == lines:
            blocks[-1][2] = step
        else:
            blocks.append([lines, step, step])
    for lines, hi, lo in blocks:
        if hi == lo:
            for line in lines:
                writer._emit(line.replace(f"[{t}]", f"[{hi}]").replace(f", {t}]", f", {hi}]"), "backward")
        else:
            writer._emit(f"for {t} in range({hi}, {lo - 1}, -1):\n" + "\n".join("    " + line for line in lines),
                         "backward")
    for j, p in enumerate(params):
        if held[j] == "owned":
            grads[id(p)] = "d" + writer._name_of(p)
            owned.add(id(p))
    for p, name, c in zip(state0, dnext, carried):    # what the first step hands to the initial state
        if c is not None and p.requires_grad:
            _add_terms(writer, grads, owned, p, name, c)


def _sum(terms, like):
    """The value of ``_fold``'s code."""
    total = None
    for _, v in terms:
        if v.shape != like.shape:
            v = _unbroadcast(v, like.shape)
        if v.dtype != like.dtype:
            v = v.astype(like.dtype)
        total = v if total is None else total + v
    return total


def _scatter_buffer(writer, grads, owned, xs):
    """The buffer the steps' input gradients are added into, made as the engine makes it for a scatter."""
    key, dname = id(xs), "d" + writer._name_of(xs)
    if key not in owned:
        before = grads.get(key)
        writer._emit(f"{dname} = np.zeros_like({writer._name_of(xs)})" if before is None else
                     f"{dname} = np.array({before}, dtype=np.{xs.dtype.name})", "backward")
        owned.add(key)
    grads[key] = dname
    return dname
