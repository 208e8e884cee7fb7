"""Values changed outside the graph: each case ends in a clear error or the right numbers, never stale ones.

In-place edits of arrays a live graph saved, and edge inputs of the engine
(empty matmuls, numpy errors in binary operations, NaN logits).
"""
import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import Tensor, nn, optim
from tinygrad_rnn import functional as F
from tinygrad_rnn.checking import numerical_grad


def _square_sum():
    W = Tensor(np.full((1, 1), 2.0), requires_grad=True, name="W")
    return W, (W @ W).sum()


# ---------------------------------------------------------------------- 1. recorded data edited in place
def test_a_raw_write_into_a_saved_leaf_is_refused_while_the_graph_lives():
    W, loss = _square_sum()
    with pytest.raises(ValueError, match="read-only"):
        W.data[...] = 10
    loss.backward()
    assert W.grad[0, 0] == 4.0                     # the gradient at the recorded value, not 20
    W.data[...] = 10                               # the graph is freed: writable again
    assert W.data[0, 0] == 10


def test_a_raw_write_into_an_intermediate_is_refused():
    x = Tensor(np.array([0.5, 1.0]), requires_grad=True)
    y = x.exp()                                    # exp's backward reads its own result
    z = y * y
    with pytest.raises(ValueError, match="read-only"):
        y.data += 1
    z.sum().backward()
    np.testing.assert_allclose(x.grad, 2 * np.exp(2 * x.data), rtol=1e-15)


def test_an_input_array_of_the_caller_is_copied_not_locked_or_shared():
    mask = np.array([1.0, 0.0, 2.0])
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    y = (x * mask).sum()
    mask[...] = 7.0                                # the caller's own array stays theirs
    y.backward()
    np.testing.assert_array_equal(x.grad, [1.0, 0.0, 2.0])


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1), lambda ps: optim.Adam(ps, lr=0.1)])
def test_an_optimiser_step_between_two_backwards_of_a_kept_graph_is_named(make):
    W, loss = _square_sum()
    loss.backward(retain_graph=True)
    make([W]).step()
    with pytest.raises(RuntimeError, match=r"'W' of shape \(1, 1\).*changed in place.*'matmul'"):
        loss.backward()


def test_load_state_dict_between_forward_and_backward_is_named():
    lin = nn.Linear(2, 2, rng=0)
    loss = lin(Tensor(np.ones((1, 2)))).sum()
    lin.load_state_dict({k: v + 1 for k, v in lin.state_dict().items()})
    message = r"the tensor of shape \(2,? ?2?\).*changed in place.*operation '(add|matmul)'"
    with pytest.raises(RuntimeError, match=message):
        loss.backward()


def test_module_load_between_forward_and_backward_is_named(tmp_path):
    lin = nn.Linear(2, 2, rng=0)
    lin.save(tmp_path / "w.npz")
    loss = lin(Tensor(np.ones((1, 2)))).sum()
    lin.load(tmp_path / "w.npz")
    with pytest.raises(RuntimeError, match="changed in place"):
        loss.backward()


def test_a_graph_made_after_the_write_is_not_refused():
    W, loss = _square_sum()
    loss.backward()
    optim.SGD([W], lr=0.5).step()                  # W = 2 - 0.5 * 4 = 0
    W.grad = None
    (W @ W + W).sum().backward()
    assert W.grad[0, 0] == 1.0


