// Job list: recent jobs with status and progress, and a form to submit a job.
import {
  $, el, clear, truncate, messageBox, fetchJSON, statusPill, progressText, relativeTime, ACTIVE_STATUSES,
  setPageState, HttpError,
} from "./common.js";
import { jobParameters } from "./parameters.js";
import { pickBox } from "./comparepick.js";
import { loadStudyNames, studyTag } from "./studytags.js";

const PAGE = 20;

let offset = 0;
let items = [];
let refreshTimer = null;

// ---------------------------------------------------------------- job list

function jobLinks(job) {
  const id = encodeURIComponent(job.id);
  const links = el("td", { class: "links" });
  if (job.kind === "logprobs" || job.kind === "score") { // a score job's record is a log-prob record
    links.append(el("a", { href: `/viewer/logprobs?job=${id}`, text: "Log-probs" }));
  } else {
    links.append(
      el("a", { href: `/viewer/tree?job=${id}`, text: "Tree" }),
      el("a", { href: `/viewer/response?job=${id}`, text: "Response" }),
      pickBox(job),
    );
  }
  return links;
}

function jobRow(job) {
  const status = el("td", {}, [statusPill(job.status)]);
  const prompt = el("td", {}, [
    el("div", { class: "prompt", text: job.prompt || "(empty prompt)", attrs: { title: job.prompt || "" } }),
    el("div", { class: "muted small", text: `${job.kind === "logprobs" ? "log-probabilities" : job.kind === "score" ? `scored text “${truncate(job.text || "", 24)}”` : "token tree"}${job.chat ? " · chat" : ""}${job.prefix ? ` · prefix “${truncate(job.prefix, 24)}”` : ""}` }),
  ]);
  if (job.study_id) prompt.append(studyTag(job));
  if (job.status === "failed" && job.error) prompt.append(el("div", { class: "err-text", text: truncate(job.error, 160), attrs: { title: job.error } }));
  return el("tr", { dataset: { job: job.id, status: job.status } }, [
    status,
    prompt,
    el("td", { class: "mono small", text: job.model || "" }),
    el("td", { class: "progress", text: progressText(job) || "—" }),
    el("td", { class: "small muted", text: relativeTime(job.created_at), attrs: { title: job.created_at || "" } }),
    jobLinks(job),
  ]);
}

function renderJobs(total) {
  const body = clear($("#jobs-body"));
  if (!items.length) {
    body.append(el("tr", { class: "empty-row" }, [el("td", { attrs: { colspan: "6" }, text: "No jobs yet. Submit one with the form." })]));
  }
  for (const job of items) body.append(jobRow(job));
  $("#jobs-total").textContent = total ? `${items.length} of ${total}` : "";
  $("#more").classList.toggle("hidden", items.length >= total);
}

async function loadJobs({ append = false } = {}) {
  const status = $("#status-filter").value;
  const q = new URLSearchParams({ limit: String(append ? PAGE : Math.max(PAGE, items.length || PAGE)), offset: String(append ? offset : 0) });
  if (status) q.set("status", status);
  try {
    const [page] = await Promise.all([fetchJSON(`/v1/jobs?${q}`), loadStudyNames()]);
    const got = Array.isArray(page.items) ? page.items : [];
    items = append ? items.concat(got) : got;
    offset = items.length;
    clear($("#jobs-message"));
    renderJobs(page.total ?? items.length);
  } catch (err) {
    clear($("#jobs-message")).append(messageBox("error", "Could not load the job list", err.message));
  }
  scheduleRefresh();
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  const active = items.some((j) => ACTIVE_STATUSES.has(j.status));
  refreshTimer = setTimeout(() => loadJobs(), active ? 2000 : 10000);
}

// ---------------------------------------------------------------- form

let params = []; // [{kind, name, type, default, minimum, maximum, description}], from GET /v1/parameters

/** The input of a kind's parameter (kinds share some names: the sampler's settings). */
const paramInput = (kind, name) =>
  document.querySelector(`#params-grid .field[data-kind="${CSS.escape(kind)}"][data-field="${CSS.escape(name)}"] input`);

function paramField(kind, p) {
  // `p-NAME`, or `p-KIND-NAME` for a name an earlier kind has already.
  const id = document.getElementById(`p-${p.name}`) ? `p-${kind}-${p.name}` : `p-${p.name}`;
  if (p.type === "boolean") { // a switch (score's include_prompt)
    return el("div", { class: "field", dataset: { field: p.name, kind } }, [
      el("label", { class: "toggle", attrs: { title: p.description } }, [
        el("input", { id, type: "checkbox", name: p.name, checked: Boolean(p.default) }), ` ${p.name}`]),
    ]);
  }
  const integer = p.type === "integer";
  return el("div", { class: "field", dataset: { field: p.name, kind } }, [
    el("label", { attrs: { for: id, title: p.description }, text: p.name }),
    el("input", {
      id, type: "number", name: p.name,
      attrs: {
        step: integer ? "1" : "any", min: p.minimum, max: p.maximum, placeholder: String(p.default),
        inputmode: integer ? "numeric" : "decimal",
        title: `${p.description} (${p.exclusive_minimum ? "above " : ""}${p.minimum} to ${p.maximum}; default ${p.default})`,
      },
    }),
  ]);
}

