// The "Prompt & parameters" panel: the tree's prompt, model, parameters and other metadata.
import { $, el, clear } from "../common.js";
import { state } from "./state.js";

const SHOWN_APART = ["prompt", "parameters", "model"];

export function renderMetadata() {
  const md = state.metadata || {};
  $("#meta-section").classList.remove("hidden");
  $("#meta-prompt").textContent = md.prompt ?? state.tree.root.text;
  const dl = clear($("#meta-params"));
  const add = (k, v) => { dl.append(el("dt", { text: k }), el("dd", { text: v })); };
  if (md.model) add("model", String(md.model));
  // How much of the model's probability the tree shows: its completed paths' and all its leaves' mass.
  const coverage = md.coverage;
  if (coverage && typeof coverage.completed_mass === "number" && typeof coverage.leaf_mass === "number") {
    add("completed paths' mass", coverage.completed_mass.toFixed(4));
    add("all leaves' mass", `${coverage.leaf_mass.toFixed(4)} (unexplored ${(1 - coverage.leaf_mass).toFixed(4)})`);
  }
  for (const [k, v] of Object.entries(md.parameters || {})) add(k, typeof v === "object" ? JSON.stringify(v) : String(v));
  for (const [k, v] of Object.entries(md)) {
    if (SHOWN_APART.includes(k) || v === null || typeof v === "object") continue;
    add(k, String(v));
  }
  if (!dl.childElementCount) add("parameters", "none recorded");
}
