// Units: what the canvas draws as one labelled dot. In segment mode a unit is a segment (a run of
// single-child nodes, treedata.buildSegments); in node mode a unit is one node.
import { state } from "./state.js";

const nodeUnits = new Map();

/** A one-node unit, made once per node of the current tree. */
export function nodeUnit(n) {
  let u = nodeUnits.get(n.key);
  if (!u || u.first !== n) {
    u = { key: n.key, nodes: [n], first: n, last: n, isRoot: n.parent === null, text: n.text };
    nodeUnits.set(n.key, u);
  }
  return u;
}

/** Forget the node units of the previous tree. */
export function resetNodeUnits() {
  nodeUnits.clear();
}

/** The unit that shows node `n` in the current mode. */
export function unitOfNode(n) {
  return state.mode === "segments" ? state.segments.byNode.get(n.key) : nodeUnit(n);
}

export function rootUnit() {
  return state.mode === "segments" ? state.segments.root : nodeUnit(state.tree.root);
}

export function isOpen(unit) {
  return state.expanded.has(unit.last.key);
}

/** The units drawn under `unit`, or null when it is closed or a leaf (d3.hierarchy's children). */
export function visibleChildren(unit) {
  if (!unit.last.children.length || !isOpen(unit)) return null;
  return state.mode === "segments" ? unit.children : unit.last.children.map(nodeUnit);
}

export function unitProb(unit) {
  return unit.isRoot ? 1 : unit.first.prob;
}
