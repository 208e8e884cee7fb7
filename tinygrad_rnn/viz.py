"""Pictures of the computation graph and of gradients through time.

The measurements are plain functions returning numbers or text (``to_dot``,
``gradient_through_time``); the PNG plots are a thin layer on top that needs
the optional ``plot`` extra (matplotlib) and returns ``None`` without it.
"""
import numpy as np

from .tensor import Tensor

__all__ = ["to_dot", "step_groups", "retain_all_grads", "gradient_through_time",
           "plot_training", "plot_gradient_norms"]


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
    # DOT strings: backslash and quote escaped, line breaks as DOT's own \n
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def step_groups(root, steps):
    """``{id(node): label}``: the time step each operation under ``root`` belongs to.

    ``steps`` is a list of Tensors, one per time step (say each step's new hidden
    state), labelled ``t = 0, 1, ...``, or a dict ``{tensor: label}`` in time
    order.  An operation belongs to the first step whose tensor depends on it;
    a constant or input that only one step uses belongs to that step; parameters
    and anything else shared by several steps belong to none.
    """
    items = list(steps.items()) if isinstance(steps, dict) else [(s, f"t = {i}") for i, s in enumerate(steps)]
    owner = {}
    nodes = _graph(root)
    for tensor, label in items:
        if not isinstance(tensor, Tensor):
            raise TypeError(f"steps: expected Tensors, got {type(tensor).__name__}")
        stack = [tensor] if id(tensor) not in owner else []
        while stack:
            node = stack.pop()
            if node._parents and id(node) not in owner:
                owner[id(node)] = str(label)
                # an operation already owned by an earlier step has all its inputs owned too
                stack.extend(p for p in node._parents if id(p) not in owner)
    # a constant or input used by one step only (that step's x_t, a constant inside its tanh) is drawn
    # in that step's box; parameters, shared by every step, stay outside
    users = {}
    for node in nodes:
        for p in node._parents:
            users.setdefault(id(p), set()).add(owner.get(id(node)))
    for node in nodes:
        if not node._parents and not node.requires_grad and len(users.get(id(node), ())) == 1:
            (label,) = users[id(node)]
            if label is not None:
                owner[id(node)] = label
    return owner


def to_dot(root, steps=None, title=None, names=None):
    """The graph that produced ``root`` as Graphviz DOT text.

    Each node shows its name or operation, its shape and, once backward has
    run with its gradient kept (leaves always; intermediates after
    ``retain_grad()`` or ``retain_all_grads``), the gradient's norm.  ``steps``
    (see ``step_groups``) draws each time step's operations in a box of its own,
    so the unrolling is visible.  ``names`` (``{name: tensor}``, such as
    ``dict(cell.named_parameters())``) labels those tensors by name.  Draw before backward, or backward with
    ``retain_graph=True``: backward frees the graph it walks.
    """
    if not isinstance(root, Tensor):
        raise TypeError(f"to_dot: expected a Tensor, got {type(root).__name__}")
    nodes = _graph(root)
    given = {id(t): str(n) for n, t in (names or {}).items()}
    owner = step_groups(root, steps) if steps is not None else {}
    lines = ["digraph tinygrad_rnn {", "  rankdir=BT;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];']
    if title:
        lines.append(f"  label={_quote(title)}; labelloc=t;")

    def line(node):
        kind = given.get(id(node)) or node.name or node._op or ("parameter" if node.requires_grad else "input")
        label = f"{kind}\n{tuple(node.shape)}"
        if node.grad is not None:
            label += f"\n|grad| = {np.linalg.norm(node.grad):.3g}"
        fill = "#dbe9f6" if node._parents else ("#fde3c8" if node.requires_grad else "#eeeeee")
        return f"  n{id(node)} [label={_quote(label)}, fillcolor={_quote(fill)}];"

    clusters = {}
    for node in nodes:
        clusters.setdefault(owner.get(id(node)), []).append(node)
    for i, label in enumerate(label for label in dict.fromkeys(owner.values()) if label in clusters):
        lines.append(f"  subgraph cluster_{i} {{")
        lines.append(f'    label={_quote(label)}; style=dashed; color="#888888";')
        lines += ["  " + line(n) for n in clusters[label]]
        lines.append("  }")
    lines += [line(n) for n in clusters.get(None, [])]
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
    """Loss and perplexity per epoch (train and validation) as a PNG at ``path``; None without matplotlib.

    ``history`` is a list of the per-epoch records that ``training.train`` writes
    (``epoch``, ``train_perplexity``, ``valid_perplexity``); ``baseline`` draws the
    unigram perplexity as a dashed line.
    """
    plt = _pyplot()
    if plt is None or not history:
        return None
    from matplotlib.ticker import MaxNLocator, ScalarFormatter
    epochs = [r["epoch"] for r in history]
    curves = {"train": [r["train_perplexity"] for r in history],
              "validation": [r["valid_perplexity"] for r in history]}
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    for label, values in curves.items():
        left.plot(epochs, np.log(values), marker="o", label=label)
        right.plot(epochs, values, marker="o", label=label)
    if baseline is not None:
        left.axhline(np.log(baseline), color="gray", linestyle="--", label="unigram baseline")
        right.axhline(baseline, color="gray", linestyle="--", label="unigram baseline")
    left.set_ylabel("loss (cross-entropy per character, nats)")
    right.set_ylabel("perplexity")
    right.set_yscale("log")
    right.yaxis.set_major_formatter(ScalarFormatter())
    right.yaxis.set_minor_formatter(ScalarFormatter())
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.legend()
    fig.suptitle("character model training")
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
    ax.set_ylabel(r"$\|\partial L / \partial h_t\|$  (L at the last step)")
    ax.set_title("gradient through time")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
