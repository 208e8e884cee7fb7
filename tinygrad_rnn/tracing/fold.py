"""Trace-time specialisation: an engine function written out for the shapes of one program.

A traced program is written for one signature, so every shape in it is fixed.  The part of
a formula that reads only shapes (which axes a broadcast summed, whether a factor is a stack
of rows, which slice of a stack belongs to an input) is decided while the program is
written, by evaluating it; what is left is the formula's array arithmetic: the same
operations, in the same order, as the engine's.  A function of the engine whose body is one
expression is written in place of its call (``_rows(dsub)`` becomes ``dsub.reshape(-1, 418)``);
any other stays a call.
"""
import ast
import builtins
import copy
import inspect
import itertools
import textwrap

import numpy as np

from .. import tensor as engine

_UNKNOWN = object()
# functions that may run while the program is written, on values known then (never on arrays)
_PURE = {len, tuple, range, slice, int, bool, min, max, abs, np.prod}


def specialise(fn, args, env, use):
    """The code of ``fn(*args)``: ``args`` are code texts, ``env`` the program's namespace while it is
    written (each variable's trace-time value), ``use(f)`` the name under which the program calls ``f``."""
    folder = _Folder(env)
    try:
        node = folder.visit(ast.Call(func=folder.hold(fn), args=[_parse(a) for a in args], keywords=[]))
        return folder.render(node, use)
    except Exception:   # noqa: BLE001 - anything folding cannot do: the call itself, which is always right
        return f"{use(fn)}({', '.join(args)})"


def specialise_around(fn, value, args, env, use):
    """``(before, after)``: the code of ``fn(<x>, *args)`` for a first argument ``x`` whose value is
    ``value``, split where it reads ``x`` (once), for a caller that writes ``x`` in pieces of its own
    (in brackets, unless it is a name); None where the code reads ``x`` more than once, or not at all."""
    hole = next(n for n in (f"_x{i}" for i in itertools.count()) if n not in env)
    code = specialise(fn, [hole, *args], {**env, hole: value}, use)
    reads = [n for n in ast.walk(ast.parse(code, mode="eval")) if isinstance(n, ast.Name) and n.id == hole]
    if len(reads) != 1:
        return None
    text = code.encode()            # the parser's offsets count bytes of UTF-8 (a name may not be ASCII)
    return text[:reads[0].col_offset].decode(), text[reads[0].end_col_offset:].decode()


def specialise_pieces(fn, args, env, use):
    """The code of each element of the tuple ``fn(*args)`` returns, when ``fn`` builds it as
    ``tuple(<element> for i in range(n))`` with ``n`` known while writing; else None."""
    folder = _Folder(env)
    try:
        node = folder.visit(ast.Call(func=folder.hold(fn), args=[_parse(a) for a in args], keywords=[]))
        return _pieces(folder, node, use)
    except Exception:   # noqa: BLE001 - anything folding cannot do: one call for all, which is always right
        return None


def _pieces(folder, node, use):
    if not (isinstance(node, ast.Call) and folder.known(node.func) is tuple and len(node.args) == 1
            and isinstance(node.args[0], ast.GeneratorExp) and len(node.args[0].generators) == 1):
        return None
    loop = node.args[0].generators[0]
    positions = folder.known(loop.iter)
    if positions is _UNKNOWN or loop.ifs or not isinstance(loop.target, ast.Name):
        return None
    pieces = []
    for i in positions:
        element = _Replace({loop.target.id: ast.Constant(i)}).visit(copy.deepcopy(node.args[0].elt))
        pieces.append(folder.render(folder.visit(element), use))
    return pieces


class _CannotWrite(Exception):
    """A value met while writing out a function that has no spelling in a program."""


def _parse(text):
    return ast.parse(text, mode="eval").body


def _is_data(value):
    """An array (or a numpy scalar): its values are known only when the program runs."""
    return isinstance(value, (np.ndarray, np.generic))


def _literal(value):
    """``value`` as a Python literal (ints, bools, None, tuples and slices of them), or _UNKNOWN."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.bool_):
        return int(value)
    if isinstance(value, tuple):
        parts = tuple(_literal(v) for v in value)
        return _UNKNOWN if any(p is _UNKNOWN for p in parts) else parts
    if isinstance(value, slice):
        parts = [_literal(v) for v in (value.start, value.stop, value.step)]
        ok = all(p is None or isinstance(p, int) for p in parts)
        return slice(*parts) if ok else _UNKNOWN
    return _UNKNOWN


def _index_node(value):
    """An index as written in brackets: ``:, 0`` rather than ``(slice(None, None, None), 0)``."""
    def part(v):
        if isinstance(v, slice):
            return ast.Slice(*(None if x is None else ast.Constant(x) for x in (v.start, v.stop, v.step)))
        return ast.Constant(v)
    if isinstance(value, tuple) and len(value) == 1 and (value[0] is None or isinstance(value[0], (int, slice))):
        value = value[0]                                 # x[(0,)] is x[0] for an int or a slice
    return ast.Tuple([part(v) for v in value], ast.Load()) if isinstance(value, tuple) else part(value)


def written_out(fn):
    """(signature, a fresh copy of the returned expression) of a function that a program writes out in
    place of its call: one of ours (not numpy's) whose body is one ``return``; else None."""
    if not inspect.isfunction(fn) or fn.__module__.split(".")[0] == "numpy":
        return None
    if fn not in _BODIES:
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]
        except (OSError, TypeError, SyntaxError):
            tree = None
        body = tree.body if isinstance(tree, ast.FunctionDef) else []
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]                                   # the docstring
        one = len(body) == 1 and isinstance(body[0], ast.Return) and body[0].value is not None
        _BODIES[fn] = (inspect.signature(fn), body[0].value) if one else None
    found = _BODIES[fn]
    return None if found is None else (found[0], copy.deepcopy(found[1]))


