// Compare page: two token trees of one prompt drawn as ONE merged tree (./tree/merge.js), each node
// coloured by the tree it is in (both, A only, B only), both next-token distributions side by side for the
// hovered node, and the nodes where those distributions differ most, ranked, each a click away.
//
// The trees come from two jobs (`?a=ID&b=ID`; `?job=ID` is A) or two local files. The drawing is the tree
// viewer's (./tree/: layout, canvas, units, expansion); this page installs the merged tree in its state
// and gives it its own colours (`state.colorOf`) and details panel (`state.describe`).
import {
  $, el, clear, visibleWs, truncate, fmtProb, messageBox, queryParams, fetchJSON, fetchText, readFileText,
  probBar, setupNav, setPageState,
} from "./common.js";
import { buildSegments, generatedText, parseTreeText } from "./treedata.js";
import { fitView, frameUnits, render, resetView, resetViewToFit, zoomBy } from "./tree/canvas.js";
import { collapseAll, expandAll, initialExpansion, reveal, switchMode } from "./tree/expansion.js";
import { reapplyHighlight } from "./tree/highlight.js";
import { computeSubtreeSizes } from "./tree/layout.js";
import { SIDES, mergeTrees, totalVariation } from "./tree/merge.js";
import { state } from "./tree/state.js";
import { resetNodeUnits, unitOfNode } from "./tree/units.js";

export const SIDE_COLORS = { both: "#8a94a6", a: "#2563eb", b: "#ea580c" };
const RANKED_SHOWN = 100;
const MAX_CANDIDATES = 12;
// Settings whose difference the summary names (as engine/compare.py's COMPARED_SETTINGS).
const COMPARED_SETTINGS = ["model", "model_fingerprint", "dtype", "chat", "prefix"];
const JOB_ID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;

window.__tokentree = { state, readyAt: null, timings: {}, lastRender: null, comparison: null };

const sources = { a: null, b: null }; // {tree, label} per side
let merged = null;
let generation = 0;

// ---------------------------------------------------------------- messages

function showMessage(kind, title, text) {
  clear($("#canvas-message")).append(messageBox(kind, title, text));
  if (kind === "error") {
    if (!merged) $("#empty-state").classList.remove("hidden");
    setPageState("error");
  }
}

// ---------------------------------------------------------------- the merged tree

/** The merged tree's units are coloured by side; a run never spans two sides (see `install`). */
state.colorOf = (unit) => SIDE_COLORS[unit.first.side];
state.describe = (unit, focus) => describe(unit, focus);

function install() {
  merged = null;
  const a = sources.a && sources.a.tree;
  const b = sources.b && sources.b.tree;
  if (!a || !b) {
    showMessage("info", `Open tree ${a ? "B" : "A"} too`, "The comparison needs two trees of the same prompt.");
    setPageState("waiting");
    return;
  }
  const t0 = performance.now();
  try {
    merged = mergeTrees(a, b);
  } catch (err) {
    showMessage("error", "These trees cannot be compared", err.message);
    return;
  }
  clear($("#canvas-message"));
  state.tree = merged;
  state.metadata = merged.metadata;
  // A run of single-child nodes stays on one side, so that its colour is true of all its tokens.
  state.segments = buildSegments(merged, (node, child) => node.side === child.side);
  state.subtreeSize = computeSubtreeSizes(merged);
  state.pinned = null;
  state.hoverKey = null;
  resetNodeUnits();
  initialExpansion();
  $("#empty-state").classList.add("hidden");
  renderSummary();
  renderRanked();
  render();
  resetViewToFit();
  describe(unitOfNode(merged.root), null);
  const c = merged.comparison;
  window.__tokentree.comparison = {
    shared: c.shared, onlyA: c.onlyA, onlyB: c.onlyB,
    top: c.disagreements.slice(0, RANKED_SHOWN).map((d) => ({ key: d.node.key, distance: d.distance })),
  };
  window.__tokentree.timings.mergeMs = performance.now() - t0;
  setPageState("ready");
  window.__tokentree.readyAt = performance.now();
}

