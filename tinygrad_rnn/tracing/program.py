"""The program and its guards: ``trace(fn, *inputs)`` and the ``Program`` it returns.

A ``Program`` keeps one written variant per signature (shapes, dtypes, which
inputs need a gradient), checks on every call that what ``fn`` read from
outside still holds (``watch.py``), runs the variant, and falls back to the
eager ``fn`` when a guard fails.  Gradients go into ``.grad`` as ``backward()``
puts them.
"""
import contextlib
import inspect

import numpy as np

from .. import tensor as engine
from ..tensor import Tensor
from .errors import GuardFailed, TraceError
from .probes import still_holds as _still_holds

__all__ = ["trace", "Program", "TraceError", "GuardFailed"]


def trace(fn, *example_inputs, backward=True, names=None, rewrite=False):
    """Trace ``fn(*example_inputs)`` and return a ``Program`` that replays it for new inputs.

    ``fn`` takes Tensors (numpy arrays and numbers given here become Tensors)
    and returns a Tensor or a tuple of Tensors.  With ``backward=True`` the
    program also does ``outputs[0].backward()``: the first output must have one
    element.  ``names`` (a Module, or a dict name -> Tensor) names parameters in
    the source; otherwise a parameter's ``name`` or ``p0, p1, ...`` is used.
    ``rewrite=True`` lets the program make the products of inputs with a weight
    for all time steps at once (``tracing.batch``): faster, and equal to the
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
        values = tuple(np.array(o.data) for o in outs)     # a copy: never a view of an argument or parameter
        return values[0] if not isinstance(out, (tuple, list)) else values

    def _trace(self, values):
        # every input a leaf of its own, even one given twice or one that is the result of a graph: the
        # trace never reaches into the caller's graph (a call hands the input's gradient on to it)
        tensors = [Tensor(v, requires_grad=isinstance(v, Tensor) and v.requires_grad) for v in values]
        # rewrite=True trades the last bit for speed: the compositions are written as their primitives,
        # so that the products of every time step with a weight can be made as one
        from ..composites import expanded
        from .run import write_variant
        with expanded() if self.rewrite else contextlib.nullcontext():
            variant = write_variant(self.fn, tensors, self.backward, self.names, self.rewrite)
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



class _Variant:
    """One written program: its code, the function compiled from it, and what it reads.

    ``probes``: the checks that what ``fn`` read from outside still holds (set when it is recorded).
    """

    def __init__(self, inputs, params, param_signature, grad_targets, source, function, single, helpers,
                 constants, doc, probes=()):
        self.inputs, self.params, self.param_signature = inputs, params, param_signature
        self.grad_targets, self.source, self.function, self.single = grad_targets, source, function, single
        self.helpers, self.constants, self.doc, self.probes = helpers, constants, doc, list(probes)

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
