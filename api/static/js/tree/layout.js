// Layout: each unit's dot size, label and width, and a left-to-right tree whose columns start after the
// widest label of the column before, so labels never overlap.
/* global d3 */
import { visibleWs, truncate } from "../common.js";
import { state } from "./state.js";
import { isOpen, rootUnit, visibleChildren } from "./units.js";

const MONO = 'ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", "Liberation Mono", monospace';
const SANS = 'ui-sans-serif, system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif';
export const LABEL_FONT = `12px ${MONO}`;
export const ROOT_FONT = `600 13px ${SANS}`;
export const SUFFIX_FONT = `11px ${MONO}`;
const ROW = 26; // vertical distance between sibling rows
const GAP = 32; // horizontal gap between a label's end and the next node
const MAX_LABEL = { segments: 30, nodes: 16, root: 40 };

const measureCtx = document.createElement("canvas").getContext("2d");
const widthCache = new Map();

function textWidth(text, font) {
  const k = font + "\u0000" + text;
  let w = widthCache.get(k);
  if (w === undefined) {
    measureCtx.font = font;
    w = measureCtx.measureText(text).width;
    if (widthCache.size > 50000) widthCache.clear();
    widthCache.set(k, w);
  }
  return w;
}

function radius(unit) {
  if (unit.isRoot) return 7;
  return 3 + 6 * Math.sqrt(Math.max(0, Math.min(1, unit.first.prob)));
}

/** Label text: control characters made visible; spaces kept inside words, shown (·) at the ends. */
function labelWs(s) {
  const t = visibleWs(s, true);
  return t.replace(/^ +| +$/g, (m) => "·".repeat(m.length)).replace(/ {2,}/g, (m) => "·".repeat(m.length));
}

function unitLabel(unit) {
  if (unit.isRoot) return truncate(labelWs(unit.first.text) || "(empty prompt)", MAX_LABEL.root);
  if (state.mode === "nodes") return truncate(visibleWs(unit.text), MAX_LABEL.nodes);
  return truncate(labelWs(unit.text), MAX_LABEL.segments);
}

/** "×tokens" of a run, "+hidden nodes" of a closed unit. */
function unitSuffix(unit) {
  const parts = [];
  if (!unit.isRoot && unit.nodes.length > 1) parts.push(`×${unit.nodes.length}`);
  if (unit.last.children.length && !isOpen(unit)) {
    parts.push(`+${(state.subtreeSize.get(unit.last.key) - 1).toLocaleString("en-US")}`);
  }
  return parts.length ? "  " + parts.join(" ") : "";
}

/** How a path ends at this unit: completed (■), cut off, or with children not loaded. */
function endMark(unit) {
  const n = unit.last;
  if (n.childCount > n.children.length) return { cls: "cut", text: ` ⋯ ${n.childCount - n.children.length} not loaded` };
  if (n.children.length || unit.isRoot) return null;
  if (n.finishReason === "stop" || (n.finishReason === null && n.finished)) return { cls: "end", text: " ■" };
  if (n.finishReason) return { cls: "cut", text: ` ⋯ ${n.finishReason}` };
  return null;
}

/** Nodes in each node's subtree, itself included (node key -> count). */
export function computeSubtreeSizes(tree) {
  const size = new Map();
  for (let i = tree.nodes.length - 1; i >= 0; i--) {
    const n = tree.nodes[i];
    let s = 1;
    for (const c of n.children) s += size.get(c.key);
    size.set(n.key, s);
  }
  return size;
}

/** The d3 hierarchy of the open units, each with x (row), y (column), r, label, suffix, end, widths. */
export function layout() {
  const root = d3.hierarchy(rootUnit(), visibleChildren);
  d3.tree().nodeSize([ROW, 1]).separation((a, b) => (a.parent === b.parent ? 1 : 1.3))(root);
  root.each((d) => {
    const u = d.data;
    d.r = radius(u);
    d.label = unitLabel(u);
    d.suffix = unitSuffix(u);
    d.end = endMark(u);
    d.labelW = textWidth(d.label, u.isRoot ? ROOT_FONT : LABEL_FONT);
    d.suffixW = (d.suffix ? textWidth(d.suffix, SUFFIX_FONT) : 0) + (d.end ? textWidth(d.end.text, SUFFIX_FONT) : 0);
    d.w = d.r + 6 + d.labelW + d.suffixW;
  });
  const colW = [];
  root.each((d) => { colW[d.depth] = Math.max(colW[d.depth] || 0, d.w); });
  const colX = [0];
  for (let i = 1; i < colW.length; i++) colX[i] = colX[i - 1] + colW[i - 1] + GAP;
  root.each((d) => { d.y = colX[d.depth]; });
  return root;
}

/** The laid-out units' bounding box in screen terms: x horizontal (= layout y), y vertical (= layout x). */
export function layoutBounds(all) {
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const d of all) {
    if (d.x < x0) x0 = d.x;
    if (d.x > x1) x1 = d.x;
    if (d.y - d.r < y0) y0 = d.y - d.r;
    if (d.y + d.w > y1) y1 = d.y + d.w;
  }
  return { x: y0, y: x0 - ROW / 2, width: y1 - y0, height: x1 - x0 + ROW };
}

/** The curve from the end of the parent's label to the unit's dot. */
export function linkPath(d) {
  const p = d.parent;
  const sx = p.y + p.w + 4;
  const sy = p.x;
  const tx = d.y - d.r;
  const ty = d.x;
  const mx = sx + Math.max(12, (tx - sx) / 2);
  return `M${sx},${sy}C${mx},${sy} ${mx},${ty} ${tx},${ty}`;
}
