// Export: the whole laid-out tree (every open unit, not only the viewport) as a self-contained SVG, or as
// a PNG at twice its size (less for trees too big for a browser's canvas); and the current view as tree
// JSON: the nodes drawn now, in the layout the viewer reads, so that the file reopens as this view.
import { downloadBlob, safeFilename } from "../common.js";
import { svg, withAllDrawn } from "./canvas.js";
import { state } from "./state.js";

const MARGIN = 20; // pixels around the layout
const PNG_SCALE = 2;
const PNG_MAX_SIDE = 16384; // Chromium refuses canvases above 32767 pixels a side, or about 268M in all:
const PNG_MAX_PIXELS = 120e6; // stay well below (memory too)
const SVG_NS = "http://www.w3.org/2000/svg";

/** The whole layout as SVG text, and its size in pixels (the layout's bounds plus a margin). */
function svgText() {
  return withAllDrawn(() => {
    const b = state.bounds;
    const w = Math.ceil(b.width + 2 * MARGIN);
    const h = Math.ceil(b.height + 2 * MARGIN);
    const clone = svg.node().cloneNode(true);
    clone.removeAttribute("data-labels"); // an export always shows the labels
    clone.removeAttribute("tabindex");
    for (const g of clone.querySelectorAll(".kbd")) g.classList.remove("kbd");
    clone.setAttribute("xmlns", SVG_NS);
    clone.setAttribute("width", w);
    clone.setAttribute("height", h);
    clone.setAttribute("viewBox", `0 0 ${w} ${h}`);
    clone.querySelector("g.viewport").setAttribute("transform", `translate(${MARGIN - b.x},${MARGIN - b.y})`);
    const bg = document.createElementNS(SVG_NS, "rect");
    bg.setAttribute("width", "100%");
    bg.setAttribute("height", "100%");
    bg.setAttribute("fill", "#ffffff");
    clone.insertBefore(bg, clone.querySelector("g.viewport"));
    return { text: new XMLSerializer().serializeToString(clone), w, h };
  });
}

function exportName(ext) {
  const base = state.source.job ? `tokentree-${state.source.job}` : `tokentree-${safeFilename(state.source.name || "tree")}`;
  return `${base}.${ext}`;
}

function recordExport(kind, width, height, scale) {
  window.__tokentree.lastExport = { kind, width, height, scale };
}

export function exportSvg() {
  const { text, w, h } = svgText();
  recordExport("svg", w, h, 1);
  downloadBlob(exportName("svg"), new Blob([text], { type: "image/svg+xml" }));
}

/** The PNG's scale for a w×h layout: PNG_SCALE, or less where the canvas would be too big. */
function pngScale(w, h) {
  return Math.min(PNG_SCALE, PNG_MAX_SIDE / w, PNG_MAX_SIDE / h, Math.sqrt(PNG_MAX_PIXELS / (w * h)));
}

/** `onError(message)` when the browser cannot rasterise the SVG. */
export function exportPng(onError) {
  const { text, w, h } = svgText();
  const scale = pngScale(w, h);
  const url = URL.createObjectURL(new Blob([text], { type: "image/svg+xml" }));
  const img = new Image();
  img.onload = () => {
    const canvas = document.createElement("canvas");
    canvas.width = Math.round(w * scale);
    canvas.height = Math.round(h * scale);
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.scale(scale, scale);
    ctx.drawImage(img, 0, 0, w, h);
    URL.revokeObjectURL(url);
    canvas.toBlob((blob) => {
      if (!blob) { onError(`The browser could not make a ${canvas.width}×${canvas.height} PNG.`); return; }
      recordExport("png", canvas.width, canvas.height, scale);
      downloadBlob(exportName("png"), blob);
    }, "image/png");
  };
  img.onerror = () => {
    URL.revokeObjectURL(url);
    onError("The browser could not rasterise the SVG.");
  };
  img.src = url;
}

/** A node in the tree JSON layout (treedata.js reads it back), without its children. */
function rawNode(n) {
  return {
    id: n.id,
    text: n.text,
    token_id: n.tokenId,
    depth: n.depth,
    prob: n.prob,
    logprob: n.logprob,
    cumulative_prob: n.cum,
    is_finished: n.finished,
    finish_reason: n.finishReason,
    entropy: n.entropy,
    threshold: n.threshold,
    queue_depth: n.queueDepth,
    unexplored_mass: n.unexploredMass,
    candidates: n.candidates.map((c) => ({ text: c.text, prob: c.prob, token_id: c.tokenId })),
    child_count: n.childCount, // more than the children written: the view hides (or never had) the rest
    children: [],
  };
}

/** The current view as a tree document: the nodes of the units laid out now (iteratively: trees can be
 * thousands of nodes deep). */
export function exportViewJson() {
  const shown = new Set();
  for (const d of state.all) for (const n of d.data.nodes) shown.add(n.key);
  const root = rawNode(state.tree.root);
  const stack = [[state.tree.root, root]];
  while (stack.length) {
    const [node, out] = stack.pop();
    for (const c of node.children) {
      if (!shown.has(c.key)) continue;
      const child = rawNode(c);
      out.children.push(child);
      stack.push([c, child]);
    }
  }
  const view = { mode: state.mode, color_by: state.colorBy, nodes_shown: shown.size, nodes_total: state.tree.nodeCount };
  const doc = { metadata: { ...state.metadata, view }, tree: root };
  recordExport("json", null, null, null);
  downloadBlob(exportName("view.json"), new Blob([JSON.stringify(doc)], { type: "application/json" }));
}
