// Token-tree documents: validation, normalisation, single-child runs ("segments"), paths.
//
// Layout (the seed notebooks' layout, which the API's GET /v1/jobs/{id}/tree also returns):
//   {"metadata": {"prompt", "parameters": {...}, "model"?, ...},
//    "tree": {"text", "prob", "cumulative_prob", "token_id", "depth", "is_finished",
//             "candidates": [{"text", "prob", "token_id"}], "children": [...],
//             optional: "id", "logprob", "entropy", "threshold", "queue_depth", "finish_reason",
//                       "raw_prob", "raw_logprob", "unexplored_mass", "bytes"}}
//
// Everything here is iterative (no recursion): trees can be thousands of nodes deep.

import { FormatError } from "./common.js";

/** Not a token tree; `hint`: "logprobs" when it is log-probability records instead. */
export class TreeFormatError extends FormatError {}

const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const isNum = (v) => typeof v === "number" && Number.isFinite(v);
const optNum = (v) => (isNum(v) ? v : null);

function typeName(v) {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  return typeof v === "object" ? "an object" : `a ${typeof v}`;
}

/** Parse text (from a file or a URL) into a tree document, with readable errors. */
export function parseTreeText(text, sourceName = "the file") {
  const trimmed = String(text).trim();
  if (!trimmed) throw new TreeFormatError(`${sourceName} is empty.`);
  let doc;
  try {
    doc = JSON.parse(trimmed);
  } catch (err) {
    // A JSONL file of log-probability records is a common mix-up.
    const first = trimmed.split("\n", 1)[0];
    try {
      const rec = JSON.parse(first);
      if (isObj(rec) && Array.isArray(rec.data)) {
        throw new TreeFormatError(
          `${sourceName} is a JSONL file of log-probability records, not a token tree.`,
          "logprobs",
        );
      }
    } catch (inner) {
      if (inner instanceof TreeFormatError) throw inner;
    }
    throw new TreeFormatError(`${sourceName} is not valid JSON: ${err.message}`);
  }
  return normalizeTree(doc, sourceName);
}

function nodePath(stackEntry) {
  // Rebuild "tree.children[0].children[2]" from the parent chain, eliding the middle of deep paths.
  const parts = [];
  let e = stackEntry;
  while (e) {
    parts.push(e.index === null ? "tree" : `children[${e.index}]`);
    e = e.parentEntry;
  }
  parts.reverse();
  if (parts.length > 8) return `${parts.slice(0, 3).join(".")}.….${parts.slice(-3).join(".")} (depth ${parts.length - 1})`;
  return parts.join(".");
}

// 2×32-bit FNV-1a style hash for stable node keys when the engine's "id" is absent.
function hashStep(h1, h2, s) {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 16777619) >>> 0;
    h2 = Math.imul(h2 ^ c, 2246822519) >>> 0;
  }
  return [h1, h2];
}

/**
 * Validate and normalise a parsed document. Returns
 *   {metadata, root, nodes (pre-order), nodeCount, maxDepth, completed (ranked)}
 * where every node is {key, id, text, prob, logprob, cum, tokenId, depth, finished, finishReason,
 *   candidates, entropy, threshold, queueDepth, rawProb, unexploredMass, bytes, parent, children, index,
 *   extra}.
 */
