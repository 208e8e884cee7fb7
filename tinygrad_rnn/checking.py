"""Checking gradients: autograd against central finite differences, or against your own.

``gradcheck`` and ``numerical_grad`` follow ``torch.autograd.gradcheck``: the
numeric gradient of each element is (f(x + eps) - f(x - eps)) / (2 eps), and an
element passes when ``|analytic - numeric| <= atol + rtol * |numeric|``.
A non-scalar output is reduced through a fixed random projection, so every
output element takes part with a different weight.

``gradgradcheck`` checks second derivatives the same way: the gradients of a
fixed random projection of the first-order gradients (``grad(...,
create_graph=True)``) against central differences of those first-order gradients.

``compare_grads`` puts autograd next to gradients that you derived by hand and
returns a ``GradReport`` that prints as a table, one row per parameter.
"""
import warnings

import numpy as np

from .tensor import Tensor, grad, no_grad, _writable

__all__ = ["GradcheckError", "GradReport", "numerical_grad", "gradcheck", "gradcheck_report", "compare_grads",
           "gradgradcheck"]


class GradcheckError(AssertionError):
    """Autograd and the reference gradient disagree; the message names the worst element."""


def _as_scalar(out, projection):
    """Reduce an output Tensor to a scalar Tensor with a fixed random projection."""
    if not isinstance(out, Tensor):
        raise TypeError(f"the function must return a Tensor, got {type(out).__name__}")
    if out.size == 1:
        return out.sum()
    key = out.shape
    if key not in projection:
        projection[key] = np.random.default_rng(0).standard_normal(out.shape)
    return (out * projection[key].astype(out.dtype)).sum()


def _loss_value(fn, inputs, projection):
    with no_grad():
        return float(_as_scalar(fn(*inputs), projection).data)


def _numerical(fn, inputs, targets, eps, projection):
    return _differences(lambda: _loss_value(fn, inputs, projection), targets, eps)


def _differences(value, targets, eps):
    """Central differences of the number ``value()`` with respect to each element of each target."""
    grads = []
    for t in targets:
        if t.dtype != np.float64:
            warnings.warn(f"finite differences in {t.dtype} are imprecise; use float64 tensors "
                          f"for gradient checks", stacklevel=4)
        grad = np.zeros(t.shape, dtype=np.float64)
        data = _writable(t)   # perturbed in place (a graph made earlier from t then refuses backward)
        for i in np.ndindex(t.shape):
            old = data[i]
            data[i] = old + eps
            plus = value()
            data[i] = old - eps
            minus = value()
            data[i] = old
            grad[i] = (plus - minus) / (2 * eps)
        grads.append(grad.astype(t.dtype))
    return grads


def numerical_grad(fn, *inputs, eps=1e-6):
    """Central-difference gradients of ``fn(*inputs)`` (projected to a scalar), one array per input."""
    inputs = [x if isinstance(x, Tensor) else Tensor(x) for x in inputs]
    return _numerical(fn, inputs, inputs, eps, {})


def _analytic(fn, inputs, targets, projection):
    saved = [t.grad for t in targets]
    for t in targets:
        t.grad = None
    try:
        loss = _as_scalar(fn(*inputs), projection)
        if not loss.requires_grad:
            return [np.zeros(t.shape, dtype=t.dtype) for t in targets]
        loss.backward()
        return [np.zeros(t.shape, dtype=t.dtype) if t.grad is None else t.grad for t in targets]
    finally:
        for t, g in zip(targets, saved):
            t.grad = g


def _named_targets(inputs, params):
    named = [(x.name or f"input {i}", x) for i, x in enumerate(inputs) if x.requires_grad]
    if params is not None:
        items = params.items() if isinstance(params, dict) else ((getattr(p, "name", None) or f"param {i}", p)
                                                                 for i, p in enumerate(params))
        named += [(name, p) for name, p in items if p.requires_grad]
    return named


def gradcheck(fn, *inputs, eps=1e-6, atol=1e-6, rtol=1e-4, params=None):
    """Check autograd against central differences for every input with ``requires_grad``.

    ``params`` (a list, or a dict of name -> Tensor, such as
    ``dict(model.named_parameters())``) adds tensors that ``fn`` uses without
    taking them as arguments.  Returns True or raises ``GradcheckError``.
    """
    report = gradcheck_report(fn, *inputs, eps=eps, atol=atol, rtol=rtol, params=params)
    if not report.passed:
        raise GradcheckError(report.failure_message())
    return True


def gradcheck_report(fn, *inputs, eps=1e-6, atol=1e-6, rtol=1e-4, params=None):
    """Like ``gradcheck``, but return the per-tensor ``GradReport`` instead of raising."""
    inputs = [x if isinstance(x, Tensor) else Tensor(x) for x in inputs]
    named = _named_targets(inputs, params)
    if not named:
        raise ValueError("gradcheck: no input or parameter has requires_grad=True, nothing to check")
    targets = [t for _, t in named]
    projection = {}
    analytic = _analytic(fn, inputs, targets, projection)
    numeric = _numerical(fn, inputs, targets, eps, projection)
    return GradReport([(name, a, n) for (name, _), a, n in zip(named, analytic, numeric)],
                      atol=atol, rtol=rtol, left="autograd", right="numeric")


