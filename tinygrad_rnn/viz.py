"""Pictures of the computation graph and of gradients through time.

The measurements are plain functions returning numbers or text (``to_dot``,
``to_html``, ``gradient_through_time``); the PNG plots are a thin layer on top
that needs the optional ``plot`` extra (matplotlib) and returns ``None`` without
it.  ``to_dot`` and ``to_html`` return strings that Jupyter shows as pictures
(``Dot``, ``Page``).
"""
import html
import re
import shutil
import subprocess

import numpy as np

from .composites import CompositeOp
from .tensor import Tensor, _topological_order

__all__ = ["to_dot", "to_html", "Dot", "Page", "step_groups", "retain_all_grads", "gradient_through_time",
           "plot_training", "plot_gradient_norms"]


def _graph(*roots):
    """Every node reachable from ``roots`` through the recorded parents (no recursion)."""
    nodes = {id(r): r for r in roots}
    stack = list(nodes.values())
    while stack:
        for p in stack.pop()._parents:
            if id(p) not in nodes:
                nodes[id(p)] = p
                stack.append(p)
    return list(nodes.values())


class Dot(str):
    """DOT text (a ``str``) that Jupyter shows as an SVG picture when Graphviz's ``dot`` is installed."""

    def svg(self):
        """The picture as SVG text, drawn by Graphviz's ``dot`` program; RuntimeError without it."""
        if "_svg" not in self.__dict__:   # kept under another name than the method's
            exe = shutil.which("dot")
            if exe is None:
                raise RuntimeError("Graphviz's dot program is not installed (e.g. apt-get install graphviz): "
                                   "the DOT text cannot be drawn as a picture here")
            done = subprocess.run([exe, "-Tsvg"], input=str(self), capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"Graphviz's dot could not draw this graph: {done.stderr.strip()[:300]}")
            self.__dict__["_svg"] = done.stdout
        return self.__dict__["_svg"]

    def _repr_svg_(self):
        try:
            return self.svg()
        except RuntimeError:
            return None   # _repr_html_ says why

    def _repr_html_(self):
        try:
            self.svg()
            return None   # the SVG is shown
        except RuntimeError as e:
            return f"<p><b>{html.escape(str(e))}</b></p><pre>{html.escape(str(self))}</pre>"


class Page(str):
    """A self-contained HTML page (a ``str``) that Jupyter shows inline, in a frame of its own."""

    def _repr_html_(self):
        return ('<iframe style="width:100%;height:640px;border:1px solid #ccc" '
                f'srcdoc="{html.escape(str(self), quote=True)}"></iframe>')


def retain_all_grads(root):
    """Ask every intermediate result under ``root`` to keep its ``.grad`` after backward.

    The hidden node of a several-output composite (``lstm_cell``) is left out:
    what reaches it is its outputs' gradients, which they keep themselves.
    """
    nodes = _graph(root)
    hubs = _ports(nodes)
    for node in nodes:
        if node.requires_grad and id(node) not in hubs:
            node.retain_grad()


# ---------------------------------------------------------------------- composites
def _is_composite(node):
    """A compiled composition's node that still has its graph (so that it can be expanded)."""
    return isinstance(node._op, CompositeOp) and bool(node._parents)


def _ports(nodes):
    """``{id(hub): (hub, [(k, output k), ...])}`` for the several-output composites among ``nodes``.

    The outputs of such a composite hang off one hidden node (the hub), and each
    is named after it: ``lstm_cell[0]``.  Only the outputs that are in ``nodes`` are listed.
    """
    hubs = {}
    for node in nodes:
        if len(node._parents) == 1 and _is_composite(node._parents[0]):
            hub = node._parents[0]
            m = re.fullmatch(re.escape(str(hub._op)) + r"\[(\d+)\]", str(node._op))
            if m:
                hubs.setdefault(id(hub), (hub, []))[1].append((int(m.group(1)), node))
    for _, outs in hubs.values():
        outs.sort(key=lambda ko: ko[0])
    return hubs


class _NotExpandable(RuntimeError):
    """A composite node whose plain composition cannot be run again (its module is gone)."""