_BODIES = {}


class _Replace(ast.NodeTransformer):
    """Each name that is a key of ``values`` replaced by (a copy of) the node it maps to."""

    def __init__(self, values):
        self.values = values

    def visit_Name(self, node):
        return copy.deepcopy(self.values[node.id]) if node.id in self.values else node


class _Folder(ast.NodeTransformer):
    """Folds what is known while writing; ``known(node)`` is a folded node's value, or _UNKNOWN.

    Objects met on the way (numpy, a function, an inlined function's argument) are held under
    placeholder names, written back by ``render``.
    """

    def __init__(self, env):
        self.env = env
        self.held = {}        # placeholder -> the object, or an argument's trace-time value
        self.args = {}        # placeholder -> the argument's code (an inlined function's parameter)
        self.values = {}      # id(node) -> (node, value), for known nodes that are not literals (np, a function)
        self.count = itertools.count()

    # ------------------------------------------------------------------ values
    def hold(self, value, code=None):
        name = f"_held{next(self.count)}"
        self.held[name] = value
        if code is not None:
            self.args[name] = code
        return ast.Name(name, ast.Load())

    def known(self, node):
        if isinstance(node, ast.Constant):
            return node.value
        entry = self.values.get(id(node))
        return entry[1] if entry is not None and entry[0] is node else _UNKNOWN

    def _static(self, node, value):
        """``node``, known to be ``value`` while writing: a literal is written as one."""
        literal = _literal(value)
        if isinstance(literal, int) and not isinstance(literal, bool) and literal < 0:
            negative = ast.copy_location(ast.UnaryOp(ast.USub(), ast.Constant(-literal)), node)   # (-2) ** g
            self.values[id(negative)] = (negative, literal)
            return negative
        if literal is not _UNKNOWN:
            return ast.copy_location(ast.Constant(literal), node)
        if not _is_data(value):
            self.values[id(node)] = (node, value)     # the node held too: its id is never reused meanwhile
        return node

    def _evaluate(self, node):
        code = compile(ast.fix_missing_locations(ast.Expression(copy.deepcopy(node))), "<fold>", "eval")
        return eval(code, {"np": np, **self.env, **self.held})

    def _all_known(self, node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.expr_context, ast.operator, ast.cmpop, ast.boolop, ast.unaryop)):
                continue
            if isinstance(child, ast.Slice):
                if not self._all_known(child):
                    return False
            elif self.known(child) is _UNKNOWN:
                return False
        return True

    # ------------------------------------------------------------------ folding
    def visit_Name(self, node):
        if node.id in self.args:               # an argument: its value is what a run computes
            return node
        if node.id in self.held:
            return self._static(node, self.held[node.id])
        value = self.env.get(node.id, getattr(builtins, node.id, _UNKNOWN))
        # a variable of the program holds what a run computes: only its modules and functions are known
        if value is _UNKNOWN or not (inspect.ismodule(value) or callable(value)):
            return node
        return self._static(node, value)

    def visit_Attribute(self, node):
        node.value = self.visit(node.value)
        base = self.known(node.value)
        if node.attr in ("shape", "ndim"):   # fixed for the program's signature: known even of an array
            return self._static(node, getattr(self._evaluate(node.value) if base is _UNKNOWN else base, node.attr))
        if base is not _UNKNOWN:
            return self._static(node, getattr(base, node.attr))
        return node

    def visit_IfExp(self, node):
        node.test = self.visit(node.test)
        test = self.known(node.test)
        if test is _UNKNOWN:
            node.body, node.orelse = self.visit(node.body), self.visit(node.orelse)
            return node
        return self.visit(node.body if test else node.orelse)   # only the branch taken is written

    def _fold_whole(self, node):
        node = self.generic_visit(node)
        return self._static(node, self._evaluate(node)) if self._all_known(node) else node

    visit_BinOp = visit_UnaryOp = visit_Compare = visit_Tuple = _fold_whole

    def visit_BoolOp(self, node):
        """``and``/``or`` as Python runs them: an operand known to end the evaluation drops the rest,
        unvisited; a known one that passes it on is dropped (unless it is the last, the value then)."""
        ends = isinstance(node.op, ast.Or)      # the truth value that ends the evaluation
        kept = []
        for i, operand in enumerate(node.values):
            operand = self.visit(operand)
            known = self.known(operand)
            if known is _UNKNOWN or i == len(node.values) - 1:
                kept.append(operand)
            elif bool(known) == ends:
                kept.append(operand)
                break
        if len(kept) == 1:
            return kept[0]
        node.values = kept
        return node

    def visit_Subscript(self, node):
        node = self._fold_whole(node)
        if isinstance(node, ast.Subscript):
            index = self.known(node.slice)
            if isinstance(index, (tuple, slice)):
                node.slice = _index_node(index)
        return node

    def visit_GeneratorExp(self, node):
        for loop in node.generators:    # the element may read the loop's variable: folded per position later
            loop.iter = self.visit(loop.iter)
        return node

    def visit_Call(self, node):
        node = self.generic_visit(node)
        fn = self.known(node.func)
        if fn is _UNKNOWN:
            return node
        args = [self.known(a) for a in node.args]
        kwargs = {k.arg: self.known(k.value) for k in node.keywords}
        if _UNKNOWN not in args and _UNKNOWN not in kwargs.values() and None not in kwargs and \
                (fn in _PURE or _is_engine_function(fn)):
            return self._static(node, fn(*args, **kwargs))
        return self._inline(fn, node) or node

    def _inline(self, fn, call):
        """The body of the one-expression function ``fn``, its parameters bound to the call's
        arguments; None (keep the call) for any other, or where an argument that costs something to
        compute would be written twice."""
        body = written_out(fn)
        if not body or any(isinstance(a, ast.Starred) for a in call.args) or \
                any(k.arg is None for k in call.keywords):
            return None
        signature, expr = body
        try:
            bound = signature.bind(*call.args, **{k.arg: k.value for k in call.keywords})
        except TypeError:
            return None
        bound.apply_defaults()
        names, dear = {}, set()
        for param, arg in bound.arguments.items():
            if not isinstance(arg, ast.AST):                  # a default value
                names[param] = self.hold(arg)
            elif isinstance(arg, ast.Name) and arg.id in self.args:
                names[param] = arg         # an outer argument as it is: its uses are counted where it was bound
            elif self.known(arg) is not _UNKNOWN:
                names[param] = arg
            else:
                names[param] = self.hold(self._evaluate(arg), code=arg)
                if not _cheap(arg):
                    dear.add(names[param].id)
        loop_names = {n.id for c in ast.walk(expr) if isinstance(c, ast.comprehension)
                      for n in ast.walk(c.target) if isinstance(n, ast.Name)}
        for name in {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)} - set(names) - loop_names:
            if name in fn.__globals__:
                names[name] = self.hold(fn.__globals__[name])
            elif hasattr(builtins, name):
                names[name] = self.hold(getattr(builtins, name))
            else:
                return None
        node = self.visit(_Replace(names).visit(expr))
        uses = [n.id for n in ast.walk(node) if isinstance(n, ast.Name) and n.id in dear]
        return None if len(uses) != len(set(uses)) else node

    # ------------------------------------------------------------------ writing
    def render(self, node, use):
        """The code of a folded node: placeholders written back as arguments, ``np``, builtins,
        numpy's functions (``np.name``) or the program's helpers (``use``)."""
        return ast.unparse(ast.fix_missing_locations(_WriteBack(self, use).visit(copy.deepcopy(node))))


