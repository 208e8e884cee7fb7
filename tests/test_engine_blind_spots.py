"""Behaviours that mutation testing of tensor.py and functional.py found unchecked (benchmarks/mutate.py).

Each test pins one: a mutant that changes it makes the test fail.  Gradients are
float64 and compared with exact values derived by hand (tolerance 0 unless stated).
"""
import subprocess
import sys
import warnings

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import Tensor, stack, where
from tinygrad_rnn import functional as F
from tinygrad_rnn.composites import composite, expanded


def test_overlapping_slices_of_one_tensor_add_their_gradients():
    x = Tensor(np.zeros(4), requires_grad=True)
    ((x[0:3] * np.array([1.0, 2.0, 3.0])).sum() + (x[1:4] * np.array([10.0, 20.0, 30.0])).sum()).backward()
    np.testing.assert_array_equal(x.grad, [1.0, 12.0, 23.0, 30.0])


def test_an_index_gradient_keeps_a_gradient_already_waiting():
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    ((x[0] * 5.0) + (x * 3.0).sum()).backward()
    np.testing.assert_array_equal(x.grad, [8.0, 3.0, 3.0])
    x.grad = None
    ((x * 3.0).sum() + x[np.array([0, 0])].sum() * 5.0).backward()     # advanced index, repeated
    np.testing.assert_array_equal(x.grad, [13.0, 3.0, 3.0])


@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2), (-1, -3)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_mean_forward_is_numpys(axis, keepdims):
    a = np.arange(24.0).reshape(2, 3, 4) ** 1.5
    np.testing.assert_allclose(Tensor(a).mean(axis=axis, keepdims=keepdims).data,
                               a.mean(axis=axis, keepdims=keepdims), rtol=1e-15)


def test_grad_never_shares_memory_with_the_given_grad_or_another_leaf():
    x, z = Tensor(np.ones(3), requires_grad=True), Tensor(np.ones(3), requires_grad=True)
    g = np.array([1.0, 2.0, 3.0])
    (x + z).backward(grad=g)
    assert not np.shares_memory(x.grad, g) and not np.shares_memory(z.grad, g)
    assert not np.shares_memory(x.grad, z.grad)
    x.grad[0] = 100.0
    np.testing.assert_array_equal(g, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(z.grad, [1.0, 2.0, 3.0])


def test_clip_passes_the_gradient_at_its_bounds():
    x = Tensor(np.array([-1.0, 0.0, 0.5, 1.0, 2.0]), requires_grad=True)
    x.clip(0.0, 1.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 1.0, 1.0, 1.0, 0.0])
    x.grad = None
    x.clip(lo=0.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 1.0, 1.0, 1.0, 1.0])
    x.grad = None
    x.clip(hi=1.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0, 1.0, 1.0, 1.0, 0.0])


def test_zero_to_a_power_and_abs_at_zero():
    a = Tensor(np.zeros(3), requires_grad=True)
    b = Tensor(np.array([0.0, 1.0, 2.0]), requires_grad=True)
    (a ** b).sum().backward()
    np.testing.assert_array_equal(a.grad, [0.0, 1.0, 0.0])     # b * 0 ** (b - 1): 0 at b = 0, 1 at b = 1
    np.testing.assert_array_equal(b.grad, [0.0, 0.0, 0.0])     # 0 ** b * log 0, taken as 0
    c = Tensor(np.array([-2.0, 0.0, 3.0]), requires_grad=True)
    c.abs().sum().backward()
    np.testing.assert_array_equal(c.grad, [-1.0, 0.0, 1.0])


@pytest.mark.parametrize("grad", [Tensor(np.array([1.0, 2.0])), [1.0, 2.0], np.array([1, 2], dtype=np.int32),
                                  np.array([1.0, 2.0], dtype=np.float32)])
def test_backward_takes_a_grad_as_tensor_list_or_other_dtype(grad):
    x = Tensor(np.array([3.0, 4.0]), requires_grad=True)
    (x * x).backward(grad=grad)
    np.testing.assert_array_equal(x.grad, [6.0, 16.0])
    assert x.grad.dtype == np.float64


def test_tensor_from_a_list_keeps_the_dtype_asked_for():
    assert Tensor([1.5, 2.5], dtype=np.float32).dtype == np.float32
    assert Tensor([1.5, 2.5]).dtype == np.float64
    assert Tensor([1, 2], dtype=np.float32).dtype == np.float32