def _expansion(node, out_grads=()):
    """A composite node's plain composition, built again: ``(leaves, outputs, inner nodes, gradients)``.

    ``leaves`` stand for the node's Tensor inputs (in order), ``outputs`` is a
    list, ``inner nodes`` every node reachable from the outputs, ``gradients``
    ``{id(inner node): dL/d it}`` when ``out_grads`` (one per output, or None)
    holds a gradient: the engine's backward from each output with its gradient
    (see ``_gradients_from``).
    """
    try:
        leaves, outs = node._op.expand(node)
    except ReferenceError:   # the composition was a method of a module that no longer exists
        raise _NotExpandable(f"{node._op}: the module it is a method of no longer exists, so its composition "
                            f"cannot be run again; keep the module alive to draw its inside") from None
    outs = [outs] if isinstance(outs, Tensor) else list(outs)
    inner = _graph(*outs)
    grads = _gradients_from(outs, out_grads, inner) if any(g is not None for g in out_grads) else {}
    return leaves, outs, inner, grads


def _gradients_from(outs, out_grads, nodes):
    """``{id(node): gradient}`` in the graph of ``outs``: backward from each output with its gradient.

    The gradients of the inner nodes are those of the loss, since the loss
    reaches them only through the outputs.  Every node keeps its gradient for
    that backward; afterwards each ``.grad`` and retain flag is put back as it
    was, so the parameters the composition shares with the outer graph keep
    the caller's gradients.
    """
    hubs = _ports(nodes)
    saved = [(n, n.grad, n._retain_grad) for n in nodes]
    try:
        for n in nodes:
            n.grad = None
            n._retain_grad = n.requires_grad and id(n) not in hubs
        for out, g in zip(outs, out_grads):
            if g is not None and out.requires_grad:
                out.backward(g, retain_graph=True)
        return {id(n): n.grad for n in nodes if n.grad is not None}
    finally:
        for n, grad, keep in saved:
            n.grad, n._retain_grad = grad, keep


def _output_grads(node, hubs, grad_of):
    """The gradients of a composite's outputs (None where unknown), by ``grad_of(tensor)``."""
    if id(node) not in hubs:
        return [grad_of(node)]
    found = dict(hubs[id(node)][1])
    n_out = max(found) + 1
    return [grad_of(found[k]) if k in found else None for k in range(n_out)]


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