class _WriteBack(ast.NodeTransformer):
    """Each placeholder of ``folder`` replaced by what it stands for, as code."""

    def __init__(self, folder, use):
        self.folder, self.use = folder, use

    def visit_Name(self, node):
        if node.id not in self.folder.held:
            return node
        if node.id in self.folder.args:
            return self.visit(copy.deepcopy(self.folder.args[node.id]))
        code = _parse(self._name_of(self.folder.held[node.id], self.use))
        first = code
        while isinstance(first, ast.Attribute):
            first = first.value
        if isinstance(first, ast.Name) and first.id in self.folder.env and \
                self.folder.env[first.id] is not self.folder.held[node.id] and first.id != "np":
            raise _CannotWrite(first.id)        # a variable of the program has that name (``tuple``, ``sum``)
        return code

    @staticmethod
    def _name_of(value, use):
        if value is np:
            return "np"
        name = getattr(value, "__name__", None)
        if name and getattr(builtins, name, None) is value:
            return name
        if name and getattr(np, name, None) is value:
            return f"np.{name}"
        if inspect.isfunction(value):
            return use(value)
        literal = _literal(value)
        if literal is not _UNKNOWN:
            return repr(literal)
        raise _CannotWrite(value)


def _is_engine_function(fn):
    return inspect.isfunction(fn) and fn.__module__ == engine.__name__


def _cheap(node):
    """A name, a constant, or an attribute of one (``p4.T``): written twice, it costs nothing."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, (ast.Name, ast.Constant))
