// Shared helpers for the tokentree viewers.
//
// Rule for every page: model text (tokens, prompts, paths) only ever reaches the DOM through
// textContent / d3's .text(); nothing built from data goes through innerHTML.
//
// Every request to the service goes through fetchChecked (or watchJob's stream), which sends the API
// key of the top bar's field (./apikey.js) and turns failures into messages that say what to do.
import { askForKey, isServiceUrl, withApiKey } from "./apikey.js";

/** Create an element. `props`: class, text, title, href, attrs (object), dataset (object), on (object). */
export function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = String(v);
    else if (k === "attrs") for (const [a, av] of Object.entries(v)) { if (av !== undefined && av !== null && av !== false) node.setAttribute(a, av === true ? "" : String(av)); }
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
    else if (k === "style") Object.assign(node.style, v);
    else node[k] = v;
  }
  for (const c of [].concat(children)) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export const $ = (sel, root = document) => root.querySelector(sel);

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

/**
 * Make whitespace and control characters visible: space ·, newline ↵, tab →, CR ␍.
 * With `keepSpaces`, plain spaces stay spaces (everything else is still made visible).
 */
export function visibleWs(s, keepSpaces = false) {
  if (s === null || s === undefined) return "";
  const re = keepSpaces ? /[\u0000-\u001f\u007f\u00a0\u200b]/g : /[\u0000-\u001f\u007f \u00a0\u200b]/g;
  return String(s).replace(re, (c) => {
    switch (c) {
      case " ": return "·";
      case "\n": return "↵";
      case "\t": return "→";
      case "\r": return "␍";
      case "\u00a0": return "⍽";
      case "\u200b": return "␣";
      case "\u007f": return "␡";
      default: return String.fromCharCode(0x2400 + c.charCodeAt(0));
    }
  });
}

/** Like visibleWs but keeps real line breaks after the ↵ so multi-line text still wraps as lines. */
export function visibleWsKeepBreaks(s) {
  return String(s ?? "").split("\n").map(visibleWs).join("↵\n");
}

export function truncate(s, n) {
  s = String(s ?? "");
  return s.length > n ? s.slice(0, Math.max(1, n - 1)) + "…" : s;
}

/** Probability (0..1) as text: percentages down to 0.01 %, scientific notation below. */
export function fmtProb(p) {
  if (p === null || p === undefined || Number.isNaN(p)) return "—";
  if (p === 0) return "0%";
  if (p >= 0.0001) {
    const pct = p * 100;
    return (pct >= 10 ? pct.toFixed(1) : pct.toFixed(2)) + "%";
  }
  return p.toExponential(2);
}

export function fmtNum(x, digits = 3) {
  if (x === null || x === undefined || Number.isNaN(x)) return "—";
  if (typeof x !== "number") return String(x);
  if (Number.isInteger(x)) return x.toLocaleString("en-US");
  return Math.abs(x) >= 0.001 || x === 0 ? x.toFixed(digits) : x.toExponential(2);
}

export const PROB_HIGH = 0.7;
export const PROB_LOW = 0.3;

/** "p-high" | "p-mid" | "p-low" for a probability in 0..1. */
export function probClass(p) {
  if (p >= PROB_HIGH) return "p-high";
  if (p >= PROB_LOW) return "p-mid";
  return "p-low";
}

const RAMP = ["#d73027", "#e8a200", "#1a9850"];
const colorCache = new Map();
/** Continuous colour for a probability: red (low) → amber → green (high). */
export function probColor(p) {
  const x = Math.round(Math.max(0, Math.min(1, Number(p) || 0)) * 500) / 500;
  let c = colorCache.get(x);
  if (c) return c;
  if (typeof d3 !== "undefined") {
    c = x < 0.5 ? d3.interpolateLab(RAMP[0], RAMP[1])(x / 0.5) : d3.interpolateLab(RAMP[1], RAMP[2])((x - 0.5) / 0.5);
  } else {
    c = x >= PROB_HIGH ? RAMP[2] : x >= PROB_LOW ? RAMP[1] : RAMP[0];
  }
  colorCache.set(x, c);
  return c;
}

export function probBar(p, color) {
  const fill = el("span");
  fill.style.width = `${Math.max(0, Math.min(1, Number(p) || 0)) * 100}%`;
  if (color) fill.style.background = color;
  return el("div", { class: "bar" }, [fill]);
}

