// The completed paths list: paths that reached a stop token, most probable first; choosing one reveals
// it, pins its highlight, frames the whole path and shows its end.
import { $, el, clear, visibleWs, fmtProb, probBar } from "../common.js";
import { responseText } from "../treedata.js";
import { frameUnits, render } from "./canvas.js";
import { renderDetails } from "./details.js";
import { reveal } from "./expansion.js";
import { keysForNode, reapplyHighlight } from "./highlight.js";
import { state } from "./state.js";
import { unitOfNode } from "./units.js";

const MAX_LISTED = 200;

function clearActive() {
  for (const x of document.querySelectorAll("#paths-list li.active")) x.classList.remove("active");
}

export function renderPaths() {
  const list = clear($("#paths-list"));
  const completed = state.tree.completed;
  $("#paths-count").textContent = completed.length ? `(${completed.length})` : "";
  $("#paths-empty").classList.toggle("hidden", completed.length > 0);
  for (const [i, n] of completed.slice(0, MAX_LISTED).entries()) {
    const text = responseText(state.metadata, n); // the forced prefix, then the path's tokens
    const li = el("li", {
      dataset: { key: n.key },
      attrs: { title: text },
      on: { click: () => showPath(n, li) },
    }, [
      el("span", { class: "rank", text: `${i + 1}` }),
      el("span", { class: "txt", text: visibleWs(text) }),
      el("span", { class: "cp" }, [probBar(Math.min(1, n.cum * 20), "#2f5fd0"), fmtProb(n.cum)]),
    ]);
    list.append(li);
  }
}

function showPath(node, li) {
  clearActive();
  li.classList.add("active");
  state.pinned = node;
  reveal(node);
  render();
  const unit = unitOfNode(node);
  frameUnits(keysForNode(node));
  renderDetails(unit, state.mode === "segments" && unit.last !== node ? node : null);
}

/** Drop the pinned path (a click on the canvas' background). */
export function unpinPath() {
  state.pinned = null;
  clearActive();
  reapplyHighlight();
}
