"""An unrolled sequence of a compiled step, written as a loop over time.

``nn.unroll`` of a compiled step is one node for the sequence
(``nn.compiled_unroll``); here it becomes a loop over ``t`` calling the step's
forward, and a loop from ``T - 1`` down to 0 calling its backward, adding the
gradients in the order that node's backward adds them.  Steps whose code
differs (the last one, which has no future; the first, when the initial state
needs no gradient) are written apart, so the program's length does not grow
with ``T``.  Every value is still checked against the eager run, bit for bit.

A line of a step is a record: its text in parts, where a ``Step`` part is the
time index.  The loop renders it with ``t``, a step written apart with its
number.
"""
from typing import NamedTuple

import numpy as np

from ..tensor import Tensor, _Scatter, _unbroadcast
from .composite_calls import _add_terms, _check, _functions, _tuple
from .errors import Unsupported
from .fold import specialise_around

__all__ = ["forward_loop", "backward_loop", "Step", "render"]


class Step(NamedTuple):
    """The time index in a line: ``[t]`` of a list (axis 0), or ``[:, t]`` of a batch-first array."""
    axis: int = 0

    def at(self, t):
        return f"[:, {t}]" if self.axis == 1 else f"[{t}]"


def _parts(*pieces):
    """A line's parts, flat: strings and ``Step``s (a tuple among ``pieces`` is a line's parts itself)."""
    out = []
    for p in pieces:
        if isinstance(p, tuple) and not isinstance(p, Step):
            out.extend(p)
        else:
            out.append(p)
    return tuple(out)


def render(parts, t):
    """The text of a line at time ``t`` (the loop variable's name, or a step's number)."""
    return "".join(p.at(t) if isinstance(p, Step) else p for p in parts)


# ---------------------------------------------------------------------- forward
def forward_loop(writer, event):
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

    def body(forward):
        return [_parts(f"({_tuple(state)}), {saved_t} = {forward}({xs}", Step(axis), f", {', '.join(state + params)})"),
                (f"{hs_steps}.append({state[0]})",), (f"{saved}.append({saved_t})",)]
    start = 0
    if programs[0] is not programs[-1] or steps == 1:   # the first step has a program of its own
        for line in body(fns[0]):
            writer._emit(render(line, 0))
        start = 1
    if start < steps:
        writer._emit(f"for {t} in range({start}, {steps}):\n" +
                     "\n".join("    " + render(line, t) for line in body(fns[-1])))
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
def _conv(writer, code, value, like):
    """``code`` (parts) as the engine makes a term fit its tensor: summed down to its shape, cast to its dtype."""
    if isinstance(value, _Scatter):
        raise Unsupported("a gradient term that scatters into a state or an input")
    if value.shape != like.shape:     # the sum these shapes need (tracing.fold), else the call
        around = specialise_around(_unbroadcast, value, [repr(like.shape)], writer.ns, writer._use)
        if around is None:
            code = _parts(f"{writer._use(_unbroadcast)}(", code, f", {like.shape!r})")
        else:
            name = render(code, "t").isidentifier()
            code = _parts(around[0], code, around[1]) if name else _parts(around[0] + "(", code, ")" + around[1])
    if value.dtype != like.dtype:
        code = _parts("(", code, f").astype(np.{like.dtype.name})")
    return code


def _fold(writer, terms, like):
    """The sum of ``terms`` [(parts, value)] in order, each made to fit ``like`` (engine._accumulate's order)."""
    out = ()
    for k, (code, value) in enumerate(terms):
        out = _parts(out, " + " if k else (), _conv(writer, code, value, like))
    return out


def _pieces(name, value):
    """The term(s) a backward returns under ``name``: one array, or a list of them (``name[k]``)."""
    if isinstance(value, list):
        return [((f"{name}[{k}]",), v) for k, v in enumerate(value)]
    return [((name,), value)]


def backward_loop(writer, grads, owned, event, g):
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
        lines, seed_values = [], []      # each line: its parts, with the time index a Step
        for j, like in enumerate(outs[1:]):
            terms = []
            if step == steps - 1 and dlast[j] is not None:
                terms.append(((dlast[j],), writer.ns[dlast[j]]))
            if j == 0 and dhs is not None:
                terms.append(((dhs, Step(axis)), dhs_value[(slice(None), step) if axis == 1 else step]))
            if carried is not None and carried[j] is not None:
                terms += _pieces(dnext[j], carried[j])
            if terms:
                lines.append(_parts(f"{seeds[j]} = ", _fold(writer, terms, like)))
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
        lines.append((f"{_tuple(names)} = {backward}({', '.join(seed_args)}, *{saved}", Step(), ")"))
        if names[0] != "_":
            pieces = _pieces(dx, gx)
            if len(pieces) == 1 and gx.__class__ is np.ndarray and gx.shape == x_like.shape and \
                    gx.dtype == xs.dtype:
                code = (dx,)
            else:
                code = _fold(writer, pieces, x_like)
            if dxs is None:
                dxs = _scatter_buffer(writer, grads, owned, xs)
            lines.append(_parts(dxs, Step(axis), " += ", code))
        for j, (p, v) in enumerate(zip(params, gp)):
            if v is None:
                continue
            dname = "d" + writer._name_of(p)
            for raw, u in _pieces(terms_of[j], v):
                code = _conv(writer, raw, u, p)
                if held[j] == "absent":     # an array of its own (a copy unless converted): added into from here on
                    lines.append(_parts(f"{dname} = ", code) if code != raw else
                                 _parts(f"{dname} = np.array(", code, ")"))
                elif held[j] == "held":
                    lines.append(_parts(f"{dname} = {grads[id(p)]} + ", code))
                else:
                    lines.append(_parts(f"{dname} += ", code))
                held[j] = "owned"
        if blocks and blocks[-1][0] == lines:
            blocks[-1][2] = step
        else:
            blocks.append([lines, step, step])
    for lines, hi, lo in blocks:
        if hi == lo:             # one step: its lines at its number
            for line in lines:
                writer._emit(render(line, hi), "backward")
        else:
            writer._emit(f"for {t} in range({hi}, {lo - 1}, -1):\n" +
                         "\n".join("    " + render(line, t) for line in lines), "backward")
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