def test_optimisers_and_gradcheck_keep_working_in_normal_use():
    W = Tensor(np.array([[1.0, -2.0], [0.5, 3.0]]), requires_grad=True)
    opt = optim.Adam([W], lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        (W @ W).sum().backward()
        opt.step()
    x = Tensor(np.array([0.3, -0.7]), requires_grad=True)
    loss = (x * x).sum()                           # a live graph from x while x is perturbed
    numeric = numerical_grad(lambda t: (t * t).sum(), x)[0]
    np.testing.assert_allclose(numeric, 2 * x.data, rtol=1e-8)
    with pytest.raises(RuntimeError, match="changed in place"):
        loss.backward()                            # perturbing in place is a write: the old graph refuses
    assert tg.checking.gradcheck(lambda t: (t * t).sum(), x)


# ---------------------------------------------------------------------- 2-5. traced programs
def _ids(seed, shape=(2, 3), high=5):
    return np.random.default_rng(seed).integers(0, high, shape)


def test_integer_and_boolean_inputs_are_varied_in_the_check():
    import queue
    emb = nn.Embedding(5, 3, rng=0)
    runs = queue.SimpleQueue()     # (Python's own: the trace does not take it for state that fn reads)

    def step(ids, target, keep):
        if not tg.tensor._tracer:
            runs.put((ids.numpy().copy(), target.numpy().copy(), keep.numpy().copy()))
        return F.cross_entropy(emb(ids) * tg.where(keep, 1.0, 0.0)[..., None], target)
    ids, target, keep = _ids(0), _ids(1, (2, 3), 3), np.array([[True, False, True], [True, True, False]])
    tg.trace(step, ids, target, keep)
    others = [runs.get() for _ in range(runs.qsize())]
    assert others, "fn was not run again on other values"
    o_ids, o_target, o_keep = others[-1]
    assert not np.array_equal(o_ids, ids) and ids.min() <= o_ids.min() and o_ids.max() <= ids.max()
    assert not np.array_equal(o_target, target) and o_target.max() <= target.max()
    assert not np.array_equal(o_keep, keep)


def test_state_kept_in_a_module_attribute_is_not_frozen():
    from tinygrad_rnn.tracing import TraceError

    class Counter(nn.Module):        # state kept in a plain attribute, read as a number
        def __init__(self):
            self.W = nn.Parameter(np.ones((5, 3)))
            self.calls = 0

        def forward(self, ids):
            self.calls += 1
            return (self.W[ids] * float(self.calls)).sum()
    with pytest.raises(TraceError, match="fn changes 'calls' on every call"):
        tg.trace(Counter().forward, _ids(0))


def test_random_draws_inside_a_traced_step_are_refused():
    from tinygrad_rnn.tracing import TraceError
    rng = np.random.default_rng(0)
    x = np.ones((2, 3))
    draws = [lambda t: (t * Tensor(np.random.rand(2, 3) < 0.5)).sum(),           # numpy's global generator
             lambda t: (t * Tensor(rng.random((2, 3)) < 0.5)).sum(),              # a generator fn closes over
             lambda t: (t * Tensor(np.random.default_rng().random((2, 3)) < 0.5)).sum()]   # unseeded
    for fn in draws:
        with pytest.raises(TraceError, match="random numbers.*frozen.*pass it in as an input"):
            tg.trace(fn, x, backward=False)
    program = tg.trace(lambda t, m: (t * m).sum(), Tensor(x, requires_grad=True), rng.random((2, 3)) < 0.5)
    m = rng.random((2, 3)) < 0.5
    t = Tensor(x, requires_grad=True)
    program(t, m)
    np.testing.assert_array_equal(t.grad, m.astype(float))


def test_a_replaced_parameter_is_seen_by_the_next_call():
    lin = nn.Linear(2, 1, rng=0)
    x = np.array([[1.0, 2.0]])
    program = tg.trace(lambda t: lin(t).sum(), x)
    lin.W = nn.Parameter(np.array([[3.0], [4.0]]))
    lin.b = nn.Parameter(np.zeros(1))
    assert program(x) == 11.0
    np.testing.assert_array_equal(lin.W.grad, [[1.0], [2.0]])


def test_a_changed_module_attribute_is_seen_by_the_next_call():
    cell = nn.RNNCell(2, 3, rng=0)
    xs = np.random.default_rng(1).normal(size=(2, 4, 2))
    step = lambda t: nn.unroll(cell, t)[0].sum()   # noqa: E731
    program = tg.trace(step, xs, backward=False)
    cell.nonlinearity = "relu"
    with tg.no_grad():
        want = step(Tensor(xs)).data
    np.testing.assert_allclose(program(xs), want, rtol=0, atol=0)


def test_a_closed_over_array_changed_in_place_is_seen():
    scale = np.array([1.0, 2.0])
    program = tg.trace(lambda t: (t * scale).sum(), np.ones(2), backward=False)
    scale[...] = [5.0, 7.0]
    assert program(np.ones(2)) == 12.0
    assert program.retraces == 1


def test_a_branch_on_data_is_refused_at_trace_time():
    from tinygrad_rnn.tracing import TraceError

    def step(t):
        return (t * 2).sum() if t.data.sum() > 0 else (t * 3).sum()
    with pytest.raises(TraceError, match=r"reads \.data"):
        tg.trace(step, np.ones(2))


@pytest.mark.parametrize("view", [lambda x: x[:, -1], lambda x: x.reshape(6, 2), lambda x: x.T,
                                  lambda x: x.detach(), lambda x: x])
def test_outputs_never_share_memory_with_the_callers_arrays(view):
    xs = np.arange(12.0).reshape(2, 3, 2)
    program = tg.trace(lambda x: (x.sum(), view(x)), xs, backward=False)
    out = program(xs)[1]
    assert not np.shares_memory(out, xs)
    out[...] = -1
    assert xs[0, 0, 0] == 0.0


def test_under_no_grad_a_fallback_and_a_new_batch_size_return_values():
    lin = nn.Linear(2, 1, rng=0)
    step = lambda t: F.relu(lin(t)).max()   # noqa: E731
    program = tg.trace(step, np.array([[1.0, 2.0]]))
    with tg.no_grad():
        big = np.random.default_rng(0).normal(size=(5, 2))
        np.testing.assert_array_equal(program(big), step(Tensor(big)).data)       # a new batch size
        huge = np.array([[np.inf, -np.inf]])
        np.testing.assert_array_equal(program(huge), step(Tensor(huge)).data)     # a guard may fail here
    assert lin.W.grad is None


class _Trainer:                        # not a module: a module reached through an object of the user's
    def __init__(self):
        self.rnn = nn.RNN(nn.RNNCell(3, 4, rng=0))

    def step(self, xs):
        hs, _ = self.rnn(xs)
        return (hs * hs).sum()


_GLOBAL_MODEL = None          # set by the test that reads it through a helper


def _through_a_helper():
    hs, _ = _GLOBAL_MODEL(XS)
    return (hs * hs).sum()


XS = np.random.default_rng(1).standard_normal((2, 4, 3))


@pytest.mark.parametrize("how", ["method of an object", "closed-over dict", "helper reading a global"])
def test_a_module_reached_through_other_objects_is_watched(how, monkeypatch):
    """A changed attribute of a module that fn reaches only through an object, a container or a helper
    function is seen, and so is a replaced parameter of such a module."""
    if how == "method of an object":
        holder = _Trainer()
        rnn, fn = holder.rnn, holder.step
    elif how == "closed-over dict":
        models = {"rnn": nn.RNN(nn.RNNCell(3, 4, rng=0))}
        rnn = models["rnn"]

        def fn(xs):
            hs, _ = models["rnn"](xs)
            return (hs * hs).sum()
    else:
        rnn = nn.RNN(nn.RNNCell(3, 4, rng=0))
        monkeypatch.setitem(globals(), "_GLOBAL_MODEL", rnn)

        def fn(xs):
            return _through_a_helper()
    program = tg.trace(fn, XS)

    def eager():
        for p in rnn.parameters():
            p.grad = None
        loss = fn(Tensor(XS))
        loss.backward()
        return loss.item(), [p.grad.copy() for p in rnn.parameters()]

    def traced():
        for p in rnn.parameters():
            p.grad = None
        return float(program(XS)), [p.grad.copy() for p in rnn.parameters()]
    for change in (lambda: setattr(rnn.cell, "nonlinearity", "relu"),
                   lambda: setattr(rnn.cell, "Wx", nn.Parameter(rnn.cell.Wx.data * 2.0))):
        before = program.retraces
        change()
        got, want = traced(), eager()
        assert program.retraces == before + 1
        assert got[0] == want[0]
        for g, w in zip(got[1], want[1]):
            np.testing.assert_array_equal(g, w)


def test_settings_on_an_object_whose_class_takes_no_hook_are_checked():
    """A SimpleNamespace (a built-in type) of settings: its attributes are all checked on each call."""
    import types
    cfg = types.SimpleNamespace(scale=2.0, W=nn.Parameter(np.ones((3, 1))))
    program = tg.trace(lambda x: ((x @ cfg.W) * cfg.scale).sum(), np.ones((2, 3)))
    cfg.scale = 5.0
    assert float(program(np.ones((2, 3)))) == 30.0 and program.retraces == 1
    cfg.W = nn.Parameter(np.full((3, 1), 2.0))
    assert float(program(np.ones((2, 3)))) == 60.0 and program.retraces == 2


W22 = nn.Parameter(np.ones((2, 2)))   # the weight of the checks below: x @ W22 of ones is 2 per element
X22 = np.ones((2, 2))


def _checks_the_change(fn, change, scale_after):
    """Trace ``fn`` (read ``* scale`` with scale 2 in it), make ``change``: the next call re-traces and gives
    the eager numbers (8 per unit of scale)."""
    program = tg.trace(fn, X22, backward=False)
    assert float(program(X22)) == 16.0
    change()
    assert float(program(X22)) == 8.0 * scale_after == float(fn(Tensor(X22)).data)
    assert program.retraces == 1


class _Config:
    SCALE = 2.0


class _Base:
    scale = 2.0


class _Sub(_Base):
    pass


class _Slotted:
    __slots__ = ("scale",)

    def __init__(self):
        self.scale = 2.0


GSCALE = 2.0
_OTHER = None               # a module of the user's, set by the test that reads it


class _ReadsAGlobal(nn.Module):
    def forward(self, x):
        return ((x @ W22) * GSCALE).sum()


def test_what_the_functions_that_run_read_is_checked(monkeypatch):
    """Values read through another module, a class, a slot, a method's globals, a stored function's closure,
    ``vars()``, a set or a deque: a change re-traces."""
    import collections
    import types
    other = types.ModuleType("scratch_settings")
    other.CONST = 2.0
    monkeypatch.setitem(globals(), "_OTHER", other)
    _checks_the_change(lambda x: ((x @ W22) * _OTHER.CONST).sum(), lambda: setattr(other, "CONST", 5.0), 5.0)
    monkeypatch.setattr(_Config, "SCALE", 2.0)
    _checks_the_change(lambda x: ((x @ W22) * _Config.SCALE).sum(), lambda: setattr(_Config, "SCALE", 3.0), 3.0)
    sub = _Sub()
    _checks_the_change(lambda x: ((x @ W22) * sub.scale).sum(), lambda: setattr(_Sub, "scale", 4.0), 4.0)
    slotted = _Slotted()
    _checks_the_change(lambda x: ((x @ W22) * slotted.scale).sum(), lambda: setattr(slotted, "scale", 6.0), 6.0)
    m = _ReadsAGlobal()
    monkeypatch.setitem(globals(), "GSCALE", 2.0)
    _checks_the_change(lambda x: m(x), lambda: globals().__setitem__("GSCALE", 7.0), 7.0)
    box, holder = [2.0], types.SimpleNamespace()
    holder.act = lambda t: t * box[0]
    _checks_the_change(lambda x: holder.act(x @ W22).sum(), lambda: box.__setitem__(0, 9.0), 9.0)
    obj = _Base()
    obj.scale = 2.0
    _checks_the_change(lambda x: ((x @ W22) * vars(obj)["scale"]).sum(), lambda: setattr(obj, "scale", 3.0), 3.0)
    members = {2.0}
    _checks_the_change(lambda x: ((x @ W22) * max(members)).sum(), lambda: members.add(5.0), 5.0)
    queue = collections.deque([2.0])
    _checks_the_change(lambda x: ((x @ W22) * queue[0]).sum(), lambda: queue.__setitem__(0, 4.0), 4.0)


def test_what_a_composition_checks_does_not_keep_its_module_alive():
    """A module whose attributes lead back to it (a bound method of its own, settings that point to it): the
    checks its compiled method keeps hold it weakly, so it is freed when the user drops it."""
    import gc
    import weakref

    class Settings:
        pass

    class Cell(nn.Module):
        def __init__(self):
            self.W = nn.Parameter(np.ones((3, 3)))
            self.act = self._tanh
            self.cfg = Settings()
            self.cfg.owner, self.cfg.scale = self, 2.0

        def _tanh(self, t):
            return F.tanh(t)

        @tg.composite
        def step(self, x):
            return self.act(x @ self.W) * self.cfg.scale
    x = Tensor(np.ones((2, 3)))
    cell = Cell()
    first = cell.step(x).data
    np.testing.assert_array_equal(cell.step(x).data, first)      # the compiled node
    cell.cfg.scale = 3.0                                         # still checked
    np.testing.assert_array_equal(cell.step(x).data, first * 1.5)
    ref = weakref.ref(cell)
    del cell
    gc.collect()
    assert ref() is None


class _Box:
    def __init__(self, v):
        self.v = v


_DEFAULT_BOX = _Box(1.0)
_SETTINGS = None            # a settings object of the user's, set by the test that reads it


class _ReadsSettings(nn.Module):
    def forward(self, x):
        return ((x @ W22) * _SETTINGS.scale).sum()


def test_objects_the_call_makes_are_its_own_and_state_it_changes_on_every_call_is_refused(monkeypatch):
    """A temporary of a class that fn also reaches an instance of is not taken for state; a list, dict or
    counter that fn (or a decorator around it) changes on every call is refused, named: a program would not
    repeat the change (a warm-up that switches after some calls would go stale)."""
    from tinygrad_rnn.tracing import TraceError

    def step(x):
        return (_Box(x @ W22).v * _DEFAULT_BOX.v).sum()
    program = tg.trace(step, X22, backward=False)
    assert float(program(X22)) == 8.0 and program.retraces == 0
    log, counts = [], {"calls": 0}

    def logged(x):
        log.append("call")
        return (x @ W22).sum()

    def counted(x):
        counts["calls"] += 1
        return (x @ W22).sum() * (1.0 if counts["calls"] < 5 else 2.0)

    def class_counter(x):                    # Name.attr += 1 in a function that runs (a property, say)
        _Box.seen += 1
        return (x @ W22).sum()
    monkeypatch.setattr(_Box, "seen", 0, raising=False)
    for fn in (logged, counted, class_counter):
        with pytest.raises(TraceError, match="fn changes .* on every call, and also reads it"):
            tg.trace(fn, X22, backward=False)
        with pytest.raises(TraceError, match="fn changes .* on every call, and also reads it"):
            tg.composite(fn)(Tensor(X22))


def test_a_value_fn_sets_once_is_kept_and_one_it_changes_on_every_call_is_refused():
    """A value set once (a lazily made constant) is traced as it is after the call; a running statistic
    that fn appends to and reads is refused, named."""
    from tinygrad_rnn.tracing import TraceError

    class Lazy(nn.Module):
        def __init__(self):
            self.W, self.scale = nn.Parameter(np.ones((2, 2))), None

        def forward(self, x):
            if self.scale is None:
                self.scale = 2.0
            return ((x @ self.W) * self.scale).sum()
    program = tg.trace(Lazy(), X22, backward=False)
    for _ in range(2):
        assert float(program(X22)) == 16.0
    assert program.retraces == 0
    history = [1.0]

    def running(x):
        history.append(1.0)
        return ((x @ W22) * float(len(history))).sum()
    with pytest.raises(TraceError, match="fn changes a closed-over variable on every call, and also reads it"):
        tg.trace(running, X22, backward=False)


class _Scaler(nn.Module):
    def __init__(self):
        self.scale = 2.0

    def forward(self, x):
        return x * self.scale


_NORM = None                # a layer of the user's, set by the test whose submodule calls it
_CFG = None                 # a settings object whose class holds the default


class _UsesNorm(nn.Module):
    def forward(self, x):
        return _NORM(x)


class _CfgDefaults:
    scale = 2.0


def test_modules_found_only_while_the_call_runs_are_watched(monkeypatch):
    """A module held as a class attribute, a global layer that a submodule's forward calls, a layer that
    forward makes once and caches, a class default later shadowed on a global settings object."""
    class Shared(nn.Module):
        shared = _Scaler()

        def forward(self, x):
            return self.shared(x @ W22).sum()
    m = Shared()
    _checks_the_change(lambda x: m(x), lambda: setattr(Shared.shared, "scale", 3.0), 3.0)
    monkeypatch.setitem(globals(), "_NORM", _Scaler())
    outer = _UsesNorm()
    _checks_the_change(lambda x: outer(x @ W22).sum(), lambda: setattr(_NORM, "scale", 4.0), 4.0)

    class Cached(nn.Module):
        def __init__(self):
            self.cache = {}

        def forward(self, x):
            if "s" not in self.cache:
                self.cache["s"] = _Scaler()
            return self.cache["s"](x @ W22).sum()
    c = Cached()
    _checks_the_change(lambda x: c(x), lambda: setattr(c.cache["s"], "scale", 5.0), 5.0)
    monkeypatch.setitem(globals(), "_CFG", _CfgDefaults())
    _checks_the_change(lambda x: ((x @ W22) * _CFG.scale).sum(), lambda: setattr(_CFG, "scale", 6.0), 6.0)


def test_an_optional_object_removed_is_seen():
    """``self.extra = None`` after tracing with an object there: the object, held weakly by the check, is
    gone, and nothing (None) is not taken for it."""
    class WithExtra(nn.Module):
        def __init__(self):
            self.extra = _Box(1.0)           # read only as a flag: no attribute of it is checked

        def forward(self, x):
            return ((x @ W22) * (1.0 if self.extra is None else 2.0)).sum()
    m = WithExtra()
    _checks_the_change(lambda x: m(x), lambda: setattr(m, "extra", None), 1.0)


def test_a_log_kept_on_a_module_outside_fn_does_not_retrace():
    """A module whose compiled method fn calls, and whose log the training loop fills between calls: fn
    never reads the log, so the program is not traced again (the library's own reads of the module's
    attributes, and a program written inside the trace, check it by identity only)."""
    class Cell(nn.Module):
        def __init__(self):
            self.W = nn.Parameter(np.full((2, 2), 0.5))
            self.losses, self.metrics = [], {}

        @tg.composite
        def forward(self, x, h):
            return (x @ self.W + h).tanh()
    cell = Cell()

    def step(x):
        hs, _ = nn.unroll(cell, x, Tensor(np.zeros((2, 2))))
        return hs.sum()
    xs = np.ones((2, 3, 2))
    program = tg.trace(step, xs)
    for _ in range(4):
        cell.losses.append(float(program(xs)))
        cell.metrics["loss"] = cell.losses[-1]
    assert program.retraces == 0
    cell.W = nn.Parameter(np.full((2, 2), 0.25))      # what it does read is still checked
    program(xs)
    assert program.retraces == 1


@pytest.mark.parametrize("refuses", [True, False])
def test_a_metaclass_that_refuses_or_ignores_the_hook_leaves_nothing_behind(refuses):
    class Guarded(type):
        def __setattr__(cls, name, value):
            if name == "__getattribute__":
                if refuses:
                    raise RuntimeError("no")
                return                       # (ignored without a word)
            super().__setattr__(name, value)

    class Settings(metaclass=Guarded):
        def __init__(self):
            self.scale = 2.0
    box, settings = _Box(2.0), Settings()
    program = tg.trace(lambda x: ((x @ W22) * box.v * settings.scale).sum(), X22, backward=False)
    assert "__getattribute__" not in _Box.__dict__ and "__getattribute__" not in Settings.__dict__
    settings.scale = 3.0                     # not hooked: all its attributes are checked instead
    assert float(program(X22)) == 48.0 and program.retraces == 1


def test_a_settings_object_read_by_a_submodule_and_a_module_held_in_a_closure_are_checked(monkeypatch):
    import types
    monkeypatch.setitem(globals(), "_SETTINGS", types.SimpleNamespace(scale=2.0))
    m = _ReadsSettings()
    _checks_the_change(lambda x: m(x), lambda: setattr(_SETTINGS, "scale", 5.0), 5.0)
    held = types.ModuleType("scratch_held")
    held.SCALE = 2.0

    def make():
        mod = held
        return lambda x: ((x @ W22) * mod.SCALE).sum()
    _checks_the_change(make(), lambda: setattr(held, "SCALE", 3.0), 3.0)


def test_a_nan_setting_does_not_retrace_every_call():
    holder = _Base()
    holder.scale = float("nan")
    program = tg.trace(lambda x: ((x @ W22) * holder.scale).sum(), X22, backward=False)
    for _ in range(3):
        assert np.isnan(program(X22))
    assert program.retraces == 0


def test_an_object_whose_getattr_raises_other_errors_can_be_traced():
    class Lookup:
        def __init__(self):
            self._d = {"scale": 2.0}

        def __getattr__(self, name):
            return self.__dict__["_d"][name]        # KeyError, not AttributeError, for an unknown name
    cfg = Lookup()
    program = tg.trace(lambda x: ((x @ W22) * cfg.scale).sum(), X22, backward=False)
    assert float(program(X22)) == 16.0


def test_another_thread_may_read_data_while_a_trace_runs():
    import queue
    import threading
    other = Tensor(np.arange(3.0))
    got = queue.SimpleQueue()

    def read():
        try:
            got.put(float(other.data.sum()))
        except Exception as e:          # noqa: BLE001 - what the other thread met is the test's result
            got.put(e)

    def fn(x):
        reader = threading.Thread(target=read)
        reader.start()
        reader.join()
        return (x @ W22).sum()
    tg.trace(fn, X22, backward=False)
    seen = [got.get() for _ in range(got.qsize())]
    assert seen and all(s == 3.0 for s in seen), seen


def test_a_class_attribute_read_by_a_module_is_watched():
    """A module's plain class attribute (a default): set on the instance, or changed on the class."""
    class Scaled(nn.Module):
        scale = 1.0

        def __init__(self):
            self.W = nn.Parameter(np.arange(6.0).reshape(3, 2))

        def forward(self, x):
            return ((x @ self.W) * self.scale).sum()

    class ScaledComposite(Scaled):
        @tg.composite
        def forward(self, x):
            return ((x @ self.W) * self.scale).sum()
    x = np.ones((2, 3))
    for cls in (Scaled, ScaledComposite):
        m = cls()
        run = tg.trace(m, x) if cls is Scaled else (lambda v, m=m: m(Tensor(v)).item())
        run(x), run(x)
        m.scale = 3.0                       # the instance now has a value of its own
        assert float(run(x)) == 90.0
        del m.scale
        cls.scale = 7.0                     # the class's value changes
        assert float(run(x)) == 210.0


@pytest.mark.parametrize("container", ["dict", "list"])
def test_an_array_inside_a_closed_over_container_changed_in_place_is_seen(container):
    W = nn.Parameter(np.arange(6.0).reshape(3, 2))
    x = np.ones((2, 3))
    mask = np.array([1.0, 0.0])
    cfg = {"mask": mask} if container == "dict" else [mask, W]

    def fn(t):
        return ((t @ W) * (cfg["mask"] if container == "dict" else cfg[0])).sum()
    program = tg.trace(fn, x)
    composed = tg.composite(fn)
    composed(Tensor(x)), composed(Tensor(x))
    mask[1] = 1.0
    assert float(program(x)) == 30.0 and program.retraces == 1
    assert composed(Tensor(x)).item() == 30.0


def test_pythons_random_inside_a_traced_step_is_refused():
    import random
    from tinygrad_rnn.tracing import TraceError
    with pytest.raises(TraceError, match="Python's random"):
        tg.trace(lambda t: (t * random.random()).sum(), np.ones(2), backward=False)


def test_the_eager_fallback_never_returns_a_view_of_an_argument_or_parameter():
    W = nn.Parameter(np.eye(3))
    program = tg.trace(lambda x: ((x @ W).sum(), x[:, -1], W * 1.0, W.detach()), np.ones((2, 3)))
    x = Tensor(np.ones((4, 3)))
    with tg.no_grad():                       # a new batch size: run eagerly
        outs = program(x)
    for out in outs[1:]:
        assert not np.shares_memory(out, W.data) and not np.shares_memory(out, x.data)
        out[...] = 9.0
    assert np.array_equal(W.data, np.eye(3)) and np.array_equal(x.data, np.ones((4, 3)))


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_a_stateful_rnns_carried_state_can_be_edited_in_place(kind):
    """Truncated BPTT that resets one lane of the carried state at a document boundary: the state is a copy,
    writable before and after backward, and the edit reaches the next chunk."""
    cell = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[kind](3, 4, rng=0)
    rnn = nn.RNN(cell, stateful=True)
    xs = np.random.default_rng(0).standard_normal((2, 5, 3))
    hs, _ = rnn(xs)
    states = rnn.state if isinstance(rnn.state, tuple) else (rnn.state,)
    for s in states:
        s.data[0] = 0.0                      # before the backward of the chunk that made it
    (hs * hs).sum().backward()
    for s in states:
        s.data[1] = 0.0                      # and after
    zero = tuple(Tensor(np.zeros_like(s.data)) for s in states)
    got, _ = rnn(xs)
    want, _ = nn.unroll(cell, Tensor(xs), zero if len(zero) > 1 else zero[0])
    np.testing.assert_array_equal(got.data, want.data)


# ---------------------------------------------------------------------- 6. edge inputs
@pytest.mark.parametrize("sa, sb", [((2, 3, 0), (0, 4)), ((1,), (1, 0)), ((0,), (0,)), ((2, 0, 3), (3, 4)),
                                    ((0, 3), (3,))])
def test_matmul_with_an_empty_dimension_works_as_numpy_does(sa, sb):
    rng = np.random.default_rng(0)
    a_, b_ = rng.normal(size=sa), rng.normal(size=sb)
    a, b = Tensor(a_, requires_grad=True), Tensor(b_, requires_grad=True)
    out = a @ b
    np.testing.assert_array_equal(out.data, a_ @ b_)
    g = rng.normal(size=out.shape)
    out.backward(grad=g)
    # the gradients of a product with nothing to sum or nothing to produce: numpy's own formulas
    a2, b2 = np.atleast_2d(a_), b_ if b_.ndim > 1 else b_[:, None]
    g2 = np.asarray(g).reshape(a2.shape[:-1] + b2.shape[-1:])
    np.testing.assert_array_equal(a.grad, (g2 @ np.swapaxes(b2, -1, -2)).reshape(sa))
    np.testing.assert_array_equal(b.grad, (np.swapaxes(a2, -1, -2) @ g2).sum(
        axis=tuple(range(g2.ndim - 2))).reshape(sb))
    program = tg.trace(lambda x, y: (x @ y).sum(), Tensor(a_, requires_grad=True), Tensor(b_, requires_grad=True))
    x, y = Tensor(a_, requires_grad=True), Tensor(b_, requires_grad=True)
    program(x, y)
    assert x.grad.shape == sa and y.grad.shape == sb


def test_a_numpy_value_error_in_a_binary_operation_is_reported_as_what_it_is():
    with pytest.raises(ValueError, match="Integers to negative integer powers") as e:
        Tensor([2]) ** -1
    assert "broadcast" not in str(e.value)
    with pytest.raises(ValueError, match=r"shapes \(2,\) and \(3,\) cannot be broadcast"):
        Tensor([1.0, 2.0]) + Tensor([1.0, 2.0, 3.0])


@pytest.mark.parametrize("loss", [lambda x: F.log_softmax(x).sum(),
                                  lambda x: F.cross_entropy(x, np.array([0, 1])),
                                  lambda x: F.cross_entropy(x, np.array([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0]]))])
