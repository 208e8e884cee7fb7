"""Each primitive's derivative is written once, in a module-level function of tensor.py.

The engine's backward closures only call those functions, and the tracer writes a
call of the same functions into a program instead of a formula of its own.
"""
import ast
import inspect
import pathlib
import re
import textwrap
import types

import numpy as np
import pytest

import tinygrad_rnn
from tinygrad_rnn import Tensor, tensor, tracing

TENSOR_TREE = ast.parse(inspect.getsource(tensor))


def _engine_names(node):
    """The names ``engine.X`` that the code under ``node`` reads."""
    return {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Name) and n.value.id == "engine"}


def _backwards_in_engine():
    """Every backward closure of an operation in tensor.py: the lambdas and ``def backward`` inside functions."""
    found = []
    for fn in ast.walk(TENSOR_TREE):
        if isinstance(fn, (ast.FunctionDef, ast.Lambda)) and fn is not TENSOR_TREE:
            for node in ast.walk(fn):
                if node is fn:
                    continue
                if isinstance(node, ast.Lambda) and node.args.args and node.args.args[0].arg in ("g", "g2"):
                    found.append(node)
                elif isinstance(node, ast.FunctionDef) and node.name == "backward":
                    found.append(node)
    return found


def test_the_tracer_has_no_derivative_templates():
    for gone in ("_ONE_INPUT_GRADS", "_GRAD_HELPERS"):
        assert not hasattr(tracing, gone)
    pieces = ast.parse(inspect.getsource(tracing._Writer._backward_pieces).replace("\n    ", "\n")[4:])
    # the text of every f-string is punctuation around names: no operator, no numpy function of its own
    errors = {id(n) for r in ast.walk(pieces) if isinstance(r, ast.Raise) for n in ast.walk(r)}
    texts = [part.value for node in ast.walk(pieces) if isinstance(node, ast.JoinedStr) and id(node) not in errors
             for part in node.values if isinstance(part, ast.Constant)]
    assert texts, "the writer should still build code from f-strings"
    for text in texts:
        assert re.fullmatch(r"[\s,()\[\]=0-9]*(_grads)?", text), f"a formula in the tracer's backward: {text!r}"


def _derivatives_called(node):
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and DERIVATIVE.fullmatch(n.id)}


def _closures_by_op():
    """{op name: the derivative functions its backward closure calls}, for every ``Tensor._make`` in tensor.py."""
    found = {}
    for fn in ast.walk(TENSOR_TREE):
        if not isinstance(fn, ast.FunctionDef):
            continue
        local = {d.name: d for d in ast.walk(fn) if isinstance(d, ast.FunctionDef) and d is not fn}
        for call in ast.walk(fn):
            if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "_make"
                    and len(call.args) >= 4 and isinstance(call.args[3], ast.Constant)):
                backward = call.args[2]
                if isinstance(backward, ast.Name) and backward.id in local:
                    backward = local[backward.id]
                found.setdefault(call.args[3].value, set()).update(_derivatives_called(backward))
    return found


DERIVATIVE = re.compile(r"_\w+_(backward|grad(_\w+)?)")


def test_the_tracer_names_no_derivative_itself():
    """It takes them from the engine's table, as the engine's closures do."""
    files = sorted(pathlib.Path(tracing.__file__).parent.glob("*.py"))
    assert len(files) > 5     # the package, every file of it
    for path in files:
        named = _engine_names(ast.parse(path.read_text()))
        assert not {n for n in named if DERIVATIVE.fullmatch(n)}, path.name


def _held(fn):
    """The variables that ``fn`` closes over."""
    return inspect.getclosurevars(fn).nonlocals


