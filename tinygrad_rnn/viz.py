"""Pictures of the computation graph and of gradients through time.

The measurements are plain functions returning numbers or text (``to_dot``,
``gradient_through_time``); the PNG plots are a thin layer on top that needs
the optional ``plot`` extra (matplotlib) and returns ``None`` without it.
"""
import contextlib

import numpy as np

from . import tensor as _engine
from .tensor import Tensor

__all__ = ["StepRecorder", "to_dot", "retain_all_grads", "gradient_through_time",
           "plot_training", "plot_gradient_norms"]


class StepRecorder:
    """Remembers which operations each time step created, so that ``to_dot`` can group them::

        steps = StepRecorder()
        for t in range(T):
            with steps.step(f"t = {t}"):
                h = cell(xs[:, t], h)
        dot = to_dot(loss, groups=steps.groups)
    """

    def __init__(self):
        self.groups = []

    @contextlib.contextmanager
    def step(self, label):
        first = next(_engine._creation_counter)   # nodes are numbered in creation order
        yield
        self.groups.append((str(label), first, next(_engine._creation_counter)))


def _graph(root):
    """Every node reachable from ``root`` through the recorded parents (no recursion)."""
    nodes, stack = {id(root): root}, [root]
    while stack:
        for p in stack.pop()._parents:
            if id(p) not in nodes:
                nodes[id(p)] = p
                stack.append(p)
    return list(nodes.values())


def retain_all_grads(root):
    """Ask every intermediate result under ``root`` to keep its ``.grad`` after backward."""
    for node in _graph(root):
        if node.requires_grad:
            node.retain_grad()


def _quote(text):
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(root, groups=None, title=None):
    """The graph that produced ``root`` as Graphviz DOT text.

    Each node shows its operation (or name), shape and, once backward has run
    with its gradient kept, the gradient's norm.  ``groups`` (from
    ``StepRecorder``) draws each time step's operations in a box of its own.
    Draw before backward, or backward with ``retain_graph=True``: backward
    frees the graph it walks.
    """
    if not isinstance(root, Tensor):
        raise TypeError(f"to_dot: expected a Tensor, got {type(root).__name__}")
    nodes = _graph(root)
    lines = ["digraph tinygrad_rnn {", "  rankdir=BT;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];']
    if title:
        lines.append(f"  label={_quote(title)}; labelloc=t;")

    def line(node):
        kind = node.name or node._op or ("parameter" if node.requires_grad else "input")
        label = f"{kind}\n{tuple(node.shape)}"
        if node.grad is not None:
            label += f"\n|grad| = {np.linalg.norm(node.grad):.3g}"
        fill = "#dbe9f6" if node._parents else ("#fde3c8" if node.requires_grad else "#eeeeee")
        return f"  n{id(node)} [label={_quote(label)}, fillcolor={_quote(fill)}];"

    grouped = set()
    for i, (label, first, last) in enumerate(groups or []):
        members = [n for n in nodes if first < n._seq < last]
        if not members:
            continue
        lines.append(f"  subgraph cluster_{i} {{")
        lines.append(f"    label={_quote(label)}; style=dashed; color=\"#888888\";")
        lines += ["  " + line(n) for n in members]
        lines.append("  }")
        grouped.update(id(n) for n in members)
    lines += [line(n) for n in nodes if id(n) not in grouped]
    for node in nodes:
        lines += [f"  n{id(p)} -> n{id(node)};" for p in node._parents]
    lines.append("}")
    return "\n".join(lines) + "\n"


def gradient_through_time(cell, xs, state=None, loss=None):
    """The norm of dL/dh_t for every time step t, as a numpy array.

    The cell is unrolled over ``xs`` (batch, time, features); ``loss`` maps the
    list of per-step states (for a tuple state, its first element) to a scalar
    Tensor, by default the sum of the last state, so the numbers show how much
    of the final error reaches each earlier step: shrinking towards t = 0 is a
    vanishing gradient, growing is an exploding one.
    """
    xs = xs if isinstance(xs, Tensor) else Tensor(np.asarray(xs))
    if xs.ndim != 3:
        raise ValueError(f"gradient_through_time: xs must be (batch, time, features), got shape {xs.shape}")
    if state is None and hasattr(cell, "initial_state"):
        state = cell.initial_state(xs.shape[0])
    hs = []
    for t in range(xs.shape[1]):
        state = cell(xs[:, t], state)
        h = state[0] if isinstance(state, (tuple, list)) else state
        hs.append(h.retain_grad())
    out = hs[-1].sum() if loss is None else loss(hs)
    out.backward()
    return np.array([0.0 if h.grad is None else float(np.linalg.norm(h.grad)) for h in hs])


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:   # the plot extra is optional
        return None
    return plt


def plot_training(history, path, baseline=None):
    """Loss and perplexity per epoch as a PNG at ``path``; None without matplotlib."""
    plt = _pyplot()
    if plt is None or not history:
        return None
    epochs = [r["epoch"] for r in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(epochs, [r["train_perplexity"] for r in history], marker="o", label="train")
    ax.plot(epochs, [r["valid_perplexity"] for r in history], marker="o", label="validation")
    if baseline is not None:
        ax.axhline(baseline, color="gray", linestyle="--", label="unigram baseline")
    ax.set_xlabel("epoch")
    ax.set_ylabel("perplexity")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("character model training")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_gradient_norms(curves, path):
    """``{label: norms per step}`` on a log scale as a PNG at ``path``; None without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, norms in curves.items():
        ax.plot(np.arange(len(norms)), np.maximum(norms, 1e-300), label=label)
    ax.set_yscale("log")
    ax.set_xlabel("time step t")
    ax.set_ylabel("|dL/dh_t|  (L at the last step)")
    ax.set_title("gradient through time")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
