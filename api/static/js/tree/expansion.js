// Which units are open: the first view within a budget, the user's clicks, expand/collapse all, paths
// revealed for search results, live growth, and switching between segment and node mode. These change
// `state.expanded` only; the caller renders.
import { state } from "./state.js";
import { isOpen } from "./units.js";

const INITIAL_BUDGET = { segments: 400, nodes: 400 }; // units open in a tree's first view
const LIVE_BUDGET = { segments: 1500, nodes: 3000 }; // units that live growth may open
const NODE_MODE_BUDGET = 2500; // nodes opened when switching to node mode

/** Node mode: open each child's single-child chain down to the next fork. */
function chainRun(node) {
  for (const c of node.children) {
    let cur = c;
    while (cur.children.length === 1) {
      state.expanded.add(cur.key);
      cur = cur.children[0];
    }
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

/** A new tree's first view: breadth-first, as much as the budget allows. */
export function initialExpansion() {
  state.expanded = new Set();
  state.userCollapsed = new Set();
  const budget = INITIAL_BUDGET[state.mode];
  if (state.mode === "nodes") {
    expandNodesWithin([state.tree.root], budget);
    return;
  }
  let visible = 1;
  const queue = [state.segments.root];
  for (let qi = 0; qi < queue.length; qi++) {
    const s = queue[qi];
    if (!s.children.length) continue;
    if (visible + s.children.length > budget && s !== state.segments.root) continue;
    state.expanded.add(s.last.key);
    visible += s.children.length;
    queue.push(...s.children);
  }
}

/**
 * Live growth: nodes that grew children since the last update (new nodes, leaves, chain nodes that
 * became forks) open up, unless the user closed them, within a budget of `shown` units drawn now.
 */
export function openGrownNodes(tree, shown) {
  let budget = LIVE_BUDGET[state.mode] - shown;
  for (const n of tree.nodes) {
    if (!n.children.length || state.userCollapsed.has(n.key)) continue;
    if ((state.knownChildren.get(n.key) || 0) >= n.children.length) continue;
    if (budget <= 0) break;
    state.expanded.add(n.key);
    budget -= n.children.length;
  }
}

/** Open or close a unit (a click). False for a leaf, which has nothing to toggle. */
export function toggleUnit(unit) {
  const n = unit.last;
  if (!n.children.length) return false;
  if (isOpen(unit)) {
    state.expanded.delete(n.key);
    state.userCollapsed.add(n.key);
  } else {
    state.expanded.add(n.key);
    state.userCollapsed.delete(n.key);
    if (state.mode === "nodes") chainRun(n);
  }
  return true;
}

export function expandAll() {
  // In segment mode only the ends of runs matter; chain nodes stay as they are, so that switching
  // to node mode later does not suddenly draw every node.
  const minChildren = state.mode === "segments" ? 2 : 1;
  for (const n of state.tree.nodes) {
    if (n.children.length >= minChildren || (n.parent === null && n.children.length)) state.expanded.add(n.key);
  }
  state.userCollapsed.clear();
}

/** Close everything but the root (and, in node mode, the chains below it). */
export function collapseAll() {
  state.expanded = new Set([state.tree.root.key]);
  if (state.mode === "nodes") chainRun(state.tree.root);
  for (const n of state.tree.nodes) if (n.children.length && !state.expanded.has(n.key)) state.userCollapsed.add(n.key);
}

/** Open every ancestor of `node`, so that it is drawn. */
export function reveal(node) {
  for (let c = node.parent; c; c = c.parent) {
    state.expanded.add(c.key);
    state.userCollapsed.delete(c.key);
  }
}

/** Switch to "segments" or "nodes"; node mode shows the nodes of the segments visible now, up to a budget. */
export function switchMode(mode) {
  if (mode === "nodes" && state.all) {
    let count = 0;
    for (const s of state.all.map((d) => d.data)) {
      for (let i = 0; i < s.nodes.length - 1; i++) {
        if (count > NODE_MODE_BUDGET) break;
        state.expanded.add(s.nodes[i].key);
        count++;
      }
    }
  }
  state.mode = mode;
}
