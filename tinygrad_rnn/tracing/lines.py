"""A program's lines as records: what each assigns and reads, rendered to source text only at the end.

The writer makes one ``Line`` per statement.  The passes (``passes.py``) read
and make these records: which names a line reads and writes, whether it is a
plain assignment (dropped when nothing reads it), and, for an elementwise
result, its ufunc and arguments, so that it can be written into a buffer
(``out=``) without editing any text.
"""
import ast
from dataclasses import dataclass, replace


def _names(code):
    """(names read, names written as a variable, in the order written) of the statement ``code``."""
    nodes = [n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Name)]
    nodes.sort(key=lambda n: (n.lineno, n.col_offset))
    reads = frozenset(n.id for n in nodes if isinstance(n.ctx, ast.Load))
    writes = tuple(dict.fromkeys(n.id for n in nodes if isinstance(n.ctx, ast.Store)))
    return reads, writes


@dataclass(frozen=True)
class Line:
    """One statement: ``target = expr`` when ``target`` is set, else the statement ``expr`` itself.

    ``reads`` and ``writes`` are the variables it loads and assigns; ``pure``: an
    assignment of names only (every operation is pure), which may go when none of
    them is read.  ``ufunc`` and ``args``: an elementwise result, which may be
    written into the buffer ``out``.
    """
    expr: str
    kind: str = "forward"
    target: str = None
    reads: frozenset = frozenset()
    writes: tuple = ()
    pure: bool = False
    ufunc: str = None
    args: tuple = ()
    out: str = None

    @classmethod
    def assign(cls, target, expr, kind="forward", ufunc=None, args=()):
        reads, _ = _names(expr)
        return cls(expr, kind, target, reads, (target,), True, ufunc, tuple(args))

    @classmethod
    def statement(cls, code, kind="forward"):
        """Any other statement (a guard, ``+=``, a loop, a tuple assignment), read once for its names."""
        reads, writes = _names(code)
        tree = ast.parse(code).body
        pure = isinstance(tree[0], ast.Assign) and bool(writes)
        return cls(code, kind, None, reads, writes, pure)

    def into(self, out, extra_reads=()):
        """This elementwise line written into the buffer ``out`` (a name, or a slot of one)."""
        return replace(self, out=out, reads=self.reads | frozenset(extra_reads))

    @property
    def names(self):
        return self.reads | frozenset(self.writes)

    def render(self):
        if self.target is None:
            return self.expr
        if self.out is not None:
            return f"{self.target} = {self.ufunc}({', '.join(self.args)}, out={self.out})"
        return f"{self.target} = {self.expr}"
