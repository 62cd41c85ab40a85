// Study page (`/viewer/study?id=ID`): the progress of all its jobs together (polled: one request however
// many jobs), its fork points ranked as the reader picks, and its jobs with links to each tree (and to
// compare two jobs of one prompt). Model text is only ever set as text, never as HTML.
import {
  $, el, clear, truncate, visibleWs, fmtProb, fmtNum, messageBox, queryParams, fetchJSON, fetchChecked,
  statusPill, progressText, downloadBlob, safeFilename, setPageState, throttle,
} from "./common.js";

const STUDY_ID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;
const POLL_MS = 1500;
const FORKS_EVERY_MS = 5000; // forks change as trees grow: read again at most this often while it runs
const CANDIDATES_SHOWN = 4;
const JOB_LIST_LINK = () => el("p", {}, ["Pick one from the ", el("a", { href: "/", text: "job list" }), "."]);

const id = queryParams().get("id") || "";
const base = `/v1/studies/${encodeURIComponent(id)}`;
let study = null;
let pollTimer = null;

function problem(title, text, extra) {
  clear($("#study-message")).append(messageBox("error", title, text, null, extra || null));
  setPageState("error");
}

// ---------------------------------------------------------------- progress

function renderProgress() {
  const p = study.progress;
  const ended = p.jobs - p.by_status.queued - p.by_status.running;
  $("#study-name").textContent = `Study: ${study.name}`;
  const request = study.request || {};
  const prompts = request.prompts ? `${request.prompts.length} prompts`
    : `the template “${truncate(request.template || "", 60)}” with ${(request.values || []).length} rows of values`;
  const models = (request.models || ["the default model"]).join(", ");
  $("#study-lede").textContent = `${prompts} × ${models} × ${(request.parameter_sets || [{}]).length} parameter sets `
    + `= ${p.jobs} ${request.kind === "logprobs" ? "log-probability" : "token-tree"} jobs.`;
  $("#study-total").textContent = `${ended} of ${p.jobs} jobs ended`;
  $("#study-bar-done").style.width = `${p.jobs ? (100 * ended) / p.jobs : 100}%`;
  const counts = clear($("#study-counts"));
  for (const [status, count] of Object.entries(p.by_status)) {
    if (count) counts.append(statusPill(status), el("span", { class: "count", text: ` ${count}  ` }));
  }
  counts.append(el("span", { class: "muted", text: ` · ${fmtNum(p.nodes)} nodes · ${fmtNum(p.completed_paths)} completed paths` }));
  $("#cancel-study").classList.toggle("hidden", study.done);
  $("#study-panel").classList.remove("hidden");
}

// ---------------------------------------------------------------- jobs

/** The parameters that differ between the study's jobs, as `name=value` (the rest are shared). */
function varyingParameters(jobs) {
  const names = new Set(jobs.flatMap((job) => Object.keys(job.parameters || {})));
  return [...names].filter((name) => new Set(jobs.map((job) => JSON.stringify((job.parameters || {})[name]))).size > 1).sort();
}

function jobLinks(job, firstOfPrompt) {
  const jid = encodeURIComponent(job.id);
  const links = el("td", { class: "links" });
  if (job.kind === "tree") {
    links.append(el("a", { href: `/viewer/tree?job=${jid}`, text: "Tree" }),
      el("a", { href: `/viewer/response?job=${jid}`, text: "Response" }));
    if (firstOfPrompt && firstOfPrompt.id !== job.id) {
      links.append(el("a", { class: "compare-link", href: `/viewer/compare?a=${encodeURIComponent(firstOfPrompt.id)}&b=${jid}`,
        text: "Compare", attrs: { title: "Compare with the first job of the same prompt" } }));
    }
  } else {
    links.append(el("a", { href: `/viewer/logprobs?job=${jid}`, text: "Log-probs" }));
  }
  return links;
}

function renderJobs() {
  const jobs = study.jobs || [];
  const varying = varyingParameters(jobs);
  const firsts = new Map();
  for (const job of jobs) if (!firsts.has(job.prompt)) firsts.set(job.prompt, job);
  const body = clear($("#study-jobs-body"));
  for (const job of jobs) {
    const prompt = el("td", {}, [el("div", { class: "prompt", text: job.prompt, attrs: { title: job.prompt } })]);
    if (job.status === "failed" && job.error) prompt.append(el("div", { class: "err-text", text: truncate(job.error, 160), attrs: { title: job.error } }));
    const parameters = varying.map((name) => `${name}=${JSON.stringify(job.parameters[name])}`).join(" ");
    body.append(el("tr", { dataset: { job: job.id, status: job.status } }, [
      el("td", {}, [statusPill(job.status)]),
      prompt,
      el("td", { class: "mono small", text: job.model }),
      el("td", { class: "mono small", text: parameters || "shared" }),
      el("td", { class: "progress", text: progressText(job) || "—" }),
      jobLinks(job, firsts.get(job.prompt)),
    ]));
  }
  $("#jobs-panel").classList.remove("hidden");
}

