"""The backward lines: the engine's backward pass written out, in its order, with its table's functions."""
import ast
import copy
import inspect
import textwrap

import numpy as np

from .. import tensor as engine
from ..tensor import _read, _unbroadcast
from .errors import TraceError
from .fold import specialise, specialise_pieces
from .recorder import NODES, Op

_PRIMITIVES = engine._PRIMITIVES
# the name of the tuple of gradients that one call gives (``several``)
_GRADS_NAME = {"matmul": "mm_grads", "concat": "pieces", "stack": "pieces"}


class _BackwardLines:
    """The part of the writer (``writer._Writer``) that writes the backward of the recorded graph."""

    def _grad_leaves(self):
        """Leaves that ``backward`` would give a gradient: inputs and parameters requiring grad."""
        self.leaf_by_id = {id(t): t for t in self.inputs + self.params if t.requires_grad}
        return list(self.leaf_by_id.values())

    def _leaf_kind(self, leaf):
        for i, t in enumerate(self.inputs):
            if t is leaf:
                return ("input", i)
        return ("param", next(i for i, p in enumerate(self.params) if p is leaf))

    def _backward(self, root):
        """Write the engine's backward: same order, same formulas, same accumulation."""
        records = {id(e.tensor): e for e in self.events if isinstance(e, NODES)}
        grads = {id(root): "d" + self.var[id(root)]}
        owned = set()
        self._emit(f"{grads[id(root)]} = np.ones_like({self.var[id(root)]})", "backward")
        final = {}
        for node in self.order(root):
            key = id(node)
            g = grads.pop(key, None)
            if g is None:
                continue
            event = records.get(key)
            if event is None or not event.linked:      # a leaf: its gradient is complete
                if key in self.leaf_by_id:
                    final[key] = g
                continue
            owned.discard(key)
            if not isinstance(event, Op):
                from .composite_calls import write_backward
                write_backward(self, grads, owned, event, g)
                continue
            for i, piece in self._backward_pieces(event.op, g, event.parents, event.attrs, event.tensor):
                parent = event.parents[i]
                if parent.requires_grad:
                    self._accumulate(grads, owned, parent, piece)
        return final

    def _accumulate(self, grads, owned, parent, piece):
        """Add the term ``piece`` (code) for ``parent`` as the engine's ``_accumulate`` adds it."""
        pkey = id(parent)
        dname = "d" + self._name_of(parent)
        shape, dtype = parent.data.shape, parent.data.dtype
        if isinstance(piece, _ScatterCode):
            if pkey not in owned:
                before = grads.get(pkey)
                self._emit(f"{dname} = np.zeros_like({self._name_of(parent)})" if before is None else
                           f"{dname} = np.array({before}, dtype=np.{dtype.name})", "backward")
                owned.add(pkey)
            self._emit(piece.code(dname), "backward")
            grads[pkey] = dname
            return
        value = eval(piece, self.ns)
        if pkey not in grads and value.__class__ is np.ndarray and value.shape == shape and value.dtype == dtype:
            if piece.isidentifier() and pkey not in self.leaf_by_id:
                grads[pkey] = piece      # the same array handed on (add's backward): no new name needed
            else:
                self._emit(f"{dname} = {piece}", "backward")
                grads[pkey] = dname
            return
        if value.shape != shape:
            piece = self._call(_unbroadcast, piece, shape)   # as the engine's _accumulate
        if np.result_type(value) != dtype:
            piece = f"({piece}).astype(np.{dtype.name})"
        if pkey not in grads:
            self._emit(f"{dname} = {piece}", "backward")
        elif pkey in owned:
            self._emit(f"{dname} += {piece}", "backward")
        else:
            total = f"{grads[pkey]} + {piece}"
            # two 0-d arrays add to a numpy scalar, which a later `+=` could not update in place
            self._emit(f"{dname} = " + (f"np.asarray({total})" if shape == () else total), "backward")
            owned.add(pkey)
        grads[pkey] = dname

    def _backward_pieces(self, op, g, parents, attrs, t):
        """(parent index, code) for each input's gradient: calls of the functions of ``op``'s table entry."""
        v = [self._name_of(p, parents) for p in parents]
        prim = _PRIMITIVES.get(op)
        if prim is None:
            raise TraceError(f"trace: the backward of {op!r} cannot be traced")
        if prim.scatter:    # added into the input's buffer at the index (attrs: the index as given, whether basic)
            given, basic = attrs
            return [(0, _ScatterCode(self._index_source(given, parents[1:], v[1:]), g, basic, prim.scatter))]
        values = _Reads(v, parents, attrs, self.var[id(t)])
        # one function per input where the entry has them (and its grads_if holds, as the engine picks)
        if prim.several and not (prim.grads and prim.grads_if(*(p.data for p in parents))):
            fn, reads = prim.several
            texts = self._texts(g, *(values[r] for r in reads))
            pieces = specialise_pieces(fn, texts, self.ns, self._use)
            if pieces is not None:      # a tuple made element by element: each input's line on its own
                return list(enumerate(pieces))
            both = self._reserve(_GRADS_NAME.get(op, f"{op}_grads"))
            self._emit(f"{both} = {self._call(fn, g, *(values[r] for r in reads))}", "backward")
            return [(i, f"{both}[{i}]") for i in range(len(parents))]
        return [(i, g if fn is None else self._call(fn, g, *(values[r] for r in reads)))
                for i, (fn, reads) in enumerate(prim.grads) if parents[i].requires_grad]

    @staticmethod
    def _texts(g, *args):
        return [g] + [x if isinstance(x, str) else repr(x) for x in args]

    def _call(self, fn, g, *args):
        """The code of the engine's function ``fn`` on ``g`` (a name) and ``args`` (names; else values).

        A function whose body is one expression is written as that expression for this program's
        shapes (``tracing.fold``): ``_mul_grad(dh, w)`` is ``dh * w``, ``_unbroadcast(da, (100,))``
        the one sum it makes for these shapes.  The same operations in the same order, without a
        call per line.  Any other is called.
        """
        code = specialise(fn, self._texts(g, *args), self.ns, self._use)
        # an expression with an operator weaker than * keeps its own order inside a longer line
        expr = ast.parse(code, mode="eval").body
        loose = isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Add, ast.Sub)) or \
            isinstance(expr, (ast.Compare, ast.BoolOp, ast.IfExp, ast.Lambda))
        return f"({code})" if loose else code


