// Tree viewer: a horizontal, collapsible, zoomable D3 tree of a token tree.
/* global d3 */
import {
  $, el, clear, visibleWs, truncate, fmtProb, fmtNum, probColor, probBar, messageBox, queryParams,
  fetchJSON, fetchText, readFileText, setupDropZone, downloadBlob, safeFilename, setupNav,
  statusPill, progressText, ACTIVE_STATUSES, watchJob, throttle, setPageState, HttpError,
} from "./common.js";
import {
  parseTreeText, normalizeTree, TreeFormatError, buildSegments, searchTree, generatedText,
} from "./treedata.js";

const MONO = 'ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", "Liberation Mono", monospace';
const SANS = 'ui-sans-serif, system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif';
const LABEL_FONT = `12px ${MONO}`;
const ROOT_FONT = `600 13px ${SANS}`;
const SUFFIX_FONT = `11px ${MONO}`;
const ROW = 26; // vertical distance between sibling rows
const GAP = 32; // horizontal gap between a label's end and the next node
const MAX_LABEL = { segments: 30, nodes: 16, root: 40 };
const INITIAL_BUDGET = { segments: 400, nodes: 400 };
const LIVE_BUDGET = { segments: 1500, nodes: 3000 };
const CULL_ABOVE = 1200; // draw only the units in view when more than this many are laid out

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

const state = {
  tree: null,
  segments: null,
  metadata: {},
  mode: "segments",
  expanded: new Set(),
  userCollapsed: new Set(),
  knownChildren: new Map(), // node key -> number of children at the last update (live growth)
  subtreeSize: null,
  hierarchy: null,
  unitEls: new Map(), // unit key -> <g>
  linkEls: new Map(), // target unit key -> <path>
  highlighted: [],
  hoverKey: null,
  pinned: null, // node whose path stays highlighted (completed path / search result)
  search: { query: "", matches: [], index: -1 },
  source: { job: null, file: null, name: null },
  job: null,
  stopWatch: null,
  initialTransform: d3.zoomIdentity,
  rendered: false,
};

// ---------------------------------------------------------------- measuring

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

// ---------------------------------------------------------------- svg scaffold

const svg = d3.select("#tree-svg");
svg.append("style").text(SVG_CSS);
const viewport = svg.append("g").attr("class", "viewport");
const gLinks = viewport.append("g").attr("class", "links");
const gUnits = viewport.append("g").attr("class", "units");
const zoom = d3.zoom().scaleExtent([0.03, 4]).on("zoom", (ev) => {
  viewport.attr("transform", ev.transform);
  onZoomed();
});
svg.call(zoom).on("dblclick.zoom", null);

function svgSize() {
  const r = svg.node().getBoundingClientRect();
  return { w: Math.max(200, r.width), h: Math.max(200, r.height) };
}

// ---------------------------------------------------------------- units

const nodeUnits = new Map();
function nodeUnit(n) {
  let u = nodeUnits.get(n.key);
  if (!u || u.first !== n) {
    u = { key: n.key, nodes: [n], first: n, last: n, isRoot: n.parent === null, text: n.text };
    nodeUnits.set(n.key, u);
  }
  return u;
}

function unitOfNode(n) {
  return state.mode === "segments" ? state.segments.byNode.get(n.key) : nodeUnit(n);
}

function isOpen(unit) {
  return state.expanded.has(unit.last.key);
}

function visibleChildren(unit) {
  if (!unit.last.children.length || !isOpen(unit)) return null;
  return state.mode === "segments" ? unit.children : unit.last.children.map(nodeUnit);
}

