"""tracing.fold: an engine function written out for one program's shapes gives the engine's bits.

The shape-only part of a formula is decided while the program is written; what is left
must be the same array operations, in the same order, as the function itself runs.
"""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from tinygrad_rnn import tensor
from tinygrad_rnn.tracing.fold import specialise, specialise_around, specialise_pieces


def _use(fn):
    return fn.__name__


def _run(code, ns):
    return eval(code, {"np": np, **{f.__name__: f for f in (tensor._rows, tensor._at)}, **ns})


@st.composite
def broadcast_pairs(draw):
    """A shape and a shape that broadcasts to it (fewer axes, some of them 1)."""
    big = tuple(draw(st.lists(st.integers(1, 4), min_size=0, max_size=4)))
    kept = draw(st.integers(0, len(big)))
    small = tuple(1 if draw(st.booleans()) else n for n in big[len(big) - kept:])
    return big, small


@given(broadcast_pairs(), st.sampled_from([np.float64, np.float32]))
def test_unbroadcast_written_for_its_shapes_gives_the_engine_bits(pair, dtype):
    big, small = pair
    g = np.random.default_rng(len(big)).standard_normal(big).astype(dtype)
    code = specialise(tensor._unbroadcast, ["g", repr(small)], {"g": g}, _use)
    assert ".shape" not in code and "_broadcast_axes" not in code, code   # decided while writing
    got, want = _run(code, {"g": g}), tensor._unbroadcast(g, small)
    assert got.shape == want.shape == small and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_the_sum_is_written_over_the_axes_these_shapes_need():
    g = np.ones((10, 5, 418))
    assert specialise(tensor._unbroadcast, ["g", "(418,)"], {"g": g}, _use) == \
        "np.asarray(g.sum(axis=(0, 1))).reshape((418,))"
    assert specialise(tensor._unbroadcast, ["g", "(10, 5, 418)"], {"g": g}, _use) == "g"
    assert specialise(tensor._sub_grad_b, ["g", "(10, 5, 1)"], {"g": g}, _use) == \
        "-np.asarray(g.sum(axis=(2,))).reshape((10, 5, 1))"


@given(st.integers(0, 3), st.integers(1, 3), st.integers(0, 4))
def test_a_stack_of_rows_times_a_matrix_is_written_as_the_engine_folds_it(extra, k, n):
    rng = np.random.default_rng(extra * 10 + k)
    a, b = rng.standard_normal((2,) * extra + (3, k)), rng.standard_normal((k, n))
    ns = {"a": a, "b": b}
    code = specialise(tensor._folded_matmul, ["a", "b"], ns, _use)
    assert "ndim" not in code and "_folded_matmul" not in code, code
    np.testing.assert_array_equal(_run(code, ns), tensor._folded_matmul(a, b))
    g = rng.standard_normal(a.shape[:-1] + (n,))
    for fn, args in ((tensor._matmul_grad_a, ["g", "b"]), (tensor._matmul_grad_b, ["g", "a"])):
        ns = {"a": a, "b": b, "g": g}
        np.testing.assert_array_equal(_run(specialise(fn, args, ns, _use), ns), fn(g, ns[args[1]]))


def test_a_stack_gives_one_line_per_input():
    g = np.arange(24.0).reshape(2, 3, 4)
    for axis, written in ((0, ["g[0]", "g[1]"]), (1, ["g[:, 0]", "g[:, 1]", "g[:, 2]"])):
        pieces = specialise_pieces(tensor._stack_backward, ["g", str(axis)], {"g": g}, _use)
        assert pieces == written
        for code, want in zip(pieces, tensor._stack_backward(g, axis)):
            np.testing.assert_array_equal(_run(code, {"g": g}), want)
    # a function that does not build its tuple element by element has no pieces
    assert specialise_pieces(tensor._concat_backward, ["g", "[1]", "0"], {"g": g}, _use) is None


def _scaled_by(g, n):
    return n * g


def _by_value(g):
    return g if g.sum() > 0 else -g           # depends on the values: decided by each run


def _twice(g, n):
    return g * n


def _square_of(g):
    return g * g


