"""The forward lines: one line per recorded event, the numpy call the engine made for it."""
import ast
from dataclasses import replace

import numpy as np

from .. import tensor as engine
from ..tensor import Tensor
from .backward import _Reads, _Substitute
from .errors import TraceError
from .fold import specialise, written_out
from .recorder import Copy, Decide, Derived, Op

_SHORT = {"matmul": "mm", "index": "ix", "reshape": "rs", "transpose": "tr", "detach": "det",
          "less": "lt", "less_equal": "le", "greater": "gt", "greater_equal": "ge", "equal": "eq",
          "not_equal": "ne", "broadcast_to": "bcast", "sum_to": "summed"}
# Every forward line is written from the engine's table (engine._PRIMITIVES): with the entry's operator
# where it has one, else as a call of its forward on the arguments its ``args`` name (a forward whose
# body is one expression is written as that expression, as the backward's functions are).  The
# elementwise ones are known by their ufunc, so that a result can be written into a dying buffer.
_PRIMITIVES = engine._PRIMITIVES
_UFUNC = {n: f"np.{p.forward.__name__}" for n, p in _PRIMITIVES.items() if isinstance(p.forward, np.ufunc)}
# operations whose result is a new array (not a view of an input): its buffer may be reused
_FRESH = set(_UFUNC) | {"matmul", "where", "stack", "concat"}
_VIEWS = {"index", "reshape", "transpose", "detach", "broadcast_to", "sum_to"}   # sum_to to its own shape: itself


