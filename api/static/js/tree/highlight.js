// Highlighting on the canvas: the path to the hovered unit (or else to the pinned node), and search
// matches. Works on the drawn elements (state.unitEls, state.linkEls); reapplied after every draw.
/* global d3 */
import { state } from "./state.js";
import { unitOfNode } from "./units.js";

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

/** Unit keys from the root to a laid-out unit. */
function unitKeyChain(d) {
  return d.ancestors().map((a) => a.data.key);
}

/** Unit keys along the path to `node`, in the current mode. */
export function keysForNode(node) {
  const keys = new Set();
  for (let c = node; c; c = c.parent) {
    const u = unitOfNode(c);
    if (u) keys.add(u.key);
  }
  return keys;
}

export function hoverUnit(d) {
  state.hoverKey = d.data.key;
  highlightKeys(unitKeyChain(d), d.data.key);
}

export function unhoverUnit() {
  state.hoverKey = null;
  reapplyHighlight();
}

export function reapplyHighlight() {
  if (state.hoverKey && state.unitEls.has(state.hoverKey)) {
    const d = d3.select(state.unitEls.get(state.hoverKey)).datum();
    highlightKeys(unitKeyChain(d), state.hoverKey);
  } else if (state.pinned) {
    highlightKeys(keysForNode(state.pinned), null);
  } else {
    clearHighlight();
  }
}

/** Mark the drawn units holding search matches (`match`) and the current one (`match-current`). */
export function applySearchClasses() {
  for (const g of document.querySelectorAll("#tree-svg g.unit.match, #tree-svg g.unit.match-current")) {
    g.classList.remove("match", "match-current");
  }
  const { matches, index } = state.search;
  if (!matches.length) return;
  for (const n of matches) {
    const u = unitOfNode(n);
    const g = u && state.unitEls.get(u.key);
    if (g) g.classList.add("match");
  }
  const cu = matches[index] && unitOfNode(matches[index]);
  const cg = cu && state.unitEls.get(cu.key);
  if (cg) cg.classList.add("match-current");
}