export function normalizeTree(doc, sourceName = "the file") {
  if (!isObj(doc)) {
    if (Array.isArray(doc) && doc.length && isObj(doc[0]) && Array.isArray(doc[0].data)) {
      throw new TreeFormatError(`${sourceName} holds log-probability records, not a token tree.`, "logprobs");
    }
    throw new TreeFormatError(`${sourceName} must be a JSON object with "metadata" and "tree"; it is ${typeName(doc)}.`);
  }
  let rawRoot = doc.tree;
  let metadata = doc.metadata;
  if (rawRoot === undefined) {
    if ("text" in doc && "children" in doc) {
      rawRoot = doc; // a bare tree node
      metadata = {};
    } else if (Array.isArray(doc.data) && "prompt" in doc) {
      throw new TreeFormatError(`${sourceName} is a log-probability record, not a token tree.`, "logprobs");
    } else {
      const keys = Object.keys(doc).slice(0, 8).map((k) => JSON.stringify(k)).join(", ") || "none";
      throw new TreeFormatError(`${sourceName} has no "tree" object at the top level (top-level keys: ${keys}).`);
    }
  }
  if (!isObj(rawRoot)) throw new TreeFormatError(`"tree" in ${sourceName} must be an object; it is ${typeName(rawRoot)}.`);
  if (metadata === undefined || metadata === null) metadata = {};
  if (!isObj(metadata)) throw new TreeFormatError(`"metadata" in ${sourceName} must be an object; it is ${typeName(metadata)}.`);
  if (metadata.parameters !== undefined && metadata.parameters !== null && !isObj(metadata.parameters)) {
    throw new TreeFormatError(`"metadata.parameters" in ${sourceName} must be an object; it is ${typeName(metadata.parameters)}.`);
  }

  const nodes = [];
  let maxDepth = 0;
  const stack = [{ raw: rawRoot, parent: null, index: null, parentEntry: null }];
  while (stack.length) {
    const entry = stack.pop();
    const raw = entry.raw;
    const where = () => nodePath(entry);
    if (!isObj(raw)) throw new TreeFormatError(`${where()} must be an object; it is ${typeName(raw)}.`);
    if (typeof raw.text !== "string") {
      throw new TreeFormatError(`${where()}.text is ${raw.text === undefined ? "missing" : typeName(raw.text)}; expected a string.`);
    }
    const parent = entry.parent;
    const depth = parent ? parent.depth + 1 : 0;
    let prob = raw.prob;
    if (prob === undefined && parent === null) prob = 1;
    if (!isNum(prob)) {
      throw new TreeFormatError(`${where()}.prob is ${prob === undefined ? "missing" : typeName(prob)}; expected a number between 0 and 1.`);
    }
    if (prob < 0 || prob > 1.000001) {
      throw new TreeFormatError(`${where()}.prob is ${prob}; expected a probability between 0 and 1 (not a percentage).`);
    }
    const children = raw.children === undefined || raw.children === null ? [] : raw.children;
    if (!Array.isArray(children)) throw new TreeFormatError(`${where()}.children must be an array; it is ${typeName(children)}.`);
    let candidates = raw.candidates === undefined || raw.candidates === null ? [] : raw.candidates;
    if (!Array.isArray(candidates)) throw new TreeFormatError(`${where()}.candidates must be an array; it is ${typeName(candidates)}.`);
    candidates = candidates.map((c, i) => {
      if (!isObj(c) || typeof c.text !== "string" || !isNum(c.prob)) {
        throw new TreeFormatError(`${where()}.candidates[${i}] must be {"text": string, "prob": number, "token_id": number}.`);
      }
      return {
        text: c.text, prob: c.prob, tokenId: c.token_id ?? null,
        rawProb: optNum(c.raw_prob), bytes: Array.isArray(c.bytes) ? c.bytes : null,
      };
    });
    const tokenId = raw.token_id ?? null;
    const tokenKey = tokenId !== null ? `#${tokenId}` : `~${raw.text}`;
    const h = parent ? hashStep(parent._h1, parent._h2, `/${tokenKey}`) : hashStep(2166136261, 0x9e3779b9, "root");
    const key = raw.id !== undefined && raw.id !== null ? `n${raw.id}` : `h${h[0].toString(36)}${h[1].toString(36)}`;
    const cum = isNum(raw.cumulative_prob) ? raw.cumulative_prob : (parent ? parent.cum * prob : 1);
    const node = {
      key,
      id: raw.id ?? null,
      text: raw.text,
      prob,
      logprob: optNum(raw.logprob),
      rawProb: optNum(raw.raw_prob), // the model's own, before the sampler (prob is the sampler's)
      unexploredMass: optNum(raw.unexplored_mass),
      bytes: Array.isArray(raw.bytes) ? raw.bytes : null, // a token that is not valid UTF-8 on its own
      cum,
      tokenId,
      depth,
      finished: raw.is_finished === true,
      finishReason: typeof raw.finish_reason === "string" ? raw.finish_reason : null,
      candidates,
      entropy: optNum(raw.entropy),
      threshold: optNum(raw.threshold),
      queueDepth: optNum(raw.queue_depth),
      unexploredMass: optNum(raw.unexplored_mass), // null in older trees: tree/colour.js derives it
      parent,
      children: [],
      childCount: isNum(raw.child_count) ? raw.child_count : children.length,
      index: nodes.length,
      _h1: h[0],
      _h2: h[1],
    };
    nodes.push(node);
    if (parent) parent.children.push(node);
    if (depth > maxDepth) maxDepth = depth;
    for (let i = children.length - 1; i >= 0; i--) {
      stack.push({ raw: children[i], parent: node, index: i, parentEntry: entry });
    }
  }
  // Children were pushed in pre-order, i.e. in their original order.
  const root = nodes[0];
  // Keys from the hash may (very rarely) collide between siblings with the same token: disambiguate.
  const seen = new Set();
  for (const n of nodes) {
    if (seen.has(n.key)) {
      let i = 2;
      while (seen.has(`${n.key}.${i}`)) i++;
      n.key = `${n.key}.${i}`;
    }
    seen.add(n.key);
  }
  const completed = nodes.filter(isCompleted).sort((a, b) => b.cum - a.cum);
  return { metadata, root, nodes, nodeCount: nodes.length, maxDepth, completed };
}