function unitProb(unit) {
  return unit.isRoot ? 1 : unit.first.prob;
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

function unitSuffix(unit) {
  const parts = [];
  if (!unit.isRoot && unit.nodes.length > 1) parts.push(`×${unit.nodes.length}`);
  if (unit.last.children.length && !isOpen(unit)) {
    parts.push(`+${(state.subtreeSize.get(unit.last.key) - 1).toLocaleString("en-US")}`);
  }
  return parts.length ? "  " + parts.join(" ") : "";
}

function endMark(unit) {
  const n = unit.last;
  if (n.childCount > n.children.length) return { cls: "cut", text: ` ⋯ ${n.childCount - n.children.length} not loaded` };
  if (n.children.length || unit.isRoot) return null;
  if (n.finishReason === "stop" || (n.finishReason === null && n.finished)) return { cls: "end", text: " ■" };
  if (n.finishReason) return { cls: "cut", text: ` ⋯ ${n.finishReason}` };
  return null;
}

// ---------------------------------------------------------------- expansion state

function chainRun(node) {
  // Expanding runs down single-child chains to the next fork (node mode).
  for (const c of node.children) {
    let cur = c;
    while (cur.children.length === 1) {
      state.expanded.add(cur.key);
      cur = cur.children[0];
    }
  }
}

function initialExpansion() {
  state.expanded = new Set();
  state.userCollapsed = new Set();
  const budget = INITIAL_BUDGET[state.mode];
  let visible = 1;
  if (state.mode === "segments") {
    const queue = [state.segments.root];
    for (let qi = 0; qi < queue.length; qi++) {
      const s = queue[qi];
      if (!s.children.length) continue;
      if (visible + s.children.length > budget && s !== state.segments.root) continue;
      state.expanded.add(s.last.key);
      visible += s.children.length;
      queue.push(...s.children);
    }
  } else {
    expandNodesWithin([state.tree.root], budget);
  }
}

/** Node mode: breadth-first, expand nodes (running down chains) while visible nodes <= budget. */
function expandNodesWithin(starts, budget) {
  let visible = 1;
  const queue = starts.slice();
  for (let qi = 0; qi < queue.length; qi++) {
    const n = queue[qi];
    if (!n.children.length) continue;
    if (visible + n.children.length > budget && n.parent) continue;
    state.expanded.add(n.key);
    visible += n.children.length;
    for (const c of n.children) {
      let cur = c;
      while (cur.children.length === 1 && visible < budget) {
        state.expanded.add(cur.key);
        cur = cur.children[0];
        visible++;
      }
      queue.push(cur);
    }
  }
}

function computeSubtreeSizes(tree) {
  const size = new Map();
  for (let i = tree.nodes.length - 1; i >= 0; i--) {
    const n = tree.nodes[i];
    let s = 1;
    for (const c of n.children) s += size.get(c.key);
    size.set(n.key, s);
  }
  return size;
}

// ---------------------------------------------------------------- rendering

function layout() {
  const root = d3.hierarchy(state.mode === "segments" ? state.segments.root : nodeUnit(state.tree.root), visibleChildren);
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
  // Columns: each depth starts after the widest label of the depth before, so labels never overlap.
  const colW = [];
  root.each((d) => { colW[d.depth] = Math.max(colW[d.depth] || 0, d.w); });
  const colX = [0];
  for (let i = 1; i < colW.length; i++) colX[i] = colX[i - 1] + colW[i - 1] + GAP;
  root.each((d) => { d.y = colX[d.depth]; });
  return root;
}

function linkPath(d) {
  const p = d.parent;
  const sx = p.y + p.w + 4;
  const sy = p.x;
  const tx = d.y - d.r;
  const ty = d.x;
  const mx = sx + Math.max(12, (tx - sx) / 2);
  return `M${sx},${sy}C${mx},${sy} ${mx},${ty} ${tx},${ty}`;
}

function render() {
  if (!state.tree) return;
  const t0 = performance.now();
  const root = layout();
  const t1 = performance.now();
  state.hierarchy = root;
  state.all = root.descendants();
  state.bounds = layoutBounds(state.all);
  draw();
  updateStats(state.all.length);
  state.rendered = true;
  window.__tokentree.lastRender = { units: state.all.length, drawn: state.drawn, layoutMs: t1 - t0, totalMs: performance.now() - t0 };
}

function layoutBounds(all) {
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const d of all) {
    if (d.x < x0) x0 = d.x;
    if (d.x > x1) x1 = d.x;
    if (d.y - d.r < y0) y0 = d.y - d.r;
    if (d.y + d.w > y1) y1 = d.y + d.w;
  }
  // In screen terms: x is horizontal (= layout y), y is vertical (= layout x).
  return { x: y0, y: x0 - ROW / 2, width: y1 - y0, height: x1 - x0 + ROW };
}

/**
 * Draw the laid-out units. Big views (thousands of units, e.g. every node of a 10,000-node tree)
 * only draw what is inside the viewport plus a margin, and redraw as the user pans and zooms.
 */