def test_transpose_takes_negative_axes_and_refuses_repeated_ones():
    a = np.arange(6.0).reshape(1, 2, 3)
    x = Tensor(a, requires_grad=True)
    y = x.transpose(-1, 0, -2)
    np.testing.assert_array_equal(y.data, a.transpose(2, 0, 1))
    (y * np.arange(6.0).reshape(3, 1, 2)).sum().backward()
    np.testing.assert_array_equal(x.grad, np.arange(6.0).reshape(3, 1, 2).transpose(1, 2, 0))
    for axes in [(0, 0, 1), (0, -3, 1), (2, 1)]:
        with pytest.raises(ValueError, match="not a permutation"):
            x.transpose(*axes)
    for axis in [(0, 0), (1, -2), 3, -4]:
        with pytest.raises(ValueError, match="does not fit shape"):
            x.sum(axis=axis)


def test_where_with_a_non_bool_condition():
    a, b = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True), Tensor(np.array([10.0, 20.0, 30.0]))
    out = where(Tensor(np.array([0, 2, -1])), a, b)
    np.testing.assert_array_equal(out.data, [10.0, 2.0, 3.0])
    out.sum().backward()
    np.testing.assert_array_equal(a.grad, [0.0, 1.0, 1.0])
    out = where(np.array([0.0, 0.5, 0.0]), a, 7.0)
    np.testing.assert_array_equal(out.data, [7.0, 2.0, 7.0])


def test_tanh_of_an_empty_tensor():
    x = Tensor(np.zeros((0, 3)), requires_grad=True)
    y = F.tanh(x)
    assert y.shape == (0, 3)
    y.sum().backward()
    assert x.grad.shape == (0, 3)


def test_cross_entropy_gradient_with_respect_to_a_probability_target():
    logits = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    target = Tensor(np.array([[0.2, 0.5, 0.3], [1.0, 0.0, 0.0]]), requires_grad=True)
    F.cross_entropy(Tensor(logits), target).backward()
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(target.grad, -logp / 2, rtol=1e-14)


def test_the_power_gradient_at_exponent_zero_raises_no_numpy_warning():
    # d/da a**b at b == 0 is 0 by definition: a ** (b - 1) is not evaluated there (0 ** -1 would warn)
    a = Tensor(np.array([0.0, 0.0, 2.0]), requires_grad=True)
    b = Tensor(np.array([0.0, 1.0, 0.0]), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (a ** b).sum().backward()
    np.testing.assert_array_equal(a.grad, [0.0, 1.0, 0.0])


def test_the_first_tensor_of_a_process_is_writable_again_after_backward():
    # the graph lets go of every leaf it saved, the one created first (creation number 0) included
    code = ("import numpy as np, tinygrad_rnn as tg\n"
            "x = tg.Tensor(np.array([1.0, 2.0]), requires_grad=True)\n"
            "(x * x).sum().backward()\n"
            "x.data[0] = 5.0\n"
            "print(x.grad.tolist(), x.data.tolist())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[2.0,", "4.0]", "[5.0,", "2.0]"]


def test_a_float64_gradient_into_a_float32_tensor_is_cast_before_it_flows_on():
    # float32 x times a float64 array gives float64; the gradient reaching the float32 intermediate
    # exp(x) is cast to float32 there, and exp's backward is float32 arithmetic, as numpy does it
    rng = np.random.default_rng(0)
    x32 = rng.standard_normal(200).astype(np.float32)
    c = rng.standard_normal(200)
    x = Tensor(x32, requires_grad=True)
    y = x.exp()
    (y * c).sum().backward()
    expected = c.astype(np.float32) * np.exp(x32)
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, expected)
    x.grad = None                                   # the same through a broadcast (the summing path)
    y = x.exp()
    (y * c[None, :].repeat(3, axis=0)).sum().backward()
    np.testing.assert_array_equal(x.grad, (3 * c).astype(np.float32) * np.exp(x32))


def test_intermediates_stay_read_only_after_backward():
    # as docs/engine.md says: backward makes the leaves it saved writable again, not the results in between
    x = Tensor(np.array([0.5, 1.0]), requires_grad=True)
    y = x.exp()
    (y * 2.0).sum().backward()
    x.data[0] = 3.0
    with pytest.raises(ValueError, match="read-only"):
        y.data[0] = 3.0