/** A message box: kind = "error" | "info" | "warn". `detail` is shown verbatim (monospace). */
export function messageBox(kind, title, text, detail, extra) {
  return el("div", { class: `message ${kind}`, attrs: { role: kind === "error" ? "alert" : "status" } }, [
    el("h3", { text: title }),
    text ? el("p", { text }) : null,
    detail ? el("div", { class: "detail", text: detail }) : null,
    extra || null,
  ]);
}

export function queryParams() {
  return new URLSearchParams(window.location.search);
}

/**
 * A document that is not in the layout a viewer reads, with a readable message. `hint`: the kind of
 * document it is instead ("tree" | "logprobs"), when that is known, so that the page can link to its viewer.
 */
export class FormatError extends Error {
  constructor(message, hint = null) {
    super(message);
    this.name = new.target.name;
    this.hint = hint;
  }
}

/** Error with an HTTP status (0: no answer) and a readable message (FastAPI `detail` if there is one);
 * `title`, when set, is a heading that says what went wrong (a key missing or refused, the service down). */
export class HttpError extends Error {
  constructor(status, message, title = null) {
    super(message);
    this.status = status;
    this.title = title;
  }
}

function describeDetail(detail) {
  if (!detail) return "";
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => {
      const loc = Array.isArray(d.loc) ? d.loc.filter((x) => x !== "body").join(".") : "";
      return loc ? `${loc}: ${d.msg}` : String(d.msg ?? JSON.stringify(d));
    }).join("; ");
  }
  return JSON.stringify(detail);
}

/** The error for a request to this service that got no answer. */
function serviceDown() {
  return new HttpError(0, `The tokentree service at ${window.location.origin} did not answer: check that it is running `
    + "(tokentree serve) and that your network reaches it, then reload the page.", "Service not reachable");
}

export async function fetchChecked(url, options = {}) {
  let resp;
  try {
    resp = await fetch(url, withApiKey(url, options));
  } catch (err) {
    if (isServiceUrl(url)) throw serviceDown();
    throw new HttpError(0, `Could not reach ${url}: ${err.message}`);
  }
  if (resp.status === 401 && isServiceUrl(url)) {
    const { title, text } = askForKey();
    throw new HttpError(401, text, title);
  }
  if (!resp.ok) {
    let msg = `${resp.status} ${resp.statusText || ""}`.trim();
    let body = null;
    try {
      body = await resp.json();
      const d = describeDetail(body && body.detail);
      if (d) msg += ` — ${d}`;
    } catch (_) { /* not JSON */ }
    const e = new HttpError(resp.status, `${url}: ${msg}`);
    e.body = body;
    throw e;
  }
  return resp;
}

export async function fetchJSON(url, options) {
  const resp = await fetchChecked(url, options);
  const text = await resp.text();
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`${url} did not return valid JSON: ${err.message}`);
  }
}

export async function fetchText(url) {
  const resp = await fetchChecked(url);
  return resp.text();
}

export function readFileText(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(new Error(`Could not read ${file.name}: ${reader.error?.message || "unknown error"}`));
    reader.readAsText(file);
  });
}

/** Whole-window drag-and-drop of a single file. Shows the `.drop-overlay` while dragging. */
export function setupDropZone(onFile) {
  let depth = 0;
  const hasFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types || []).includes("Files");
  window.addEventListener("dragenter", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth += 1;
    document.body.classList.add("dragging");
  });
  window.addEventListener("dragover", (e) => { if (hasFiles(e)) e.preventDefault(); });
  window.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (depth === 0) document.body.classList.remove("dragging");
  });
  window.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    document.body.classList.remove("dragging");
    const f = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
    if (f) onFile(f);
  });
}

export function downloadBlob(filename, blob) {
  const url = URL.createObjectURL(blob);
  const a = el("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 2000);
}

export function safeFilename(s, fallback = "tokentree") {
  const out = String(s || "").replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 60);
  return out || fallback;
}

/** Point the top bar's links at the current job / file so the viewers link to each other. */
export function setupNav(active, { job = null, file = null } = {}) {
  for (const a of document.querySelectorAll(".nav a[data-view]")) {
    const view = a.dataset.view;
    a.classList.toggle("active", view === active);
    if (view === "jobs") continue;
    const q = new URLSearchParams();
    if (job) q.set("job", job);
    else if (file && view !== "logprobs") q.set("file", file);
    const qs = q.toString();
    a.href = `/viewer/${view}${qs ? "?" + qs : ""}`;
  }
}