def gradgradcheck(fn, *inputs, eps=1e-6, atol=1e-5, rtol=1e-3):
    """Check second derivatives: autograd's gradients of ``fn``'s gradients against central differences.

    ``fn``'s output is projected to a scalar ``L`` as in ``gradcheck``; its gradients
    ``dL/dx`` (for each input with ``requires_grad``) are taken with
    ``create_graph=True`` and projected in turn with fixed random weights ``w``:
    ``s = sum(<dL/dx, w>)``.  Autograd's ``ds/dx`` (a Hessian-vector product) is
    compared with central differences of ``s`` computed from first-order gradients.
    Returns True or raises ``GradcheckError`` naming the worst element.
    """
    inputs = [x if isinstance(x, Tensor) else Tensor(x) for x in inputs]
    named = _named_targets(inputs, None)
    if not named:
        raise ValueError("gradgradcheck: no input has requires_grad=True, nothing to check")
    targets = [t for _, t in named]
    projection, rng = {}, np.random.default_rng(1)
    weights = [rng.standard_normal(t.shape).astype(t.dtype) for t in targets]

    def first(create_graph):
        loss = _as_scalar(fn(*inputs), projection)
        if not loss.requires_grad:
            return None
        grads = grad(loss, targets, create_graph=create_graph, allow_unused=True)
        terms = [(g * w).sum() for g, w in zip(grads, weights) if g is not None]
        return sum(terms[1:], terms[0]) if terms else None

    s = first(True)
    if s is None or not s.requires_grad:    # first derivatives that are constants: the second ones are 0
        analytic = [np.zeros(t.shape, dtype=t.dtype) for t in targets]
    else:
        analytic = [np.zeros(t.shape, dtype=t.dtype) if g is None else g.data
                    for t, g in zip(targets, grad(s, targets, allow_unused=True))]
    numeric = _differences(lambda: float(first(False).data) if s is not None else 0.0, targets, eps)
    report = GradReport([(name, a, n) for (name, _), a, n in zip(named, analytic, numeric)],
                        atol=atol, rtol=rtol, left="autograd", right="numeric")
    if not report.passed:
        raise GradcheckError("second derivatives: " + report.failure_message())
    return True


