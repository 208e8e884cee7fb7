"""The passes over a written program's lines (``lines.Line`` records), before it is rendered.

* ``without_dead``: drop assignments whose value nothing reads;
* ``stack_in_place``: make each stacked state straight into its slot of the stack;
* ``reuse_buffers``: write an elementwise result into the buffer of an input that dies there;
* ``with_frees``: render the lines, with ``del`` after each temporary's last use.

(The fifth, batching the products of every time step with a weight, works on the
recorded events before any line is written: ``batch.py``.)  Each pass reads
the names a line reads and writes and its elementwise call, never its text.
"""
import numpy as np

from .lines import Line

__all__ = ["without_dead", "stack_in_place", "reuse_buffers", "with_frees", "sharing"]


def without_dead(lines, keep):
    """Drop assignments whose value nothing reads (every operation is pure; guards and ``+=`` stay)."""
    live, out = set(keep), []
    for line in reversed(lines):
        if line.pure and not live.intersection(line.writes):
            continue
        live |= line.reads
        out.append(line)
    out.reverse()
    return out


def sharing(aliases, name):
    """Every variable that may share memory with ``name``, through any chain of ``aliases``."""
    found, todo = set(), [name]
    while todo:
        for other in aliases.get(todo.pop(), ()):
            if other not in found and other != name:
                found.add(other)
                todo.append(other)
    return found


def _alias(aliases, a, b):
    aliases.setdefault(a, set()).add(b)
    aliases.setdefault(b, set()).add(a)


def stack_in_place(lines, stacks, fresh, aliases, values):
    """Make each stacked result straight into its slot of the stack, allocated first (``out=``).

    ``hs = np.stack([h_0, h_1, ...])`` copies states that the program keeps
    anyway; instead ``hs`` is allocated before the first of them and each is
    written into its slice (``h_1 = np.tanh(a_1, out=hs[:, 1])``), ``h_1``
    then being that slice.  Only for parts that are new arrays of one shape and
    dtype, each made by one line of its own.  ``stacks``: stack name -> (parts,
    axis); ``fresh``: the names of arrays the program made; ``aliases``: which
    variables may share memory (updated here); ``values``: every variable's
    value in the example run.  Returns the lines and the names still fresh.
    """
    defined = {}
    for i, line in enumerate(lines):
        if line.target is not None:
            defined.setdefault(line.target, i)
    fresh = set(fresh)
    before, replaced, dropped = {}, {}, set()
    for stack_name, (parts, axis) in stacks.items():
        parts_values = [values.get(p) for p in parts]
        if (stack_name not in defined or len(set(parts)) != len(parts) or
                not all(p in fresh and not aliases.get(p) and p in defined for p in parts) or
                not all(v.__class__ is np.ndarray and v.shape == parts_values[0].shape and
                        v.dtype == parts_values[0].dtype for v in parts_values)):
            continue
        whole = values[stack_name]
        dropped.add(defined[stack_name])
        first = min(defined[p] for p in parts)
        before.setdefault(first, []).append(
            Line.assign(stack_name, f"np.empty({whole.shape!r}, dtype=np.{whole.dtype.name})"))
        for k, part in enumerate(parts):
            slot = f"{stack_name}[{', '.join([':'] * axis + [str(k)])}]"
            line = lines[defined[part]]
            if line.ufunc is not None and line.out is None:
                replaced[defined[part]] = [line.into(slot, (stack_name,))]
            else:
                replaced[defined[part]] = [Line.statement(f"{slot} = {line.expr}", line.kind),
                                           Line.assign(part, slot, line.kind)]
            _alias(aliases, part, stack_name)
            fresh.discard(part)
    out = []
    for i, line in enumerate(lines):
        out += before.get(i, [])
        if i not in dropped:
            out += replaced.get(i, [line])
    return out, fresh


def reuse_buffers(lines, keep, fresh, aliases, values):
    """Write an elementwise result into the buffer of an input that dies on that line (``out=``).

    Only for a buffer the program made itself (``fresh``: never an input, a
    parameter or a constant), that is not a view and that no live view looks
    into, with the result's shape and dtype; the values are the same, memory is
    not taken.
    """
    last = {}
    for i, line in enumerate(lines):
        for name in line.reads:
            last[name] = i
    for name in keep:
        last[name] = len(lines)
    fresh = set(fresh)
    out = list(lines)
    for i, line in enumerate(lines):
        if line.ufunc is None or line.out is not None:
            continue
        result = values[line.target]
        for arg in line.args:
            value = values.get(arg)
            if (arg in fresh and last.get(arg) == i and
                    all(last.get(other, -1) <= i for other in sharing(aliases, arg)) and
                    value.__class__ is np.ndarray and value.shape == result.shape and
                    value.dtype == result.dtype):
                out[i] = line.into(arg)
                fresh.add(line.target)
                break
    return out


def with_frees(lines, keep):
    """The lines as source text, with ``del`` after the last use of each temporary, so memory goes back
    early, and a comment where the forward and the backward begin."""
    last = {}
    for i, line in enumerate(lines):
        for n in line.names:
            last[n] = i
    defined = {n for line in lines for n in line.writes}
    frees = {}
    for n, i in last.items():
        if n in defined and n not in keep:
            frees.setdefault(i, []).append(n)
    out = ["# forward"] if lines else []
    for i, line in enumerate(lines):
        if i and line.kind == "backward" and lines[i - 1].kind == "forward":
            out.append("# backward")
        out.append(line.render())
        if i in frees:
            out.append("del " + ", ".join(sorted(frees[i])))
    return out
