"""The time step where a hand-derived BPTT goes wrong.

``compare_grads`` says which parameter's gradient is wrong.  ``compare_bptt``
says at which time step, and in which quantity, by comparing what the hand
derivation computes along the way with the same quantities from autograd:

- the learner's numpy backward loop fills a record as it goes, one dict per
  time step: ``steps[t] = {"h": dh, "a": da, "Whh": h_prev.T @ da, ...}``.  Each
  key names what the gradient is taken with respect to: a state (``h`` for
  dL/dh_t, ``a`` for the pre-activation) or a parameter, whose value there is
  the step's term of its gradient (the gradient is the sum of these terms).
  Any subset will do: only ``dh``, or only the weights' terms.
- the graph is built by a function of a ``StepRecorder``: at step t it takes
  the weights from ``steps.params(t)`` and marks states with
  ``steps.keep(t, name, tensor)``.  ``params(t)`` returns step t's own copies of
  the shared weights, ``W * 1``: the same values, but a separate node per step,
  so the gradient that reaches step t's copy is exactly step t's term (the
  copies' gradients add up into ``W.grad`` as before).  ``keep`` calls
  ``retain_grad`` so that the state's gradient survives the backward pass.

Steps are compared from the last to the first, the order in which the
backward pass runs.  A mistake made at step t spoils what step t hands back to
step t - 1, so every earlier step disagrees as well; the latest step that
disagrees is where the mistake is.  For a state such as ``h``, the first
disagreement is at the step that receives the wrong gradient: a mistake in
``da_t`` shows first in ``dh_{t-1}``.
"""
import numpy as np

from .checking import GradReport, _backward_keeping_grads, _check_expected, _check_params, _compare_arrays
from .tensor import Tensor

__all__ = ["StepRecorder", "BPTTReport", "compare_bptt"]


def _step(t, who):
    if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)):
        raise TypeError(f"{who}: a time step must be an int, got {t!r}")
    return int(t)


class StepRecorder:
    """Hands each time step its own copies of the parameters and keeps states' gradients.

    ``params`` is a dict name -> Tensor (or a list, named p0, p1, ...).  The loss
    function given to ``compare_bptt`` receives one of these; it works as well for
    an ordinary ``loss.backward()``, since the copies pass their gradients on.
    ``copies[t]`` and ``kept[t]`` hold step t's copies and kept states (dicts name -> Tensor).
    """

    def __init__(self, params):
        self._params = _check_params(params, "StepRecorder")
        self.copies = {}   # t -> {name: this step's copy of the parameter}
        self.kept = {}     # t -> {name: a Tensor whose gradient is kept}

    def params(self, t):
        """Step ``t``'s copies of the parameters, a dict name -> Tensor (the same dict for the same t)."""
        t = _step(t, "StepRecorder.params")
        if t not in self.copies:
            # x * 1 is exactly x, and its backward passes the gradient on unchanged
            self.copies[t] = {k: (p * 1).retain_grad() for k, p in self._params.items()}
        return self.copies[t]

    def keep(self, t, name, tensor):
        """Keep the gradient of ``tensor`` (a state of step ``t``) under ``name``; returns ``tensor``."""
        t = _step(t, "StepRecorder.keep")
        if not isinstance(tensor, Tensor):
            raise TypeError(f"StepRecorder.keep: {name!r} at step {t} is a {type(tensor).__name__}, "
                            f"not a Tensor")
        if not isinstance(name, str) or not name:
            raise TypeError(f"StepRecorder.keep: the name must be a non-empty str, got {name!r}")
        if name in self._params:
            raise ValueError(f"StepRecorder.keep: {name!r} is a parameter's name; a parameter's "
                             f"per-step term comes from params(t), give the state another name")
        if not tensor.requires_grad:
            raise ValueError(f"StepRecorder.keep: {name!r} at step {t} does not require grad, so no "
                             f"gradient reaches it (does it depend on the parameters?)")
        kept = self.kept.setdefault(t, {})
        if name in kept and kept[name] is not tensor:
            raise ValueError(f"StepRecorder.keep: step {t} already keeps another tensor named {name!r}")
        kept[name] = tensor.retain_grad()
        return tensor

    def grad(self, t, name):
        """After backward: the gradient of the loss with respect to ``name`` at step ``t`` (zeros if
        nothing reached it)."""
        if name in self._params:
            if t not in self.copies:
                raise KeyError(f"step {t}: the loss function never called params({t}), so there is no "
                               f"per-step term of {name!r} at that step")
            tensor = self.copies[t][name]
        elif name in self.kept.get(t, {}):
            tensor = self.kept[t][name]
        else:
            raise KeyError(f"step {t}: nothing named {name!r}; parameters are {list(self._params)}, "
                           f"states kept at step {t} are {list(self.kept.get(t, {}))}")
        return np.zeros(tensor.shape) if tensor.grad is None else tensor.grad


