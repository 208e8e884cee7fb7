"""The tracer's parts one by one: named events, the passes over Line records, the engine's order, constants.

The programs these parts write are checked against the eager engine, bit for bit,
in test_tracing.py; here each part is held to what it says it does.
"""
import re
import sys

import numpy as np
import pytest

import tinygrad_rnn
from tinygrad_rnn import Tensor, tensor, tracing
from tinygrad_rnn.tracing.lines import Line
from tinygrad_rnn.tracing.passes import reuse_buffers, stack_in_place, with_frees, without_dead
from tinygrad_rnn.tracing.recorder import Copy, Decide, Derived, Op, _Recorder, _Recording


# ---------------------------------------------------------------------- the package
def test_the_package_keeps_its_public_names_and_the_ones_other_modules_use():
    assert tinygrad_rnn.trace is tracing.trace is tracing.program.trace
    assert tracing.Program is tracing.program.Program
    assert issubclass(tracing.TraceError, RuntimeError) and issubclass(tracing.GuardFailed, Exception)
    for name in ("_probe", "_still_holds", "_Watch", "_SLOT_DATA", "_Recorder", "_Recording", "_same",
                 "_ScatterCode", "_Writer"):
        assert hasattr(tracing, name), name


def test_no_file_of_the_package_is_long():
    import pathlib
    for path in pathlib.Path(tracing.__file__).parent.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path.name


# ---------------------------------------------------------------------- the recorder
def _record(fn, *inputs):
    recorder = _Recorder()
    with _Recording(recorder):
        fn(*inputs)
    return recorder.events


def _sign(a):
    return np.sign(a)


def _positive(a):
    return bool((a > 0).all())


def test_events_are_named_records_of_what_the_engine_reported():
    x = Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)

    def f(x):
        s = tensor.derived(_sign, x)
        tensor.decide(_positive, x)
        return (x * s).exp().sum() + Tensor(x).sum()

    events = _record(f, x)
    kinds = [type(e) for e in events]
    assert kinds[:2] == [Derived, Decide] and Copy in kinds
    ops = [e for e in events if isinstance(e, Op)]
    assert [e.op for e in ops] == ["mul", "exp", "sum", "sum", "add"]
    mul = ops[0]
    assert mul.parents[0] is x and mul.parents[1] is events[0].made[0] and mul.linked
    assert ops[2].attrs == (None, False)          # sum's axis and keepdims
    assert events[1].value is False and events[1].fn is _positive
    assert not ops[3].linked                      # the copy's sum needs no gradient


def test_a_second_recording_inside_one_is_refused():
    with _Recording(_Recorder()):
        with pytest.raises(tracing.TraceError, match="already tracing"):
            _Recording(_Recorder()).__enter__()


# ---------------------------------------------------------------------- the passes
def test_dead_assignments_go_and_statements_stay():
    lines = [Line.assign("a", "np.exp(x)"), Line.assign("b", "a + 1.0"), Line.assign("c", "np.log(a)"),
             Line.statement("if np.count_nonzero(m) != 2: raise GuardFailed('m')"),
             Line.statement("d, e = f(a)"), Line.statement("g[0] += a")]
    kept = without_dead(lines, keep={"c"})
    assert [line.render() for line in kept] == [
        "a = np.exp(x)", "c = np.log(a)", "if np.count_nonzero(m) != 2: raise GuardFailed('m')", "g[0] += a"]


def test_an_elementwise_result_takes_the_buffer_of_an_input_that_dies_there():
    values = {n: np.ones(3) for n in "xyabc"}
    lines = [Line.assign("a", "np.exp(x)"), Line.assign("b", "a * y", ufunc="np.multiply", args=("a", "y")),
             Line.assign("c", "b * b", ufunc="np.multiply", args=("b", "b"))]
    out = reuse_buffers(lines, keep={"c"}, fresh={"a", "b"}, aliases={}, values=values)
    assert [line.render() for line in out] == ["a = np.exp(x)", "b = np.multiply(a, y, out=a)",
                                               "c = np.multiply(b, b, out=b)"]
    # not an input's buffer (y is not fresh), nor one read later, nor one a live view looks into
    later = lines + [Line.assign("d", "a + 1.0")]
    assert reuse_buffers(later, {"c", "d"}, {"a", "b"}, {}, values)[1].render() == "b = a * y"
    view = reuse_buffers(lines + [Line.assign("e", "v.sum()")], {"c", "e"}, {"a", "b"}, {"a": {"v"}, "v": {"a"}},
                         values)
    assert view[1].render() == "b = a * y"
    # a result of another shape does not fit the buffer
    values["b"] = np.ones((2, 3))
    assert reuse_buffers(lines, {"c"}, {"a", "b"}, {}, values)[1].render() == "b = a * y"