/** Open the node's ancestors and its unit, draw, and frame the unit with its children; show its details. */
function goTo(node) {
  const unit = unitOfNode(node);
  reveal(node);
  state.expanded.add(unit.last.key); // a unit opens at its last node (the node may sit inside a run)
  state.userCollapsed.delete(unit.last.key);
  render();
  const keys = [unit.key];
  for (const c of unit.last.children) keys.push(unitOfNode(c).key);
  frameUnits(keys);
  state.pinned = node;
  reapplyHighlight();
  describe(unit, unit.nodes.length > 1 ? node : null);
  for (const li of document.querySelectorAll("#ranked-list li")) li.classList.toggle("current", li.dataset.key === node.key);
}

// ---------------------------------------------------------------- summary and ranking

function settingDifferences(ma, mb) {
  const found = [];
  for (const k of COMPARED_SETTINGS) {
    if (JSON.stringify(ma[k] ?? null) !== JSON.stringify(mb[k] ?? null)) found.push([k, ma[k] ?? null, mb[k] ?? null]);
  }
  const pa = ma.parameters || {};
  const pb = mb.parameters || {};
  for (const k of [...new Set([...Object.keys(pa), ...Object.keys(pb)])].sort()) {
    if (JSON.stringify(pa[k] ?? null) !== JSON.stringify(pb[k] ?? null)) found.push([k, pa[k] ?? null, pb[k] ?? null]);
  }
  return found;
}

const tokenText = (n) => `“${visibleWs(n.text)}”`;
const pathText = (n) => (n.parent ? `“${visibleWs(truncate(generatedText(n).slice(-60), 60))}”` : "the prompt");

function renderSummary() {
  const c = merged.comparison;
  $("#summary-section").classList.remove("hidden");
  $("#cmp-prompt").textContent = merged.metadata.prompt;
  const counts = clear($("#cmp-counts"));
  const row = (side, label, value) => counts.append(
    el("dt", {}, [el("span", { class: "sw", attrs: { style: `background:${SIDE_COLORS[side]}` } }), label]),
    el("dd", { text: value.toLocaleString("en-US"), dataset: { count: side } }),
  );
  row("both", "shared nodes", c.shared);
  row("a", "only in A", c.onlyA);
  row("b", "only in B", c.onlyB);

  const notes = clear($("#cmp-differences"));
  const ma = sources.a.tree.metadata || {};
  const mb = sources.b.tree.metadata || {};
  for (const [k, va, vb] of settingDifferences(ma, mb)) {
    notes.append(el("li", {}, [el("code", { text: k }), ` A ${JSON.stringify(va)} · B ${JSON.stringify(vb)}`]));
  }
  if (Boolean(ma.chat) !== Boolean(mb.chat)) notes.append(el("li", { class: "warn", text: "One tree wraps the prompt in the chat template and the other does not: the same token paths follow different contexts." }));
  if ((ma.prefix || null) !== (mb.prefix || null)) notes.append(el("li", { class: "warn", text: "The trees force different response prefixes: the same token paths follow different contexts." }));
  if (!notes.childElementCount) notes.append(el("li", { class: "muted", text: "No setting differs in the trees' metadata." }));

  const box = clear($("#cmp-parting"));
  const p = c.parting;
  if (!p) {
    box.append(el("p", { class: "small", text: "The same in both trees." }));
    return;
  }
  const step = (side, n) => (n ? [el("span", { class: `side-chip ${side}`, text: side.toUpperCase() }), ` ${tokenText(n)} ${fmtProb(n.prob)}`]
    : [el("span", { class: `side-chip ${side}`, text: side.toUpperCase() }), " has no node after it"]);
  box.append(
    el("p", { class: "small", text: `They part after ${pathText(p.node)} (depth ${p.node.depth}):` }),
    el("div", { class: "parting-steps" }, [el("div", {}, step("a", p.a)), el("div", {}, step("b", p.b))]),
    el("button", { class: "btn small", id: "goto-parting", text: "Show where", on: { click: () => goTo(p.node) } }),
  );
}