// ---------------------------------------------------------------- forks

function candidatesCell(fork) {
  const cell = el("td", { class: "candidates mono small" });
  fork.candidates.slice(0, CANDIDATES_SHOWN).forEach((c, i) => {
    if (i) cell.append(el("span", { class: "muted", text: "  " }));
    cell.append(el("span", { class: "cand", text: `${visibleWs(c.text)} ${fmtProb(c.prob)}` }));
  });
  if (fork.candidates.length > CANDIDATES_SHOWN) cell.append(el("span", { class: "muted", text: ` +${fork.candidates.length - CANDIDATES_SHOWN}` }));
  return cell;
}

async function loadForks() {
  const q = new URLSearchParams({ by: $("#fork-by").value, limit: $("#fork-limit").value });
  let found;
  try {
    found = (await fetchJSON(`${base}/forks?${q}`)).forks;
  } catch (err) {
    clear($("#forks-body")).append(el("tr", {}, [el("td", { attrs: { colspan: "6" } }, [messageBox("error", "Could not load the forks", err.message)])]));
    return;
  }
  const body = clear($("#forks-body"));
  if (!found.length) {
    body.append(el("tr", { class: "empty-row" }, [el("td", { attrs: { colspan: "6" },
      text: study.done ? "No tree of this study branched." : "No fork yet: the trees are still growing." })]));
  }
  for (const fork of found) {
    const where = el("td", {}, [
      el("span", { class: "prompt-part mono small", text: visibleWs(fork.prompt, true) }),
      el("span", { class: "path-part mono small", text: visibleWs(fork.path_text, true) }),
      el("div", { class: "muted small", text: `${fork.model} · depth ${fork.depth}` }),
    ]);
    body.append(el("tr", { dataset: { job: fork.job_id, node: String(fork.node_id) } }, [
      el("td", { class: "mono", text: fork.entropy === null ? "—" : fork.entropy.toFixed(3) }),
      el("td", { class: "mono", text: String(fork.branches) }),
      el("td", { class: "mono", text: fmtProb(fork.unexplored_mass) }),
      where,
      candidatesCell(fork),
      el("td", { class: "links" }, [el("a", { href: `/viewer/tree?job=${encodeURIComponent(fork.job_id)}`, text: "Tree" })]),
    ]));
  }
  $("#forks-panel").classList.remove("hidden");
}

const refreshForks = throttle(loadForks, FORKS_EVERY_MS);

// ---------------------------------------------------------------- following

async function poll() {
  pollTimer = null;
  try {
    const wasDone = study && study.done;
    study = await fetchJSON(base);
    clear($("#study-message"));
    renderProgress();
    renderJobs();
    if (study.done && !wasDone) await refreshForks.flush(); // the final forks, at once
    else if (!study.done) refreshForks();
  } catch (err) {
    if (err.status === 404) {
      problem(`Study ${id} not found`, "It was deleted, belongs to another API key, or the link is wrong.", JOB_LIST_LINK());
      return;
    }
    clear($("#study-message")).append(messageBox("error", err.title || "Could not load the study", err.message));
  }
  if (!study || !study.done) pollTimer = setTimeout(poll, POLL_MS);
}

async function download(format) {
  try {
    const resp = await fetchChecked(`${base}/nodes?format=${format}`);
    downloadBlob(`${safeFilename(study ? study.name : "study")}-nodes.${format}`, await resp.blob());
  } catch (err) {
    clear($("#study-message")).append(messageBox("error", "Could not download the nodes", err.message));
  }
}

async function cancelStudy() {
  $("#cancel-study").disabled = true;
  try {
    study = await fetchJSON(`${base}/cancel`, { method: "POST" });
    renderProgress();
    renderJobs();
    await refreshForks.flush();
  } catch (err) {
    clear($("#study-message")).append(messageBox("error", "Could not cancel the study", err.message));
  } finally {
    $("#cancel-study").disabled = false;
  }
}

async function main() {
  if (!STUDY_ID.test(id)) {
    problem("Not a study id: check the link", `“${truncate(id, 60)}” is not a study id (it looks like `
      + "3f2b8c1e-5d7a-4c2e-9b1f-0a6d2e4c8b90).", JOB_LIST_LINK());
    return;
  }
  $("#fork-by").addEventListener("change", () => loadForks());
  $("#fork-limit").addEventListener("change", () => loadForks());
  $("#download-csv").addEventListener("click", () => download("csv"));
  $("#download-parquet").addEventListener("click", () => download("parquet"));
  $("#cancel-study").addEventListener("click", cancelStudy);
  await poll();
  if (study) {
    await loadForks();
    setPageState("ready");
  }
}

main();