def test_stacked_states_are_made_in_their_slots():
    values = {"a0": np.ones(3), "a1": np.ones(3), "h0": np.ones(3), "h1": np.ones(3), "hs": np.ones((2, 3))}
    lines = [Line.assign("h0", "np.tanh(a0)", ufunc="np.tanh", args=("a0",)),
             Line.assign("h1", "h0 @ w"),
             Line.assign("hs", "np.stack([h0, h1], axis=0)")]
    aliases = {}
    out, fresh = stack_in_place(lines, {"hs": (["h0", "h1"], 0)}, {"h0", "h1", "hs"}, aliases, values)
    assert [line.render() for line in out] == [
        "hs = np.empty((2, 3), dtype=np.float64)", "h0 = np.tanh(a0, out=hs[0])", "hs[1] = h0 @ w", "h1 = hs[1]"]
    assert fresh == {"hs"} and aliases["h0"] == {"hs"} and "hs" in out[1].reads
    # a part that is an alias of something else is not stacked in place
    out, _ = stack_in_place(lines, {"hs": (["h0", "h1"], 0)}, {"h0", "h1", "hs"}, {"h0": {"a0"}}, values)
    assert out == lines


def test_temporaries_are_freed_after_their_last_use():
    lines = [Line.assign("a", "np.exp(x)"), Line.assign("b", "a * 2.0"),
             Line.assign("db", "np.ones_like(b)", "backward"), Line.statement("da = db * 2.0", "backward")]
    assert with_frees(lines, keep={"b", "da"}) == [
        "# forward", "a = np.exp(x)", "b = a * 2.0", "del a", "# backward", "db = np.ones_like(b)",
        "da = db * 2.0", "del db"]


# ---------------------------------------------------------------------- the writer
def test_the_backward_is_written_in_the_engines_own_order(monkeypatch):
    calls = []
    order = tensor._topological_order

    def spy(*roots, **kw):
        calls.append(sys._getframe(1).f_globals["__name__"])
        return order(*roots, **kw)
    monkeypatch.setattr(tensor, "_topological_order", spy)
    w = Tensor(np.linspace(-1, 1, 6).reshape(2, 3), requires_grad=True)
    program = tinygrad_rnn.trace(lambda x: (x @ w).tanh().sum(), np.ones((4, 2)))
    assert "tinygrad_rnn.tracing.backward" in calls
    program(np.full((4, 2), 0.5))
    assert w.grad.shape == (2, 3)


def test_a_constant_is_known_by_its_flag_even_when_made_before_tracing():
    first = Tensor(0.0)
    c = tensor._constant(np.array([1.0, 2.0, 3.0]))
    assert c._op == "const" and c._seq > first._seq      # a creation number like any other tensor's
    before = Tensor(np.zeros(3))                                     # not a constant: refused
    program = tinygrad_rnn.trace(lambda x: (x * c).sum(), np.ones(3), backward=False)
    np.testing.assert_array_equal(program(np.full(3, 2.0)), 12.0)
    with pytest.raises(tracing.TraceError, match="made before tracing"):
        tinygrad_rnn.trace(lambda x: (x * before).sum(), np.ones(3), backward=False)


def test_the_index_gradient_is_written_from_the_engines_scatter(monkeypatch):
    """The scatter is defined once, in the table's entry for index (tensor._scatter_add, _scatter_add_at):
    change it there, and the engine, a traced program, a compiled composition and the compiled unroll follow."""
    def source(f, x):
        return tinygrad_rnn.trace(f, x).source.split("# backward")[1]

    x = Tensor(np.linspace(-1, 1, 6).reshape(3, 2), requires_grad=True)
    assert "dx[:, 1] += dix" in source(lambda x: x[:, 1].exp().sum(), x)
    assert re.search(r"np\.add\.at\(dx, np\.s_\[const\d*\], dix\)", source(lambda x: x[np.array([0, 0, 2])].sum(), x))

    # a scatter that adds twice the gradient: the engine, a traced program and a compiled composition all
    # follow the entry, basic and advanced indices alike (the trace checks its program against the engine)
    def scatter_twice(buffer, idx, g):
        buffer[idx] += g * 2.0

    def scatter_twice_at(buffer, idx, g):
        np.add.at(buffer, idx, g * 2.0)
    monkeypatch.setattr(tensor._PRIMITIVES["index"], "scatter", (scatter_twice, scatter_twice_at))
    assert "dx[:, 1] += dix * 2.0" in source(lambda x: x[:, 1].exp().sum(), x)
    for f, want in ((lambda x: x[:, 1].sum(), [[0, 2], [0, 2], [0, 2]]),
                    (lambda x: x[[0, 0, 2]].sum(), [[4, 4], [0, 0], [2, 2]])):
        x.grad = None
        f(x).backward()
        np.testing.assert_array_equal(x.grad, want)
        program = tinygrad_rnn.trace(f, x)
        x.grad = None
        program(x)
        np.testing.assert_array_equal(x.grad, want)
        composed = tinygrad_rnn.composite(f)
        for _ in range(2):                  # the recording call, then the compiled node
            x.grad = None
            composed(x).backward()
            np.testing.assert_array_equal(x.grad, want)
    # the compiled unroll hands each step's input gradient back as the entry's scatter of a time step
    cell, xs0 = tinygrad_rnn.nn.RNNCell(2, 3, rng=0), np.linspace(-1, 1, 8).reshape(2, 2, 2)
    grads = []
    for scatter in ((tensor._scatter_add, tensor._scatter_add_at), (scatter_twice, scatter_twice_at)):
        monkeypatch.setattr(tensor._PRIMITIVES["index"], "scatter", scatter)
        xs = Tensor(xs0, requires_grad=True)
        tinygrad_rnn.nn.unroll(cell, xs)[0].sum().backward()
        grads.append(xs.grad)
    np.testing.assert_array_equal(grads[1], 2 * grads[0])


