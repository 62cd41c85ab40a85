// The details panel: the hovered (or chosen) unit's token, probabilities, the rule's inputs, the text of
// its path, and the candidates at and after it.
/* global d3 */
import { $, el, clear, visibleWs, fmtProb, fmtNum, probColor, probBar } from "../common.js";
import { generatedText } from "../treedata.js";
import { state } from "./state.js";

const MAX_CANDIDATES = 25;
const MAX_RUN_CHIPS = 400;

const candidateId = (c) => (c.tokenId !== null ? `#${c.tokenId}` : `~${c.text}`);

/** Candidates, most probable first; the chosen one and the explored ones (children) marked. */
function candidateList(cands, { chosen = null, explored = [], owner = null } = {}) {
  const exploredIds = new Set(explored.map(candidateId));
  const chosenId = chosen ? candidateId(chosen) : null;
  const sorted = cands.slice().sort((a, b) => b.prob - a.prob);
  // The node the candidates are of, and each one's token id: for what other modules add (grow.js).
  const ul = el("ul", { class: "cand-list", attrs: { "data-owner": owner ? owner.key : null } });
  const shown = sorted.slice(0, MAX_CANDIDATES);
  for (const c of shown) {
    const id = candidateId(c);
    const cls = id === chosenId ? "chosen" : exploredIds.has(id) ? "explored" : "";
    const title = `token id ${c.tokenId ?? "—"}${c.rawProb !== null ? ` · model's prob ${fmtProb(c.rawProb)}` : ""}`
      + (c.bytes ? ` · bytes ${bytesText(c.bytes)}` : "");
    ul.append(el("li", { class: cls, attrs: { title, "data-token-id": c.tokenId ?? null } }, [
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

/** A token's bytes (not valid UTF-8 on their own) as hex: `e2 80`. */
const bytesText = (bytes) => bytes.map((b) => b.toString(16).padStart(2, "0")).join(" ");

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

function logprobText(node) {
  if (node.logprob !== null) return fmtNum(node.logprob);
  return node.prob > 0 && node.parent ? fmtNum(Math.log(node.prob)) : "—";
}

/** The run's tokens as chips; clicking one shows that token. */
function runStrip(unit, focus) {
  const strip = el("div", { class: "seg-strip" });
  for (const n of unit.nodes.slice(0, MAX_RUN_CHIPS)) {
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
  if (unit.nodes.length > MAX_RUN_CHIPS) strip.append(el("span", { class: "muted small", text: `… ${unit.nodes.length - MAX_RUN_CHIPS} more` }));
  return strip;
}

/** Show `unit` in the panel; `focus`: one node of a run to show instead of the run's first. */
export function renderDetails(unit, focus) {
  if (state.describe) { state.describe(unit, focus); return; } // a page's own details (the compare page)
  const body = clear($("#details-body"));
  const node = focus || unit.first;
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
    body.append(el("div", { class: "prob-row" }, [
      probBar(node.prob, probColor(node.prob)),
      el("span", { class: "val", text: fmtProb(node.prob), attrs: { "data-role": "prob" } }),
    ]));
  }

  // A merged run's figures come from two nodes: each says which (its first token, or its last).
  const run = node !== endNode;
  const of = (n) => (run ? ` · ${n === node ? "first" : "last"}` : "");
  if (run) {
    body.append(el("p", { class: "muted small run-note", attrs: { "data-role": "run-note" } }, [
      "“first”: the run's first token ", el("b", { text: visibleWs(node.text) }),
      "; “last”: its last token ", el("b", { text: visibleWs(endNode.text) }), ".",
    ]));
  }
  body.append(el("div", { class: "stat-grid" }, [
    stat(`Token id${of(node)}`, node.tokenId === null ? "—" : String(node.tokenId)),
    stat(`Cumulative prob${of(endNode)}`, fmtProb(endNode.cum)),
    stat(`Log-prob${of(node)}`, logprobText(node)),
    stat(`Entropy${of(node)}`, node.entropy === null ? "—" : `${fmtNum(node.entropy)} nats`),
    stat(`Threshold${of(node)}`, node.threshold === null ? "—" : fmtNum(node.threshold)),
    stat(`Queue depth${of(node)}`, node.queueDepth === null ? "—" : fmtNum(node.queueDepth)),
    stat(`Status${of(endNode)}`, nodeStatus(endNode)),
    stat(`Node id${of(node)}`, node.id === null ? "—" : String(node.id)),
    // The bar above shows the sampler's probability (the rule branches on it); the model's own beside it.
    stat(`Model's prob${of(node)}`, node.rawProb === null ? fmtProb(node.prob) : fmtProb(node.rawProb)),
    stat(`Unexplored mass${of(node)}`, node.unexploredMass === null ? "—" : fmtProb(node.unexploredMass)),
    ...(node.bytes ? [stat(`Bytes${of(node)}`, bytesText(node.bytes))] : []),
  ]));

  if (unit.nodes.length > 1) {
    const runProb = unit.nodes.reduce((p, n) => p * n.prob, 1);
    body.append(el("div", { class: "sub-title", text: `Segment: ${unit.nodes.length} tokens · run probability ${fmtProb(runProb)}` }));
    body.append(runStrip(unit, focus));
  }

  body.append(el("div", { class: "sub-title", text: "Path text" }));
  // The prompt, then the response: the forced prefix (not one of the tree's tokens) and the path's tokens.
  // In chat mode the response is the model's turn, shown apart from the prompt.
  const md = state.metadata || {};
  const pathBox = el("div", { class: "path-text", attrs: { "data-role": "path" } }, [
    el("span", { class: "prompt-part", text: state.tree.root.text }),
    md.chat ? el("span", { class: "chat-break", attrs: { "data-role": "chat-break" } }) : null,
    md.prefix ? el("span", { class: "prefix-part", text: md.prefix, attrs: { title: "response prefix (forced)" } }) : null,
    el("span", { text: generatedText(endNode) }),
  ]);
  body.append(pathBox);

  if (node.parent) {
    body.append(el("div", { class: "sub-title", text: `Candidates at this step${run ? " (for the first token)" : ""}` }));
    body.append(el("div", { attrs: { "data-role": "candidates" } }, [
      candidateList(node.parent.candidates, { chosen: node, explored: node.parent.children, owner: node.parent }),
    ]));
  }
  const nextFrom = node.parent === null ? node : endNode;
  if (nextFrom.candidates.length) {
    const after = run ? " (after the last token)" : "";
    body.append(el("div", { class: "sub-title", text: node.parent === null ? "First-token candidates" : `Next-token candidates${after}` }));
    body.append(candidateList(nextFrom.candidates, { explored: nextFrom.children, owner: nextFrom }));
  }
  body.dataset.endKey = endNode.key;
  if (state.afterDetails) state.afterDetails(body); // what a page adds (tree.js: grow.js's buttons)
  requestAnimationFrame(() => { pathBox.scrollTop = pathBox.scrollHeight; });
}