function draw() {
  const all = state.all;
  let units = all;
  state.culling = all.length > CULL_ABOVE;
  if (state.culling) {
    const t = d3.zoomTransform(svg.node());
    const { w, h } = svgSize();
    const m = 300 / t.k;
    const lo = { h: -t.x / t.k - m, v: -t.y / t.k - m };
    const hi = { h: (w - t.x) / t.k + m, v: (h - t.y) / t.k + m };
    units = all.filter((d) => d.x >= lo.v && d.x <= hi.v && d.y + d.w >= lo.h && d.y - d.r <= hi.h);
    state.drawnView = { lo, hi };
  }
  const links = [];
  const inView = (d) => {
    if (!state.culling) return true;
    const p = d.parent;
    const { lo, hi } = state.drawnView;
    return Math.max(p.x, d.x) >= lo.v && Math.min(p.x, d.x) <= hi.v && d.y >= lo.h && p.y + p.w <= hi.h;
  };
  for (const d of all) if (d.parent && inView(d)) links.push(d);
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
    .join((enter) => {
      const g = enter.append("g").attr("class", "unit");
      g.append("rect").attr("class", "bg");
      g.append("circle");
      const t = g.append("text").attr("class", "lbl").attr("dy", "0.35em");
      t.append("tspan").attr("class", "main");
      t.append("tspan").attr("class", "sfx");
      t.append("tspan").attr("class", "endm");
      g.on("mouseenter", (ev, d) => onHover(d))
        .on("mouseleave", () => onUnhover())
        .on("click", (ev, d) => { ev.stopPropagation(); toggle(d.data); });
      return g;
    })
    .attr("transform", (d) => `translate(${d.y},${d.x})`)
    .attr("data-key", (d) => d.data.key)
    .attr("data-depth", (d) => d.data.first.depth)
    .attr("data-children", (d) => d.data.last.children.length)
    .attr("data-tokens", (d) => d.data.nodes.length)
    .classed("root", (d) => d.data.isRoot)
    .classed("collapsed", (d) => d.data.last.children.length > 0 && !isOpen(d.data))
    .classed("leaf", (d) => d.data.last.children.length === 0)
    .each(function (d) {
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
    });

  applySearchClasses();
  reapplyHighlight();
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

let redrawPending = false;
function onZoomed() {
  if (!state.culling || redrawPending) return;
  redrawPending = true;
  requestAnimationFrame(() => {
    redrawPending = false;
    const t = d3.zoomTransform(svg.node());
    const { w, h } = svgSize();
    const v = state.drawnView;
    // Redraw only when the viewport left the drawn area (the margin keeps small pans cheap).
    const inside = v && -t.x / t.k >= v.lo.h && (w - t.x) / t.k <= v.hi.h && -t.y / t.k >= v.lo.v && (h - t.y) / t.k <= v.hi.v;
    if (!inside) draw();
  });
}

function updateStats(visible) {
  const t = state.tree;
  const parts = [
    `${t.nodeCount.toLocaleString("en-US")} nodes`,
    `${state.segments.count.toLocaleString("en-US")} segments`,
    `depth ${t.maxDepth.toLocaleString("en-US")}`,
    `${t.completed.length} completed`,
    `${visible.toLocaleString("en-US")} shown`,
  ];
  $("#stats").textContent = parts.join(" · ");
}

// ---------------------------------------------------------------- view transforms

function fitTransform(clamp = true) {
  const { w, h } = svgSize();
  const bb = state.bounds || viewport.node().getBBox();
  if (!bb.width || !bb.height) return d3.zoomIdentity.translate(40, h / 2);
  const top = 56; // toolbar
  const bottom = 40;
  const availH = h - top - bottom;
  let k = Math.min((w - 60) / bb.width, availH / bb.height, 1.2);
  if (clamp) k = Math.max(k, 0.8);
  k = Math.max(0.03, k);
  const tx = 30 - bb.x * k;
  let ty = top + availH / 2 - (bb.y + bb.height / 2) * k;
  if (bb.height * k > availH) ty = top + availH / 2 - (state.hierarchy ? state.hierarchy.x : 0) * k;
  return d3.zoomIdentity.translate(tx, ty).scale(k);
}

function resetView() {
  svg.call(zoom.transform, state.initialTransform);
}

function centerOn(key) {
  const d = state.all && state.all.find((x) => x.data.key === key);
  if (!d) return;
  const { w, h } = svgSize();
  const k = Math.max(d3.zoomTransform(svg.node()).k, 0.7);
  const t = d3.zoomIdentity.translate(w * 0.35 - d.y * k, h / 2 - d.x * k).scale(k);
  svg.call(zoom.transform, t);
}

// ---------------------------------------------------------------- interaction

function toggle(unit) {
  const n = unit.last;
  if (!n.children.length) return;
  if (isOpen(unit)) {
    state.expanded.delete(n.key);
    state.userCollapsed.add(n.key);
  } else {
    state.expanded.add(n.key);
    state.userCollapsed.delete(n.key);
    if (state.mode === "nodes") chainRun(n);
  }
  render();
}

function expandAll() {
  // In segment mode only the ends of runs matter; chain nodes stay as they are, so that switching
  // to node mode later does not suddenly draw every node.
  const minChildren = state.mode === "segments" ? 2 : 1;
  for (const n of state.tree.nodes) {
    if (n.children.length >= minChildren || (n.parent === null && n.children.length)) state.expanded.add(n.key);
  }
  state.userCollapsed.clear();
  render();
}

function collapseAll() {
  state.expanded = new Set([state.tree.root.key]);
  if (state.mode === "nodes") chainRun(state.tree.root);
  for (const n of state.tree.nodes) if (n.children.length && !state.expanded.has(n.key)) state.userCollapsed.add(n.key);
  render();
  resetViewToFit();
}

function resetViewToFit() {
  state.initialTransform = fitTransform(true);
  resetView();
}

function reveal(node) {
  for (let c = node.parent; c; c = c.parent) {
    state.expanded.add(c.key);
    state.userCollapsed.delete(c.key);
  }
}

function setMode(mode) {
  if (mode === state.mode) return;
  if (mode === "nodes" && state.hierarchy) {
    // Show the same nodes as the visible segments, up to a budget.
    let count = 0;
    const budget = 2500;
    const visibleSegs = state.all.map((d) => d.data);
    for (const s of visibleSegs) {
      for (let i = 0; i < s.nodes.length - 1; i++) {
        if (count > budget) break;
        state.expanded.add(s.nodes[i].key);
        count++;
      }
    }
  }
  state.mode = mode;
  render();
  resetViewToFit();
}

// ------------------------------------------------------------- highlighting

function unitKeyChain(d) {
  return d.ancestors().map((a) => a.data.key);
}

function clearHighlight() {
  for (const e of state.highlighted) e.classList.remove("hl", "hover");
  state.highlighted = [];
}

function highlightKeys(keys, hoverKey) {
  clearHighlight();
  for (const k of keys) {
    const g = state.unitEls.get(k);
    if (g) { g.classList.add("hl"); state.highlighted.push(g); }
    const l = state.linkEls.get(k);
    if (l) { l.classList.add("hl"); state.highlighted.push(l); }
  }
  const h = hoverKey && state.unitEls.get(hoverKey);
  if (h) { h.classList.add("hover"); state.highlighted.push(h); }
}

function keysForNode(node) {
  // Unit keys along the path to `node`, in the current mode.
  const keys = new Set();
  for (let c = node; c; c = c.parent) {
    const u = unitOfNode(c);
    if (u) keys.add(u.key);
  }
  return keys;
}

function onHover(d) {
  state.hoverKey = d.data.key;
  highlightKeys(unitKeyChain(d), d.data.key);
  renderDetails(d.data, null);
}

function onUnhover() {
  state.hoverKey = null;
  reapplyHighlight();
}

function reapplyHighlight() {
  if (state.hoverKey && state.unitEls.has(state.hoverKey)) {
    const d = d3.select(state.unitEls.get(state.hoverKey)).datum();
    highlightKeys(unitKeyChain(d), state.hoverKey);
  } else if (state.pinned) {
    highlightKeys(keysForNode(state.pinned), null);
  } else {
    clearHighlight();
  }
}

// ---------------------------------------------------------------- details panel

function candidateList(cands, { chosen = null, explored = [] } = {}) {
  const exploredIds = new Set(explored.map((c) => (c.tokenId !== null ? `#${c.tokenId}` : `~${c.text}`)));
  const chosenId = chosen ? (chosen.tokenId !== null ? `#${chosen.tokenId}` : `~${chosen.text}`) : null;
  const idOf = (c) => (c.tokenId !== null ? `#${c.tokenId}` : `~${c.text}`);
  const sorted = cands.slice().sort((a, b) => b.prob - a.prob);
  const ul = el("ul", { class: "cand-list" });
  const shown = sorted.slice(0, 25);
  for (const c of shown) {
    const id = idOf(c);
    const cls = id === chosenId ? "chosen" : exploredIds.has(id) ? "explored" : "";
    ul.append(el("li", { class: cls, attrs: { title: `token id ${c.tokenId ?? "—"}` } }, [
      el("span", { class: "t", text: visibleWs(c.text) }),
      el("span", { class: "tag", text: cls }),
      probBar(c.prob, probColor(c.prob)),
      el("span", { class: "p", text: fmtProb(c.prob) }),
    ]));
  }
  if (sorted.length > shown.length) ul.append(el("li", { class: "muted", text: `… ${sorted.length - shown.length} more` }));
  if (!sorted.length) ul.append(el("li", { class: "muted", text: "No candidates recorded." }));
  return ul;
}

function stat(k, v) {
  return el("div", { class: "stat" }, [el("div", { class: "k", text: k }), el("div", { class: "v", text: v, attrs: { title: v } })]);
}

function nodeStatus(n) {
  if (n.childCount > n.children.length) return `${n.childCount} children (${n.childCount - n.children.length} not loaded)`;
  if (n.finishReason) return n.finishReason === "stop" ? "completed (stop)" : n.finishReason;
  if (n.finished) return n.children.length ? "finished" : "completed";
  if (!n.children.length && n.parent) return n.threshold === null && n.id !== null ? "frontier (not expanded)" : "open leaf";
  return `${n.children.length} ${n.children.length === 1 ? "child" : "children"}`;
}

function renderDetails(unit, focus) {
  const body = clear($("#details-body"));
  const node = focus || (unit.isRoot ? unit.first : unit.first);
  const endNode = focus || unit.last;
  body.dataset.key = node.key;

  const head = el("div", { class: "details-token" });
  if (node.parent === null) {
    head.append(el("span", { class: "tok-chip root", text: "prompt" }));
  } else {
    head.append(el("span", { class: "tok-chip", text: visibleWs(node.text), attrs: { "data-role": "token" } }));
  }
  head.append(el("span", { class: "muted small", text: `depth ${node.depth}` }));
  if (unit.nodes.length > 1 && !focus) head.append(el("span", { class: "muted small", text: `· run of ${unit.nodes.length} tokens` }));
  body.append(head);

  if (node.parent !== null) {
    const row = el("div", { class: "prob-row" }, [
      probBar(node.prob, probColor(node.prob)),
      el("span", { class: "val", text: fmtProb(node.prob), attrs: { "data-role": "prob" } }),
    ]);
    body.append(row);
  }

  const grid = el("div", { class: "stat-grid" }, [
    stat("Token id", node.tokenId === null ? "—" : String(node.tokenId)),
    stat("Cumulative prob", fmtProb(endNode.cum)),
    stat("Log-prob", node.logprob === null ? (node.prob > 0 && node.parent ? fmtNum(Math.log(node.prob)) : "—") : fmtNum(node.logprob)),
    stat("Entropy", node.entropy === null ? "—" : `${fmtNum(node.entropy)} nats`),
    stat("Threshold", node.threshold === null ? "—" : fmtNum(node.threshold)),
    stat("Queue depth", node.queueDepth === null ? "—" : fmtNum(node.queueDepth)),
    stat("Status", nodeStatus(endNode)),
    stat("Node id", node.id === null ? "—" : String(node.id)),
  ]);
  body.append(grid);

  if (unit.nodes.length > 1) {
    const runProb = unit.nodes.reduce((p, n) => p * n.prob, 1);
    body.append(el("div", { class: "sub-title", text: `Segment: ${unit.nodes.length} tokens · run probability ${fmtProb(runProb)}` }));
    const strip = el("div", { class: "seg-strip" });
    const maxChips = 400;
    for (const n of unit.nodes.slice(0, maxChips)) {
      const chip = el("span", {
        class: `tok ${n === focus ? "focus" : ""}`,
        text: visibleWs(n.text),
        attrs: { title: `${fmtProb(n.prob)} · id ${n.tokenId ?? "—"}` },
        on: { click: () => renderDetails(unit, n) },
      });
      chip.style.background = d3.color(probColor(n.prob)).copy({ opacity: 0.16 }).formatRgb();
      chip.style.borderBottomColor = probColor(n.prob);
      strip.append(chip);
    }
    if (unit.nodes.length > maxChips) strip.append(el("span", { class: "muted small", text: `… ${unit.nodes.length - maxChips} more` }));
    body.append(strip);
  }

  body.append(el("div", { class: "sub-title", text: "Path text" }));
  const pathBox = el("div", { class: "path-text", attrs: { "data-role": "path" } }, [
    el("span", { class: "prompt-part", text: state.tree.root.text }),
    el("span", { text: generatedText(endNode) }),
  ]);
  body.append(pathBox);

  if (node.parent) {
    body.append(el("div", { class: "sub-title", text: "Candidates at this step" }));
    body.append(el("div", { attrs: { "data-role": "candidates" } }, [
      candidateList(node.parent.candidates, { chosen: node, explored: node.parent.children }),
    ]));
  }
  const nextFrom = node.parent === null ? node : endNode;
  if (nextFrom.candidates.length) {
    body.append(el("div", { class: "sub-title", text: node.parent === null ? "First-token candidates" : "Next-token candidates" }));
    body.append(candidateList(nextFrom.candidates, { explored: nextFrom.children }));
  }
  requestAnimationFrame(() => { pathBox.scrollTop = pathBox.scrollHeight; });
}

// ---------------------------------------------------------------- metadata, paths

function renderMeta() {
  const md = state.metadata || {};
  const sec = $("#meta-section");
  sec.classList.remove("hidden");
  $("#meta-prompt").textContent = md.prompt ?? state.tree.root.text;
  const dl = clear($("#meta-params"));
  const add = (k, v) => { dl.append(el("dt", { text: k }), el("dd", { text: v })); };
  if (md.model) add("model", String(md.model));
  const params = md.parameters || {};
  for (const [k, v] of Object.entries(params)) add(k, typeof v === "object" ? JSON.stringify(v) : String(v));
  for (const [k, v] of Object.entries(md)) {
    if (["prompt", "parameters", "model"].includes(k)) continue;
    if (v === null || typeof v === "object") continue;
    add(k, String(v));
  }
  if (!dl.childElementCount) add("parameters", "none recorded");
}

function renderPaths() {
  const list = clear($("#paths-list"));
  const completed = state.tree.completed;
  $("#paths-count").textContent = completed.length ? `(${completed.length})` : "";
  $("#paths-empty").classList.toggle("hidden", completed.length > 0);
  for (const [i, n] of completed.slice(0, 200).entries()) {
    const text = generatedText(n);
    const li = el("li", {
      dataset: { key: n.key },
      attrs: { title: text },
      on: { click: () => showPath(n, li) },
    }, [
      el("span", { class: "rank", text: `${i + 1}` }),
      el("span", { class: "txt", text: visibleWs(text) }),
      el("span", { class: "cp" }, [probBar(Math.min(1, n.cum * 20), "#2f5fd0"), fmtProb(n.cum)]),
    ]);
    list.append(li);
  }
}

function showPath(node, li) {
  for (const x of document.querySelectorAll("#paths-list li.active")) x.classList.remove("active");
  if (li) li.classList.add("active");
  state.pinned = node;
  reveal(node);
  render();
  const unit = unitOfNode(node);
  centerOn(unit.key);
  renderDetails(unit, state.mode === "segments" && unit.last !== node ? node : null);
}

// ---------------------------------------------------------------- search

function runSearch(query) {
  state.search.query = query;
  if (!state.tree || !query) {
    state.search.matches = [];
    state.search.index = -1;
    $("#search-info").textContent = "";
    applySearchClasses();
    return;
  }
  const found = searchTree(state.segments, query, 1000);
  const seen = new Set();
  state.search.matches = found.map((m) => m.node).filter((n) => (seen.has(n.key) ? false : seen.add(n.key)));
  state.search.index = state.search.matches.length ? 0 : -1;
  // Reveal (up to) the first 50 matches.
  for (const n of state.search.matches.slice(0, 50)) reveal(n);
  render();
  gotoMatch(0);
}

function gotoMatch(delta) {
  const m = state.search.matches;
  if (!m.length) {
    $("#search-info").textContent = state.search.query ? "No matches." : "";
    return;
  }
  state.search.index = (state.search.index + delta + m.length) % m.length;
  const n = m[state.search.index];
  const revealed = state.search.index >= 50;
  if (revealed) { reveal(n); render(); }
  state.pinned = n;
  applySearchClasses();
  reapplyHighlight();
  const unit = unitOfNode(n);
  centerOn(unit.key);
  renderDetails(unit, unit.nodes.length > 1 ? n : null);
  $("#search-info").textContent = `${state.search.index + 1} of ${m.length}${m.length >= 1000 ? "+" : ""} matches`;
}

function applySearchClasses() {
  for (const g of gUnits.selectAll("g.unit.match").nodes()) g.classList.remove("match", "match-current");
  for (const g of gUnits.selectAll("g.unit.match-current").nodes()) g.classList.remove("match-current");
  if (!state.search.matches.length) return;
  const cur = state.search.matches[state.search.index];
  for (const n of state.search.matches) {
    const u = unitOfNode(n);
    const g = u && state.unitEls.get(u.key);
    if (g) g.classList.add("match");
  }
  const cu = cur && unitOfNode(cur);
  const cg = cu && state.unitEls.get(cu.key);
  if (cg) cg.classList.add("match-current");
}

// ---------------------------------------------------------------- export

function exportSvgString() {
  const { w, h } = svgSize();
  const clone = svg.node().cloneNode(true);
  clone.setAttribute("xmlns", "http://www.w3.org/2000/svg");
  clone.setAttribute("width", w);
  clone.setAttribute("height", h);
  clone.setAttribute("viewBox", `0 0 ${w} ${h}`);
  const bg = document.createElementNS("http://www.w3.org/2000/svg", "rect");
  bg.setAttribute("width", "100%");
  bg.setAttribute("height", "100%");
  bg.setAttribute("fill", "#ffffff");
  clone.insertBefore(bg, clone.firstChild.nextSibling);
  return { text: new XMLSerializer().serializeToString(clone), w, h };
}

function exportName(ext) {
  const base = state.source.job ? `tokentree-${state.source.job}` : `tokentree-${safeFilename(state.source.name || "tree")}`;
  return `${base}.${ext}`;
}

function exportSvg() {
  const { text } = exportSvgString();
  downloadBlob(exportName("svg"), new Blob([text], { type: "image/svg+xml" }));
}

function exportPng() {
  const { text, w, h } = exportSvgString();
  const url = URL.createObjectURL(new Blob([text], { type: "image/svg+xml" }));
  const img = new Image();
  img.onload = () => {
    const scale = 2;
    const canvas = document.createElement("canvas");
    canvas.width = Math.round(w * scale);
    canvas.height = Math.round(h * scale);
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.scale(scale, scale);
    ctx.drawImage(img, 0, 0, w, h);
    URL.revokeObjectURL(url);
    canvas.toBlob((blob) => downloadBlob(exportName("png"), blob), "image/png");
  };
  img.onerror = () => { URL.revokeObjectURL(url); showError("Export failed", "The browser could not rasterise the SVG."); };
  img.src = url;
}

// ---------------------------------------------------------------- loading

function showError(title, text, detail, extra) {
  const box = clear($("#canvas-message"));
  box.append(messageBox("error", title, text, detail, extra));
  setPageState("error");
}

function showInfo(title, text, extra) {
  const box = clear($("#canvas-message"));
  box.append(messageBox("info", title, text, null, extra));
}

function clearMessage() {
  clear($("#canvas-message"));
}

function formatErrorExtra(err) {
  if (err instanceof TreeFormatError && err.hint === "logprobs") {
    return el("p", {}, ["Open it in the ", el("a", { href: "/viewer/logprobs", text: "log-probability viewer" }), "."]);
  }
  return null;
}

/** Install a parsed tree. `live`: keep zoom and collapse state (live growth of a running job). */
function setTree(tree, metadata, { live = false } = {}) {
  const tSet = performance.now();
  const previous = state.tree;
  state.tree = tree;
  state.metadata = metadata || {};
  state.segments = buildSegments(tree);
  state.subtreeSize = computeSubtreeSizes(tree);
  nodeUnits.clear();
  if (!live || !previous) {
    state.pinned = null;
    state.hoverKey = null;
    initialExpansion();
  } else {
    // Nodes that grew children (new nodes, leaves, chain nodes that became forks) open up,
    // unless the user collapsed them.
    let budget = LIVE_BUDGET[state.mode] - (state.all ? state.all.length : 0);
    for (const n of tree.nodes) {
      if (!n.children.length || state.userCollapsed.has(n.key)) continue;
      if ((state.knownChildren.get(n.key) || 0) >= n.children.length) continue;
      if (budget <= 0) break;
      state.expanded.add(n.key);
      budget -= n.children.length;
    }
    if (state.pinned) state.pinned = tree.nodes.find((n) => n.key === state.pinned.key) || null;
  }
  state.knownChildren = new Map(tree.nodes.map((n) => [n.key, n.children.length]));
  $("#empty-state").classList.add("hidden");
  clearMessage();
  renderMeta();
  renderPaths();
  render();
  if (state.search.query) runSearch(state.search.query);
  if (!live || !previous) {
    state.initialTransform = fitTransform(true);
    resetView();
    renderDetails(state.mode === "segments" ? state.segments.root : nodeUnit(tree.root), null);
  } else if (state.hoverKey === null && $("#details-body").dataset.key) {
    const n = tree.nodes.find((x) => x.key === $("#details-body").dataset.key);
    if (n) renderDetails(unitOfNode(n) || nodeUnit(n), null);
  }
  setPageState("ready");
  window.__tokentree.readyAt = performance.now();
  window.__tokentree.timings.setTreeMs = window.__tokentree.readyAt - tSet;
}

function loadDocument(doc, sourceName, extraMeta, opts) {
  const t0 = performance.now();
  const tree = normalizeTree(doc, sourceName);
  window.__tokentree.timings.normalizeMs = performance.now() - t0;
  const md = Object.assign({}, extraMeta || {}, tree.metadata || {});
  setTree(tree, md, opts);
}

async function loadFromFile(file) {
  if (state.stopWatch) { state.stopWatch(); state.stopWatch = null; }
  state.source = { job: null, file: null, name: file.name };
  $("#source-name").textContent = `File: ${file.name}`;
  $("#job-status").textContent = "";
  setupNav("tree", {});
  setPageState("loading");
  try {
    const text = await readFileText(file);
    const tree = parseTreeText(text, file.name);
    setTree(tree, tree.metadata);
  } catch (err) {
    reportLoadError(err, file.name);
  }
}

function reportLoadError(err, name) {
  console.warn("tokentree: could not load", name, err);
  if (!state.tree) $("#empty-state").classList.remove("hidden");
  if (err instanceof TreeFormatError) {
    showError(`Could not open ${name}`, err.message, null, formatErrorExtra(err));
  } else {
    showError(`Could not load ${name}`, err.message || String(err));
  }
}

async function loadFromUrl(url) {
  state.source = { job: null, file: url, name: url.split("/").pop() || url };
  $("#source-name").textContent = `URL: ${url}`;
  setupNav("tree", { file: url });
  try {
    const text = await fetchText(url);
    const tree = parseTreeText(text, url);
    setTree(tree, tree.metadata);
  } catch (err) {
    reportLoadError(err, url);
  }
}

function jobMeta(job) {
  const md = { prompt: job.prompt, model: job.model, parameters: job.parameters || {} };
  if (job.chat) md.chat = true;
  if (job.prefix) md.prefix = job.prefix;
  md.job = job.id;
  return md;
}

function renderJobStatus(job) {
  const box = clear($("#job-status"));
  if (!job) return;
  box.append(statusPill(job.status), el("span", { text: progressText(job) }));
  if (job.status === "failed" && job.error) box.append(el("span", { class: "err-text", text: truncate(job.error, 80), attrs: { title: job.error } }));
}

async function loadJob(jobId) {
  state.source = { job: jobId, file: null, name: `job ${jobId}` };
  $("#source-name").textContent = `Job ${jobId}`;
  setupNav("tree", { job: jobId });
  const base = `/v1/jobs/${encodeURIComponent(jobId)}`;
  let job;
  try {
    job = await fetchJSON(base);
  } catch (err) {
    $("#empty-state").classList.remove("hidden");
    showError(err.status === 404 ? `Job ${jobId} not found` : `Could not load job ${jobId}`, err.message);
    return;
  }
  state.job = job;
  renderJobStatus(job);
  if (job.kind === "logprobs") {
    showInfo("This is a log-probability job", "It has no token tree.",
      el("p", {}, [el("a", { href: `/viewer/logprobs?job=${encodeURIComponent(jobId)}`, text: "Open it in the log-probability viewer" })]));
    setPageState("ready");
    return;
  }
  const treeUrl = `${base}/tree`;
  const fetchTree = async (live) => {
    const t0 = performance.now();
    const doc = await fetchJSON(treeUrl);
    window.__tokentree.timings.fetchStart = t0;
    window.__tokentree.timings.fetchParseMs = performance.now() - t0;
    loadDocument(doc, `job ${jobId}`, jobMeta(state.job), { live });
  };
  const active = ACTIVE_STATUSES.has(job.status);
  // A job with no nodes yet has no tree (the API answers 409): wait for its first progress event
  // instead of asking, so that the console stays free of failed requests.
  const noNodesYet = active && job.progress && job.progress.nodes === 0;
  try {
    if (noNodesYet) throw new HttpError(409, "the job has no nodes yet");
    await fetchTree(false);
  } catch (err) {
    if (active && (err instanceof HttpError) && (err.status === 404 || err.status === 409)) {
      showInfo(`Job is ${job.status}`, "The tree will appear here as soon as the first nodes are expanded.");
      setPageState("waiting");
    } else if (job.status === "failed") {
      showError(`Job ${jobId} failed`, job.error || "No error message was recorded.");
    } else if (err instanceof TreeFormatError) {
      showError(`The tree of job ${jobId} is not in the expected layout`, err.message);
    } else {
      showError(`Could not load the tree of job ${jobId}`, err.message);
    }
  }
  if (!active) return;
  // At most once a second; big trees less often (the whole tree is refetched each time).
  const refetch = throttle(async () => {
    try { await fetchTree(true); } catch (err) { /* not there yet: wait for the next event */ }
  }, () => Math.min(10000, Math.max(1000, ((state.tree && state.tree.nodeCount) || 0) / 5)));
  state.stopWatch = watchJob(jobId, {
    onProgress: (j) => {
      state.job = j;
      renderJobStatus(j);
      if (!j.progress || j.progress.nodes > 0) refetch();
    },
    onEnd: (j) => {
      state.job = j;
      renderJobStatus(j);
      refetch.flush();
      if (j.status === "failed") showError(`Job ${jobId} failed`, j.error || "No error message was recorded.");
    },
  });
}

// ---------------------------------------------------------------- wiring

window.__tokentree = { state, readyAt: null, timings: {} };

function wire() {
  $("#zoom-in").addEventListener("click", () => svg.call(zoom.scaleBy, 1.3));
  $("#zoom-out").addEventListener("click", () => svg.call(zoom.scaleBy, 1 / 1.3));
  $("#zoom-reset").addEventListener("click", () => resetView());
  $("#zoom-fit").addEventListener("click", () => svg.call(zoom.transform, fitTransform(false)));
  $("#expand-all").addEventListener("click", () => state.tree && expandAll());
  $("#collapse-all").addEventListener("click", () => state.tree && collapseAll());
  $("#merge-runs").addEventListener("change", (e) => state.tree && setMode(e.target.checked ? "segments" : "nodes"));
  $("#export-svg").addEventListener("click", () => state.tree && exportSvg());
  $("#export-png").addEventListener("click", () => state.tree && exportPng());
  for (const id of ["#file-input", "#file-input-2"]) {
    $(id).addEventListener("change", (e) => {
      const f = e.target.files && e.target.files[0];
      if (f) loadFromFile(f);
      e.target.value = "";
    });
  }
  setupDropZone((f) => loadFromFile(f));
  let searchTimer = null;
  const input = $("#search");
  input.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => runSearch(input.value.trim() ? input.value : ""), 200);
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      clearTimeout(searchTimer);
      if (input.value !== state.search.query) runSearch(input.value);
      else gotoMatch(e.shiftKey ? -1 : 1);
    }
  });
  $("#search-next").addEventListener("click", () => gotoMatch(1));
  $("#search-prev").addEventListener("click", () => gotoMatch(-1));
  svg.on("click", () => {
    // Clicking the background clears a pinned path.
    state.pinned = null;
    for (const x of document.querySelectorAll("#paths-list li.active")) x.classList.remove("active");
    reapplyHighlight();
  });
  window.addEventListener("resize", () => { if (state.tree) state.initialTransform = fitTransform(true); });
}

function main() {
  wire();
  const q = queryParams();
  const job = q.get("job");
  const file = q.get("file");
  setupNav("tree", { job, file });
  if (job) loadJob(job);
  else if (file) loadFromUrl(file);
  else {
    $("#empty-state").classList.remove("hidden");
    setPageState("empty");
  }
}

main();