def test_a_nan_logit_gives_nan_gradients_for_its_row_only(loss):
    x = Tensor(np.array([[1.0, np.nan, 2.0], [1.0, 2.0, 3.0]]), requires_grad=True)
    loss(x).backward()
    assert np.isnan(x.grad[0]).all()                       # as PyTorch: the whole row
    assert np.isfinite(x.grad[1]).all()


def test_a_traced_step_sees_a_settings_dict_changed_in_place():
    from tinygrad_rnn import nn

    class Scaled(nn.Module):
        def __init__(self):
            self.W = nn.Parameter(np.ones((2, 2)))
            self.cfg = {"scale": 2.0}

        def forward(self, x):
            return ((x @ self.W) * self.cfg["scale"]).sum()
    m = Scaled()
    program = tg.trace(m, np.ones((1, 2)), backward=False)
    assert float(program(np.ones((1, 2)))) == 8.0
    m.cfg["scale"] = 3.0                          # in place: the same dict, another entry
    assert float(program(np.ones((1, 2)))) == 12.0


# ---------------------------------------------------------------------- 1b. only what backward reads is locked
# Each operation locks exactly the arrays its backward reads.  The property: any array that a
# raw write can still reach (an input or the result, after the loss is built) is one that backward
# does not read, so writing garbage into it leaves every gradient as it was.
_POS = {"pos": True}
_LOCK_CASES = {
    "add": (lambda a, b: a + b, 2), "sub": (lambda a, b: a - b, 2), "mul": (lambda a, b: a * b, 2),
    "div": (lambda a, b: a / b, 2), "pow": (lambda a, b: a ** b, 2, _POS), "matmul": (lambda a, b: a @ b, 2),
    "neg": (lambda a: -a, 1), "exp": (lambda a: a.exp(), 1), "expm1": (lambda a: a.expm1(), 1),
    "log": (lambda a: a.log(), 1, _POS), "sqrt": (lambda a: a.sqrt(), 1, _POS), "abs": (lambda a: a.abs(), 1),
    "sin": (lambda a: a.sin(), 1), "cos": (lambda a: a.cos(), 1), "log1p": (lambda a: a.log1p(), 1, _POS),
    "clip": (lambda a, b: a.clip(b, 0.5), 2), "sum": (lambda a: a.sum(axis=0), 1),
    "mean": (lambda a: a.mean(axis=1), 1), "max": (lambda a: a.max(axis=1), 1), "min": (lambda a: a.min(), 1),
    "reshape": (lambda a: a.reshape(9), 1), "transpose": (lambda a: a.T, 1),
    "broadcast_to": (lambda a: a.broadcast_to((2, 3, 3)), 1), "sum_to": (lambda a: a.sum_to((1, 3)), 1),
    "index": (lambda a, i: a[i], 1, {"extra": lambda: [Tensor(np.array([2, 0, 2]))]}),
    "slice": (lambda a: a[1:, ::2], 1),
    "concat": (lambda a, b: tg.concat([a, b], axis=1), 2), "stack": (lambda a, b: tg.stack([a, b], 1), 2),
    "where": (lambda a, b, c: tg.where(c, a, b), 2, {"extra": lambda: [Tensor(np.eye(3) > 0)]}),
    "maximum": (lambda a, b: tg.maximum(a, b), 2),
    "minimum": (lambda a, b: tg.minimum(a, b), 2), "tanh": (lambda a: a.tanh(), 1),
    "sigmoid": (lambda a: a.sigmoid(), 1), "softmax": (lambda a: F.softmax(a), 1),
    "log_softmax": (lambda a: F.log_softmax(a), 1), "cross_entropy": (lambda a: F.cross_entropy(a, [0, 2, 1]), 1),
    "rnn_cell": (lambda a, b: nn.RNNCell(3, 3, rng=0)(a, b), 2),
    # a view shares its input's memory: a product that reads the view must not see a write into the input
    "reshape_read": (lambda a, b: a.reshape(9) * b.reshape(9), 2), "transpose_read": (lambda a, b: a.T * b, 2),
    "slice_read": (lambda a, b: a[1:] * b[1:], 2), "broadcast_read": (lambda a, b: a.broadcast_to((2, 3, 3)) * b, 2),
    "sum_to_read": (lambda a, b: a.sum_to((3, 3)) * b, 2), "detach_read": (lambda a, b: a.detach() * b + a, 2),
}


