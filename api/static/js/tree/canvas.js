// The canvas: the <svg>, zoom and pan, drawing the laid-out units and links (only those in view when
// there are thousands), the stats line under it, and the view transforms (fit, reset, centre on a unit).
/* global d3 */
import { $, probColor } from "../common.js";
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
`;

export const svg = d3.select("#tree-svg");
svg.append("style").text(SVG_CSS);
const viewport = svg.append("g").attr("class", "viewport");
const gLinks = viewport.append("g").attr("class", "links");
const gUnits = viewport.append("g").attr("class", "units");
const zoom = d3.zoom().scaleExtent([0.03, 4]).on("zoom", (ev) => {
  viewport.attr("transform", ev.transform);
  onZoomed();
});
svg.call(zoom).on("dblclick.zoom", null);

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

/** The laid-out units to draw: all of them, or when there are many those in view plus a margin. */
function unitsToDraw(all) {
  state.culling = all.length > CULL_ABOVE;
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
  g.append("circle");
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
  const color = d.data.isRoot ? "#2f5fd0" : probColor(d.data.first.prob);
  const collapsed = d.data.last.children.length > 0 && !isOpen(d.data);
  g.select("circle")
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
    .each(updateUnit);

  applySearchClasses();
  reapplyHighlight();
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

/** The transform that fits the laid-out tree between the toolbar and the footer; `clamp`: not below 0.8×. */
export function fitTransform(clamp = true) {
  const { w, h } = svgSize();
  const bb = state.bounds || viewport.node().getBBox();
  if (!bb.width || !bb.height) return d3.zoomIdentity.translate(40, h / 2);
  const availH = h - TOOLBAR_H - FOOTER_H;
  let k = Math.min((w - 60) / bb.width, availH / bb.height, 1.2);
  if (clamp) k = Math.max(k, 0.8);
  k = Math.max(0.03, k);
  const tx = 30 - bb.x * k;
  let ty = TOOLBAR_H + availH / 2 - (bb.y + bb.height / 2) * k;
  if (bb.height * k > availH) ty = TOOLBAR_H + availH / 2 - (state.hierarchy ? state.hierarchy.x : 0) * k;
  return d3.zoomIdentity.translate(tx, ty).scale(k);
}

export function resetView() {
  svg.call(zoom.transform, state.initialTransform);
}

/** Make the fitted view the one "Reset" returns to, and go there. */
export function resetViewToFit() {
  state.initialTransform = fitTransform(true);
  resetView();
}

export function fitView() {
  svg.call(zoom.transform, fitTransform(false));
}

export function zoomBy(factor) {
  svg.call(zoom.scaleBy, factor);
}

/** Pan (and zoom in to at least 0.7×) so that the unit `key` sits left of centre. */
export function centerOn(key) {
  const d = state.all && state.all.find((x) => x.data.key === key);
  if (!d) return;
  const { w, h } = svgSize();
  const k = Math.max(d3.zoomTransform(svg.node()).k, 0.7);
  svg.call(zoom.transform, d3.zoomIdentity.translate(w * 0.35 - d.y * k, h / 2 - d.x * k).scale(k));
}
