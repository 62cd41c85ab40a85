"""A tree drawn inline for Jupyter (`Tree._repr_html_`): a static SVG in one HTML string, with no
script, no stylesheet and no URL, so it shows the same in a live notebook, a saved one and offline.

It draws as the service's tree viewer does: left to right, runs of single-child nodes as one segment,
each segment's dot coloured by the probability of its first token (the viewer's red-amber-green ramp),
a green square where a path completed. Hovering a segment shows its text, probabilities, entropy and
candidates (an SVG <title>). Big trees are drawn breadth first up to `MAX_SEGMENTS`; a segment whose
branches are left out says how many (`+3`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokentree.engine.tree import Node
    from tokentree.tree import Tree

MAX_SEGMENTS = 300
LABEL_CHARS = 30  # the viewer's label lengths
ROOT_CHARS = 40
TOOLTIP_CHARS = 400
TOP_PATHS = 5
CANDIDATES_SHOWN = 6
CHAR_WIDTH = 7.3  # of the 12px monospace labels
ROW = 22
GAP = 28
RADIUS = 4.5
MARGIN = 14
MONO = 'ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace'
SANS = 'ui-sans-serif, system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif'
# The viewer's probability ramp (api/static/js/common.js): 0 red, 0.5 amber, 1 green.
RAMP = ((0xD7, 0x30, 0x27), (0xE8, 0xA2, 0x00), (0x1A, 0x98, 0x50))
_VISIBLE = {"\n": "↵", "\t": "→", "\r": "␍"}


@dataclass
class _Segment:
    first: int  # positions in tree.nodes: the run's first and last node
    last: int
    parent: int | None  # index among the segments
    children: list[int] = field(default_factory=list)
    hidden: int = 0  # branches below `last` not drawn
    x: float = 0.0
    y: float = 0.0


def tree_html(tree: Tree) -> str:
    segments, total = _segments(tree)
    labels = [_label(tree, s) for s in segments]
    _lay_out(segments, labels)
    width = max(s.x + _label_width(label) for s, label in zip(segments, labels, strict=True)) + 60
    height = max(s.y for s in segments) + MARGIN
    parts = [f'<svg width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
             f'role="img" aria-label="Token tree" font-family=\'{MONO}\' font-size="12">']
    for segment in segments:
        if segment.parent is not None:
            parts.append(_link(segments[segment.parent], labels[segment.parent], segment, tree))
    parts.extend(_segment_svg(tree, s, label) for s, label in zip(segments, labels, strict=True))
    parts.append("</svg>")
    note = "" if len(segments) == total else (
        f'<div style="color:#6b7385;margin-top:4px">{len(segments)} of {total} segments drawn, breadth '
        "first; the tree viewer of <code>tokentree serve</code> opens the whole tree "
        "(<code>tree.to_json()</code>)</div>")
    return (f'<div class="tokentree-tree" style="font-family:{escape(SANS)};font-size:13px;color:#1d2330">'
            f"{_header(tree)}"
            '<div style="overflow:auto;max-height:520px;border:1px solid #e3e7ee;border-radius:6px;'
            f'background:#fbfcfd">{"".join(parts)}</div>{note}</div>')


def _segments(tree: Tree) -> tuple[list[_Segment], int]:
    """The segments to draw (breadth first, at most MAX_SEGMENTS) and how many the whole tree has."""
    nodes = tree.nodes
    segments = [_Segment(first=0, last=0, parent=None)]  # the root (the prompt) stands alone
    total = 1
    queue = deque([0])
    while queue:
        index = queue.popleft()
        parent = segments[index]
        parent.hidden += tree.child_count(parent.last) - len(nodes[parent.last].children)  # a cut document
        for child in nodes[parent.last].children:
            last = child
            while len(nodes[last].children) == 1 and tree.child_count(last) == 1:
                last = nodes[last].children[0]
            total += 1
            if len(segments) >= MAX_SEGMENTS:
                parent.hidden += 1
                total += _segments_below(tree, last)
                continue
            segments.append(_Segment(first=child, last=last, parent=index))
            parent.children.append(len(segments) - 1)
            queue.append(len(segments) - 1)
    return segments, total


def _segments_below(tree: Tree, position: int) -> int:
    count, stack = 0, list(tree.nodes[position].children)
    while stack:
        at = stack.pop()
        count += 1
        while len(tree.nodes[at].children) == 1:
            at = tree.nodes[at].children[0]
        stack.extend(tree.nodes[at].children)
    return count


def _lay_out(segments: list[_Segment], labels: list[str]) -> None:
    """Left to right: a segment starts past its parent's label; leaves take rows in order, a parent
    sits midway between its first and last child."""
    segments[0].x = MARGIN + RADIUS
    for segment in segments[1:]:  # parents come before their children
        parent = segments[segment.parent or 0]
        segment.x = parent.x + RADIUS + 6 + _label_width(labels[segment.parent or 0]) + GAP
    row = 0
    stack: list[tuple[int, bool]] = [(0, False)]
    while stack:  # post-order without recursion
        index, children_done = stack.pop()
        segment = segments[index]
        if not segment.children:
            segment.y = MARGIN + row * ROW
            row += 1
        elif children_done:
            segment.y = (segments[segment.children[0]].y + segments[segment.children[-1]].y) / 2
        else:
            stack.append((index, True))
            stack.extend((child, False) for child in reversed(segment.children))


def _label(tree: Tree, segment: _Segment) -> str:
    if segment.parent is None:
        return _shorten(_visible(tree.root.text), ROOT_CHARS)
    return _shorten(_visible(_run_text(tree, segment)), LABEL_CHARS)


def _run_text(tree: Tree, segment: _Segment) -> str:
    texts, at = [], segment.first
    while True:
        texts.append(tree.nodes[at].text)
        if at == segment.last:
            return "".join(texts)
        at = tree.nodes[at].children[0]


def _label_width(label: str) -> float:
    return len(label) * CHAR_WIDTH


def _link(parent: _Segment, parent_label: str, child: _Segment, tree: Tree) -> str:
    x1, y1 = parent.x + RADIUS + 8 + _label_width(parent_label), parent.y
    x2, y2 = child.x - RADIUS - 1, child.y
    middle = (x1 + x2) / 2
    width = 0.8 + 2.2 * tree.nodes[child.first].prob
    return (f'<path d="M{x1:.1f},{y1:.1f}C{middle:.1f},{y1:.1f} {middle:.1f},{y2:.1f} {x2:.1f},{y2:.1f}" '
            f'fill="none" stroke="#c5cbd5" stroke-width="{width:.1f}"/>')


def _segment_svg(tree: Tree, segment: _Segment, label: str) -> str:
    first, last = tree.nodes[segment.first], tree.nodes[segment.last]
    is_root = segment.parent is None
    colour = "#6b7385" if is_root else _colour(first.prob)
    text_x = segment.x + RADIUS + 5
    weight = ' font-weight="600" font-family=\'' + SANS + '\' font-size="13"' if is_root else ""
    parts = [f"<g><title>{escape(_tooltip(tree, segment, first, last))}</title>",
             f'<circle cx="{segment.x:.1f}" cy="{segment.y:.1f}" r="{RADIUS}" fill="{colour}" '
             f'stroke="{colour}" fill-opacity="0.85"/>',
             f'<text x="{text_x:.1f}" y="{segment.y:.1f}" dy="0.35em" fill="#1d2330" xml:space="preserve" '
             f'style="white-space:pre"{weight}>{escape(label)}</text>']
    end_x = text_x + _label_width(label) + 4
    if last.finish_reason == "stop":
        parts.append(f'<rect x="{end_x:.1f}" y="{segment.y - 4:.1f}" width="8" height="8" fill="#1a8a4a"/>')
        end_x += 12
    elif last.finish_reason == "max_depth":
        parts.append(f'<text x="{end_x:.1f}" y="{segment.y:.1f}" dy="0.35em" fill="#b08400">⋯</text>')
        end_x += 12
    if segment.hidden:
        parts.append(f'<text x="{end_x:.1f}" y="{segment.y:.1f}" dy="0.35em" fill="#8a93a3" font-size="11">'
                     f"+{segment.hidden}</text>")
    parts.append("</g>")
    return "".join(parts)


def _tooltip(tree: Tree, segment: _Segment, first: Node, last: Node) -> str:
    if segment.parent is None:
        lines = [_shorten(tree.root.text, TOOLTIP_CHARS), "(the prompt)"]
    else:
        tokens = last.depth - first.depth + 1
        lines = [_shorten(_visible(_run_text(tree, segment)), TOOLTIP_CHARS),
                 f"p {first.prob:.4f} · cumulative {last.cumulative_prob:.4g} · "
                 f"{tokens} token{'s' if tokens > 1 else ''} · depth {last.depth}"]
    if last.threshold is not None:
        entropy = "-" if last.entropy is None else f"{last.entropy:.3f}"
        lines.append(f"entropy {entropy} · threshold {last.threshold:.3f} · queue {last.queue_depth}")
    if last.candidates:
        lines.append("next: " + ", ".join(f"{_visible(c.text)!r} {c.prob:.3f}"
                                          for c in last.candidates[:CANDIDATES_SHOWN]))
    if last.finish_reason is not None:
        lines.append("completed (stop token)" if last.finish_reason == "stop" else "cut at max_depth")
    if segment.hidden:
        lines.append(f"{segment.hidden} branch{'es' if segment.hidden > 1 else ''} below not drawn")
    return "\n".join(lines)


def _header(tree: Tree) -> str:
    metadata = tree.metadata
    completed = sum(1 for node in tree.nodes if node.finish_reason == "stop")
    facts = [f"model {metadata.get('model', '?')}", f"{len(tree.nodes)} nodes",
             f"{completed} completed path{'' if completed == 1 else 's'}"]
    if metadata.get("chat"):
        facts.append("chat")
    if metadata.get("prefix"):
        facts.append(f"prefix {metadata['prefix']!r}")
    items = "".join(f'<li><span style="color:#6b7385">{path.cumulative_prob:.4f}</span> '
                    f'<span style="font-family:{escape(MONO)};white-space:pre-wrap">'
                    f"{escape(_shorten(path.text, TOOLTIP_CHARS))}</span></li>"
                    for path in tree.paths(limit=TOP_PATHS))
    paths = f'<ol style="margin:4px 0 8px 0;padding-left:22px">{items}</ol>' if items else ""
    return (f'<div style="margin-bottom:4px"><b>{escape(_shorten(tree.prompt, TOOLTIP_CHARS))}</b> '
            f'<span style="color:#6b7385">· {escape(" · ".join(facts))}</span></div>{paths}')


def _colour(prob: float) -> str:
    x = max(0.0, min(1.0, prob))
    low, high, t = (RAMP[0], RAMP[1], x / 0.5) if x < 0.5 else (RAMP[1], RAMP[2], (x - 0.5) / 0.5)
    return "#" + "".join(f"{round(a + (b - a) * t):02x}" for a, b in zip(low, high, strict=True))


def _visible(text: str) -> str:
    return "".join(_VISIBLE.get(c, c) for c in text)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