def _lock_inputs(n, pattern, pos):
    rng = np.random.default_rng(5)
    data = [rng.uniform(0.5, 2.0, (3, 3)) if pos else rng.standard_normal((3, 3)) for _ in range(n)]
    return [Tensor(d, requires_grad=bool(pattern >> i & 1)) for i, d in enumerate(data)]


@pytest.mark.parametrize("name, pattern", [(name, pattern) for name, (_, n, *_) in sorted(_LOCK_CASES.items())
                                           for pattern in range(1, 2 ** n)])   # which inputs need a gradient
def test_a_write_that_is_allowed_never_changes_a_gradient(name, pattern):
    fn, n, *opts = _LOCK_CASES[name]
    opts = opts[0] if opts else {}

    def run(write):
        xs = _lock_inputs(n, pattern, opts.get("pos"))
        extra = opts.get("extra", list)()    # inputs without gradient: a condition, an index
        out = fn(*xs, *extra)
        weights = np.random.default_rng(6).standard_normal(out.shape)
        loss = (out * weights).sum()          # the weights need no gradient: out stays unread by this product
        written = []
        if write:
            for t in xs + extra + [out]:
                if not isinstance(t.data, np.ndarray):
                    continue                  # a 0-d result of a ufunc is an immutable numpy scalar
                try:
                    t.data[...] = -7.0        # garbage into every array a raw write can reach
                    written.append(t)
                except ValueError as e:
                    assert "read-only" in str(e)
        loss.backward()
        return [x.grad for x in xs], written

    want, _ = run(False)
    got, written = run(True)
    for g, w in zip(got, want):
        assert (g is None) == (w is None)
        if g is not None:
            np.testing.assert_array_equal(g, w, err_msg=f"{name}: a write into {len(written)} arrays changed it")


