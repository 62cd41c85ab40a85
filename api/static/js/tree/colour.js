// What a unit's colour means, switchable in the toolbar (state.colorBy), and the legend that says so:
//   prob        the probability of the unit's first token given what came before (red low, green high)
//   entropy     the entropy of the next-token distribution where the unit ends, in nats (the fork's
//               uncertainty: pale when the model was sure, dark purple when it hesitated)
//   unexplored  the unexplored mass where the unit ends: the next-token probability that no child
//               holds (1 minus the children's probabilities), i.e. what the tree did not follow
// A unit without the figure (a leaf never expanded has no entropy; a completed path has nothing after
// it) is grey.
/* global d3 */
import { $, clear, el, fmtNum, probColor } from "../common.js";
import { state } from "./state.js";

export const COLOR_MODES = {
  prob: "probability",
  entropy: "entropy",
  unexplored: "unexplored mass",
};
export const NO_VALUE = "#b8bec9";
const UNEXPLORED_RAMP = ["#e8f1fb", "#c2410c"];

/** The unexplored mass after `node`: the tree's own figure, or 1 minus its children's probabilities
 * (older trees); null where it means nothing (a completed path) or is unknown (children not loaded). */
export function unexploredMass(node) {
  if (node.unexploredMass !== null && node.unexploredMass !== undefined) return node.unexploredMass;
  if (node.childCount > node.children.length) return null;
  if (!node.children.length && (node.finished || node.finishReason)) return null;
  let explored = 0;
  for (const c of node.children) explored += c.prob;
  return Math.max(0, Math.min(1, 1 - explored));
}

/** The largest entropy in the tree (the top of the entropy scale), computed once per tree. */
function maxEntropy() {
  if (state.entropyMax === null) {
    let m = 0;
    for (const n of state.tree.nodes) if (n.entropy !== null && n.entropy > m) m = n.entropy;
    state.entropyMax = m || 1;
  }
  return state.entropyMax;
}

/** The figure a unit's colour shows in the current mode (null: none). */
export function unitValue(unit) {
  if (state.colorBy === "entropy") return unit.last.entropy;
  if (state.colorBy === "unexplored") return unexploredMass(unit.last);
  return unit.isRoot ? 1 : unit.first.prob;
}

export function unitColor(unit) {
  if (state.colorOf) return state.colorOf(unit); // a page's own colouring (the compare page: by side)
  if (unit.isRoot && state.colorBy === "prob") return "#2f5fd0";
  const v = unitValue(unit);
  if (v === null || v === undefined) return NO_VALUE;
  if (state.colorBy === "entropy") return d3.interpolatePuBu(0.12 + 0.88 * Math.min(1, v / maxEntropy()));
  if (state.colorBy === "unexplored") return d3.interpolateLab(...UNEXPLORED_RAMP)(v);
  return probColor(v);
}

/** The legend under the canvas: what the colour means now, and its scale. */
export function renderLegend() {
  const box = clear($("#color-legend"));
  const stops = [0, 0.25, 0.5, 0.75, 1];
  let label, low, high, ramp;
  if (state.colorBy === "entropy") {
    const top = state.tree ? maxEntropy() : 1;
    label = "entropy of the next token (nats)";
    low = "0";
    high = fmtNum(top, 2);
    ramp = stops.map((x) => d3.interpolatePuBu(0.12 + 0.88 * x));
  } else if (state.colorBy === "unexplored") {
    label = "unexplored mass after the node";
    low = "0";
    high = "1";
    ramp = stops.map((x) => d3.interpolateLab(...UNEXPLORED_RAMP)(x));
  } else {
    label = "probability";
    low = "0";
    high = "1";
    ramp = stops.map((x) => probColor(x));
  }
  const bar = el("span", { class: "ramp" });
  bar.style.background = `linear-gradient(90deg, ${ramp.join(", ")})`;
  const none = el("span", { class: "sw" });
  none.style.background = NO_VALUE;
  box.dataset.mode = state.colorBy;
  box.append(el("span", { class: "what", text: label }), el("span", { text: low }), bar, el("span", { text: high }));
  if (state.colorBy !== "prob") box.append(el("span", {}, [none, "none"]));
}