def _hand_steps(steps):
    """The learner's record as a dict t -> {name: numpy array}, checked."""
    if callable(steps):
        steps = steps()
    if isinstance(steps, (list, tuple)):
        steps = {t: entry for t, entry in enumerate(steps) if entry is not None}
    if not isinstance(steps, dict):
        raise TypeError(f"compare_bptt: the hand-derived steps must be a dict t -> {{name: array}} (or a "
                        f"list indexed by t), got {type(steps).__name__}")
    if not steps:
        raise ValueError("compare_bptt: the hand-derived steps are empty; fill steps[t] in the backward loop")
    out = {}
    for t, entry in steps.items():
        t = _step(t, "compare_bptt")
        if not isinstance(entry, dict):
            raise TypeError(f"compare_bptt: steps[{t}] must be a dict name -> array, got {type(entry).__name__}")
        out[t] = {k: np.asarray(v.data if isinstance(v, Tensor) else v, dtype=np.float64)
                  for k, v in entry.items()}
    return out


def compare_bptt(loss, params, steps, expected=None, atol=1e-8, rtol=1e-6):
    """Compare a hand-derived BPTT with autograd time step by time step; returns a ``BPTTReport``.

    ``loss(recorder)`` builds the loss from a ``StepRecorder``: step t uses the
    weights ``recorder.params(t)`` and marks its states with
    ``recorder.keep(t, name, tensor)``.  It is called once.
    ``params`` is a dict name -> Tensor (or a list, named p0, p1, ...).
    ``steps`` is what the hand-derived backward recorded: a dict t -> {name: array}
    (or a list indexed by t, or a callable returning either).  A name is a state
    kept at that step (its value dL/dstate) or a parameter (its value the step's
    term of the parameter's gradient).  A value's shape must be that of the state
    or parameter; values of one element are compared with any one-element shape.
    ``expected``, if given, is the hand-derived whole gradients (as for
    ``compare_grads``); the report then compares those too.
    An element passes when ``|autograd - hand| <= atol + rtol * |hand|``.
    """
    params = _check_params(params, "compare_bptt")
    hand = _hand_steps(steps)
    if expected is not None:
        expected = _check_expected(params, expected, "compare_bptt")
    recorder = StepRecorder(params)
    if not callable(loss):
        raise TypeError("compare_bptt: loss must be a function that takes a StepRecorder and returns "
                        "the loss, so that each step can use its own copies of the weights")
    totals = _backward_keeping_grads(params, lambda: loss(recorder), "compare_bptt")

    for name in params:
        # a loss that uses params[name] directly leaves every per-step copy without a gradient
        asked = any(name in entry for entry in hand.values())
        reached = any(c[name].grad is not None for c in recorder.copies.values())
        if asked and not reached and np.any(totals[name] != 0):
            raise ValueError(f"compare_bptt: {name!r} has a gradient but none of its per-step copies "
                             f"does: the loss uses the parameter itself; inside the loop use "
                             f"w = steps.params(t) and w[{name!r}]")
    rows = []
    for t in sorted(hand, reverse=True):
        for name, value in hand[t].items():
            auto = np.asarray(recorder.grad(t, name), dtype=np.float64)
            if value.shape != auto.shape:
                if value.size == 1 and auto.size == 1:
                    value = value.reshape(auto.shape)
                else:
                    what = "parameter" if name in params else "state"
                    raise ValueError(f"compare_bptt: steps[{t}][{name!r}] has shape {value.shape}, but the "
                                     f"{what} {name!r} at step {t} has shape {auto.shape}")
            rows.append(dict(_compare_arrays(name, auto, value, atol, rtol), t=t))
    total_report = None
    if expected is not None:
        total_report = GradReport([(k, totals[k], expected[k]) for k in params], atol=atol, rtol=rtol,
                                  left="autograd", right="hand")
    return BPTTReport(rows, total_report, atol, rtol)