# ---------------------------------------------------------------------- no program text is edited
def _package_sources():
    import pathlib
    root = pathlib.Path(tracing.__file__).parent
    return {path.name: path.read_text() for path in sorted(root.glob("*.py"))}


def test_no_part_of_the_package_edits_program_text_with_regexes_or_replace():
    import ast
    for name, text in _package_sources().items():
        tree = ast.parse(text)
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert "re" not in imported, f"{name} imports re"
        replaced = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call)
                    and isinstance(n.func, ast.Attribute) and n.func.attr == "replace"
                    and not (isinstance(n.func.value, ast.Name) and n.func.value.id == "dataclasses")]
        # dataclasses.replace (a Line record changed by a field) is imported as ``replace``, never an attribute
        assert not replaced, f"{name} calls .replace( on lines {replaced}"


def test_renamed_changes_the_names_the_parser_finds_and_nothing_else():
    from tinygrad_rnn.tracing.composite_calls import renamed
    source = ("def cell_forward(x, p0):\n"
              "    g_p0 = x.p0 @ p0.T + (-1.0)\n"
              "    s = 'p0'\n"
              "    return (g_p0,), (p0, x)\n")
    got = renamed(source, {"cell_forward": "cell2_forward", "p0": "Wx", "g_p0": "g_Wx"})
    assert got == ("def cell2_forward(x, Wx):\n"
                   "    g_Wx = x.p0 @ Wx.T + (-1.0)\n"
                   "    s = 'p0'\n"
                   "    return (g_Wx,), (Wx, x)\n")
    assert renamed(source, {}) == source


def test_a_loop_line_is_a_record_whose_time_index_is_a_field():
    from tinygrad_rnn.tracing.unroll_loop import Step, render
    line = ("dh_t = dhs", Step(1), " + dnext")
    assert render(line, "t") == "dh_t = dhs[:, t] + dnext"
    assert render(line, 3) == "dh_t = dhs[:, 3] + dnext"
    assert render(("f(dh_t, *saved", Step(), ")"), 0) == "f(dh_t, *saved[0])"


def test_the_steps_of_a_traced_batch_first_unroll_written_apart_read_their_own_step():
    rng = np.random.default_rng(3)
    cell = tinygrad_rnn.nn.LSTMCell(3, 2)
    xs = Tensor(rng.standard_normal((2, 4, 3)))

    def step(xs):
        hs, _ = tinygrad_rnn.nn.unroll(cell, xs, batch_first=True)
        return (hs * hs).sum()

    program = tinygrad_rnn.trace(step, xs)
    body = program.source[program.source.rindex("\ndef "):]
    assert "for t in range(1, 4):" in body and "xs[:, t]" in body and "xs[:, 0]" in body
    assert "[:, 3]" in body and "*saved[3])" in body and "*saved[0])" in body
    assert "[:, t]" in body and "*saved[t])" in body
    other = Tensor(rng.standard_normal((2, 4, 3)))
    results = []
    for run in (program, step):        # the program on new values, then the eager engine
        for p in cell.parameters():
            p.grad = None
        out = run(other)
        if run is step:
            out.backward()
        results.append([out.data.tobytes()] + [p.grad.tobytes() for p in cell.parameters()])
    assert results[0] == results[1]


