// Search: find text across runs of tokens, reveal the first matches, and step through them.
import { $ } from "../common.js";
import { searchTree } from "../treedata.js";
import { centerOn, render } from "./canvas.js";
import { renderDetails } from "./details.js";
import { reveal } from "./expansion.js";
import { applySearchClasses, reapplyHighlight } from "./highlight.js";
import { state } from "./state.js";
import { unitOfNode } from "./units.js";

const MAX_MATCHES = 1000;
const REVEALED_AT_ONCE = 50; // matches opened by a search; later ones open as the user steps to them

export function runSearch(query) {
  state.search.query = query;
  if (!state.tree || !query) {
    state.search.matches = [];
    state.search.index = -1;
    $("#search-info").textContent = "";
    applySearchClasses();
    return;
  }
  const seen = new Set();
  state.search.matches = searchTree(state.segments, query, MAX_MATCHES)
    .map((m) => m.node)
    .filter((n) => (seen.has(n.key) ? false : seen.add(n.key)));
  state.search.index = state.search.matches.length ? 0 : -1;
  for (const n of state.search.matches.slice(0, REVEALED_AT_ONCE)) reveal(n);
  render();
  gotoMatch(0);
}

/** Step `delta` matches on (wrapping around), centre on it and show it in the details panel. */
export function gotoMatch(delta) {
  const m = state.search.matches;
  if (!m.length) {
    $("#search-info").textContent = state.search.query ? "No matches." : "";
    return;
  }
  state.search.index = (state.search.index + delta + m.length) % m.length;
  const n = m[state.search.index];
  if (state.search.index >= REVEALED_AT_ONCE) { reveal(n); render(); }
  state.pinned = n;
  applySearchClasses();
  reapplyHighlight();
  const unit = unitOfNode(n);
  centerOn(unit.key);
  renderDetails(unit, unit.nodes.length > 1 ? n : null);
  $("#search-info").textContent = `${state.search.index + 1} of ${m.length}${m.length >= MAX_MATCHES ? "+" : ""} matches`;
}
