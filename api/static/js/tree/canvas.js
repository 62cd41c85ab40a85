// The canvas: the <svg>, zoom and pan, drawing the laid-out units and links (only those in view when
// there are thousands), the stats line under it, and the view transforms (fit, reset, centre on a unit,
// frame a path). Labels are drawn at one size and hidden when zoomed out below LABEL_MIN_ZOOM, where they
// would be too small to read; the dots, links and hover details stay, and the prompt's label and the
// hovered or keyboard-focused unit's are drawn at their size on screen.
/* global d3 */
import { $ } from "../common.js";
import { unitColor } from "./colour.js";
import { renderDetails } from "./details.js";
import { toggleUnit } from "./expansion.js";
import { applySearchClasses, hoverUnit, reapplyHighlight, unhoverUnit } from "./highlight.js";
import { LABEL_FONT, ROOT_FONT, SUFFIX_FONT, layout, layoutBounds, linkPath } from "./layout.js";
import { state } from "./state.js";
import { isOpen, unitProb } from "./units.js";

const CULL_ABOVE = 1200; // draw only the units in view when more than this many are laid out
const CULL_MARGIN = 300; // screen pixels drawn beyond the viewport, so small pans need no redraw
const TOOLBAR_H = 56;
const FOOTER_H = 40;
const FIT_MARGIN = 30; // screen pixels left around what a fit frames
const MAX_FIT_ZOOM = 1.2;
export const LABEL_MIN_ZOOM = 0.6; // below this a 12px label is under 7px on screen: hidden

// Styles live inside the <svg> so that exported SVG/PNG files look like the screen.
const SVG_CSS = `
.link{fill:none;stroke:#c5cbd5;stroke-linecap:round}
.link.hl{stroke:#2f5fd0;stroke-opacity:1}
.unit{cursor:pointer}
.unit circle{stroke-width:1.5}
.unit .bg{fill:#fbfcfd;fill-opacity:.88;stroke:none}
.unit .lbl{font:${LABEL_FONT};fill:#1d2330;white-space:pre}
.unit.root .lbl{font:${ROOT_FONT};fill:#17202f}
.unit .sfx{font:${SUFFIX_FONT};fill:#8a93a3}
.unit .end{fill:#1a8a4a}
.unit .cut{fill:#b08400}
.unit.hl .lbl{fill:#2f5fd0}
.unit.hl .bg{fill:#eef3ff;stroke:#b9cbf5;stroke-width:1}
.unit.hover .bg{stroke:#2f5fd0;stroke-width:1.2}
.unit.match .bg{fill:#fff1b8;stroke:#e2b100;stroke-width:1}
.unit.match-current .bg{fill:#ffe066;stroke:#c99700;stroke-width:1.5}
.unit .ring{fill:none;stroke:none}
.unit.kbd .ring{stroke:#111827;stroke-width:2.5;stroke-dasharray:3 2}
.unit.kbd .bg{stroke:#111827;stroke-width:1.5}
[data-labels=hidden] .unit text,[data-labels=hidden] .unit .bg{display:none}
[data-labels=hidden] .unit:is(.root,.hover,.kbd) :is(text,.bg){display:inline;transform:scale(var(--label-scale))}
`;

export const svg = d3.select("#tree-svg");
svg.append("style").text(SVG_CSS);
const viewport = svg.append("g").attr("class", "viewport");
const gLinks = viewport.append("g").attr("class", "links");
const gUnits = viewport.append("g").attr("class", "units");
const zoom = d3.zoom().scaleExtent([0.03, 4]).on("zoom", (ev) => {
  viewport.attr("transform", ev.transform);
  showLabels(ev.transform.k >= LABEL_MIN_ZOOM);
  svg.style("--label-scale", 1 / ev.transform.k); // the labels shown anyway keep their size on screen
  onZoomed();
});
svg.call(zoom).on("dblclick.zoom", null);

/** Show or hide the labels (the svg's data-labels, read by SVG_CSS) and the hint that says why. */
function showLabels(on) {
  const value = on ? "shown" : "hidden";
  if (svg.attr("data-labels") === value) return;
  svg.attr("data-labels", value);
  const hint = $("#label-hint");
  if (hint) hint.classList.toggle("hidden", on);
}

export function svgSize() {
  const r = svg.node().getBoundingClientRect();
  return { w: Math.max(200, r.width), h: Math.max(200, r.height) };
}