# ---------------------------------------------------------------------- forward lines from the table
# one use of each operation of the engine's table, on a (3, 4) tensor ``a`` and a (3, 4) tensor ``b``
_ONE_USE = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b, "div": lambda a, b: a / b,
    "pow": lambda a, b: a.abs() ** b, "neg": lambda a, b: -a, "matmul": lambda a, b: a @ b.T,
    "exp": lambda a, b: a.exp(), "expm1": lambda a, b: a.expm1(), "log": lambda a, b: a.abs().log(),
    "sqrt": lambda a, b: a.abs().sqrt(), "abs": lambda a, b: a.abs(), "sin": lambda a, b: a.sin(),
    "cos": lambda a, b: a.cos(), "log1p": lambda a, b: a.abs().log1p(),
    "maximum": lambda a, b: tinygrad_rnn.maximum(a, b), "minimum": lambda a, b: tinygrad_rnn.minimum(a, b),
    "where": lambda a, b: tinygrad_rnn.where(a > b, a, b), "clip": lambda a, b: a.clip(-0.5, 0.5),
    "sum": lambda a, b: a.sum(axis=0), "max": lambda a, b: a.max(axis=1), "reshape": lambda a, b: a.reshape(4, 3),
    "transpose": lambda a, b: a.T, "broadcast_to": lambda a, b: a.broadcast_to((2, 3, 4)),
    "sum_to": lambda a, b: a.sum_to((1, 4)), "concat": lambda a, b: tinygrad_rnn.concat([a, b], axis=1),
    "stack": lambda a, b: tinygrad_rnn.stack([a, b]), "index": lambda a, b: a[1:, a[0] > 0],
    "detach": lambda a, b: a.detach() * b,
    "less": lambda a, b: a < b, "less_equal": lambda a, b: a <= b, "greater": lambda a, b: a > b,
    "greater_equal": lambda a, b: a >= b, "equal": lambda a, b: a == b, "not_equal": lambda a, b: a != b,
}


def _forward_line(op, a, b):
    """The forward line that writes ``op``'s result in the traced program of its one use."""
    recorder = _Recorder()
    with _Recording(recorder):
        _ONE_USE[op](a, b)
    (event,) = [e for e in recorder.events if isinstance(e, Op) and e.op == op][-1:]
    program = tinygrad_rnn.trace(lambda a, b: _ONE_USE[op](a, b) * 1.0, a, b, backward=False)
    return program, event


def test_every_operation_of_the_table_is_one_use_here():
    assert set(_ONE_USE) == set(tensor._PRIMITIVES)


@pytest.mark.parametrize("op", sorted(tensor._PRIMITIVES))
def test_each_operation_of_the_table_is_written_from_its_entry(op):
    rng = np.random.default_rng(5)
    a, b = Tensor(rng.standard_normal((3, 4))), Tensor(rng.standard_normal((3, 4)))
    program, _ = _forward_line(op, a, b)
    entry = tensor._PRIMITIVES[op]
    body = program.source
    fn = entry.forward
    if entry.symbol and (entry.operator_if is None or entry.operator_if(a.data, b.data.T)):
        # the operator, or its ufunc writing into a dying buffer (``out=``)
        assert f" {entry.symbol} " in body or f"{entry.symbol}a" in body or f"np.{fn.__name__}(" in body
    elif isinstance(fn, np.ufunc):
        assert f"np.{fn.__name__}(" in body
    else:
        from tinygrad_rnn.tracing.fold import written_out
        expression = written_out(fn)
        if expression is None:          # called by name, numpy's own or the engine's
            assert f"{fn.__name__}(" in body
        else:                           # written as its one expression (for these shapes), not called
            assert f"{fn.__name__}(" not in body, body
    other = [Tensor(rng.standard_normal((3, 4))) for _ in range(2)]
    got = program(*other)
    assert np.asarray(got.data).tobytes() == np.asarray((_ONE_USE[op](*other) * 1.0).data).tobytes()


def test_a_forward_line_is_written_from_whatever_the_entry_holds(monkeypatch):
    def other_reshape(x, shape):
        return np.reshape(x, shape)

    monkeypatch.setattr(tensor._PRIMITIVES["reshape"], "forward", other_reshape)
    program = tinygrad_rnn.trace(lambda a: a.reshape(4, 3).sum(), Tensor(np.ones((3, 4)), requires_grad=True))
    assert "np.reshape(a, (4, 3))" in program.source
    monkeypatch.setattr(tensor._PRIMITIVES["matmul"], "operator_if", None)    # always the operator
    program = tinygrad_rnn.trace(lambda a: (a @ a[0]).sum(), Tensor(np.ones((2, 3, 3)), requires_grad=True))
    assert " @ " in program.source.split("# backward")[0]


def test_the_forward_writer_has_no_rule_of_its_own_for_any_operation():
    import ast
    import pathlib
    tree = ast.parse((pathlib.Path(tracing.__file__).parent / "forward.py").read_text())
    named = [c.value for n in ast.walk(tree) if isinstance(n, ast.Compare) and isinstance(n.left, ast.Name)
             and n.left.id == "op" for c in n.comparators if isinstance(c, ast.Constant)]
    assert named == ["stack"]      # stacked states are noted for the pass that makes them in their slots