/** Status pill element for a job status. */
export function statusPill(status) {
  return el("span", { class: `pill ${status || ""}`, text: status || "unknown" });
}

export function progressText(job) {
  const p = job && job.progress;
  if (!p) return "";
  if (job.kind === "logprobs" || job.kind === "score") return job.status === "succeeded" ? "record ready" : "";
  const parts = [];
  if (typeof p.nodes === "number") parts.push(`${p.nodes.toLocaleString("en-US")} nodes`);
  if (typeof p.completed_paths === "number") parts.push(`${p.completed_paths} completed`);
  if (typeof p.frontier === "number" && job.status === "running") parts.push(`${p.frontier} in frontier`);
  return parts.join(" · ");
}

export const ACTIVE_STATUSES = new Set(["queued", "running"]);

/**
 * Read a server-sent event stream with fetch (which, unlike EventSource, sends the API key's header):
 * `onEvent(name, data)` for each event; resolves when the stream ends, rejects when it fails.
 */
async function readEventStream(url, signal, onEvent) {
  const resp = await fetch(url, withApiKey(url, { signal, headers: { Accept: "text/event-stream" } }));
  if (!resp.ok || !resp.body) throw new HttpError(resp.status, `${url}: ${resp.status}`);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(name, data.join("\n"));
    }
  }
}

/**
 * Follow a job: server-sent events from /v1/jobs/{id}/events (`progress`, then `end`), falling
 * back to polling GET /v1/jobs/{id} if the event stream fails. Returns a stop() function.
 */
export function watchJob(jobId, { onProgress = () => {}, onEnd = () => {}, pollMs = 1500 } = {}) {
  let stopped = false;
  let stream = null; // the event stream's AbortController while it is read
  let timer = null;
  const base = `/v1/jobs/${encodeURIComponent(jobId)}`;
  const finish = (job) => {
    if (stopped) return;
    stop();
    onEnd(job);
  };
  const poll = async () => {
    if (stopped) return;
    try {
      const job = await fetchJSON(base);
      if (ACTIVE_STATUSES.has(job.status)) {
        onProgress(job);
        timer = setTimeout(poll, pollMs);
      } else {
        finish(job);
      }
    } catch (err) {
      timer = setTimeout(poll, pollMs * 2);
    }
  };
  const parse = (data) => {
    try { return JSON.parse(data); } catch (_) { return null; }
  };
  stream = new AbortController();
  readEventStream(`${base}/events`, stream.signal, (name, data) => {
    const job = parse(data);
    if (name === "progress" && job) onProgress(job);
    else if (name === "end" && job) finish(job);
  }).catch(() => {}).finally(() => {
    // The stream ended without an `end` (it broke, the server closed it, or it said `error`): poll,
    // which reports how the job stands.
    stream = null;
    if (!stopped && !timer) poll();
  });
  function stop() {
    stopped = true;
    if (stream) stream.abort();
    stream = null;
    if (timer) clearTimeout(timer);
    timer = null;
  }
  return stop;
}

/** Throttle: run fn at most once per `ms` (a number or a function returning one), always running the trailing call. */
export function throttle(fn, ms) {
  const interval = typeof ms === "function" ? ms : () => ms;
  let last = 0;
  let timer = null;
  let running = false;
  let again = false;
  const run = async () => {
    timer = null;
    if (running) { again = true; return; }
    running = true;
    last = Date.now();
    try { await fn(); } finally {
      running = false;
      if (again) { again = false; schedule(); }
    }
  };
  function schedule() {
    if (timer) return;
    const wait = Math.max(0, last + interval() - Date.now());
    timer = setTimeout(run, wait);
  }
  schedule.flush = () => { if (timer) clearTimeout(timer); timer = null; return run(); };
  return schedule;
}

export function relativeTime(iso) {
  if (!iso) return "";
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return String(iso);
  const s = Math.round((Date.now() - t) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return new Date(t).toLocaleDateString();
}

/** Mark the page state for tests and tooling: "loading" | "ready" | "error" | "empty". */
export function setPageState(state) {
  document.body.dataset.state = state;
}