/** A completed path ends here: engine's finish_reason "stop", or (seed files) a finished leaf. */
export function isCompleted(n) {
  if (n.finishReason !== null) return n.finishReason === "stop";
  return n.finished && n.children.length === 0 && n.parent !== null;
}

/** Ancestors from the root down to `n` (inclusive). */
export function pathTo(n) {
  const out = [];
  for (let c = n; c; c = c.parent) out.push(c);
  return out.reverse();
}

/** Generated text from the root (exclusive) to `n` (inclusive). */
export function generatedText(n) {
  const parts = [];
  for (let c = n; c && c.parent; c = c.parent) parts.push(c.text);
  return parts.reverse().join("");
}

/**
 * A path's response: the forced prefix (`metadata.prefix`: part of the response, though not one of the
 * tree's tokens), then the generated text down to `n`. The whole text is the prompt (the root's text)
 * followed by it; in chat mode the prompt went through the chat template and is shown apart.
 */
export function responseText(metadata, n) {
  return ((metadata && metadata.prefix) || "") + generatedText(n);
}

/** Child with the highest probability (first on ties). */
export function bestChild(n) {
  let best = null;
  for (const c of n.children) if (!best || c.prob > best.prob) best = c;
  return best;
}

/** Follow the most probable child from `n` down to a leaf; returns nodes after `n`. */
export function mostProbableContinuation(n) {
  const out = [];
  let c = bestChild(n);
  while (c) {
    out.push(c);
    c = bestChild(c);
  }
  return out;
}

/**
 * Runs of single-child nodes as segments. The root is its own segment; every other segment
 * starts at a child of a fork (or of the root) and runs down while a node has exactly one child.
 * Segment: {key, nodes, first, last, parent, children, isRoot, text (lazy)}. `sameRun(node, child)`:
 * whether a single child may continue its parent's run (the compare page keeps runs on one side).
 */
export function buildSegments(tree, sameRun = () => true) {
  const make = (nodes, parent) => ({
    key: nodes[0].key,
    nodes,
    first: nodes[0],
    last: nodes[nodes.length - 1],
    parent,
    children: [],
    isRoot: parent === null,
    _text: null,
    get text() {
      if (this._text === null) this._text = this.isRoot ? this.first.text : this.nodes.map((n) => n.text).join("");
      return this._text;
    },
  });
  const rootSeg = make([tree.root], null);
  const byNode = new Map(); // node key -> segment containing it
  byNode.set(tree.root.key, rootSeg);
  const stack = [rootSeg];
  let count = 1;
  while (stack.length) {
    const seg = stack.pop();
    for (const c of seg.last.children) {
      const run = [c];
      let cur = c;
      while (cur.children.length === 1 && sameRun(cur, cur.children[0])) {
        cur = cur.children[0];
        run.push(cur);
      }
      const s = make(run, seg);
      for (const n of run) byNode.set(n.key, s);
      seg.children.push(s);
      stack.push(s);
      count++;
    }
  }
  return { root: rootSeg, byNode, count };
}

/**
 * Case-insensitive search over the text of each run (so matches can span tokens).
 * Returns [{node, segment}] — node = where the match starts — in pre-order, at most `limit`.
 */
export function searchTree(segments, query, limit = 500) {
  const q = query.toLowerCase();
  const out = [];
  if (!q) return out;
  const stack = [segments.root];
  while (stack.length && out.length < limit) {
    const seg = stack.pop();
    if (!seg.isRoot) {
      const text = seg.text.toLowerCase();
      let pos = text.indexOf(q);
      if (pos >= 0) {
        let offset = 0;
        let ni = 0;
        while (pos >= 0 && out.length < limit) {
          while (ni < seg.nodes.length - 1 && offset + seg.nodes[ni].text.length <= pos) {
            offset += seg.nodes[ni].text.length;
            ni++;
          }
          out.push({ node: seg.nodes[ni], segment: seg });
          pos = text.indexOf(q, pos + Math.max(1, q.length));
        }
      }
    }
    for (let i = seg.children.length - 1; i >= 0; i--) stack.push(seg.children[i]);
  }
  return out;
}
