"""The forward lines: one line per recorded event, the numpy call the engine made for it."""
from dataclasses import replace

import numpy as np

from .. import tensor as engine
from ..tensor import Tensor
from .errors import TraceError
from .recorder import Copy, Decide, Derived, Op

_SHORT = {"matmul": "mm", "index": "ix", "reshape": "rs", "transpose": "tr", "detach": "det",
          "less": "lt", "less_equal": "le", "greater": "gt", "greater_equal": "ge", "equal": "eq",
          "not_equal": "ne", "broadcast_to": "bcast", "sum_to": "summed"}
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
        if op == "index":   # a boolean mask picks as many elements as it has True: a guard on that count
            for p, arg in zip(parents[1:], args[1:]):
                if p.dtype == bool:
                    count = int(np.count_nonzero(p.data))
                    self._emit(f"if np.count_nonzero({arg}) != {count}: "
                               f"raise GuardFailed('np.count_nonzero({arg}) != {count}')")
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
        """The expression of ``op`` on the variables ``args``, as the engine computes it."""
        a = args[0] if args else None
        if op in _BINARY:
            return f"{a} {_BINARY[op]} {args[1]}"
        if op in _COMPARE:
            return f"np.asarray({a} {_COMPARE[op]} {args[1]})"
        if op in _PREFIX:
            return f"{_PREFIX[op]}{a}"
        if op in _UNARY:
            return f"{_UNARY[op]}({a})"
        if op == "matmul":
            if parents[0].ndim == 2 and parents[1].ndim == 2:
                return f"{a} @ {args[1]}"
            if parents[0].ndim > 2 and parents[1].ndim == 2:   # rows of a stack times one matrix, folded
                m = int(np.prod(parents[0].shape[:-1]))
                return f"({a}.reshape({m}, {parents[0].shape[-1]}) @ {args[1]}).reshape({t.shape!r})"
            return f"{self._use(engine._folded_matmul)}({a}, {args[1]})"
        if op == "sum":
            axis, keepdims = attrs
            return f"np.asarray({a}.sum({_axis_kw(axis, keepdims)}))"
        forward = _PRIMITIVES[op].forward if op in _PRIMITIVES else None
        if callable(forward) and op not in _UFUNC and len(parents) == 1 and attrs:
            # the table's forward, called as the engine calls it: on the input, then the other arguments
            # (max, broadcast_to, sum_to); a call that differs fails the check of the line's value
            return f"{self._function_text(forward)}({', '.join([a] + [repr(x) for x in attrs])})"
        if op == "reshape":
            return f"{a}.reshape({attrs[0]!r})"
        if op == "transpose":
            return f"{a}.transpose({attrs[0]!r})"
        if op == "index":
            expr = f"{a}[{self._index_source(attrs[0], parents[1:], args[1:])}]"
            value = eval(expr, self.ns)
            return expr if value.__class__ is np.ndarray else f"np.asarray({expr})"
        if op == "clip":
            has_lo, has_hi = attrs
            bounds = iter(args[1:])
            lo = next(bounds) if has_lo else "None"
            hi = next(bounds) if has_hi else "None"
            return f"{self._use(engine._clip)}({a}, {lo}, {hi})"
        if op == "concat":
            return f"np.concatenate([{', '.join(args)}], axis={attrs[0]!r})"
        if op == "stack":
            return f"np.stack([{', '.join(args)}], axis={attrs[0]!r})"
        if op == "where":
            return f"np.where({args[2]}, {a}, {args[1]})"
        if op == "detach":
            return a
        if op in _BINARY_UFUNC:
            return f"{_BINARY_UFUNC[op]}({a}, {args[1]})"
        raise TraceError(f"trace: the operation {op!r} is not one of the engine's own, which are the only ones "
                         f"a traced program can write; run this function eagerly")

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