function renderRanked() {
  const list = clear($("#ranked-list"));
  const all = merged.comparison.disagreements;
  $("#ranked-section").classList.remove("hidden");
  $("#ranked-count").textContent = `(${all.length.toLocaleString("en-US")} nodes both expanded)`;
  for (const [i, d] of all.slice(0, RANKED_SHOWN).entries()) {
    list.append(el("li", { dataset: { key: d.node.key, rank: String(i + 1) }, attrs: { title: "Go to this node" }, on: { click: () => goTo(d.node) } }, [
      el("span", { class: "p", text: d.distance.toFixed(3) }),
      el("span", { class: "txt", text: d.node.parent ? visibleWs(truncate(generatedText(d.node).slice(-48), 48)) : "(the prompt)" }),
    ]));
  }
  if (!all.length) list.append(el("li", { class: "muted", text: "No node was expanded in both trees." }));
}

// ---------------------------------------------------------------- details: both distributions

/** The candidates of both sides as rows [token, pA, pB], the likelier first, and each side's "other". */
function distributionRows(a, b) {
  const key = (c) => (c.tokenId !== null ? `#${c.tokenId}` : `~${c.text}`);
  const rows = new Map();
  for (const c of a ? a.candidates : []) rows.set(key(c), { text: c.text, a: c.prob, b: null });
  for (const c of b ? b.candidates : []) {
    const r = rows.get(key(c));
    if (r) r.b = c.prob;
    else rows.set(key(c), { text: c.text, a: null, b: c.prob });
  }
  const sorted = [...rows.values()].sort((x, y) => Math.max(y.a ?? 0, y.b ?? 0) - Math.max(x.a ?? 0, x.b ?? 0));
  const other = (n) => (n ? Math.max(0, 1 - n.candidates.reduce((s, c) => s + c.prob, 0)) : null);
  return { rows: sorted, otherA: other(a), otherB: other(b) };
}

function probCell(p, side, expanded) {
  if (!expanded) return el("td", { class: "p muted", text: "—" });
  return el("td", { class: "p" }, [probBar(p ?? 0, SIDE_COLORS[side]), el("span", { text: p === null ? "·" : fmtProb(p) })]);
}

function describe(unit, focus) {
  const body = clear($("#details-body"));
  const n = focus || unit.last;
  body.dataset.key = n.key;
  body.dataset.side = n.side;
  body.append(el("div", { class: "details-token" }, [
    el("span", { class: `side-chip ${n.side}`, text: SIDES[n.side] }),
    el("span", { class: "tok-chip", dataset: { role: "token" }, text: n.parent ? visibleWs(unit.nodes.length > 1 && !focus ? unit.text : n.text) : "prompt" }),
  ]));
  body.append(el("p", { class: "small muted", text: `Node ${n.a ? `${n.a.id ?? "—"} in A` : "not in A"}, ${n.b ? `${n.b.id ?? "—"} in B` : "not in B"}; depth ${n.depth}.` }));
  const expandedA = Boolean(n.a && n.a.threshold !== null);
  const expandedB = Boolean(n.b && n.b.threshold !== null);
  const where = n.parent ? `after ${pathText(n)}` : "after the prompt";
  if (!expandedA && !expandedB) {
    body.append(el("p", { class: "details-empty", text: `Neither tree expanded this node: no next-token distribution was recorded ${where}.` }));
    return;
  }
  const head = el("p", { class: "small" }, [`Next token ${where}`]);
  if (expandedA && expandedB) {
    head.append(el("span", { class: "tv", dataset: { role: "distance" }, text: ` · distance ${totalVariation(n.a.candidates, n.b.candidates).toFixed(3)}` }));
  }
  body.append(head);
  const { rows, otherA, otherB } = distributionRows(expandedA ? n.a : null, expandedB ? n.b : null);
  const table = el("table", { class: "cmp-dist", dataset: { role: "distributions" } }, [
    el("thead", {}, [el("tr", {}, [el("th", { text: "token" }), el("th", { text: "A" }), el("th", { text: "B" })])]),
  ]);
  const tbody = el("tbody");
  for (const r of rows.slice(0, MAX_CANDIDATES)) {
    tbody.append(el("tr", {}, [el("td", { class: "t", text: visibleWs(r.text) }), probCell(r.a, "a", expandedA), probCell(r.b, "b", expandedB)]));
  }
  if (rows.length > MAX_CANDIDATES) tbody.append(el("tr", { class: "muted" }, [el("td", { attrs: { colspan: "3" }, text: `… ${rows.length - MAX_CANDIDATES} more` })]));
  tbody.append(el("tr", { class: "other" }, [el("td", { class: "t", text: "(not recorded)" }), probCell(otherA, "a", expandedA), probCell(otherB, "b", expandedB)]));
  table.append(tbody);
  body.append(table);
  if (!expandedA || !expandedB) body.append(el("p", { class: "small muted", text: `Only ${expandedA ? "A" : "B"} expanded this node.` }));
}

