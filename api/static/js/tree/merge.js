// Two token trees of one prompt as one merged tree, for the compare page: the browser's side of
// engine/compare.py, which it follows rule for rule (the browser tests check that the page shows the
// API's figures), so that two local files can be compared without a server.
//
// Nodes are matched by their token path from the root (children by token id, or by text where a file
// has no ids); the roots always match. Each merged node is a treedata node (so layout, canvas and
// segments draw it as they draw any tree) plus `side` ("both" | "a" | "b") and its nodes `a` and `b`
// (null on the side that lacks it). Its own figures (prob, text, ...) are A's where A has it, else B's.
//
// The distance at a node both trees expanded is the total variation distance over the candidates
// either recorded, each side's unrecorded rest (1 minus its candidates) lumped into one "other":
//   TV = 1/2 (Σ_t |p_A(t) − p_B(t)| + |other_A − other_B|)
// bounded in [0, 1], symmetric, and defined when a token is missing on one side (unlike KL).
import { bestChild } from "../treedata.js";

export const SIDES = { both: "both trees", a: "A only", b: "B only" };

/** A node's key among its siblings: its token id, else its text. */
const tokenKey = (n) => (n.tokenId !== null && n.tokenId !== undefined ? `#${n.tokenId}` : `~${n.text}`);

/** The prompt text a tree grew from: its metadata's, else its root's text. */
export function promptOf(tree) {
  const p = tree.metadata && tree.metadata.prompt;
  return typeof p === "string" ? p : tree.root.text;
}

/** Total variation distance between two recorded candidate lists ({tokenId, text, prob}). */
export function totalVariation(candsA, candsB) {
  const pa = new Map(candsA.map((c) => [tokenKey(c), c.prob]));
  const pb = new Map(candsB.map((c) => [tokenKey(c), c.prob]));
  let moved = 0;
  for (const [k, p] of pa) moved += Math.abs(p - (pb.get(k) || 0));
  for (const [k, p] of pb) if (!pa.has(k)) moved += p;
  const sum = (m) => { let s = 0; for (const p of m.values()) s += p; return s; };
  const otherA = Math.max(0, 1 - sum(pa));
  const otherB = Math.max(0, 1 - sum(pb));
  return Math.min(1, 0.5 * (moved + Math.abs(otherA - otherB)));
}

const isExpanded = (n) => n.threshold !== null && n.threshold !== undefined;

function mergedNode(a, b, parent, index) {
  const own = a || b;
  return {
    key: a ? `a${a.key}` : `b${b.key}`,
    side: a && b ? "both" : a ? "a" : "b",
    a,
    b,
    id: own.id,
    text: own.text,
    prob: own.prob,
    logprob: own.logprob,
    cum: own.cum,
    tokenId: own.tokenId,
    depth: own.depth,
    finished: own.finished,
    finishReason: own.finishReason,
    candidates: own.candidates,
    entropy: own.entropy,
    threshold: own.threshold,
    queueDepth: own.queueDepth,
    unexploredMass: own.unexploredMass ?? null,
    parent,
    children: [],
    childCount: 0, // set once the children are known: a merged node shows all it has
    index,
  };
}

/** Where the two most probable paths part: {node (merged), a, b} (the next nodes, null where a path
 * ends), or null when they are one path. */
function parting(treeA, treeB, byA) {
  let a = treeA.root;
  let b = treeB.root;
  for (;;) {
    const na = bestChild(a);
    const nb = bestChild(b);
    if (!na && !nb) return null;
    if (!na || !nb || tokenKey(na) !== tokenKey(nb)) return { node: byA.get(a.key), a: na, b: nb };
    a = na;
    b = nb;
  }
}

/**
 * Merge trees A and B (treedata.normalizeTree results). Throws an Error with `comparable === false`
 * when their prompt texts differ. Returns a treedata-shaped tree ({metadata, root, nodes, nodeCount,
 * maxDepth, completed}) plus `comparison`: {shared, onlyA, onlyB, parting, disagreements (largest
 * distance first: {node, distance}), byA (A node key -> merged node)}.
 */
export function mergeTrees(treeA, treeB) {
  const promptA = promptOf(treeA);
  const promptB = promptOf(treeB);
  if (promptA !== promptB) {
    const err = new Error(`The trees grow from different prompts (“${promptA}” and “${promptB}”): only trees of the same prompt text can be compared.`);
    err.comparable = false;
    throw err;
  }
  const nodes = [];
  const byA = new Map();
  const disagreements = [];
  let shared = 0;
  let maxDepth = 0;
  const add = (a, b, parent) => {
    const m = mergedNode(a, b, parent, nodes.length);
    nodes.push(m);
    if (parent) parent.children.push(m);
    if (a) byA.set(a.key, m);
    if (m.depth > maxDepth) maxDepth = m.depth;
    return m;
  };
  const root = add(treeA.root, treeB.root, null);
  // Breadth first over matched pairs, as engine/compare.py walks them (so ties keep the same order).
  const queue = [root];
  for (let qi = 0; qi < queue.length; qi++) {
    const m = queue[qi];
    if (m.side !== "both") {
      for (const c of (m.a || m.b).children) queue.push(add(m.a ? c : null, m.b ? c : null, m));
      continue;
    }
    shared++;
    if (isExpanded(m.a) && isExpanded(m.b)) {
      disagreements.push({ node: m, distance: totalVariation(m.a.candidates, m.b.candidates) });
    }
    const bChildren = new Map(m.b.children.map((c) => [tokenKey(c), c]));
    const matched = new Set();
    for (const c of m.a.children) {
      const other = bChildren.get(tokenKey(c)) || null;
      if (other) matched.add(other);
      queue.push(add(c, other, m));
    }
    for (const c of m.b.children) if (!matched.has(c)) queue.push(add(null, c, m));
  }
  for (const m of nodes) m.childCount = m.children.length;
  disagreements.sort((x, y) => y.distance - x.distance); // stable: equal distances stay shallowest first
  const completed = nodes.filter((n) => n.finishReason === "stop").sort((x, y) => y.cum - x.cum);
  return {
    metadata: { prompt: promptA },
    root,
    nodes,
    nodeCount: nodes.length,
    maxDepth,
    completed,
    comparison: {
      shared,
      onlyA: treeA.nodeCount - shared,
      onlyB: treeB.nodeCount - shared,
      parting: parting(treeA, treeB, byA),
      disagreements,
      byA,
    },
  };
}
