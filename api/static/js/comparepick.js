// The job list's picks for the compare page: a "Compare" box on each tree job's row, and a bar that opens
// /viewer/compare with the two jobs picked (A the first picked). Picks live here, not in the rows, so
// they survive the list's refreshes (its rows are redrawn every few seconds); a third pick drops the
// oldest.
import { $, el, clear, truncate } from "./common.js";

const picked = []; // [{id, prompt}], oldest first, at most two

/** The row's "Compare" box for a tree job (null for other kinds). */
export function pickBox(job) {
  if (job.kind !== "tree") return null;
  const box = el("input", { type: "checkbox", dataset: { compare: job.id }, attrs: { "aria-label": "Pick to compare" } });
  box.checked = picked.some((p) => p.id === job.id);
  box.addEventListener("change", () => toggle(job, box.checked));
  return el("label", { class: "pick", attrs: { title: "Pick two tree jobs of the same prompt to compare them" } }, [box, " Compare"]);
}

function toggle(job, on) {
  const at = picked.findIndex((p) => p.id === job.id);
  if (at >= 0) picked.splice(at, 1);
  if (on) picked.push({ id: job.id, prompt: job.prompt });
  if (picked.length > 2) picked.shift();
  for (const box of document.querySelectorAll("input[data-compare]")) box.checked = picked.some((p) => p.id === box.dataset.compare);
  renderBar();
}

function renderBar() {
  const bar = clear($("#compare-bar"));
  bar.classList.toggle("hidden", picked.length === 0);
  if (picked.length === 1) {
    bar.append(el("span", { text: `Picked “${truncate(picked[0].prompt || "", 40)}”: pick a second tree job of the same prompt to compare.` }));
    return;
  }
  if (picked.length !== 2) return;
  const [a, b] = picked;
  const href = `/viewer/compare?a=${encodeURIComponent(a.id)}&b=${encodeURIComponent(b.id)}`;
  bar.append(el("a", { class: "btn primary small", id: "open-compare", href, text: "Compare the two picked jobs" }));
  if (a.prompt !== b.prompt) bar.append(el("span", { class: "err-text", text: " Their prompts differ: the compare page will refuse them." }));
}