def test_only_what_the_shapes_decide_is_decided_while_writing():
    g = np.ones(3)
    assert specialise(_by_value, ["g"], {"g": g}, _use) == "g if g.sum() > 0 else -g"
    # a program's variable holds a run's value, even a Python number: never written as a literal
    assert specialise(_twice, ["g", "n"], {"g": g, "n": 3}, _use) == "g * n"
    assert specialise(_twice, ["g", "3"], {"g": g}, _use) == "g * 3"
    # an argument that costs a computation is not written twice: the function is called instead
    assert specialise(_square_of, ["g"], {"g": g}, _use) == "g * g"
    assert specialise(_square_of, ["np.exp(g)"], {"g": g}, _use) == "_square_of(np.exp(g))"
    # numpy's own functions are called, never written out
    assert specialise(np.broadcast_to, ["g", "(2, 3)"], {"g": g}, lambda f: "np." + f.__name__) == \
        "np.broadcast_to(g, (2, 3))"


_MARK = object()


def _checked(g, mark):
    assert mark is _MARK
    return g


def _with_a_default(g, mark=_MARK):
    return _checked(g, mark)                   # the call inside must pass an object no program can spell


def test_what_cannot_be_written_out_is_called():
    g = np.ones(2)
    assert specialise(_with_a_default, ["g"], {"g": g}, _use) == "_with_a_default(g)"


def test_a_caller_writing_its_argument_in_pieces_gets_the_code_around_it():
    g = np.arange(12.0).reshape(4, 3)
    before, after = specialise_around(tensor._unbroadcast, g, ["(3,)"], {}, _use)
    assert (before, after) == ("np.asarray(", ".sum(axis=(0,))).reshape((3,))")
    np.testing.assert_array_equal(_run(before + "(g + 0.0)" + after, {"g": g}), tensor._unbroadcast(g, (3,)))
    assert specialise_around(_square_of, g, [], {}, _use) is None        # read twice: no single place
    # offsets are found in the parsed code, which counts bytes: a name that is not ASCII moves nothing
    before, after = specialise_around(_scaled_by, g, ["ñ"], {"ñ": 2.0}, _use)
    assert (before, after) == ("ñ * ", "")


def _power_of(g, k):
    return k ** g


def _pick(x, idx):
    return x[idx]


def _guarded(a):
    return a * 2 if a.ndim > 1 and a.shape[1] == 3 else a


def _outer(x):
    return _square_of(x)


def test_what_is_written_reads_as_python_reads_the_function():
    g = np.array([1.0, 2.0, 3.0])
    # a negative number decided while writing keeps its sign inside a power: (-2) ** g
    code = specialise(_power_of, ["g", "-2"], {"g": g}, _use)
    np.testing.assert_array_equal(_run(code, {"g": g}), _power_of(g, -2))
    # an index of one sequence picks rows, not one element
    x = np.arange(6.0).reshape(3, 2)
    code = specialise(_pick, ["x", "((0, 1),)"], {"x": x}, _use)
    np.testing.assert_array_equal(_run(code, {"x": x}), _pick(x, ((0, 1),)))
    # `and` stops where Python stops: a.shape[1] of a vector is never looked at
    assert specialise(_guarded, ["a"], {"a": g}, _use) == "a"
    assert specialise(_guarded, ["a"], {"a": x.reshape(2, 3)}, _use) == "a * 2"
    # a costly argument handed through another function is not written twice either
    assert specialise(_outer, ["np.exp(g)"], {"g": g}, _use) == "_outer(np.exp(g))"


def test_a_variable_named_like_a_builtin_leaves_the_builtin_alone():
    import tinygrad_rnn as tg
    from tinygrad_rnn import Tensor

    def f(tuple, b):                       # concat's backward folds to tuple(np.split(...))
        return (tg.concat([tuple, b]) * 2.0).sum()
    a, b = np.linspace(-1, 1, 6).reshape(2, 3), np.linspace(0, 1, 3).reshape(1, 3)
    program = tg.trace(f, Tensor(a, requires_grad=True), Tensor(b, requires_grad=True))
    ta, tb = Tensor(a * 3, requires_grad=True), Tensor(b - 1, requires_grad=True)
    f(ta, tb).backward()
    pa, pb = Tensor(a * 3, requires_grad=True), Tensor(b - 1, requires_grad=True)
    program(pa, pb)
    np.testing.assert_array_equal(pa.grad, ta.grad)
    np.testing.assert_array_equal(pb.grad, tb.grad)