class BPTTReport:
    """Per-step comparison of a hand-derived BPTT with autograd.

    ``rows`` holds one dict per (step, quantity) compared, latest step first
    (``t, name, shape, max_abs, rel, worst, left, right, passed``, as in
    ``GradReport``: ``left`` is autograd's value at the worst element, ``right``
    the hand-derived one).  ``report[t, name]`` returns a row; ``first`` is the
    first failing row going back from the last step (None when all agree);
    ``first_disagreement(name)`` the same for one quantity; ``totals`` is the
    ``GradReport`` of the whole gradients when ``expected`` was given.
    ``print(report)`` shows the verdict and a table of steps by quantities.
    """

    def __init__(self, rows, totals, atol, rtol):
        self.rows, self.totals, self.atol, self.rtol = rows, totals, atol, rtol
        self.names = list(dict.fromkeys(r["name"] for r in rows))     # in the learner's order
        self.steps = list(dict.fromkeys(r["t"] for r in rows))        # latest first

    @property
    def passed(self):
        """True when every recorded step and quantity (and the whole gradients, when given) agree."""
        return all(r["passed"] for r in self.rows) and (self.totals is None or self.totals.passed)

    def __bool__(self):
        """``passed``."""
        return self.passed

    def __getitem__(self, key):
        """``report[t, name]``: the comparison row of quantity ``name`` at step ``t``."""
        t, name = key
        for r in self.rows:
            if r["t"] == t and r["name"] == name:
                return r
        raise KeyError(f"no row for step {t} and {name!r}")

    @property
    def first(self):
        """The first failing row going back from the last step, or None."""
        return next((r for r in self.rows if not r["passed"]), None)

    def first_disagreement(self, name):
        """The latest step's row where ``name`` disagrees, or None when it agrees at every step."""
        if name not in self.names:
            raise KeyError(f"nothing named {name!r} was compared; the names are {self.names}")
        return next((r for r in self.rows if r["name"] == name and not r["passed"]), None)

    def _detail(self, r):
        label = f"d{r['name']}_{r['t']}"
        if r["worst"] is None:
            return f"{label}: autograd shape {r['shape']}, hand shape {r['other_shape']}"
        return (f"{label}: worst element {r['worst']}: autograd {r['left']:.6g} vs hand {r['right']:.6g}, "
                f"abs error {abs(r['left'] - r['right']):.3g}")

    def summary(self):
        """The verdict in a few lines: the first step that disagrees, and where each quantity first does."""
        lines = [f"per-step gradients, hand against autograd, from the last step (t = {self.steps[0]}) "
                 f"back to the first (t = {self.steps[-1]})"]
        first = self.first
        if first is None:
            lines.append("every step agrees")
        else:
            failing = [r for r in self.rows if r["t"] == first["t"] and not r["passed"]]
            lines.append(f"first disagreement going back: t = {first['t']}, in "
                         + ", ".join(f"d{r['name']}" for r in failing))
            lines += ["  " + self._detail(r) for r in failing]
            firsts = [(n, self.first_disagreement(n)) for n in self.names]
            lines.append("where each first disagrees, going back: "
                         + ", ".join(f"d{n} at t = {r['t']}" for n, r in firsts if r is not None))
        if self.totals is not None:
            lines.append("whole gradients (sums over the steps): "
                         + ", ".join(f"{r['name']} {'ok' if r['passed'] else 'FAIL'}" for r in self.totals.rows))
        return "\n".join(lines)

    def table(self, max_steps=12):
        """Steps (rows, latest first) by quantities (columns): ``ok``, or ``FAIL`` with the relative error.

        With more than ``max_steps`` steps, only the latest ones and those around the first
        disagreement are shown (``max_steps=None`` shows all).
        """
        steps = self.steps
        if max_steps is not None and len(steps) > max_steps:
            show = set(steps[:3]) | {steps[-1]}
            if self.first is not None:
                i = steps.index(self.first["t"])
                show |= set(steps[max(i - 2, 0):i + 3])
            steps = [t for t in steps if t in show]
        cell = {(r["t"], r["name"]): "ok" if r["passed"] else f"FAIL {r['rel']:.2g}" for r in self.rows}
        head = ["t"] + [f"d{n}" for n in self.names]
        body, previous = [], None
        for t in steps:
            if previous is not None and self.steps.index(t) != self.steps.index(previous) + 1:
                body.append(["..."] + [""] * len(self.names))
            body.append([str(t)] + [cell.get((t, n), "-") for n in self.names])
            previous = t
        widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]
        fmt = lambda row: "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
        notes = [f"ok: every element within atol {self.atol:g} + rtol {self.rtol:g} * |hand|; -: not recorded",
                 "FAIL r: r is the relative error, max |autograd - hand| / max(|autograd|, |hand|)"]
        return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(row) for row in body] + notes)

    def __str__(self):
        """The summary, then the table."""
        return self.summary() + "\n" + self.table()

    __repr__ = __str__