def to_dot(root, steps=None, title=None, names=None, expand=False):
    """The graph that produced ``root`` as Graphviz DOT text.

    Each node shows its name or operation, its shape and, once backward has
    run with its gradient kept (leaves always; intermediates after
    ``retain_grad()`` or ``retain_all_grads``), the gradient's norm.  ``steps``
    (see ``step_groups``) draws each time step's operations in a box of its own,
    so the unrolling is visible.  ``names`` (``{name: tensor}``, such as
    ``dict(cell.named_parameters())``) labels those tensors by name.  Draw before backward, or backward with
    ``retain_graph=True``: backward frees the graph it walks.

    A compiled composition (``tanh``, ``cross_entropy``, ``rnn_cell``) is one
    node named after it.  One with several outputs (``lstm_cell``) is one node
    with a port for each output used, showing that output's name (or ``[k]``),
    shape and gradient norm.  ``expand=True`` draws each composition's
    primitives instead, inside a box labelled with its name: the composition
    is run again node by node on the node's input values
    (``CompositeOp.expand``), and when its outputs have gradients, the inner
    gradients come from the engine's backward of those outputs with their
    gradients (the parameters' ``.grad`` are left as they were).
    """
    if not isinstance(root, Tensor):
        raise TypeError(f"to_dot: expected a Tensor, got {type(root).__name__}")
    nodes = _graph(root)
    given = {id(t): str(n) for n, t in (names or {}).items()}
    owner = step_groups(root, steps) if steps is not None else {}
    hubs = _ports(nodes)
    port_of = {id(out): (hub, k) for hub, outs in hubs.values() for k, out in outs}
    lines = ["digraph tinygrad_rnn {", "  rankdir=BT;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];']
    if title:
        lines.append(f"  label={_quote(title)}; labelloc=t;")

    same = {}         # id(tensor) -> the tensor drawn in its place (an expansion's leaf -> the outer input, ...)
    inner_grad = {}   # gradients of the expansions' nodes
    named = {}        # id(tensor) -> a name shown as "name = operation"
    boxes = {}        # step label (or None) -> [(composite name, [inner nodes]), ...]
    shown = [n for n in nodes if id(n) not in port_of]
    if expand:
        outer = {id(n) for n in nodes}
        for node in [n for n in shown if _is_composite(n)]:
            grads = _output_grads(node, hubs, lambda t: t.grad)
            leaves, outs, inner, g = _expansion(node, grads)
            inner_grad.update((k, v) for k, v in g.items() if k not in outer)   # the outer nodes keep theirs
            same.update({id(leaf): p for leaf, p in zip(leaves, node._parents)})
            stands = dict(hubs[id(node)][1]) if id(node) in hubs else {0: node}
            for k, t in stands.items():
                same[id(t)] = outs[k]
                if given.get(id(t)) or t.name:
                    named[id(outs[k])] = given.get(id(t)) or t.name
            hidden = outer | {id(leaf) for leaf in leaves}
            drawn = [n for n in sorted(inner, key=lambda n: n._seq) if id(n) not in hidden]
            boxes.setdefault(owner.get(id(node)), []).append((str(node._op), drawn))
        shown = [n for n in shown if not _is_composite(n)]
    else:
        for n in shown:
            if _is_composite(n) and (given.get(id(n)) or n.name):
                named[id(n)] = given.get(id(n)) or n.name

    def resolve(t):
        while id(t) in same and same[id(t)] is not t:
            t = same[id(t)]
        return t

    def end(t):   # where an edge leaving t starts
        t = resolve(t)
        if id(t) in port_of:
            hub, k = port_of[id(t)]
            return f"n{id(hub)}:o{k}:n"
        return f"n{id(t)}"

    def grad_of(node):
        return inner_grad.get(id(node), node.grad)

    def first_line(node):
        if id(node) in named:
            return f"{named[id(node)]} = {node._op}"
        return given.get(id(node)) or node.name or node._op or ("parameter" if node.requires_grad else "input")

    def line(node):
        if id(node) in hubs:
            return hub_line(node, hubs[id(node)][1])
        label = f"{first_line(node)}\n{tuple(node.shape)}"
        g = grad_of(node)
        if g is not None:
            label += f"\n|grad| = {np.linalg.norm(g):.3g}"
        fill = "#dbe9f6" if node._parents else ("#fde3c8" if node.requires_grad else "#eeeeee")
        return f"  n{id(node)} [label={_quote(label)}, fillcolor={_quote(fill)}];"

    def hub_line(hub, outs):
        # an HTML-like label: a row of output ports above (edges go up) and the composition's name below
        cells = []
        for k, out in outs:
            text = [given.get(id(out)) or out.name or f"[{k}]", str(tuple(out.shape))]
            if out.grad is not None:
                text.append(f"|grad| = {np.linalg.norm(out.grad):.3g}")
            cells.append(f'<td port="o{k}">' + "<br/>".join(html.escape(x) for x in text) + "</td>")
        return (f'  n{id(hub)} [label=<<table border="0" cellborder="1" cellspacing="0" cellpadding="4" '
                f'bgcolor="#dbe9f6"><tr>{"".join(cells)}</tr><tr><td colspan="{len(outs)}"><b>'
                f'{html.escape(first_line(hub))}</b></td></tr></table>>, shape=plain, style=solid];')

    def box_lines(label, indent):
        out = []
        for name, inner in boxes.get(label, ()):
            ident = re.sub(r"\W", "_", name)   # DOT identifiers: letters, digits, underscores
            out.append(f"{indent}subgraph cluster_{ident}_{id(inner)} {{")
            out.append(f'{indent}  label={_quote(name)}; labelloc=b; labeljust=l; style="rounded,filled"; '
                       f'color="#3d6d99"; fillcolor="#f6f9fc"; fontname="Helvetica"; fontsize=10;')
            out += [indent + line(n) for n in inner]
            out.append(f"{indent}}}")
        return out

    clusters = {}
    for node in shown:
        clusters.setdefault(owner.get(id(node)), []).append(node)
    labels = [label for label in dict.fromkeys(owner.values()) if label in clusters or label in boxes]
    for i, label in enumerate(labels):
        lines.append(f"  subgraph cluster_{i} {{")
        lines.append(f'    label={_quote(label)}; style=dashed; color="#888888";')
        lines += ["  " + line(n) for n in clusters.get(label, [])]
        lines += box_lines(label, "    ")
        lines.append("  }")
    lines += [line(n) for n in clusters.get(None, [])]
    lines += box_lines(None, "  ")
    drawn = shown + [n for boxed in boxes.values() for _, inner in boxed for n in inner]
    for node in drawn:
        lines += [f"  {end(p)} -> n{id(node)};" for p in node._parents]
    lines.append("}")
    return Dot("\n".join(lines) + "\n")


def _inner_graph(node, out_grads=(), labels=None):
    """The subgraph a composite node stands for, or None for an ordinary operation.

    A composite's page node carries it, hidden until the node is clicked:
    ``{"nodes": [{"label": ..., "op": ..., "kind": ..., "shape": ..., "value": ..., "grad": ...}, ...],
    "edges": [(i, j), ...]}`` with the nodes listed inputs first and each edge
    from input ``i`` to result ``j``.  It is the plain composition run again on
    the node's input values (``CompositeOp.expand``); the inputs and parameters
    are labelled like the outer tensors they stand for (``labels``:
    ``{id(tensor): label}``, else their names).  ``out_grads`` (the gradients of
    the node's outputs, None where unknown) gives each inner operation its
    gradient, by the engine's backward from the outputs (see ``_gradients_from``).
    """
    from .viz_html import summary
    if not _is_composite(node):
        return None
    try:
        leaves, outs, inner, grads = _expansion(node, out_grads)
    except _NotExpandable:    # drawn as one node that does not open
        return None
    stands = {id(leaf): p for leaf, p in zip(leaves, node._parents)}
    order = sorted(inner, key=lambda n: n._seq)   # creation order: every input before its results
    index = {id(n): i for i, n in enumerate(order)}
    labels = labels or {}
    records = []
    for n in order:
        outer = stands.get(id(n), n)   # an input stands for an outer tensor, maybe an operation's result
        kind = ("op" if n._parents else "parameter" if outer.requires_grad and not outer._parents
                else "const" if outer._op == "const" else "input")
        label = labels.get(id(outer)) or outer.name or (n._op if n._parents else kind)
        records.append({"label": label, "op": n._op if n._parents else None, "kind": kind, "shape": n.shape,
                        "value": summary(n.data),
                        # the inputs' share of their gradient would read as their whole gradient: ops only
                        "grad": summary(grads[id(n)]) if n._parents and id(n) in grads else None})
    edges = [(index[id(p)], index[id(n)]) for n in order for p in n._parents]
    return {"nodes": records, "edges": edges}


def _all_gradients(root):
    """``{id(node): dL/dnode}`` for every node that a gradient reaches, by the engine's own backward.

    Every node is asked to keep its gradient for one ``backward(retain_graph=True)``
    starting from no gradients; then each node's ``.grad`` and retain flag are put
    back exactly as they were (the same arrays), so the caller's graph and
    gradients are untouched and can still be walked.
    """
    nodes = _graph(root)
    return _gradients_from([root], [np.ones_like(root.data)], nodes)


_STATE_NAME = re.compile(r"^h[_(\[]?(-?\d+)[)\]]?$")   # h_3, h(3), h[3], h3: how states are named


def _shape_text(shape):
    return str(tuple(int(n) for n in shape))


def to_html(loss, steps=None, names=None, title=None):
    """The graph of ``loss`` as ONE self-contained, interactive HTML page (a ``Page``, which is a ``str``).

    The page loads nothing from anywhere (no network, no files): styles, script,
    data and the SVG drawing are all inside it.  Clicking a node shows its
    operation, shape, value and gradient dL/dnode (min, max, mean, norm, and the
    whole array when it has at most 64 elements).  A replay (buttons, or the
    arrow keys and space) steps through the nodes in the order the engine's
    backward visits them, lighting each and showing the gradient that arrives;
    a side plot grows |dL/dh_t| over t as the replay goes back through time.
    A composite node (one node for a whole composition) shows its inner graph
    when clicked.

    The gradients are the engine's own: ``to_html`` runs ``loss.backward`` once,
    with the graph retained, keeping every node's gradient, and then puts every
    ``.grad`` (leaves and intermediates) back as it was; so the graph must still be
    alive (build the page before ``backward()``, or after ``backward(retain_graph=True)``)
    and the caller's gradients do not change.  A loss that does not require grad
    is drawn with its values only.

    ``steps`` (as in ``step_groups``: the per-step states h_t as a list, or a dict
    ``{tensor: label}`` in time order) boxes each time step and gives the plot its
    states.  Without it, tensors named like ``h_3`` or ``h(3)`` (by ``names`` or
    their ``.name``) are taken as the states.  ``names`` (``{name: tensor}``) labels
    tensors; ``title`` heads the page.
    """
    from . import viz_html
    if not isinstance(loss, Tensor):
        raise TypeError(f"to_html: expected a Tensor, got {type(loss).__name__}")
    if loss.requires_grad and loss.size != 1:
        raise ValueError(f"to_html: the loss must have one element to take gradients from, got shape {loss.shape} "
                         f"(reduce it first, e.g. loss.sum())")
    # creation order: every input before the results made from it (constants, made on the fly, first)
    nodes = sorted(_graph(loss), key=lambda n: n._seq)
    index = {id(n): i for i, n in enumerate(nodes)}
    given = {id(t): str(n) for n, t in (names or {}).items()}
    label = {id(n): given.get(id(n)) or n.name for n in nodes}

    states = _states(nodes, label, steps)
    owner = step_groups(loss, {n: f"t = {t}" for t, n in states}) if states else {}

    grads, order, reason = {}, [], None
    hubs = _ports(nodes)
    if loss.requires_grad:
        try:
            grads = _all_gradients(loss)
        except RuntimeError as e:
            raise RuntimeError(f"to_html needs the graph of the loss alive: {e}") from None
        for hub, outs in hubs.values():
            # what reaches the hidden node of a several-output composite: its outputs' gradients, stacked
            arriving = [grads[id(out)] for _, out in outs if id(out) in grads]
            if arriving:
                same_shape = len({g.shape for g in arriving}) == 1
                grads[id(hub)] = np.stack(arriving) if same_shape else np.concatenate([g.ravel() for g in arriving])
        order = [index[id(n)] for n in _topological_order(loss) if id(n) in grads]
    else:
        reason = "none: the loss does not require grad, so there is no backward to show"

    edges = [(index[id(p)], index[id(n)]) for n in nodes for p in n._parents]
    # with time steps, the leaves no step owns (the shared parameters) stand apart on the left
    apart = {i for i, n in enumerate(nodes) if owner and not n._parents and id(n) not in owner}
    rank = {f"t = {t}": k for k, (t, _) in enumerate(states)}
    pos, _, _ = viz_html.place(len(nodes), edges, apart, [rank.get(owner.get(id(n))) for n in nodes])
    records = []
    for i, n in enumerate(nodes):
        kind = "op" if n._parents else "parameter" if n.requires_grad else "const" if n._op == "const" else "input"
        records.append({
            "label": label[id(n)] or n._op or kind, "op": n._op if n._parents else None, "kind": kind,
            "shape": [int(k) for k in n.shape], "shape_text": _shape_text(n.shape), "dtype": str(n.dtype),
            "seq": n._seq, "step": owner.get(id(n)), "x": pos[i][0], "y": pos[i][1],
            "value": viz_html.summary(n.data),
            "grad": viz_html.summary(grads[id(n)]) if id(n) in grads else None,
            "inner": _checked_inner(n, label[id(n)] or n._op or kind,
                                    _output_grads(n, hubs, lambda t: grads.get(id(t))), label)})
    data = {"nodes": records, "edges": edges, "order": order, "no_grad_reason": reason,
            "states": [{"t": t, "node": index.get(id(n)),
                        "norm": float(np.linalg.norm(grads[id(n)])) if id(n) in grads else None}
                       for t, n in states],
            "note": "Gradients by one backward(retain_graph=True) of the engine, every node keeping its "
                    "gradient; the replay lists the nodes in the order that backward visits them."}
    return Page(viz_html.page(data, title or f"backward through the graph of {records[-1]['label']}"))


def _states(nodes, label, steps):
    """``[(t, h_t), ...]`` in time order: from ``steps`` (unnamed states get the label h(t)), or by name."""
    if steps is None:
        found = sorted((int(m.group(1)), n) for n in nodes
                       if label[id(n)] and (m := _STATE_NAME.match(label[id(n)])))
        return [(str(t), n) for t, n in found]
    states = [(str(t), n) for n, t in steps.items()] if isinstance(steps, dict) else list(enumerate(steps))
    for t, n in states:
        if not isinstance(n, Tensor):
            raise TypeError(f"to_html: steps must be Tensors, got {type(n).__name__} at t = {t}")
        if id(n) not in label:
            raise ValueError(f"to_html: the step tensor at t = {t} is not part of the graph of the loss")
        if not isinstance(steps, dict):
            label[id(n)] = label[id(n)] or f"h({t})"
    return [(str(t), n) for t, n in states]


def _checked_inner(node, name, out_grads=(), labels=None):
    """``_inner_graph(node, ...)`` in the page's form (labels and shapes as text), checked."""
    inner = _inner_graph(node, out_grads, labels)
    if inner is None:
        return None
    nodes = [{"label": str(n.get("label") or n.get("op") or "?"), "op": n.get("op"), "kind": n.get("kind", "op"),
              "shape_text": _shape_text(n["shape"]) if n.get("shape") is not None else "",
              "value": n.get("value"), "grad": n.get("grad")}
             for n in inner["nodes"]]
    edges = [(int(s), int(d)) for s, d in inner["edges"]]
    for s, d in edges:
        if not 0 <= s < d < len(nodes):
            raise ValueError(f"inner graph of {name}: edge ({s}, {d}) must go from an earlier node to a later "
                             f"one of its {len(nodes)} nodes (list the nodes inputs first)")
    return {"label": name, "nodes": nodes, "edges": edges}


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
