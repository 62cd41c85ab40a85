// Tree viewer: a horizontal, collapsible, zoomable D3 tree of a token tree. This module installs trees
// and wires the page; the parts live in ./tree/ (state, units, layout, canvas, expansion, highlight,
// details, search, paths, metadata, export) and the sources in ./loader.js.
import { $, setPageState } from "./common.js";
import { startLoader } from "./loader.js";
import { buildSegments, parseTreeText } from "./treedata.js";
import { fitTransform, fitView, render, resetView, resetViewToFit, svg, zoomBy } from "./tree/canvas.js";
import { renderLegend } from "./tree/colour.js";
import { renderDetails } from "./tree/details.js";
import { collapseAll, expandAll, initialExpansion, openGrownNodes, switchMode } from "./tree/expansion.js";
import { exportPng, exportSvg, exportViewJson } from "./tree/export.js";
import { addGrowButtons, canGrow, requestGrowth } from "./tree/grow.js";
import { wireKeyboard } from "./tree/keyboard.js";
import { computeSubtreeSizes } from "./tree/layout.js";
import { renderMetadata } from "./tree/metadata.js";
import { renderPaths, unpinPath } from "./tree/paths.js";
import { gotoMatch, runSearch } from "./tree/search.js";
import { state } from "./tree/state.js";
import { nodeUnit, resetNodeUnits, rootUnit, unitOfNode } from "./tree/units.js";

const SEARCH_DELAY_MS = 200;

window.__tokentree = { state, readyAt: null, timings: {}, lastRender: null };

/** The tree JSON's metadata as a job's fields, for trees that come without (the tree's own wins). */
function jobMetadata(job) {
  const md = { prompt: job.prompt, model: job.model, parameters: job.parameters || {}, job: job.id };
  if (job.chat) md.chat = true;
  if (job.prefix) md.prefix = job.prefix;
  return md;
}

/** Install a parsed tree. `live`: an update of the tree shown (keep zoom, open and closed units). */
function setTree(tree, { job = null, live = false } = {}) {
  const tSet = performance.now();
  const previous = state.tree;
  const update = live && previous !== null;
  state.tree = tree;
  state.metadata = Object.assign({}, job ? jobMetadata(job) : {}, tree.metadata || {});
  state.segments = buildSegments(tree);
  state.subtreeSize = computeSubtreeSizes(tree);
  state.entropyMax = null;
  resetNodeUnits();
  if (update) {
    openGrownNodes(tree, state.all ? state.all.length : 0);
    if (state.pinned) state.pinned = tree.nodes.find((n) => n.key === state.pinned.key) || null;
  } else {
    state.pinned = null;
    state.hoverKey = null;
    initialExpansion();
  }
  state.knownChildren = new Map(tree.nodes.map((n) => [n.key, n.children.length]));
  $("#empty-state").classList.add("hidden");
  renderMetadata();
  renderPaths();
  render();
  renderLegend();
  if (state.search.query) runSearch(state.search.query);
  if (!update) {
    resetViewToFit();
    renderDetails(rootUnit(), null);
  } else if (state.hoverKey === null && $("#details-body").dataset.key) {
    // Keep showing the node in the details panel, with its new numbers.
    const n = tree.nodes.find((x) => x.key === $("#details-body").dataset.key);
    if (n) renderDetails(unitOfNode(n) || nodeUnit(n), null);
  }
  setPageState("ready");
  window.__tokentree.readyAt = performance.now();
  window.__tokentree.timings.setTreeMs = window.__tokentree.readyAt - tSet;
}

function parseTree(text, name) {
  const t0 = performance.now();
  const tree = parseTreeText(text, name);
  window.__tokentree.timings.parseMs = performance.now() - t0;
  return tree;
}

function setMode(mode) {
  if (mode === state.mode) return;
  switchMode(mode);
  render();
  resetViewToFit();
}

function wireSearch() {
  let timer = null;
  const input = $("#search");
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => runSearch(input.value.trim() ? input.value : ""), SEARCH_DELAY_MS);
  });
  input.addEventListener("keydown", (e) => {
    if (e.key !== "Enter") return;
    e.preventDefault();
    clearTimeout(timer);
    if (input.value !== state.search.query) runSearch(input.value);
    else gotoMatch(e.shiftKey ? -1 : 1);
  });
  $("#search-next").addEventListener("click", () => gotoMatch(1));
  $("#search-prev").addEventListener("click", () => gotoMatch(-1));
}

function wireToolbar() {
  const withTree = (fn) => () => { if (state.tree) fn(); };
  $("#zoom-in").addEventListener("click", () => zoomBy(1.3));
  $("#zoom-out").addEventListener("click", () => zoomBy(1 / 1.3));
  $("#zoom-reset").addEventListener("click", () => resetView());
  $("#zoom-fit").addEventListener("click", () => fitView());
  $("#expand-all").addEventListener("click", withTree(() => { expandAll(); render(); }));
  $("#collapse-all").addEventListener("click", withTree(() => { collapseAll(); render(); resetViewToFit(); }));
  $("#merge-runs").addEventListener("change", (e) => { if (state.tree) setMode(e.target.checked ? "segments" : "nodes"); });
  $("#export-svg").addEventListener("click", withTree(exportSvg));
  $("#export-png").addEventListener("click", withTree(() => exportPng((text) => loader.showError("Export failed", text))));
  $("#export-json").addEventListener("click", withTree(exportViewJson));
  $("#color-by").addEventListener("change", (e) => {
    state.colorBy = e.target.value;
    renderLegend();
    if (state.tree) render();
  });
}

wireToolbar();
wireSearch();
wireKeyboard();
renderLegend();
svg.on("click", unpinPath); // a click on the background (units stop their clicks)
window.addEventListener("resize", () => { if (state.tree) state.initialTransform = fitTransform(); });

// Growing the stored job in place from the details panel's candidates: the job runs again, and the
// loader follows it (the view stays; new nodes open as they arrive).
let shownJob = null;
let nodesByKey = { tree: null, map: null }; // the tree's nodes by key, made when first asked for
state.afterDetails = (body) => addGrowButtons(body, (key) => {
  if (nodesByKey.tree !== state.tree) nodesByKey = { tree: state.tree, map: new Map(state.tree.nodes.map((n) => [n.key, n])) };
  return nodesByKey.map.get(key);
}, () => canGrow(state.source, shownJob), growAt);

async function growAt(node, tokenId) {
  const what = tokenId === null ? "the node itself" : `its candidate #${tokenId}`;
  try {
    shownJob = await requestGrowth(state.source.job, node.id, tokenId);
  } catch (err) {
    loader.showError("Could not grow the tree here", err.message);
    return;
  }
  for (const button of document.querySelectorAll("[data-role=grow]")) button.remove();
  loader.showInfo("Growing the tree", `From node ${node.id}, ${what}: the new branch appears as it grows.`);
  loader.reloadJob();
}

const loader = startLoader({
  view: "tree",
  kind: "tree",
  parse: parseTree,
  show: (tree, { job, live }) => setTree(tree, { job, live }),
  hasDocument: () => state.tree !== null,
  messages: "#canvas-message",
  waitingText: "The tree will appear here as soon as the first nodes are expanded.",
  live: true,
  // At most once a second; big trees less often (the whole tree is fetched each time).
  refreshMs: () => Math.min(10000, Math.max(1000, ((state.tree && state.tree.nodeCount) || 0) / 5)),
  onSource: (source) => { state.source = source; },
  onJob: (job) => { shownJob = job; },
});