def test_len_and_truth_value():
    assert len(Tensor(np.zeros((3, 2)))) == 3
    with pytest.raises(TypeError, match="0-d Tensor"):
        len(Tensor(1.0))
    assert bool(Tensor(2.0)) is True and bool(Tensor([0.0])) is False
    with pytest.raises(ValueError, match="Tensor with 2 elements is ambiguous"):
        bool(Tensor([1.0, 2.0]))


def test_transpose_of_one_and_zero_dimensions():
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    for axes in [(), (0,), (-1,)]:
        y = x.transpose(*axes)
        np.testing.assert_array_equal(y.data, [1.0, 2.0, 3.0])
    (y * np.array([1.0, 2.0, 3.0])).sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0, 2.0, 3.0])
    assert Tensor(5.0).transpose().data == 5.0


def test_compiled_terms_of_another_dtype_add_as_the_plain_graph_adds_them():
    # x (float32) gets three float64 terms from inside one compiled composition; each is cast to
    # float32 before it is added, as the node-by-node graph does: the same bits either way
    @composite
    def f(x, w):
        return x * w + x * x

    rng = np.random.default_rng(0)
    x32, w = rng.standard_normal(200).astype(np.float32), rng.standard_normal(200)

    def gradient():
        x = Tensor(x32, requires_grad=True)
        f(x, Tensor(w)).sum().backward()
        return x.grad
    first, compiled = gradient(), gradient()      # the first call writes the program, the second runs it
    with expanded():
        plain = gradient()
    assert compiled.dtype == plain.dtype == np.float32
    np.testing.assert_array_equal(first, plain)
    np.testing.assert_array_equal(compiled, plain)


@pytest.mark.parametrize("fn", [F.log_softmax, F.softmax])
def test_a_minus_inf_logit_leaves_the_others_bit_for_bit(fn):
    # exp(-inf) adds exactly 0 to the sum: the row with -inf appended must give the same bits elsewhere
    # (the -inf sends the row down the careful path of the shift, the other row the usual x - max)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 4)) * 3.0
    with_inf = np.concatenate([x, np.full((50, 1), -np.inf)], axis=1)
    plain, careful = fn(Tensor(x)).data, fn(Tensor(with_inf)).data
    np.testing.assert_array_equal(careful[:, :4], plain)
    assert (careful[:, 4] == (-np.inf if fn is F.log_softmax else 0.0)).all()


@pytest.mark.parametrize("reduce", ["max", "min", "sum", "mean"])
def test_reductions_with_their_default_arguments_match_numpy(reduce):
    a = np.arange(24.0).reshape(2, 3, 4) ** 1.5
    for kwargs in [{}, {"axis": 1}, {"axis": -1}, {"axis": (0, 2)}]:
        got = getattr(Tensor(a), reduce)(**kwargs).data
        want = getattr(a, reduce)(**kwargs)
        assert got.shape == want.shape, (reduce, kwargs)
        np.testing.assert_allclose(got, want, rtol=1e-15)


def test_stack_joins_along_a_new_first_axis_by_default():
    a, b = np.arange(6.0).reshape(2, 3), -np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(stack([Tensor(a), Tensor(b)]).data, np.stack([a, b]))


def test_sigmoid_and_softplus_are_the_documented_formulas_bit_for_bit():
    # sigmoid: 1 / (1 + exp(-x)) for x >= 0, exp(x) / (1 + exp(x)) below; softplus: max(x, 0) + log1p(exp(-|x|))
    x = np.concatenate([np.linspace(-3.0, 3.0, 601), [0.0, -0.0, 1e-300, -1e-300]])
    with np.errstate(over="ignore"):
        want = np.where(x >= 0, 1.0 / (1.0 + np.exp(-x)), np.exp(x) / (1.0 + np.exp(x)))
    np.testing.assert_array_equal(F.sigmoid(Tensor(x)).data, want)
    np.testing.assert_array_equal(F.softplus(Tensor(x)).data, np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x))))


def test_log_softmax_lifts_a_value_whose_difference_to_the_maximum_would_overflow():
    # max - (-max) overflows; the value is lifted to the largest float below the maximum: finite
    big = np.finfo(np.float64).max
    x = Tensor(np.array([big, -big]), requires_grad=True)
    y = F.log_softmax(x)
    np.testing.assert_array_equal(y.data, [0.0, -big])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [-1.0, 1.0])     # 1 - 2 * softmax, softmax = [1, 0]


