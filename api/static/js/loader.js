// Where a viewer's document comes from, for every viewer: a picked or dropped file, `?file=URL`, or
// `?job=ID` over the API, followed while the job runs (its event stream, or polling when that fails).
//
// A viewer describes itself (see `startLoader`); the loader owns the source line, the job's status in
// the top bar, the empty state and the message box, and hands the viewer parsed documents.
import {
  $, el, clear, truncate, messageBox, queryParams, fetchJSON, fetchText, readFileText, setupDropZone,
  setupNav, statusPill, progressText, ACTIVE_STATUSES, watchJob, throttle, setPageState,
} from "./common.js";

// What each kind of job holds, where the API serves it, and which viewer shows it.
const KINDS = {
  tree: {
    title: "token-tree job",
    content: "token tree",
    path: "tree",
    viewer: { href: "/viewer/tree", name: "tree viewer" },
    // A tree exists once the first node is written (before that the API answers 409); it grows while
    // the job runs, and a failed or cancelled job keeps what it had.
    hasContent: (job) => !job.progress || job.progress.nodes > 0,
  },
  logprobs: {
    title: "log-probability job",
    content: "log-probability records",
    path: "logprobs.jsonl",
    viewer: { href: "/viewer/logprobs", name: "log-probability viewer" },
    hasContent: (job) => job.status === "succeeded",
  },
  // A scored text: a record of the same layout, served at the same place, shown by the same viewer.
  score: {
    title: "scoring job",
    content: "log-probability records",
    path: "logprobs.jsonl",
    viewer: { href: "/viewer/logprobs", name: "log-probability viewer" },
    hasContent: (job) => job.status === "succeeded",
  },
};

// A job id is a UUID; anything else in a link is a typo or a cut-off copy, said before asking the API.
const JOB_ID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;
const JOB_LIST_LINK = () => el("p", {}, ["Pick a job from the ", el("a", { href: "/", text: "job list" }), "."]);

/** What to say when the job itself could not be read: a heading and what to do. */
function jobProblem(err, id) {
  if (err.status === 404) {
    return [`Job ${id} not found`, "No job with this id exists here: it was deleted, belongs to another API key, "
      + "or the link is wrong. Check the link."];
  }
  return [err.title || `Could not load job ${id}`, err.message];
}

function jobStatus(job) {
  const box = clear($("#job-status"));
  box.append(statusPill(job.status), el("span", { text: progressText(job) }));
  if (job.status === "failed" && job.error) {
    box.append(el("span", { class: "err-text", text: truncate(job.error, 80), attrs: { title: job.error } }));
  }
}

/** "Open it in the … viewer." for a document of the other kind (a parse error's `hint`: "tree" | "logprobs"). */
function otherViewerLink(err) {
  const other = err && KINDS[err.hint];
  if (!other) return null;
  return el("p", {}, ["Open it in the ", el("a", { href: other.viewer.href, text: other.viewer.name }), "."]);
}

/**
 * Wire the viewer's sources and load the one the URL names. `viewer`:
 *   view        the page ("tree" | "response" | "logprobs"), for the top bar's links
 *   kind        the kind of job and document it shows ("tree" | "logprobs")
 *   parse(text, name)   the document in `text` (throws an error with a readable message)
 *   show(doc, {job, live})   install a document; `job`: the job it came from (null for files), `live`:
 *               an update of a running job's document (keep the user's view)
 *   hasDocument()   whether a document is shown (else errors bring back the empty state)
 *   messages    the selector of the page's message area
 *   waitingText what to say while a job has nothing to show yet
 *   live        refetch the document while the job runs (else once when it ends)
 *   refreshMs() the least time between refetches of a running job's document
 *   acceptFinal()   whether to replace what is shown with the document of the job that just ended
 *   onSource(source), onJob(job)   told of each new source ({job, file, name}) and each job update
 * Returns {showError, showInfo} for the viewer's own messages, and reloadJob() to load the job shown again
 * and follow it (after it was grown in place: the view stays).
 */