def _compare_arrays(name, a, b, atol, rtol):
    """One row of a report: ``a`` (autograd) against ``b`` (the reference), element by element.

    A dict ``name, shape, other_shape, max_abs, rel, worst, left, right, passed``.  An element
    passes when ``|a - b| <= atol + rtol * |b|``; ``worst`` is the index of the element furthest
    beyond that tolerance (or nearest to it when all pass), ``left``/``right`` the values there.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return dict(name=name, shape=a.shape, other_shape=b.shape, max_abs=np.inf, rel=np.inf,
                    worst=None, left=np.nan, right=np.nan, passed=False)
    diff = np.abs(a - b)
    excess = diff - (atol + rtol * np.abs(b))
    excess = np.where(np.isnan(excess), np.inf, excess)
    worst = np.unravel_index(np.argmax(excess), a.shape) if a.size else ()
    # relative to the larger gradient, but never to less than atol: two gradients that are
    # both rounding noise around 0 should not show a relative error near 1
    scale = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0), atol)
    max_abs = float(diff.max(initial=0.0))
    return dict(
        name=name, shape=a.shape, other_shape=b.shape, max_abs=max_abs,
        rel=max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else np.inf),
        worst=tuple(int(i) for i in worst) if a.size else None,
        left=float(a[worst]) if a.size else np.nan, right=float(b[worst]) if a.size else np.nan,
        passed=bool(np.all(excess <= 0)) and not np.isnan(a).any() and not np.isnan(b).any())


class GradReport:
    """Per-tensor comparison of two gradients: shape, max abs difference, relative error, worst index.

    ``rows`` holds one dict per tensor (``name, shape, max_abs, rel, worst, left, right, passed``);
    ``report[name]`` returns a row, ``report.passed`` is True when every row passes, and
    ``print(report)`` shows the table.  The relative error is the max abs difference over the
    largest magnitude of either gradient (at least ``atol``); ``worst`` is the index of the
    element furthest beyond its tolerance, ``left``/``right`` the two values there.
    """

    def __init__(self, entries, atol=1e-6, rtol=1e-4, left="autograd", right="expected"):
        self.atol, self.rtol, self.left, self.right = atol, rtol, left, right
        self.rows = [_compare_arrays(name, a, b, atol, rtol) for name, a, b in entries]

    @property
    def passed(self):
        """True when every row passes."""
        return all(r["passed"] for r in self.rows)

    def __bool__(self):
        """``bool(report)`` is ``report.passed``."""
        return self.passed

    def __getitem__(self, name):
        """The row of the tensor called ``name`` (KeyError listing the names if none is)."""
        for r in self.rows:
            if r["name"] == name:
                return r
        raise KeyError(f"no row named {name!r}; rows are {[r['name'] for r in self.rows]}")

    def failure_message(self):
        """One line per failing tensor: the worst element, the two values and the tolerance it exceeds."""
        lines = []
        for r in self.rows:
            if r["passed"]:
                continue
            if r["shape"] != r["other_shape"]:
                lines.append(f"{r['name']}: {self.left} gradient has shape {r['shape']} but {self.right} "
                             f"has shape {r['other_shape']}")
                continue
            lines.append(f"{r['name']} (shape {r['shape']}): worst element at index {r['worst']}: "
                         f"{self.left} {r['left']:.10g} vs {self.right} {r['right']:.10g}, "
                         f"abs error {abs(r['left'] - r['right']):.3g} > atol {self.atol:g} + "
                         f"rtol {self.rtol:g} * |{self.right}|")
        return "gradients disagree:\n  " + "\n  ".join(lines) if lines else "all gradients agree"

    def __str__(self):
        """The table: one row per tensor, PASS or FAIL in the last column."""
        head = ["tensor", "shape", "max |diff|", "rel error", "worst index", self.left, self.right, "ok"]
        body = [[r["name"], str(r["shape"]), f"{r['max_abs']:.3g}", f"{r['rel']:.3g}", str(r["worst"]),
                 f"{r['left']:.6g}", f"{r['right']:.6g}", "PASS" if r["passed"] else "FAIL"]
                for r in self.rows]
        widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]
        fmt = lambda row: "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
        note = (f"worst index: where |{self.left} - {self.right}| - (atol {self.atol:g} + rtol {self.rtol:g} * "
                f"|{self.right}|) is largest; {self.left} and {self.right} are the values there")
        return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(row) for row in body] + [note])

    __repr__ = __str__


def _check_params(params, who):
    """``params`` as a dict name -> Tensor that requires grad (a list is named p0, p1, ...)."""
    if not isinstance(params, dict):
        params = {getattr(p, "name", None) or f"p{i}": p for i, p in enumerate(params)}
    for k, p in params.items():
        if not isinstance(p, Tensor):
            raise TypeError(f"{who}: parameter {k!r} is a {type(p).__name__}, not a Tensor")
        if not p.requires_grad:
            raise ValueError(f"{who}: parameter {k!r} does not require grad, so autograd "
                             f"computes no gradient for it")
    return params


def _check_expected(params, expected, who):
    """The hand-derived gradients as a dict name -> numpy array, one per parameter, shapes checked."""
    if callable(expected):
        expected = expected()
    if not isinstance(expected, dict):
        raise TypeError(f"{who}: hand-derived gradients must be a dict name -> array (or a "
                        f"callable returning one), got {type(expected).__name__}")
    missing = [k for k in params if k not in expected]
    extra = [k for k in expected if k not in params]
    if missing or extra:
        raise KeyError(f"{who}: hand-derived gradients are missing {missing} and have "
                       f"unknown names {extra}; parameter names are {list(params)}")
    expected = {k: np.asarray(v.data if isinstance(v, Tensor) else v) for k, v in expected.items()}
    wrong = [f"{k!r}: parameter {params[k].shape}, hand-derived {expected[k].shape}"
             for k in params if expected[k].shape != params[k].shape]
    if wrong:
        raise ValueError(f"{who}: hand-derived gradients have the wrong shape: " + "; ".join(wrong))
    return expected


def _backward_keeping_grads(params, make_loss, who):
    """Run ``make_loss()`` and its backward; return the parameters' gradients, leaving their
    ``.grad`` as it was before."""
    saved = {k: p.grad for k, p in params.items()}
    for p in params.values():
        p.grad = None
    try:
        loss = make_loss()
        if not isinstance(loss, Tensor) or loss.size != 1:
            raise ValueError(f"{who}: loss must be a Tensor with one element")
        loss.backward()
        return {k: (np.zeros(p.shape) if p.grad is None else p.grad) for k, p in params.items()}
    finally:
        for k, p in params.items():
            p.grad = saved[k]


def compare_grads(loss, params, expected, atol=1e-8, rtol=1e-6):
    """Compare autograd's gradients of ``loss`` with hand-derived ones.

    ``loss`` is a scalar Tensor, or a function of no arguments that returns one
    (it is called once).  ``params`` is a dict name -> Tensor (for example
    ``dict(model.named_parameters())``) or a list of Tensors (named p0, p1, ...).
    ``expected`` is a dict name -> array, or a callable returning such a dict.
    An element passes when ``|autograd - hand| <= atol + rtol * |hand|``.
    Returns a ``GradReport``; ``print`` it for the table, test ``report.passed``.
    Missing or unknown names raise ``KeyError``; a hand-derived gradient whose
    shape differs from its parameter's raises ``ValueError`` naming both shapes.
    To find the time step where a hand-derived BPTT goes wrong, see
    ``tinygrad_rnn.compare_bptt``.
    """
    params = _check_params(params, "compare_grads")
    expected = _check_expected(params, expected, "compare_grads")
    auto = _backward_keeping_grads(params, lambda: loss() if callable(loss) else loss, "compare_grads")
    return GradReport([(k, auto[k], expected[k]) for k in params], atol=atol, rtol=rtol,
                      left="autograd", right="hand")