/** One field per parameter of each kind, as the server describes them; blank means its default. */
async function buildParamFields() {
  const grid = clear($("#params-grid"));
  try {
    const described = await jobParameters();
    params = [];
    for (const kind of ["tree", "logprobs", "score"]) {
      for (const p of described[kind] || []) {
        params.push({ kind, ...p });
        grid.append(paramField(kind, p));
      }
    }
  } catch (err) {
    grid.append(messageBox("error", "Could not load the parameters", `${err.message} Jobs get the server's defaults.`));
  }
  syncKind();
}

function syncKind() {
  const kind = $("#f-kind").value;
  for (const f of document.querySelectorAll("#params-grid .field")) f.classList.toggle("hidden", f.dataset.kind !== kind);
  $("#text-field").classList.toggle("hidden", kind !== "score"); // only a score job takes a text
}

async function loadModels() {
  try {
    const res = await fetchJSON("/v1/models");
    const models = (res.models || []).map((m) => (typeof m === "string" ? { name: m } : m)).filter((m) => m && m.name);
    if (!models.length) return;
    const sel = clear($("#f-model"));
    for (const m of models) sel.append(el("option", { value: m.name, text: m.name, selected: Boolean(m.default) }));
  } catch (_) { /* keep "demo" */ }
}

function clearFieldErrors() {
  for (const f of document.querySelectorAll(".field.invalid")) f.classList.remove("invalid");
  for (const e of document.querySelectorAll(".field .err")) e.remove();
}

function fieldError(name, msg) {
  // The current kind's field of that name first (kinds share the sampler's names).
  const named = `.field[data-field="${CSS.escape(name)}"]`;
  const field = document.querySelector(`${named}[data-kind="${CSS.escape($("#f-kind").value)}"]`) || document.querySelector(named);
  if (!field) return false;
  field.classList.add("invalid");
  field.classList.remove("hidden");
  field.append(el("span", { class: "err", text: msg }));
  return true;
}

async function submit(e) {
  e.preventDefault();
  clearFieldErrors();
  const result = clear($("#form-result"));
  const kind = $("#f-kind").value;
  const prompt = $("#f-prompt").value;
  if (!prompt.trim()) {
    fieldError("prompt", "Enter a prompt.");
    return;
  }
  const parameters = {};
  for (const p of params) {
    if (p.kind !== kind) continue;
    if (p.type === "boolean") { parameters[p.name] = paramInput(kind, p.name).checked; continue; }
    const v = paramInput(kind, p.name).value.trim();
    if (v === "") continue;
    const num = Number(v);
    if (!Number.isFinite(num)) { fieldError(p.name, "Not a number."); return; }
    parameters[p.name] = num; // the server checks the type and the range, and says what is wrong
  }
  const body = {
    prompt,
    model: $("#f-model").value,
    kind,
    parameters,
    chat: $("#f-chat").checked,
    prefix: $("#f-prefix").value ? $("#f-prefix").value : null,
    text: kind === "score" ? $("#f-text").value : undefined, // left out of the JSON for the other kinds
  };
  $("#submit").disabled = true;
  $("#form-status").textContent = "Submitting…";
  try {
    const job = await fetchJSON("/v1/jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const id = encodeURIComponent(job.id);
    const links = job.kind === "logprobs" || job.kind === "score"
      ? [el("a", { href: `/viewer/logprobs?job=${id}`, text: "log-probability viewer" })]
      : [el("a", { href: `/viewer/tree?job=${id}`, text: "tree viewer" }), " (it grows live) or the ",
        el("a", { href: `/viewer/response?job=${id}`, text: "response viewer" })];
    result.append(messageBox("info", "Job submitted", `Job ${job.id} is ${job.status}.`, null, el("p", {}, ["Open it in the ", ...links, "."])));
    await loadJobs();
  } catch (err) {
    let shown = false;
    const detail = err instanceof HttpError && err.body && err.body.detail;
    if (Array.isArray(detail)) {
      for (const d of detail) {
        const loc = Array.isArray(d.loc) ? d.loc : [];
        const name = String(loc[loc.length - 1] ?? "");
        if (fieldError(name, d.msg || "invalid")) shown = true;
      }
    }
    result.append(messageBox("error", "The job was not accepted", shown ? "Check the highlighted fields." : err.message));
  } finally {
    $("#submit").disabled = false;
    $("#form-status").textContent = "";
  }
}

async function main() {
  $("#f-kind").addEventListener("change", syncKind);
  $("#job-form").addEventListener("submit", submit);
  $("#refresh").addEventListener("click", () => loadJobs());
  $("#status-filter").addEventListener("change", () => { items = []; loadJobs(); });
  $("#more").addEventListener("click", () => loadJobs({ append: true }));
  await Promise.all([buildParamFields(), loadModels(), loadJobs()]);
  setPageState("ready");
}

main();