def test_shapes_with_a_zero_size_are_accepted_and_negative_ones_refused():
    x = Tensor(np.ones((1, 3)), requires_grad=True)
    y = x.broadcast_to((0, 3))
    assert y.shape == (0, 3)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, np.zeros((1, 3)))
    assert Tensor(np.zeros((0, 3))).sum_to((0, 1)).shape == (0, 1)
    with pytest.raises(ValueError, match="negative size"):
        x.broadcast_to((-1, 3))


def test_cross_entropy_with_a_minus_inf_logit_and_no_target_mass_there():
    # an impossible class (logit -inf) with target 0 adds 0 * log 0 = 0, not NaN
    logits = Tensor(np.array([[0.0, -np.inf, 1.0]]), requires_grad=True)
    target = np.array([[0.3, 0.0, 0.7]])
    loss = F.cross_entropy(logits, target)
    logp = np.array([0.0, 1.0]) - np.log(1.0 + np.e)
    np.testing.assert_allclose(loss.data, -(0.3 * logp[0] + 0.7 * logp[1]), rtol=1e-15)
    loss.backward()
    softmax = np.exp(logp)
    np.testing.assert_allclose(logits.grad, [[softmax[0] - 0.3, 0.0, softmax[1] - 0.7]], rtol=1e-14, atol=1e-16)


def test_matmul_of_two_stacks_of_matrices_matches_numpy():
    # a stack times a stack, batch 2: the folded path is for one matrix on the right only
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 4, 5))
    np.testing.assert_allclose((Tensor(a) @ Tensor(b)).data, a @ b, rtol=1e-14)
    np.testing.assert_allclose((Tensor(a) @ Tensor(b[0])).data, a @ b[0], rtol=1e-14)


def test_create_graph_skips_an_input_that_gets_no_gradient():
    # a compiled composition whose output does not depend on one of its inputs, differentiated with
    # create_graph: that input gets no term (None), and nothing fails on the way
    @tg.composite
    def f(x, y):
        return x * x
    x = tg.Tensor(np.array([1.5, -2.0]), requires_grad=True)
    y = tg.Tensor(np.array([3.0, 4.0]), requires_grad=True)
    (gx,) = tg.grad(f(x, y).sum(), [x], create_graph=True)
    np.testing.assert_array_equal(gx.data, 2 * x.data)
    (hx,) = tg.grad(gx.sum(), [x])
    np.testing.assert_array_equal(hx.data, np.full(2, 2.0))
    with pytest.raises(RuntimeError):
        tg.grad(f(x, y).sum(), [y], create_graph=True)      # y is not used: an error, as torch


def test_create_graph_gives_a_gradient_in_its_inputs_dtype():
    x = tg.Tensor(np.array([0.5, 2.0], dtype=np.float32), requires_grad=True)
    y = x * tg.Tensor(np.array([3.0, 4.0]))                   # float64 from here on
    (gx,) = tg.grad((y * y).sum(), [x], create_graph=True)
    assert gx.dtype == np.float32
    np.testing.assert_allclose(gx.data, 2 * x.data.astype(np.float64) * np.array([9.0, 16.0]), rtol=1e-6)


def test_terms_of_another_dtype_in_a_list_add_as_the_plain_graph_adds_them():
    # three terms for a float32 input, added newest first: a float32 one, then two float64 ones, each
    # cast before it is added (the last one into a buffer the engine already owns)
    c = Tensor(np.random.default_rng(3).standard_normal(64))
    d = Tensor(np.random.default_rng(4).standard_normal(64))

    def f(x, c, d):
        return x * d + x * c + x * 2.0
    x0 = np.random.default_rng(5).standard_normal(64).astype(np.float32)

    def run(fn):
        x = Tensor(x0, requires_grad=True)
        (fn(x, c, d) * Tensor(np.random.default_rng(6).standard_normal(64))).sum().backward()
        return x.grad
    with expanded():
        want = run(f)
    compiled = composite(f)
    for _ in range(2):                           # the call that writes it, and one that reuses it
        got = run(compiled)
        assert got.dtype == want.dtype == np.float32
        np.testing.assert_array_equal(got, want)
    assert compiled._programs                     # it did compile