/** Lay out the open units and draw them. */
export function render() {
  if (!state.tree) return;
  const t0 = performance.now();
  const root = layout();
  const t1 = performance.now();
  state.hierarchy = root;
  state.all = root.descendants();
  state.bounds = layoutBounds(state.all);
  draw();
  updateStats(state.all.length);
  window.__tokentree.lastRender = { units: state.all.length, drawn: state.drawn, layoutMs: t1 - t0, totalMs: performance.now() - t0 };
}

/** The laid-out units to draw: all of them, or when there are many those in view plus a margin
 * (all of them anyway while `drawingAll`, for an export). */
let drawingAll = false;
function unitsToDraw(all) {
  state.culling = all.length > CULL_ABOVE && !drawingAll;
  if (!state.culling) return all;
  const t = d3.zoomTransform(svg.node());
  const { w, h } = svgSize();
  const m = CULL_MARGIN / t.k;
  const lo = { h: -t.x / t.k - m, v: -t.y / t.k - m };
  const hi = { h: (w - t.x) / t.k + m, v: (h - t.y) / t.k + m };
  state.drawnView = { lo, hi };
  return all.filter((d) => d.x >= lo.v && d.x <= hi.v && d.y + d.w >= lo.h && d.y - d.r <= hi.h);
}

function linkInView(d) {
  if (!state.culling) return true;
  const p = d.parent;
  const { lo, hi } = state.drawnView;
  return Math.max(p.x, d.x) >= lo.v && Math.min(p.x, d.x) <= hi.v && d.y >= lo.h && p.y + p.w <= hi.h;
}

const darkerCache = new Map();
function darker(color) {
  let c = darkerCache.get(color);
  if (!c) {
    c = d3.color(color).darker(0.6).formatHex();
    darkerCache.set(color, c);
  }
  return c;
}

function enterUnit(enter) {
  const g = enter.append("g").attr("class", "unit");
  g.append("rect").attr("class", "bg");
  g.append("circle").attr("class", "ring");
  g.append("circle").attr("class", "dot");
  const t = g.append("text").attr("class", "lbl").attr("dy", "0.35em");
  t.append("tspan").attr("class", "main");
  t.append("tspan").attr("class", "sfx");
  t.append("tspan").attr("class", "endm");
  g.on("mouseenter", (ev, d) => { hoverUnit(d); renderDetails(d.data, null); })
    .on("mouseleave", () => unhoverUnit())
    .on("click", (ev, d) => { ev.stopPropagation(); if (toggleUnit(d.data)) render(); });
  return g;
}

function updateUnit(d) {
  state.unitEls.set(d.data.key, this);
  const g = d3.select(this);
  const color = unitColor(d.data);
  const collapsed = d.data.last.children.length > 0 && !isOpen(d.data);
  g.select("circle.ring").attr("r", d.r + 4);
  g.select("circle.dot")
    .attr("r", d.r)
    .attr("fill", collapsed ? "#fff" : color)
    .attr("stroke", collapsed ? color : darker(color))
    .attr("stroke-width", collapsed ? 2.5 : 1.2);
  g.select("rect.bg")
    .attr("x", d.r + 2)
    .attr("y", -10)
    .attr("rx", 3)
    .attr("width", d.labelW + d.suffixW + 8)
    .attr("height", 20);
  const t = g.select("text.lbl").attr("x", d.r + 6);
  t.select("tspan.main").text(d.label);
  t.select("tspan.sfx").text(d.suffix);
  t.select("tspan.endm").attr("class", `endm ${d.end ? d.end.cls : ""}`).text(d.end ? d.end.text : "");
}

/** Draw the laid-out units (state.all) and their links, then reapply search and path highlighting. */
function draw() {
  const all = state.all;
  const units = unitsToDraw(all);
  const links = all.filter((d) => d.parent && linkInView(d));
  state.drawn = units.length;

  state.linkEls = new Map();
  gLinks.selectAll("path.link")
    .data(links, (d) => d.data.key)
    .join("path")
    .attr("class", "link")
    .attr("d", linkPath)
    .attr("stroke-width", (d) => 1 + 2.5 * unitProb(d.data))
    .each(function (d) { state.linkEls.set(d.data.key, this); });

  state.unitEls = new Map();
  gUnits.selectAll("g.unit")
    .data(units, (d) => d.data.key)
    .join(enterUnit)
    .attr("transform", (d) => `translate(${d.y},${d.x})`)
    .attr("data-key", (d) => d.data.key)
    .attr("data-depth", (d) => d.data.first.depth)
    .attr("data-children", (d) => d.data.last.children.length)
    .attr("data-tokens", (d) => d.data.nodes.length)
    .classed("root", (d) => d.data.isRoot)
    .classed("collapsed", (d) => d.data.last.children.length > 0 && !isOpen(d.data))
    .classed("leaf", (d) => d.data.last.children.length === 0)
    .classed("kbd", (d) => d.data.key === state.focusKey)
    .each(updateUnit);

  applySearchClasses();
  reapplyHighlight();
}