// ---------------------------------------------------------------- sources

function setSource(side, label) {
  $(`#source-${side}`).textContent = label;
}

async function fromJob(side, id, mine) {
  setSource(side, `Job ${id}`);
  if (!JOB_ID.test(id)) throw new Error(`“${truncate(id, 40)}” (tree ${side.toUpperCase()}) is not a job id: ids look like 3f2b8c1e-5d7a-4c2e-9b1f-0a6d2e4c8b90. Copy it again from the job list.`);
  const base = `/v1/jobs/${encodeURIComponent(id)}`;
  let job;
  try {
    job = await fetchJSON(base);
  } catch (err) {
    if (err.status === 404) throw new Error(`Job ${id} (tree ${side.toUpperCase()}) was not found: it was deleted, or belongs to another API key.`);
    throw err;
  }
  if (job.kind !== "tree") throw new Error(`Job ${id} (tree ${side.toUpperCase()}) is a ${job.kind} job: pick a token-tree job.`);
  if (job.progress && job.progress.nodes === 0) {
    throw new Error(`Job ${id} (tree ${side.toUpperCase()}) has no tree yet (${job.status}): compare it once it has nodes.`);
  }
  const tree = parseTreeText(await fetchText(`${base}/tree`), `job ${id}`);
  if (mine()) {
    sources[side] = { tree, label: `Job ${id}` };
    setSource(side, `Job ${truncate(id, 13)} · ${job.status}`);
  }
}

async function fromFile(side, file) {
  generation += 1;
  const mine = generation;
  setSource(side, `File: ${file.name}`);
  setPageState("loading");
  try {
    const tree = parseTreeText(await readFileText(file), file.name);
    if (mine !== generation) return;
    sources[side] = { tree, label: file.name };
    install();
  } catch (err) {
    if (mine === generation) showMessage("error", `Could not open ${file.name}`, err.message);
  }
}

async function start() {
  const q = queryParams();
  const ids = { a: q.get("a") || q.get("job"), b: q.get("b") };
  setupNav("compare", { job: ids.a });
  for (const side of ["a", "b"]) {
    $(`#file-${side}`).addEventListener("change", (e) => {
      const f = e.target.files && e.target.files[0];
      if (f) fromFile(side, f);
      e.target.value = "";
    });
  }
  if (!ids.a && !ids.b) {
    $("#empty-state").classList.remove("hidden");
    setPageState("empty");
    return;
  }
  generation += 1;
  const mine = generation;
  const current = () => mine === generation;
  try {
    await Promise.all(["a", "b"].filter((s) => ids[s]).map((s) => fromJob(s, ids[s], current)));
  } catch (err) {
    if (current()) showMessage("error", err.title || "Could not load the trees", err.message);
    return;
  }
  if (current()) install();
}

// ---------------------------------------------------------------- toolbar

function wireToolbar() {
  const withTree = (fn) => () => { if (merged) fn(); };
  $("#zoom-in").addEventListener("click", () => zoomBy(1.3));
  $("#zoom-out").addEventListener("click", () => zoomBy(1 / 1.3));
  $("#zoom-reset").addEventListener("click", () => resetView());
  $("#zoom-fit").addEventListener("click", () => fitView());
  $("#expand-all").addEventListener("click", withTree(() => { expandAll(); render(); }));
  $("#collapse-all").addEventListener("click", withTree(() => { collapseAll(); render(); resetViewToFit(); }));
  $("#merge-runs").addEventListener("change", withTree(() => {
    switchMode($("#merge-runs").checked ? "segments" : "nodes");
    render();
    resetViewToFit();
  }));
  for (const [side, color] of Object.entries(SIDE_COLORS)) {
    $(`#side-legend [data-side=${side}] .sw`).style.background = color;
  }
}

wireToolbar();
start();