def _built_from_the_table():
    """{op name: its derivatives' names} for the methods (and functions) that ``tensor._from_table`` made from
    an entry, each checked to hold that entry's own forward and to call its gradient functions."""
    found = {}
    made = [m for m in vars(Tensor).values() if callable(m)] + [tensor._maximum, tensor._minimum]
    for method in made:
        held = _held(method) if getattr(method, "__code__", None) and method.__closure__ else {}
        if "forward" not in held or "name" not in held:
            continue
        prim = tensor._PRIMITIVES[held["name"]]
        assert held["forward"] is prim.forward, held["name"]
        callers = [held["grad"]] if "grad" in held else [c for plan in held["plans"] for c in plan[:2]]
        callers += [held["several"]] if held.get("several") else []
        found[held["name"]] = {_held(c)["fn"].__name__ for c in callers if callable(c)}
    return found


def test_the_table_holds_the_functions_that_each_operation_calls():
    built = _built_from_the_table()
    assert {"exp", "sin", "neg", "abs", "add", "sub", "mul", "div", "pow", "matmul", "maximum", "minimum", "sum", "max",
            "reshape", "transpose", "broadcast_to", "sum_to"} <= set(built)
    # the operations whose node tensor._node makes hand its backward the functions of their entry itself
    by_node = {call.args[0].value for call in ast.walk(TENSOR_TREE) if isinstance(call, ast.Call)
               and getattr(call.func, "id", None) == "_node" and isinstance(call.args[0], ast.Constant)}
    assert by_node == {"where", "clip", "concat", "stack"}
    closures = {**_closures_by_op(), **built}
    table = tensor._PRIMITIVES
    differentiable = {op for op, called in closures.items() if called}
    assert differentiable - set(table) == set(), "an operation whose derivative is not in the table"
    for name, prim in table.items():
        listed = {fn.__name__ for fn, _ in prim.grads if fn is not None}
        if prim.several:
            listed.add(prim.several[0].__name__)
        if name not in by_node:
            assert closures.get(name, set()) == listed, name  # a comparison has no closure, nor derivative
        assert callable(prim.forward), name
    # what a backward saves for the graph path is what the table says
    for name, prim in table.items():
        assert (name in tensor._OPERANDS) == bool(prim.saved), name


def test_every_table_entry_is_traced_by_its_table_functions():
    """Each primitive with a table entry writes its backward lines from it (no operation is left out)."""
    for name, prim in tensor._PRIMITIVES.items():
        for fn, reads in prim.grads + ((prim.several,) if prim.several else ()):
            if fn is not None:
                assert inspect.isfunction(fn) and fn.__module__ == tensor.__name__, name
                assert set(reads) <= {"a", "b", "mask", "out", "shape_a", "shape_b", "attr0", "attr1", "need_a",
                                      "need_b", "lo", "hi"}


def test_the_backward_writer_names_no_operation():
    """It asks each entry what its gradient is (functions, several, scatter), never which operation it is."""
    source = inspect.getsource(tracing._Writer._backward_pieces)
    constants = {n.value for n in ast.walk(ast.parse(textwrap.dedent(source))) if isinstance(n, ast.Constant)}
    assert not constants & set(tensor._PRIMITIVES), constants & set(tensor._PRIMITIVES)
    assert tensor._PRIMITIVES["index"].scatter == (tensor._scatter_add, tensor._scatter_add_at)


def test_the_engine_backwards_do_no_arithmetic_of_their_own():
    closures = _backwards_in_engine()
    assert len(closures) > 15      # the factories' backwards and callers, and the operations written out
    for closure in closures:
        body = closure.body if isinstance(closure, ast.Lambda) else closure
        ops = [n for n in ast.walk(body) if isinstance(n, (ast.BinOp, ast.UnaryOp)) and
               not isinstance(n.op, ast.Not)]
        assert not ops, f"a derivative written inline in tensor.py, line {closure.lineno}"


def _program(f, *inputs):
    return tinygrad_rnn.trace(f, *inputs).source.split("# backward")[1]