def test_an_error_inside_no_grad_passes_through_and_recording_comes_back():
    x = Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(KeyError, match="raised inside"):
        with tg.no_grad():
            assert not tg.is_grad_enabled()
            raise KeyError("raised inside")
    assert tg.is_grad_enabled()
    assert (x * 2.0).requires_grad


def test_decide_and_derived_pass_keyword_parameters_by_name():
    from tinygrad_rnn.tensor import decide, derived

    def above(d, limit, strict):
        return bool((d > limit).all()) if strict else bool((d >= limit).all())

    def shifted(d, by, scale):
        return (d - by) * scale
    x = Tensor(np.array([1.0, 2.0]))
    assert decide(above, x, limit=1.0, strict=False) is True
    assert decide(above, x, strict=True, limit=1.0) is False
    c = derived(shifted, x, scale=10.0, by=1.0)
    np.testing.assert_array_equal(c.data, [0.0, 10.0])
    assert not c.requires_grad


def test_create_graph_through_a_composite_whose_used_output_no_longer_needs_a_gradient():
    # w is frozen after the composite was written: its second output then depends on nothing that needs
    # a gradient, and a gradient through that output alone is None for x, with or without create_graph
    w = Tensor(np.array([1.5, -2.0]), requires_grad=True)

    @composite
    def f(x):
        return x * w, w * 2.0
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    f(x)                                               # writes the program while w needs a gradient
    w.requires_grad = False
    for create_graph in (False, True):
        a, b = f(x)
        assert isinstance(b._parents[0]._op, tg.composites.CompositeOp)     # the written program ran
        assert tg.grad((b * b).sum(), [x], create_graph=create_graph, allow_unused=True) == (None,)
    a, b = f(x)
    (gx,) = tg.grad((a * b).sum(), [x], create_graph=True)               # and through the other output
    np.testing.assert_array_equal(gx.data, w.data * w.data * 2.0)


def test_create_graph_adds_the_seeds_of_an_output_given_twice():
    x = Tensor(np.array([0.5, -1.5]), requires_grad=True)
    y = (x * x * x).sum()
    (once,) = tg.grad(y, [x], create_graph=True)
    (twice,) = tg.grad([y, y], [x], grad_outputs=[Tensor(1.0), Tensor(2.0)], create_graph=True)
    np.testing.assert_array_equal(once.data, 3 * x.data ** 2)
    np.testing.assert_array_equal(twice.data, 3 * once.data)
    (h,) = tg.grad(twice.sum(), [x])                 # the sum of the seeds is differentiable as well
    np.testing.assert_array_equal(h.data, 18 * x.data)


def test_a_single_example_with_one_class_gets_no_transpose_hint():
    # (1, 1) logits: transposing changes nothing, so the message does not suggest z.T; (3, 1) gets it
    with pytest.raises(ValueError) as one:
        F.cross_entropy(Tensor(np.zeros((1, 1))), np.zeros((1, 2)))
    assert "z.T" not in str(one.value)
    with pytest.raises(ValueError, match=r"z\.T \(shape \(1, 3\)\)"):
        F.cross_entropy(Tensor(np.zeros((3, 1))), np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"z\.T \(shape \(1, 2\)\)"):
        F.cross_entropy(Tensor(np.zeros((2, 1))), np.zeros((2, 2)))


def test_compiled_terms_of_another_dtype_are_rounded_before_they_are_added():
    # x (float32) gets three float64 terms from one compiled composition; the plain graph casts each to
    # float32 before adding it.  1 + 2**-24 is a tie in float32 (rounds to 1); 1 + (2**-24 + 2**-50)
    # added in float64 first would round up: the bits show whether the cast came first
    s = 2.0 ** -24 + 2.0 ** -50
    c, d, e = Tensor(np.array([1.0, 0.0, s])), Tensor(np.array([s, 1.0, 0.0])), Tensor(np.array([0.0, s, 1.0]))

    def f(x, c, d, e):
        return x * d + x * c + x * e                 # each element gets s as one of its three terms

    def run(fn):
        x = Tensor(np.ones(3, np.float32), requires_grad=True)
        out = fn(x, c, d, e)
        out.sum().backward()
        return x.grad, out
    with expanded():
        want, _ = run(f)
    np.testing.assert_array_equal(want, np.ones(3, np.float32))
    compiled = composite(f)
    for _ in range(2):
        got, out = run(compiled)
        assert isinstance(out._op, tg.composites.CompositeOp)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape", [(5, 7, 33, 9), (8, 16, 32, 32), (2, 50, 20, 10)])