def test_an_input_the_backward_does_not_read_is_not_locked():
    x = Tensor(np.ones(3), requires_grad=True)
    c = Tensor(np.full(3, 2.0))
    y = x * c                      # x's gradient reads c; nothing reads x
    x.data[...] = 5.0              # allowed: no gradient depends on it
    with pytest.raises(ValueError, match="read-only"):
        c.data[...] = 5.0          # c is read by x's gradient
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 2.0, 2.0])


def test_a_result_that_no_backward_reads_stays_writable():
    for op in (lambda x, y: x + y, lambda x, y: x - y, lambda x, y: x * y, lambda x, y: x[None] @ y[:, None],
               lambda x, y: -x, lambda x, y: x.sum(), lambda x, y: tg.concat([x, y])):
        x = Tensor(np.ones(3), requires_grad=True)
        y = Tensor(np.full(3, 2.0), requires_grad=True)
        op(x, y).data[...] = 5.0   # nothing reads these results: a write changes no gradient
    e = Tensor(np.ones(3), requires_grad=True).exp()
    with pytest.raises(ValueError, match="read-only"):
        e.data[...] = 5.0          # exp's backward reads its result


@pytest.mark.parametrize("wrap", [lambda i: i, lambda i: (i,), lambda i: (slice(None), i)])
def test_a_callers_index_array_edited_after_the_forward_does_not_move_the_gradient(wrap):
    x = Tensor(np.arange(8.0).reshape(2, 4), requires_grad=True)
    idx = np.array([0, 1])
    index = wrap(idx)
    y = x[index]
    idx[0] = 3                                  # the caller reuses the array
    y.sum().backward()
    want = np.zeros((2, 4))
    np.add.at(want, wrap(np.array([0, 1])), 1.0)
    np.testing.assert_array_equal(x.grad, want)


def test_a_view_read_by_one_graph_does_not_unlock_a_base_that_another_graph_reads():
    x = Tensor(np.array([0.5, 1.0, 1.5]), requires_grad=True)
    e = x.exp()                                # exp's backward reads e's array
    w = Tensor(np.ones(2), requires_grad=True)
    (e.detach()[:2] * w).sum().backward()      # a view of e's array, read and freed by another graph
    with pytest.raises(ValueError, match="read-only"):
        e.data[...] = 0.0                      # e's own graph still reads it
    e.sum().backward()
    np.testing.assert_allclose(x.grad, np.exp([0.5, 1.0, 1.5]), rtol=1e-15)