export function startLoader(viewer) {
  const {
    view, kind, parse, show, hasDocument, messages, waitingText,
    live = false, refreshMs = () => 1000, acceptFinal = () => true, onSource = () => {}, onJob = () => {},
  } = viewer;
  const KIND = KINDS[kind];
  let generation = 0; // each new source counts up: answers for an older one are dropped
  let stopWatch = null;
  let shownJob = null; // the id of the job shown, if a job is

  function showMessage(box) {
    clear($(messages)).append(box);
  }

  function showError(title, text, extra) {
    showMessage(messageBox("error", title, text, null, extra));
    if (!hasDocument()) $("#empty-state").classList.remove("hidden");
    setPageState("error");
  }

  function showInfo(title, text, extra) {
    showMessage(messageBox("info", title, text, null, extra));
  }

  function clearMessage() {
    clear($(messages));
  }

  function reportError(err, name) {
    console.warn("tokentree: could not load", name, err);
    const title = err.title || (err.status === undefined ? `Could not open ${name}` : `Could not load ${name}`);
    showError(title, err.message || String(err), otherViewerLink(err));
  }

  /** Hand a document to the viewer; what the message box said about loading it is over. */
  function install(doc, opts) {
    clearMessage();
    show(doc, opts);
  }

  /** Start on a new source; returns a check that it is still the current one. */
  function begin(source, label, nav) {
    generation += 1;
    const mine = generation;
    if (stopWatch) stopWatch();
    stopWatch = null;
    onSource(source);
    $("#source-name").textContent = label;
    clear($("#job-status"));
    setupNav(view, nav);
    setPageState("loading");
    return () => mine === generation;
  }

  async function fromFile(file) {
    const current = begin({ job: null, file: null, name: file.name }, `File: ${file.name}`, {});
    try {
      const doc = parse(await readFileText(file), file.name);
      if (current()) install(doc, { job: null, live: false });
    } catch (err) {
      if (current()) reportError(err, file.name);
    }
  }

  async function fromUrl(url) {
    const name = url.split("/").pop() || url;
    // Only a tree file has a place in the other viewers (tree, response).
    const current = begin({ job: null, file: url, name }, `URL: ${url}`, { file: kind === "tree" ? url : null });
    try {
      const doc = parse(await fetchText(url), url);
      if (current()) install(doc, { job: null, live: false });
    } catch (err) {
      if (current()) reportError(err, url);
    }
  }

  // `keep`: the job shown, loaded again (it runs again: grown in place); the view stays as it is.
  async function fromJob(id, { keep = false } = {}) {
    shownJob = id;
    const current = begin({ job: id, file: null, name: `job ${id}` }, `Job ${id}`, { job: id });
    if (!JOB_ID.test(id)) {
      showError("Not a job id: check the link", `“${truncate(id, 60)}” is not a job id (a job id looks like `
        + "3f2b8c1e-5d7a-4c2e-9b1f-0a6d2e4c8b90). The link may be cut off or mistyped.", JOB_LIST_LINK());
      return;
    }
    const base = `/v1/jobs/${encodeURIComponent(id)}`;
    let job;
    try {
      job = await fetchJSON(base);
    } catch (err) {
      if (current()) showError(...jobProblem(err, id), err.status === 404 ? JOB_LIST_LINK() : null);
      return;
    }
    if (!current()) return;
    const seen = (j) => { job = j; jobStatus(j); onJob(j); };
    seen(job);
    const other = KINDS[job.kind];
    if (other.viewer.href !== KIND.viewer.href) { // a score job's record is shown as a logprobs job's
      showInfo(`This is a ${other.title}`, `It has no ${KIND.content}.`,
        el("p", {}, [el("a", { href: `${other.viewer.href}?job=${encodeURIComponent(id)}`, text: `Open it in the ${other.viewer.name}` })]));
      setPageState("ready");
      return;
    }

    const name = `the ${KIND.content} of job ${id}`;
    const fetchAndInstall = async (opts) => {
      const doc = parse(await fetchText(`${base}/${KIND.path}`), `job ${id}`);
      if (!current()) return;
      install(doc, { job, ...opts });
      if (job.status === "failed") showError(`Job ${id} failed`, job.error || "No error message was recorded.");
    };
    const waiting = () => {
      showInfo(`Job is ${job.status}`, waitingText);
      setPageState("waiting");
    };
    const ended = () => {
      if (job.status === "failed") showError(`Job ${id} failed`, job.error || "No error message was recorded.");
      else showError(`Job ${id} ${job.status}`, `It ended without ${KIND.content}.`);
    };

    const active = ACTIVE_STATUSES.has(job.status);
    if (KIND.hasContent(job)) {
      try {
        await fetchAndInstall({ live: keep });
      } catch (err) {
        if (!current()) return;
        if (active) waiting(); // written, but not readable yet: the next event brings it
        else reportError(err, name);
      }
    } else if (active) {
      waiting();
    } else {
      ended();
    }
    if (!active || !current()) return;

    let over = false;
    // While the job runs, a failed refetch waits for the next event; its final one reports.
    const refresh = throttle(async () => {
      try {
        await fetchAndInstall({ live: true });
      } catch (err) {
        if (over && current()) reportError(err, name);
      }
    }, refreshMs);
    stopWatch = watchJob(id, {
      onProgress: (j) => {
        if (!current()) return;
        seen(j);
        if (live && KIND.hasContent(j)) refresh();
      },
      onEnd: (j) => {
        if (!current()) return;
        over = true;
        stopWatch = null;
        seen(j);
        if (!KIND.hasContent(j)) ended();
        else if (acceptFinal()) refresh.flush();
      },
    });
  }

  for (const id of ["#file-input", "#file-input-2"]) {
    $(id).addEventListener("change", (e) => {
      const f = e.target.files && e.target.files[0];
      if (f) fromFile(f);
      e.target.value = "";
    });
  }
  setupDropZone(fromFile);

  const q = queryParams();
  const job = q.get("job");
  const file = q.get("file");
  setupNav(view, { job, file: kind === "tree" ? file : null });
  if (job) fromJob(job);
  else if (file) fromUrl(file);
  else {
    $("#empty-state").classList.remove("hidden");
    setPageState("empty");
  }
  return { showError, showInfo, reloadJob: () => { if (shownJob) fromJob(shownJob, { keep: true }); } };
}