class _ForwardLines:
    """The part of the writer (``writer._Writer``) that writes the forward: a line per event."""

    def _forward(self, event):
        if isinstance(event, Op):
            self._forward_op(event)
        elif isinstance(event, Derived):
            function = self._use(event.fn)          # first, so that no variable takes the function's name
            args = [self._name_of(p) for p in event.tensors] + self._keyword_args(event.params)
            bases = getattr(event.fn, "outputs", None) or [event.fn.__name__.strip("_")] * len(event.made)
            names = [self._new_var(t, base) for t, base in zip(event.made, bases)]
            for n in names:          # fn may hand back its argument itself (a checked index array does)
                for arg in args:
                    self._alias(n, arg)
            call = f"{function}({', '.join(args)})"
            self._emit(f"{', '.join(names)}{',' if len(names) == 1 else ''} = {call}" if len(names) > 1
                       else f"{names[0]} = {call}")
        elif isinstance(event, Decide):
            value = event.value.item() if isinstance(event.value, np.generic) else event.value
            if not isinstance(value, (bool, int, str, type(None))):
                raise TraceError(f"trace: a branch on {event.fn.__name__} has a value of type "
                                 f"{type(value).__name__}, which cannot be written as a guard")
            args = [self._name_of(p) for p in event.tensors] + self._keyword_args(event.params)
            call = f"{self._use(event.fn)}({', '.join(args)})"
            self._emit(f"if {call} != {value!r}: raise GuardFailed({call!r})")
        elif isinstance(event, Copy):
            src = self._name_of(event.source)
            self._emit(f"{self._new_var(event.tensor, 'copy')} = np.array({src})")
        else:                    # a compiled composition, or an unrolled sequence of one (composite_calls, unroll_loop)
            from .composite_calls import write_forward
            write_forward(self, event)

    def _forward_op(self, event):
        t, op, parents, attrs = event.tensor, event.op, event.parents, event.attrs
        args = [self._name_of(p, parents) for p in parents]
        name = self._new_var(t, _SHORT.get(op, op))
        line = self._assign(name, self._forward_code(op, args, parents, attrs, t))
        value = self.ns[name]
        if op in _FRESH and value.__class__ is np.ndarray:
            self.fresh.add(name)
            if op in _UFUNC and value.ndim:    # elementwise: may be written into a dying buffer
                self.lines[-1] = replace(line, ufunc=_UFUNC[op], args=tuple(args))
        elif op in _VIEWS:
            self._alias(name, args[0])
        if op == "stack":
            self.stacks[name] = (args, attrs[1])
        if not self.agrees(value, t.data):
            from .verify import _close, _Mismatch
            if self.agrees is _close:
                raise _Mismatch()
            raise TraceError(f"trace: internal check failed: the written line {line.render()!r} does not give "
                             f"the engine's value")

    def _forward_code(self, op, args, parents, attrs, t):
        """The expression of ``op`` on the variables ``args``, as the engine computes it: from its table entry."""
        prim = _PRIMITIVES.get(op)
        if prim is None or prim.forward is None:
            raise TraceError(f"trace: the operation {op!r} is not one of the engine's own, which are the only "
                             f"ones a traced program can write; run this function eagerly")
        arrays = [p.data for p in parents]
        if prim.symbol and (prim.operator_if is None or prim.operator_if(*arrays)):
            code = f"{prim.symbol}{args[0]}" if len(args) == 1 else f"{args[0]} {prim.symbol} {args[1]}"
        else:
            code = self._forward_call(prim, self._forward_args(prim, args, parents, attrs))
        # the engine's result is an array; numpy gives a scalar for some 0-d results (a sum of all, a compare)
        if t.data.__class__ is np.ndarray and eval(code, self.ns).__class__ is not np.ndarray:
            code = f"np.asarray({code})"
        return code

    def _forward_args(self, prim, args, parents, attrs):
        """The texts of what the table's forward is called with (its ``args``): names, values, an index."""
        if prim.args is None:
            return args + [repr(x) for x in attrs or ()]
        values = _Reads(args, parents, attrs)
        out = []
        for read in prim.args:
            if read == "inputs":
                out.append(f"[{', '.join(args)}]")
            elif read == "index":
                out.append(_Index(self._index_source(attrs[0], parents[1:], args[1:])))
                self._guard_masks(parents[1:], args[1:])
            else:
                value = values[read]
                out.append(value if isinstance(value, str) else repr(value))
        return out

    def _guard_masks(self, tensors, names):
        """A boolean mask in an index picks as many elements as it has True: a guard on that count."""
        for p, arg in zip(tensors, names):
            if p.dtype == bool:
                count = int(np.count_nonzero(p.data))
                self._emit(f"if np.count_nonzero({arg}) != {count}: "
                           f"raise GuardFailed('np.count_nonzero({arg}) != {count}')")

    def _forward_call(self, prim, texts):
        """The call of the table's forward on ``texts``; one whose body is a single expression, that expression
        (for this program's shapes, ``tracing.fold``)."""
        fn = prim.forward
        if isinstance(fn, np.ufunc):
            return f"{self._function_text(fn)}({', '.join(str(x) for x in texts)})"
        if not any(isinstance(x, _Index) for x in texts):
            return specialise(fn, [str(x) for x in texts], self.ns, self._function_text)
        # an index is written in brackets, where no expression can stand for it: put in as it is
        body = written_out(fn)
        params = list(body[0].parameters) if body else []
        if body is None or {n.id for n in ast.walk(body[1]) if isinstance(n, ast.Name)} - set(params) - {"np"}:
            return f"{self._function_text(fn)}({', '.join(str(x) for x in texts)})"
        expr = body[1]
        values = {k: ast.parse(v, mode="eval").body for k, v in zip(params, texts) if not isinstance(v, _Index)}
        slices = {k: ast.parse(f"_[{v}]", mode="eval").body.slice for k, v in zip(params, texts)
                  if isinstance(v, _Index)}
        return ast.unparse(_Substitute(values, slices).visit(expr))

    def _function_text(self, fn):
        """How the code calls ``fn``: ``np.name`` for numpy's own function, else the helper's name."""
        return f"np.{fn.__name__}" if getattr(np, fn.__name__, None) is fn else self._use(fn)

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


class _Index(str):
    """The text of an index, as written in brackets (``0, :``): not an expression of its own."""


def _slice_source(s):
    """``start:stop:step`` as written in an index."""
    def part(v):
        return "" if v is None else repr(int(v))
    text = f"{part(s.start)}:{part(s.stop)}"
    return text if s.step is None else f"{text}:{part(s.step)}"