def test_a_traced_program_writes_the_engine_derivatives():
    w = Tensor(np.linspace(0.5, 1.5, 6).reshape(2, 3), requires_grad=True, name="w")

    def f(x):
        y = (x @ w).exp() * 2.0 - (x @ w).sqrt() / 3.0
        return (-y.abs() * 0.01).log1p().sum() + (w @ w.T).sum()

    backward = _program(f, np.ones((4, 2)))
    # one-expression derivatives are written as their expressions, the others are called
    for line in ("dmm2 = dsqrt / (2 * sqrt)", "dmm = dexp * exp", "dabs = -dneg", "dsub = dabs * np.sign(sub)",
                 "dw = dmm3 @ tr.T", "dmul2 = dlog1p / (1 + mul2)"):
        assert line in backward, line
    # the shape-only part is decided for this program: the subtrahend was not broadcast, so its gradient is
    # _sub_grad_b's -_unbroadcast(g, shape) with no sum at all
    assert "ddiv = -dsub\n" in backward and "_sub_grad_b" not in backward and "_unbroadcast" not in backward
    assert "_sum_backward(dadd, None, False, (2, 2))" in backward   # more than one statement: called


def test_the_written_line_is_the_table_function_not_a_copy(monkeypatch):
    """Change the table's function (to one that gives the same bits): the program follows it."""
    def sin_backward_times_one(g, x, m=np):
        return g * m.cos(x) * 1.0
    entry = tensor._PRIMITIVES["sin"]
    monkeypatch.setattr(entry, "grads", ((sin_backward_times_one, ("a",)),))
    backward = _program(lambda t: t.sin().sum(), Tensor(np.linspace(-3, 3, 5), requires_grad=True))
    assert "dt = dsin * np.cos(t) * 1.0" in backward

    def called(g, x, m=np):
        c = m.cos(x)
        return g * c
    monkeypatch.setattr(entry, "grads", ((called, ("a",)),))
    backward = _program(lambda t: t.sin().sum(), Tensor(np.linspace(-3, 3, 5), requires_grad=True))
    assert "dt = called(dsin, t)" in backward


def test_an_expression_keeps_its_order_inside_a_longer_line():
    """An expression whose last operation is + or - is parenthesised, so that ``x + (a - b)`` stays so."""
    def difference(g, a, m=np):
        return g - a

    def product(g, a, m=np):
        return -g * m.exp(a)
    writer = types.SimpleNamespace(ns={"dy": np.ones(3), "x": np.ones(3)}, _use=lambda f: f.__name__,
                                   _texts=tracing._Writer._texts)
    assert tracing._Writer._call(writer, difference, "dy", "x") == "(dy - x)"
    assert tracing._Writer._call(writer, product, "dy", "x") == "-dy * np.exp(x)"


def test_a_product_is_written_as_an_operator_only_for_two_matrices():
    """matmul's entry writes ``a @ b`` for two matrices, where it is the engine's forward; any other is
    the engine's ``_folded_matmul``, written for the program's shapes: a stack of rows times a matrix is
    one large product of rows, a vector times a matrix the plain product."""
    rng = np.random.default_rng(0)
    W = Tensor(rng.standard_normal((3, 2)), requires_grad=True)
    for shape, written in (((4, 3), "mm = x @ W"), ((5, 4, 3), "mm = (x.reshape(-1, 3) @ W).reshape((5, 4, 2))"),
                           ((3,), "mm = x @ W")):
        x = Tensor(rng.standard_normal(shape), requires_grad=True)
        program = tinygrad_rnn.trace(lambda x, W: (x @ W).sum(), x, W)
        forward = program.source.split("# backward")[0]
        assert written + "\n" in forward and "_folded_matmul" not in forward, forward
        assert tensor._PRIMITIVES["matmul"].operator_if(x.data, W.data) == (len(shape) == 2)


