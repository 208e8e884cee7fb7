"""The page of ``viz.to_html``: node positions computed here, the graph written as inline SVG.

``viz`` gathers what the page shows (each node's value and gradient, the
order in which backward visits the nodes); this module lays the graph out in
layers and fills the template ``viz_page.html``, whose own script adds the
clicks, the replay and the side plot.  Nothing in the page refers to anything
outside it.
"""
import html
import json
import re
from importlib import resources

import numpy as np

NODE_W, NODE_H = 92, 38      # a node's box
DX, DY = 118, 56             # from one column (row) of nodes to the next
MARGIN = 30
SMALL = 64                   # arrays with at most this many elements are shown in full


def summary(a):
    """What the page shows of an array: min, max, mean and norm, and the array itself when it is small."""
    a = np.asarray(a)
    out = {"size": int(a.size), "dtype": str(a.dtype)}
    if a.dtype.kind == "c":   # no summaries of complex numbers; shown as numpy prints them
        out["text"] = np.array2string(a) if a.size <= SMALL else None
        return out
    f = a.astype(np.float64)
    if a.size:
        out.update(min=float(f.min()), max=float(f.max()), mean=float(f.mean()), norm=float(np.linalg.norm(f)))
    out["array"] = f.tolist() if a.size <= SMALL else None
    return out


def layers(count, edges):
    """The column of each node ``0 .. count-1``, given in topological order (inputs before results).

    Columns count back from the last node (the loss), each node one column left
    of its nearest user: the longest path to the loss.  A leaf thus sits next to
    the first step that uses it, and an operation next to the one that takes
    its result, so the time steps of an unrolled graph follow one another.
    """
    users = [[] for _ in range(count)]
    for s, d in edges:
        users[s].append(d)
    depth = [0] * count
    for i in reversed(range(count)):
        if users[i]:
            depth[i] = max(depth[u] for u in users[i]) + 1
    deepest = max(depth, default=0)
    return [deepest - d for d in depth]


def rows(columns, edges, sweeps=4):
    """A vertical position for each node: near the mean of its neighbours', never overlapping in a column."""
    count = len(columns)
    near = [[] for _ in range(count)]
    for s, d in edges:
        near[s].append(d)
        near[d].append(s)
    by_column = {}
    for i, c in enumerate(columns):
        by_column.setdefault(c, []).append(i)
    y = [0.0] * count
    for members in by_column.values():
        for k, i in enumerate(members):
            y[i] = k * DY
    order = sorted(by_column)
    for sweep in range(sweeps):
        for c in (order if sweep % 2 == 0 else reversed(order)):
            members = by_column[c]
            wish = {i: (sum(y[j] for j in near[i]) / len(near[i]) if near[i] else y[i]) for i in members}
            members.sort(key=lambda i: wish[i])
            floor = None
            for i in members:
                y[i] = wish[i] if floor is None else max(wish[i], floor)
                floor = y[i] + DY
    top = min(y, default=0.0)
    return [v - top for v in y]


def separate(columns, edges, step_of):
    """Shift later time steps right until no step shares a column with the one before it.

    ``step_of[i]`` is node i's time step (0, 1, ...) or None.  Moved are the
    nodes of the later steps, and the operations no step owns (those after the
    last step); every edge still points right, since no step feeds an earlier one.
    """
    results = {d for _, d in edges}   # nodes made from others (not leaves)
    columns = list(columns)
    last = max((s for s in step_of if s is not None), default=-1)
    for t in range(1, last + 1):
        before = [columns[i] for i, s in enumerate(step_of) if s == t - 1]
        now = [columns[i] for i, s in enumerate(step_of) if s == t]
        if not before or not now or min(now) > max(before):
            continue
        low, shift = min(now), max(before) - min(now) + 1
        for i, s in enumerate(step_of):
            if columns[i] >= low and ((s is not None and s >= t) or (s is None and i in results)):
                columns[i] += shift
    return columns


def place(count, edges, apart=(), step_of=None):
    """``(x, y)`` of each node's centre, and the width and height that hold them all.

    The nodes in ``apart`` (the parameters shared by every time step) get a
    column of their own on the left, outside every step; ``step_of`` (see
    ``separate``) keeps the time steps side by side without overlapping.
    """
    columns = layers(count, edges)
    if step_of is not None:
        columns = separate(columns, edges, step_of)
    if apart:
        columns = [-1 if i in apart else c for i, c in enumerate(columns)]
        first = min(columns)
        columns = [c - first for c in columns]
    ys = rows(columns, edges)
    xs = [MARGIN + NODE_W / 2 + c * DX for c in columns]
    ys = [MARGIN + 20 + NODE_H / 2 + v for v in ys]   # 20: room for the time-step labels above
    width = max(xs, default=0) + NODE_W / 2 + MARGIN
    height = max(ys, default=0) + NODE_H / 2 + MARGIN
    return list(zip(xs, ys)), width, height


def _edge_path(a, b):
    (x1, y1), (x2, y2) = a, b
    x1, x2 = x1 + NODE_W / 2, x2 - NODE_W / 2
    bend = max(20.0, (x2 - x1) / 2)
    return f"M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"


def _short(text, n=13):
    text = str(text)
    return text if len(text) <= n else text[:n - 1] + "\u2026"


