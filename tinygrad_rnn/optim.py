"""Optimisers (PyTorch's update rules) and gradient-norm clipping.  Updates are in place, in each
parameter's dtype; parameters without a gradient are left alone."""
import math
import numbers

import numpy as np

from .tensor import Tensor, _writable

__all__ = ["SGD", "Adam", "clip_grad_norm"]


def _param_list(params, who):
    params = list(params)
    if not params:
        raise ValueError(f"{who}: got an empty parameter list")
    unique, seen = [], set()
    for p in params:
        if not isinstance(p, Tensor):
            raise TypeError(f"{who}: parameters must be Tensors, got {type(p).__name__}")
        if not p.requires_grad:
            raise ValueError(f"{who}: a parameter of shape {p.shape} does not require grad")
        if id(p) not in seen:
            seen.add(id(p))
            unique.append(p)
    return unique


class Optimizer:
    """What SGD and Adam share: the parameter list, the learning rate, ``zero_grad`` and the state dict."""

    def __init__(self, params, lr):
        # numbers.Real also admits numpy scalars (np.float32(0.1)); a bool is not a learning rate
        if not (isinstance(lr, numbers.Real) and not isinstance(lr, bool) and lr > 0 and math.isfinite(lr)):
            raise ValueError(f"{type(self).__name__}: lr must be a positive number, got {lr!r}")
        self.params = _param_list(params, type(self).__name__)
        self.lr = float(lr)

    def zero_grad(self):
        """Forget every parameter's gradient."""
        for p in self.params:
            p.grad = None

    def step(self):
        """Update every parameter that has a gradient (subclasses)."""
        raise NotImplementedError

    def _state(self):
        """``{name: array}`` of everything ``step`` remembers (subclasses)."""
        return {}

    def state_dict(self):
        """The optimiser's memory as ``{name: numpy array}`` (copies), ready for ``np.savez``.

        Together with the parameters it makes a resumed run take exactly the same
        steps.  Array names end in the parameter's position (``m.0``, ``v.0`` ...).
        """
        return {k: np.array(v) for k, v in self._state().items()}

    def load_state_dict(self, state):
        """Restore what ``state_dict`` returned, after checking every key and shape (clear errors)."""
        mine = self._state()
        optional = self._optional_keys()
        missing = [k for k in mine if k not in state and k not in optional]
        extra = [k for k in state if k not in mine and k not in optional]
        if missing or extra:
            raise KeyError(f"{type(self).__name__}.load_state_dict: missing keys {missing}, "
                           f"unexpected keys {extra}")
        for key, value in state.items():
            value = np.asarray(value)
            want = mine[key].shape if key in mine else optional[key]
            if value.shape != want:
                raise ValueError(f"{type(self).__name__}.load_state_dict: {key!r} has shape {value.shape}, "
                                 f"expected {want}")
        self._restore({k: np.asarray(v) for k, v in state.items()})
        return self

    def _optional_keys(self):
        return {}


class SGD(Optimizer):
    """``v = momentum * v + grad; p -= lr * v`` (plain gradient descent when momentum is 0)."""

    def __init__(self, params, lr, momentum=0.0):
        super().__init__(params, lr)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        self.velocity = [None] * len(self.params)

    def step(self):
        """One update of every parameter that has a gradient; parameters without one are left alone."""
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad
            if self.momentum:
                v = self.velocity[i]
                self.velocity[i] = g.copy() if v is None else v * self.momentum + g
                g = self.velocity[i]
            _writable(p)[...] -= self.lr * g

    def _state(self):
        return {f"velocity.{i}": v for i, v in enumerate(self.velocity) if v is not None}

    def _optional_keys(self):
        # a velocity exists once its parameter has had a gradient with momentum on
        return {f"velocity.{i}": p.shape for i, p in enumerate(self.params)} if self.momentum else {}

    def _restore(self, state):
        self.velocity = [state[f"velocity.{i}"].astype(p.dtype) if f"velocity.{i}" in state else None
                         for i, p in enumerate(self.params)]


class Adam(Optimizer):
    """Adam with bias correction: ``p -= lr * m_hat / (sqrt(v_hat) + eps)``."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, lr)
        try:
            b1, b2 = betas
            ok = 0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"Adam: betas must be in [0, 1), got {betas!r}")
        if not eps > 0:
            raise ValueError(f"Adam: eps must be positive, got {eps!r}")
        self.betas, self.eps = (float(b1), float(b2)), float(eps)
        self.t = 0
        # steps each parameter sat out for lack of a gradient: its own step count is t - skipped,
        # as PyTorch counts per parameter, so skipping does not advance its bias correction
        self.skipped = [0] * len(self.params)
        self.m = [np.zeros_like(p.data) for p in self.params]
        self.v = [np.zeros_like(p.data) for p in self.params]

    def step(self):
        """One update of every parameter that has a gradient.

        A parameter without one is skipped, and its bias correction counts only its own steps (as PyTorch).
        """
        self.t += 1
        b1, b2 = self.betas
        for i, (p, m, v) in enumerate(zip(self.params, self.m, self.v)):
            if p.grad is None:
                self.skipped[i] += 1
                continue
            t = self.t - self.skipped[i]
            correction1, correction2 = 1 - b1 ** t, 1 - b2 ** t
            g = p.grad
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            _writable(p)[...] -= self.lr * (m / correction1) / (np.sqrt(v / correction2) + self.eps)

    def _state(self):
        state = {"t": np.array(self.t), "skipped": np.array(self.skipped)}
        for i, (m, v) in enumerate(zip(self.m, self.v)):
            state[f"m.{i}"], state[f"v.{i}"] = m, v
        return state

    def _restore(self, state):
        self.t = int(state["t"])
        self.skipped = [int(k) for k in state["skipped"]]
        for i, (m, v) in enumerate(zip(self.m, self.v)):
            m[...] = state[f"m.{i}"]
            v[...] = state[f"v.{i}"]


def clip_grad_norm(params, max_norm):
    """Scale all gradients together so that their joint L2 norm is at most ``max_norm``.

    Returns the norm before clipping (a float).  As in PyTorch, the scale is
    ``max_norm / (norm + 1e-6)`` and is applied only when it is below 1.
    """
    if not max_norm > 0:
        raise ValueError(f"clip_grad_norm: max_norm must be positive, got {max_norm!r}")
    grads = [p.grad for p in params if p.grad is not None]
    total = math.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads))
    scale = max_norm / (total + 1e-6)
    if scale < 1:
        for g in grads:
            g *= scale
    return total