/** Run `fn` with every laid-out unit drawn (culling off), then draw as before: an export of the whole
 * layout. */
export function withAllDrawn(fn) {
  drawingAll = true;
  try {
    draw();
    return fn();
  } finally {
    drawingAll = false;
    draw();
  }
}

let redrawPending = false;
function onZoomed() {
  if (!state.culling || redrawPending) return;
  redrawPending = true;
  requestAnimationFrame(() => {
    redrawPending = false;
    const t = d3.zoomTransform(svg.node());
    const { w, h } = svgSize();
    const v = state.drawnView;
    // Redraw only when the viewport left the drawn area.
    const inside = v && -t.x / t.k >= v.lo.h && (w - t.x) / t.k <= v.hi.h && -t.y / t.k >= v.lo.v && (h - t.y) / t.k <= v.hi.v;
    if (!inside) draw();
  });
}

function updateStats(shown) {
  const t = state.tree;
  $("#stats").textContent = [
    `${t.nodeCount.toLocaleString("en-US")} nodes`,
    `${state.segments.count.toLocaleString("en-US")} segments`,
    `depth ${t.maxDepth.toLocaleString("en-US")}`,
    `${t.completed.length} completed`,
    `${shown.toLocaleString("en-US")} shown`,
  ].join(" · ");
}

// ---------------------------------------------------------------- view transforms

/** The transform that fits `box` (screen orientation; default: the whole laid-out tree) between the
 * toolbar and the footer, centred, at most MAX_FIT_ZOOM. */
export function fitTransform(box = state.bounds) {
  const { w, h } = svgSize();
  const bb = box || viewport.node().getBBox();
  if (!bb.width || !bb.height) return d3.zoomIdentity.translate(40, h / 2);
  const availW = w - 2 * FIT_MARGIN;
  const availH = h - TOOLBAR_H - FOOTER_H;
  const k = Math.max(0.03, Math.min(availW / bb.width, availH / bb.height, MAX_FIT_ZOOM));
  const tx = FIT_MARGIN + (availW - bb.width * k) / 2 - bb.x * k;
  const ty = TOOLBAR_H + availH / 2 - (bb.y + bb.height / 2) * k;
  return d3.zoomIdentity.translate(tx, ty).scale(k);
}

export function resetView() {
  svg.call(zoom.transform, state.initialTransform);
}

/** Make the fitted view the one "Reset" returns to, and go there. */
export function resetViewToFit() {
  state.initialTransform = fitTransform();
  resetView();
}

export function fitView() {
  svg.call(zoom.transform, fitTransform());
}

/** Zoom and pan so that the drawn units `keys` (a path, say) are all in view. */
export function frameUnits(keys) {
  const wanted = new Set(keys);
  const framed = (state.all || []).filter((d) => wanted.has(d.data.key));
  if (framed.length) svg.call(zoom.transform, fitTransform(layoutBounds(framed)));
}

export function zoomBy(factor) {
  svg.call(zoom.scaleBy, factor);
}

/** Pan, at the same zoom, so that the laid-out unit `key` is in view (nothing when it already is). */
export function ensureVisible(key) {
  const d = state.all && state.all.find((x) => x.data.key === key);
  if (!d) return;
  const t = d3.zoomTransform(svg.node());
  const { w, h } = svgSize();
  const sx = t.x + d.y * t.k;
  const sy = t.y + d.x * t.k;
  const right = sx + Math.min(d.w * t.k, w / 3);
  const inView = sx >= FIT_MARGIN && right <= w - FIT_MARGIN && sy >= TOOLBAR_H && sy <= h - FOOTER_H;
  if (!inView) svg.call(zoom.transform, d3.zoomIdentity.translate(w * 0.35 - d.y * t.k, h / 2 - d.x * t.k).scale(t.k));
}

/** Pan (and zoom in to at least 0.7×) so that the unit `key` sits left of centre. */
export function centerOn(key) {
  const d = state.all && state.all.find((x) => x.data.key === key);
  if (!d) return;
  const { w, h } = svgSize();
  const k = Math.max(d3.zoomTransform(svg.node()).k, 0.7);
  svg.call(zoom.transform, d3.zoomIdentity.translate(w * 0.35 - d.y * k, h / 2 - d.x * k).scale(k));
}