def _node_svg(i, node, x, y, css="node", attrs=""):
    lines = [_short(node["label"]), _short(node.get("shape_text", ""))]
    title = f'{node["label"]} ({node.get("op") or node.get("kind", "")}) {node.get("shape_text", "")}'
    return (f'<g class="{css}" data-i="{i}"{attrs} transform="translate({x:.1f},{y:.1f})" tabindex="0">'
            f'<title>{html.escape(title)}</title>'
            f'<rect x="{-NODE_W / 2}" y="{-NODE_H / 2}" width="{NODE_W}" height="{NODE_H}" rx="7"/>'
            f'<text y="-3">{html.escape(lines[0])}</text>'
            f'<text class="shape" y="12">{html.escape(lines[1])}</text></g>')


def _inner_svg(i, inner, x, y, width):
    """A composite's inner graph, laid out like the outer one, in a framed box below the node (hidden)."""
    pos, w, h = place(len(inner["nodes"]), inner["edges"])
    left = min(max(x - w / 2, 4.0), max(width - w - 4, 4.0))
    top = y + NODE_H / 2 + 12
    parts = [f'<g class="inner" id="inner-{i}" data-i="{i}" style="display:none" '
             f'transform="translate({left:.1f},{top:.1f})">',
             f'<rect class="frame" x="0" y="0" width="{w:.1f}" height="{h:.1f}" rx="9"/>',
             f'<text class="frame-label" x="10" y="18">{html.escape(inner["label"])}: inside</text>']
    parts += [f'<path class="edge" d="{_edge_path(pos[s], pos[d])}"/>' for s, d in inner["edges"]]
    for k, node in enumerate(inner["nodes"]):
        parts.append(_node_svg(k, node, *pos[k], css=f"node kind-{node.get('kind', 'op')} inner-node",
                               attrs=f' data-outer="{i}"'))
    parts.append("</g>")
    return "".join(parts), top + h


def graph_svg(nodes, edges, boxes):
    """The graph as one ``<svg>`` element; ``nodes`` carry ``x``, ``y``, ``label``, ``kind`` and maybe ``inner``."""
    width = max((n["x"] for n in nodes), default=0) + NODE_W / 2 + MARGIN
    height = max((n["y"] for n in nodes), default=0) + NODE_H / 2 + MARGIN
    parts = []
    for box in boxes:
        parts.append(f'<rect class="stepbox" x="{box["x"]:.1f}" y="{box["y"]:.1f}" width="{box["w"]:.1f}" '
                     f'height="{box["h"]:.1f}" rx="10"/>'
                     f'<text class="steplabel" x="{box["x"] + 8:.1f}" y="{box["y"] + 15:.1f}">'
                     f'{html.escape(box["label"])}</text>')
    for k, (s, d) in enumerate(edges):
        a, b = (nodes[s]["x"], nodes[s]["y"]), (nodes[d]["x"], nodes[d]["y"])
        parts.append(f'<path class="edge" id="edge-{k}" data-from="{s}" data-to="{d}" d="{_edge_path(a, b)}"/>')
    for i, n in enumerate(nodes):
        css = f"node kind-{n['kind']}" + (" composite" if n.get("inner") else "")
        parts.append(_node_svg(i, n, n["x"], n["y"], css=css, attrs=f' id="node-{i}" data-seq="{n["seq"]}"'))
    for i, n in enumerate(nodes):
        if n.get("inner"):
            text, bottom = _inner_svg(i, n["inner"], n["x"], n["y"], width)
            parts.append(text)
            height = max(height, bottom + MARGIN)
    return (f'<svg id="graph" width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
            f'data-width="{width:.0f}" data-height="{height:.0f}">'
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
            'orient="auto"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>'
            + "".join(parts) + "</svg>")


def step_boxes(nodes):
    """A dashed box around each time step's nodes (those whose ``step`` is that label)."""
    boxes = {}
    for n in nodes:
        if n.get("step") is not None:
            boxes.setdefault(n["step"], []).append(n)
    out = []
    for label, members in boxes.items():
        x0 = min(n["x"] for n in members) - NODE_W / 2 - 8
        x1 = max(n["x"] for n in members) + NODE_W / 2 + 8
        y0 = min(n["y"] for n in members) - NODE_H / 2 - 22
        y1 = max(n["y"] for n in members) + NODE_H / 2 + 8
        out.append({"label": label, "x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0})
    return out


def page(data, title):
    """The whole HTML document: the template with the SVG and the data (a JS literal) filled in."""
    boxes = step_boxes(data["nodes"])
    svg = graph_svg(data["nodes"], data["edges"], boxes)
    # a JS literal (NaN and Infinity allowed); "<" escaped so that no text can end the script early
    literal = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    template = resources.files(__package__).joinpath("viz_page.html").read_text(encoding="utf-8")
    fill = {"{{TITLE}}": html.escape(title), "{{SVG}}": svg, "/*{{DATA}}*/null": literal}
    # one pass, so that text filled in is never searched again
    return re.sub(r"\{\{TITLE\}\}|\{\{SVG\}\}|/\*\{\{DATA\}\}\*/null", lambda m: fill[m.group(0)], template)
