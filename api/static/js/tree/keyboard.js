// Keyboard navigation in the tree: the canvas takes focus (Tab, or a click), and then
//   ← the parent unit, → a child (the most probable; a closed unit opens first), ↑ ↓ the siblings,
//   Enter opens the unit (its details, pinned), Space opens or closes it, Esc leaves the tree,
//   and `/` anywhere on the page goes to the search box.
// The unit the keyboard is on (state.focusKey) wears a ring (canvas.js draws the `kbd` class) and its path
// is highlighted, as a hover would.
import { $ } from "../common.js";
import { ensureVisible, render, svg } from "./canvas.js";
import { renderDetails } from "./details.js";
import { toggleUnit } from "./expansion.js";
import { hoverUnit, unhoverUnit } from "./highlight.js";
import { state } from "./state.js";

function laidOut(key) {
  return state.all && state.all.find((d) => d.data.key === key);
}

function mostProbable(children) {
  return children.reduce((best, d) => (d.data.first.prob > best.data.first.prob ? d : best));
}

/** Put the keyboard on the laid-out unit `d`: ring, path highlight, in view. */
function focusUnit(d) {
  for (const g of document.querySelectorAll("#tree-svg g.unit.kbd")) g.classList.remove("kbd");
  state.focusKey = d.data.key;
  ensureVisible(d.data.key);
  const g = state.unitEls.get(d.data.key);
  if (g) g.classList.add("kbd");
  hoverUnit(d);
  svg.attr("aria-label", `Token tree, on “${d.label}”: arrows move, Enter opens, Space folds`);
}

/** Where an arrow key leads from `d` (null: nowhere). */
function step(d, key) {
  if (key === "ArrowLeft") return d.parent;
  if (key === "ArrowRight") {
    if (!d.children && toggleUnit(d.data)) {
      render();
      d = laidOut(d.data.key);
    }
    return d && d.children ? mostProbable(d.children) : null;
  }
  if (!d.parent) return null;
  const siblings = d.parent.children;
  const i = siblings.indexOf(d) + (key === "ArrowDown" ? 1 : -1);
  return siblings[i] || null;
}

function onTreeKey(e) {
  if (!state.tree || e.altKey || e.ctrlKey || e.metaKey) return;
  let d = laidOut(state.focusKey) || state.hierarchy;
  if (e.key.startsWith("Arrow")) {
    e.preventDefault();
    if (laidOut(state.focusKey)) d = step(d, e.key) || d;
    focusUnit(d);
  } else if (e.key === "Enter") {
    e.preventDefault();
    focusUnit(d);
    state.pinned = d.data.last;
    renderDetails(d.data, null);
  } else if (e.key === " ") {
    e.preventDefault();
    if (toggleUnit(d.data)) render();
    focusUnit(laidOut(d.data.key) || state.hierarchy);
  } else if (e.key === "Escape") {
    svg.node().blur();
  }
}

export function wireKeyboard() {
  const node = svg.node();
  node.addEventListener("keydown", onTreeKey);
  node.addEventListener("focus", () => {
    if (!state.tree) return;
    focusUnit(laidOut(state.focusKey) || state.hierarchy);
  });
  node.addEventListener("blur", () => {
    for (const g of document.querySelectorAll("#tree-svg g.unit.kbd")) g.classList.remove("kbd");
    unhoverUnit();
  });
  document.addEventListener("keydown", (e) => {
    if (e.key !== "/" || e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    if (t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement || t instanceof HTMLSelectElement) return;
    e.preventDefault();
    $("#search").focus();
    $("#search").select();
  });
  $("#search").addEventListener("keydown", (e) => {
    if (e.key === "Escape") node.focus();
  });
}