# ---------------------------------------------------------------------- what a made method keeps read-only
_TWO_INPUTS = {
    "add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y, "div": lambda x, y: x / y,
    "pow": lambda x, y: x ** y, "maximum": tinygrad_rnn.maximum, "minimum": tinygrad_rnn.minimum,
    "matmul": lambda x, y: x @ y,
}
_SHAPES = {"matmul": [((2, 3), (3, 4)), ((2, 5, 3), (3, 4)), ((3,), (3, 4)), ((2, 2, 3), (2, 3, 4))]}
_NEEDS = [(True, False), (False, True), (True, True)]


@pytest.mark.parametrize("needs", _NEEDS, ids=["a", "b", "both"])
@pytest.mark.parametrize("name", sorted(_TWO_INPUTS))
def test_an_array_a_made_operation_leaves_writable_is_one_its_backward_does_not_read(name, needs):
    """Every array that stays writable after the forward (an input, the result) is overwritten: the
    gradients must be those of the untouched run, bit for bit.  (The locks come from the table's reads;
    a read the table left out would show here.)"""
    rng = np.random.default_rng(3)
    for shape_a, shape_b in _SHAPES.get(name, [((2, 3), (2, 3)), ((2, 3), (3,))]):
        a0, b0 = rng.uniform(0.5, 2.0, shape_a), rng.uniform(0.5, 2.0, shape_b)

        def run(overwrite, a0=a0, b0=b0):
            x, y = Tensor(a0, requires_grad=needs[0]), Tensor(b0, requires_grad=needs[1])
            z = _TWO_INPUTS[name](x, y)
            written = []
            for label, arr in (("a", x.data), ("b", y.data), ("out", z.data)):
                if overwrite and arr.flags.writeable:
                    arr[...] = 7.25
                    written.append(label)
            z.backward(np.ones(z.shape))
            return [t.grad for t in (x, y)], written
        (want, _), (got, written) = run(False), run(True)
        for w, g in zip(want, got):
            assert (w is None and g is None) or np.array_equal(w, g), (name, needs, shape_a, shape_b, written)


def test_a_view_keeps_its_input_and_result_read_only():
    x = Tensor(np.arange(6.0), requires_grad=True)
    for y in (x.reshape(2, 3), x.reshape(2, 3).T, x.broadcast_to((2, 6)), x.sum_to((6,))):
        assert not y.data.flags.writeable and not x.data.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            y.data[...] = 0.0


_OWN_INPUTS = {   # the operations whose node tensor._node makes: (function of x, y; shapes)
    "where": lambda x, y: tinygrad_rnn.where(x > 1.0, x, y),
    "clip": lambda x, y: x.clip(y.data.min(), 1.5) * y,
    "concat": lambda x, y: tinygrad_rnn.concat([x, y], axis=1),
    "stack": lambda x, y: tinygrad_rnn.stack([x, y], axis=-1),
}


@pytest.mark.parametrize("needs", _NEEDS, ids=["a", "b", "both"])
@pytest.mark.parametrize("name", sorted(_OWN_INPUTS))
def test_the_same_for_the_operations_with_inputs_of_their_own(name, needs):
    rng = np.random.default_rng(4)
    a0, b0 = rng.uniform(0.5, 2.0, (2, 3)), rng.uniform(0.5, 2.0, (2, 3))

    def run(overwrite):
        x, y = Tensor(a0, requires_grad=needs[0]), Tensor(b0, requires_grad=needs[1])
        z = _OWN_INPUTS[name](x, y)
        node = z if z._op == name else z._parents[0]           # clip's node is under the product
        # (a constant the operation made, the mask or a bound, is the engine's own: nothing else can reach it)
        arrays = [p.data for p in node._parents if p._op != "const"] + [node.data]
        if overwrite:
            for arr in arrays:
                if arr.flags.writeable:
                    arr[...] = 7.25
        z.backward(np.ones(z.shape))
        return [t.grad for t in (x, y)]
    for w, g in zip(run(False), run(True)):
        assert (w is None and g is None) or np.array_equal(w, g), (name, needs)