class _Reads(dict):
    """What a name of the table's vocabulary (``reads``, ``args``) stands for in one operation's lines, as
    the engine's ``_read`` says: the inputs' and the result's variable names, and values (shapes,
    arguments, whether an input needs a gradient), each looked up when asked for."""

    def __init__(self, names, parents, attrs, out=None):
        super().__init__()
        self.names, self.parents, self.attrs, self.out = names, parents, attrs or (), out

    def __missing__(self, read):
        return _read(read, self.names, self.parents, self.attrs, self.out)


_BODIES = {}


class _Substitute(ast.NodeTransformer):
    """Replace each name that is a key of ``values`` by the expression it maps to; a name that is the
    whole index of a subscript and a key of ``slices``, by the index it maps to (``x[i]`` -> ``x[:, 1]``)."""

    def __init__(self, values, slices=None):
        self.values, self.slices = values, slices or {}

    def visit_Subscript(self, node):
        if isinstance(node.slice, ast.Name) and node.slice.id in self.slices:
            node.slice = copy.deepcopy(self.slices[node.slice.id])
            node.value = self.visit(node.value)
            return node
        return self.generic_visit(node)

    def visit_Name(self, node):
        return copy.deepcopy(self.values[node.id]) if node.id in self.values else node


class _ScatterCode:
    """The gradient of an indexing: added into the input's gradient buffer at the index.

    Its line is the statement of the table entry's ``scatter`` function for the index (``basic``:
    ``tensor._scatter_add``; else ``_scatter_add_at``, for an index that may repeat), its parameters
    replaced by the buffer, the index (as written in brackets) and the gradient.
    """

    def __init__(self, index, g, basic, scatter):
        self.index, self.g, self.basic, self.scatter = index, g, basic, scatter

    def code(self, buffer):
        params, statement = _statement_of(self.scatter[not self.basic])
        index = ast.parse(f"_[{self.index}]", mode="eval").body.slice    # the index as written in brackets
        given = dict(zip(params, (buffer, None, self.g)))
        values = {k: ast.parse(v, mode="eval").body for k, v in given.items() if v is not None}
        values[params[1]] = ast.parse(f"np.s_[{self.index}]", mode="eval").body
        return ast.unparse(_Substitute(values, {params[1]: index}).visit(statement))


def _statement_of(fn):
    """(parameter names, a fresh copy of the one statement of ``fn``'s body)."""
    if fn not in _BODIES:
        _BODIES[fn] = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]
    tree = _BODIES[fn]
    return [a.arg for a in tree.args.args], copy.deepcopy(tree.body[-1])