def test_a_stack_of_rows_times_a_matrix_is_the_product_of_all_rows_at_once(shape):
    # x @ W for x of shape (B, T, n) is one product of the B*T rows, so a layer applied to a batch of
    # sequences gives exactly the bits of the same rows as one matrix, values and gradients (a product
    # per matrix of the stack can round differently: numpy's stacked matmul agrees only to rounding)
    B, T, n, m = shape
    rng = np.random.default_rng(7)
    a, w, g = rng.standard_normal((B, T, n)), rng.standard_normal((n, m)), rng.standard_normal((B, T, m))
    x, W = Tensor(a, requires_grad=True), Tensor(w, requires_grad=True)
    rows, W2 = Tensor(a.reshape(-1, n), requires_grad=True), Tensor(w, requires_grad=True)
    out, flat = x @ W, rows @ W2
    np.testing.assert_allclose(out.data, a @ w, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(out.data, flat.data.reshape(B, T, m))
    out.backward(grad=g)
    flat.backward(grad=g.reshape(-1, m))
    np.testing.assert_array_equal(x.grad, rows.grad.reshape(B, T, n))
    np.testing.assert_array_equal(W.grad, W2.grad)


def test_the_mixed_second_derivative_of_a_power_at_base_one():
    # d/da (d/db a**b) = a**(b-1) * (1 + b log a): 1 at a = 1, where d/db a**b itself is 0
    a0, b0 = np.array([1.0, 1.0, 2.0, 0.5]), np.array([3.0, -0.5, 1.5, 2.0])
    a, b = Tensor(a0, requires_grad=True), Tensor(b0, requires_grad=True)
    (gb,) = tg.grad((a ** b).sum(), [b], create_graph=True)
    np.testing.assert_allclose(gb.data, a0 ** b0 * np.log(a0), rtol=1e-14)
    (h,) = tg.grad(gb.sum(), [a])
    np.testing.assert_allclose(h.data, a0 ** (b0 - 1) * (1 + b0 * np.log(a0)), rtol=1e-14)
    eps = 1e-6                                  # and central differences of d/db in a (tolerance 1e-8)
    fd = ((a0 + eps) ** b0 * np.log(a0 + eps) - (a0 - eps) ** b0 * np.log(a0 - eps)) / (2 * eps)
    np.testing.assert_allclose(h.data, fd, rtol=1e-8, atol=1e-8)


def test_clip_keeps_numpys_result_type():
    # an integer tensor clipped to float bounds gives floats, as numpy does; a float tensor keeps its dtype
    ints = np.array([1, 5, 9])
    got = Tensor(ints).clip(2.5, 7.5)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got.data, np.clip(ints, 2.5, 7.5))
    x = Tensor(np.array([1.0, 5.0, 9.0], dtype=np.float32), requires_grad=True)
    y = x.clip(2.5, 7.5)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y.data, np.array([2.5, 5.0, 7.5], dtype=np.float32))


def test_retain_grad_keeps_an_intermediates_gradient():
    x = Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    y = x * 2.0
    assert y.retain_grad() is y
    z = x * 3.0                                  # not retained: no .grad after backward
    ((y * y).sum() + z.sum()).backward()
    np.testing.assert_array_equal(y.grad, 2 * y.data)          # d(y.y)/dy = 2y
    np.testing.assert_array_equal(x.grad, 8 * x.data + 3.0)
    assert z.grad is None


def test_backward_with_create_graph_adds_into_an_existing_grad():
    x = Tensor(np.array([1.0, -2.0]), requires_grad=True)
    (x * x * x).sum().backward(create_graph=True)
    first = x.grad.copy()
    np.testing.assert_array_equal(first, 3 * x.data ** 2)
    (x * 5.0).sum().backward(create_graph=True)                # a second backward adds, as without it
    np.testing.assert_array_equal(x.grad, first + 5.0)
    (x * 5.0).sum().backward()
    np.testing.assert_array_equal(x.grad, first + 10.0)


def test_a_compiled_input_broadcast_in_several_products_gets_its_terms_summed_down():
    # x (4,) is broadcast against (3, 2, 4) and (2, 4) inside one compiled composition: each of its terms
    # has the broadcast shape and is summed down to (4,) before it is added, as in the plain graph
    rng = np.random.default_rng(0)
    y0, z0, w0 = rng.standard_normal((3, 2, 4)), rng.standard_normal((2, 4)), rng.standard_normal(4)

    def f(x, y, z, w):
        return x * y + x * z + x * w + (x * x).sum()
    x0 = np.array([0.5, -1.0, 2.0, 3.0])

    def run(fn):
        x = Tensor(x0, requires_grad=True)
        out = fn(x, Tensor(y0), Tensor(z0), Tensor(w0))
        out.sum().backward()
        return x.grad, out
    with expanded():
        want, _ = run(f)
    np.testing.assert_allclose(want, y0.sum(axis=(0, 1)) + 3 * z0.sum(axis=0) + 6 * w0 + 24 * 2 * x0, rtol=1e-14)
    compiled = composite(f)
    for _ in range(2):
        got, out = run(compiled)
        assert isinstance(out._op, tg.composites.CompositeOp)
        np.testing.assert_array_equal(got, want)


def test_concat_joins_along_the_first_axis_by_default():
    a, b = np.arange(6.0).reshape(2, 3), -np.arange(9.0).reshape(3, 3)
    x = Tensor(a, requires_grad=True)
    out = tg.concat([x, Tensor(b)])
    np.testing.assert_array_equal(out.data, np.concatenate([a, b]))
    (out * np.arange(15.0).reshape(5, 3)).sum().backward()
    np.testing.assert_array_equal(x.grad, np.arange(6.0).reshape(2, 3))


def test_a_non_bool_condition_is_read_once_as_a_mask():
    # where() turns a float condition into its own bool mask: backward reads the mask, not the condition,
    # so the condition stays writable and a write after the forward does not change the gradient
    a = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    c = Tensor(np.array([1.0, 0.0, 2.0]))
    y = tg.where(c, a, 0.0)
    c.data[1] = 7.0
    (y * np.array([1.0, 2.0, 3.0])).sum().backward()
    np.testing.assert_array_equal(y.data, [1.0, 0.0, 3.0])
    np.testing.assert_array_equal(a.grad, [1.0, 0.0, 3.0])


def test_concat_under_create_graph_splits_the_gradient_at_the_right_places():
    x0, y0, w = np.array([0.5, -1.0]), np.array([2.0, 3.0, -4.0]), np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    x, y = Tensor(x0, requires_grad=True), Tensor(y0, requires_grad=True)
    z = tg.concat([x * x, y * y * y])
    gx, gy = tg.grad((z * w).sum(), [x, y], create_graph=True)
    np.testing.assert_array_equal(gx.data, 2 * x0 * w[:2])
    np.testing.assert_array_equal(gy.data, 3 * y0 ** 2 * w[2:])
    hx, hy = tg.grad((gx * gx).sum() + gy.sum(), [x, y])        # and once more through the split
    np.testing.assert_array_equal(hx.data, 8 * x0 * w[:2] ** 2)
    np.testing.assert_array_equal(hy.data, 6 * y0 * w[2:])


def test_star_import_of_functional_gives_every_function():
    namespace = {}
    exec("from tinygrad_rnn.functional import *", namespace)
    for name in ["tanh", "sigmoid", "relu", "softmax", "log_softmax", "cross_entropy", "mse_loss",
                 "leaky_relu", "softplus", "logsumexp"]:
        assert namespace[name] is getattr(F, name), name


def test_cross_entropy_takes_the_classes_along_the_last_axis_by_default():
    # logits (batch, time, classes): by default the classes are the last axis, as for 2-d logits
    rng = np.random.default_rng(4)
    z, t = rng.standard_normal((2, 3, 4)), rng.integers(0, 4, size=(2, 3))
    x = Tensor(z, requires_grad=True)
    loss = F.cross_entropy(x, t)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    np.testing.assert_allclose(loss.data, -np.take_along_axis(logp, t[..., None], axis=-1).mean(), rtol=1e-14)
    loss.backward()
    want = (np.exp(logp) - np.eye(4)[t]) / t.size
    np.testing.assert_allclose(x.grad, want, rtol=1e-12, atol=1e-15)
