// Response viewer: the most probable path of a token tree, token by token, with alternatives.
import {
  $, el, clear, visibleWs, fmtProb, probClass, probColor, probBar, messageBox, queryParams, fetchJSON,
  downloadBlob, safeFilename, progressText, ACTIVE_STATUSES, watchJob, setPageState, truncate, fetchText,
  throttle,
} from "./common.js";
import { startLoader } from "./loader.js";
import { jobParameters } from "./parameters.js";
import { canGrow, growButton, requestGrowth } from "./tree/grow.js";
import { parseTreeText, bestChild, mostProbableContinuation, generatedText, responseText } from "./treedata.js";

const state = {
  tree: null,
  metadata: {},
  job: null,
  original: [],
  path: [],
  selected: null,
  showWs: true,
  source: { job: null, file: null, name: null },
  exploring: null,
};

const tokenKey = (t) => (t.tokenId !== null && t.tokenId !== undefined ? `#${t.tokenId}` : `~${t.text}`);

// ---------------------------------------------------------------- rendering

function tokenContent(text) {
  // Whitespace made visible (in grey) when the toggle is on; real line breaks are kept after ↵.
  const frag = document.createDocumentFragment();
  if (!state.showWs) {
    frag.append(document.createTextNode(text));
    return frag;
  }
  const re = /[\s\u0000-\u001f\u007f]+/g;
  let last = 0;
  let m;
  while ((m = re.exec(text)) !== null) {
    if (m.index > last) frag.append(document.createTextNode(text.slice(last, m.index)));
    const ws = m[0];
    const shown = ws.split("\n").map(visibleWs).join("↵\n");
    frag.append(el("span", { class: "ws", text: shown }));
    last = m.index + ws.length;
  }
  if (last < text.length) frag.append(document.createTextNode(text.slice(last)));
  return frag;
}

function isSwitch(i) {
  const n = state.path[i];
  return n.parent && bestChild(n.parent) !== n;
}

function renderTokens() {
  const box = clear($("#tokens"));
  let afterSwitch = false;
  const frag = document.createDocumentFragment();
  if (state.metadata.prefix) {
    // The response starts with the forced prefix: part of it, though not one of the tree's tokens.
    frag.append(el("span", { class: "prefix-part", attrs: { title: "response prefix (forced)", "data-role": "prefix" } },
      [tokenContent(state.metadata.prefix)]));
  }
  state.path.forEach((n, i) => {
    const sw = isSwitch(i);
    if (sw) afterSwitch = true;
    const span = el("span", {
      class: `tok ${probClass(n.prob)}${sw ? " switched" : ""}${afterSwitch && !sw ? " after-switch" : ""}${i === state.selected ? " selected" : ""}`,
      dataset: { index: String(i) },
      attrs: { title: `${fmtProb(n.prob)}${sw ? " · switched here" : ""}`, tabindex: "0", role: "button" },
    });
    if (!n.text.length) span.append(el("span", { class: "ws", text: "∅" }));
    else span.append(tokenContent(n.text));
    frag.append(span);
  });
  if (!state.path.length) frag.append(el("span", { class: "muted", text: "(the tree has no generated tokens)" }));
  box.append(frag);
  renderSummary();
  $("#reset").disabled = state.path.every((n, i) => n === state.original[i]) && state.path.length === state.original.length;
}

function renderSummary() {
  const box = clear($("#summary"));
  const last = state.path[state.path.length - 1];
  const switches = state.path.filter((_, i) => isSwitch(i)).length;
  const ending = !last ? "—" : last.finishReason ? last.finishReason
    : last.finished ? "completed" : last.children.length ? "—" : "open (not expanded further)";
  const item = (k, v) => el("span", {}, [`${k} `, el("b", { text: v })]);
  box.append(
    item("tokens", String(state.path.length)),
    item("cumulative probability", last ? fmtProb(last.cum) : "—"),
    item("ends", ending),
    item("switches", String(switches)),
  );
}

function alternativesAt(i) {
  // The candidates at position i (the parent's), plus any explored child the candidate list lacks.
  const node = state.path[i];
  const parent = node.parent;
  const children = new Map(parent.children.map((c) => [tokenKey(c), c]));
  const seen = new Set();
  const alts = [];
  for (const c of parent.candidates) {
    const k = tokenKey(c);
    if (seen.has(k)) continue;
    seen.add(k);
    alts.push({ text: c.text, prob: c.prob, tokenId: c.tokenId, child: children.get(k) || null });
  }
  for (const [k, c] of children) {
    if (!seen.has(k)) alts.push({ text: c.text, prob: c.prob, tokenId: c.tokenId, child: c });
  }
  return alts.sort((a, b) => b.prob - a.prob);
}

function renderPanel() {
  const body = clear($("#token-body"));
  if (state.selected === null || !state.path[state.selected]) {
    body.append(el("p", { class: "details-empty", text: "Click a token to see the alternatives the model considered at that position." }));
    return;
  }
  const i = state.selected;
  const node = state.path[i];
  body.append(el("div", { class: "details-token" }, [
    el("span", { class: "tok-chip", text: visibleWs(node.text) || "∅" }),
    el("span", { class: "muted small", text: `token ${i + 1} of ${state.path.length}` }),
  ]));
  body.append(el("div", { class: "prob-row" }, [probBar(node.prob, probColor(node.prob)), el("span", { class: "val", text: fmtProb(node.prob) })]));
  body.append(el("dl", { class: "kv" }, [
    el("dt", { text: "token id" }), el("dd", { text: node.tokenId ?? "—" }),
    el("dt", { text: "cumulative" }), el("dd", { text: fmtProb(node.cum) }),
    el("dt", { text: "depth" }), el("dd", { text: String(node.depth) }),
  ]));
  if (isSwitch(i)) body.append(el("p", { class: "small", style: { color: "var(--accent)" }, text: "You switched to this token; the path below follows its most probable continuation." }));

  body.append(el("div", { class: "sub-title", text: "Alternatives at this position" }));
  const list = el("ul", { class: "alt-list", attrs: { "data-role": "alternatives" } });
  for (const a of alternativesAt(i)) {
    const current = a.child === node;
    const explored = a.child !== null;
    const btn = el("button", {
      class: `alt${current ? " current" : ""}`,
      attrs: {
        type: "button",
        disabled: !explored || current ? true : null,
        title: current ? "The token on this path" : explored ? "Switch to this branch" : "Not explored in this tree",
        "data-explored": explored ? "true" : "false",
      },
      on: { click: () => { if (explored && !current) switchTo(i, a.child); } },
    }, [
      el("span", { class: "t", text: visibleWs(a.text) || "∅" }),
      probBar(a.prob, explored ? probColor(a.prob) : null),
      el("span", { class: "p", text: fmtProb(a.prob) }),
    ]);
    const li = el("li", {}, [btn]);
    if (current) li.append(el("div", { class: "alt-note", text: "on this path" }));
    else if (!explored) {
      const explore = el("button", {
        class: "btn small",
        text: "Explore from here",
        attrs: { type: "button", title: "Submit a new job whose prompt is the path up to here plus this token" },
        on: { click: () => exploreFrom(i, a) },
      });
      const grow = canGrow(state.source, state.job) && a.tokenId !== null && node.parent.id !== null
        ? growButton("Grow here", "Grow this alternative in place: it becomes a branch of this tree (its "
          + "probability as recorded) and grows by the tree's rule; the path follows it", () => growAt(i, a))
        : null;
      li.append(el("div", { class: "alt-note" }, [el("span", { text: "not explored" }), grow, explore]));
    }
    list.append(li);
  }
  body.append(list);
}

function select(i) {
  state.selected = i;
  for (const s of document.querySelectorAll("#tokens .tok.selected")) s.classList.remove("selected");
  const span = document.querySelector(`#tokens .tok[data-index="${i}"]`);
  if (span) span.classList.add("selected");
  renderPanel();
}

function switchTo(i, child) {
  state.path = state.path.slice(0, i).concat([child], mostProbableContinuation(child));
  state.selected = i;
  renderTokens();
  renderPanel();
}

function resetPath() {
  state.path = state.original.slice();
  state.selected = null;
  renderTokens();
  renderPanel();
}

function downloadPath() {
  const tokens = state.path.map((n, i) => ({
    index: i,
    text: n.text,
    token_id: n.tokenId,
    prob: n.prob,
    cumulative_prob: n.cum,
    depth: n.depth,
    switched: Boolean(isSwitch(i)),
    node_id: n.id,
  }));
  const last = state.path[state.path.length - 1];
  const doc = {
    source: state.source.job ? { job: state.source.job } : { file: state.source.name },
    prompt: state.tree.root.text,
    metadata: state.metadata,
    text: last ? responseText(state.metadata, last) : state.metadata.prefix || "", // the forced prefix, then the tokens
    cumulative_prob: last ? last.cum : 1,
    finished: last ? Boolean(last.finished || last.finishReason === "stop") : false,
    switch_points: tokens.filter((t) => t.switched).map((t) => t.index),
    tokens,
  };
  const name = `path-${state.source.job || safeFilename(state.source.name || "tree")}.json`;
  downloadBlob(name, new Blob([JSON.stringify(doc, null, 2)], { type: "application/json" }));
}

// ---------------------------------------------------------------- explore from here

/** The tree's parameters that a tree job takes (a file's metadata may hold others, which the API refuses). */
async function treeParameters() {
  const src = state.metadata.parameters || {};
  const params = {};
  for (const { name } of (await jobParameters()).tree) {
    if (src[name] !== undefined && src[name] !== null) params[name] = src[name];
  }
  return params;
}

async function exploreFrom(i, alt) {
  const before = i > 0 ? generatedText(state.path[i - 1]) : "";
  const md = state.metadata;
  const prompt = md.prompt ?? state.tree.root.text;
  const body = {
    model: (state.job && state.job.model) || md.model || "demo",
    kind: "tree",
  };
  if (md.chat) {
    // In chat mode the prompt is a user turn: continue the assistant's answer through `prefix`.
    Object.assign(body, { prompt, chat: true, prefix: (md.prefix || "") + before + alt.text });
  } else {
    Object.assign(body, { prompt: prompt + (md.prefix || "") + before + alt.text, chat: false, prefix: null });
  }
  const banner = clear($("#banner"));
  banner.append(messageBox("info", "Exploring from here…", `Submitting a new job that continues from “${truncate(visibleWs(before.slice(-40) + alt.text), 60)}”.`));
  let job;
  try {
    body.parameters = await treeParameters();
    job = await fetchJSON("/v1/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  } catch (err) {
    clear(banner).append(messageBox("error", "Could not submit the job", err.message));
    return;
  }
  state.exploring = job.id;
  const link = el("a", { href: `/viewer/response?job=${encodeURIComponent(job.id)}`, text: `job ${job.id}` });
  const show = (j) => {
    clear(banner).append(messageBox("info", `Exploring from here: ${j.status}`, progressText(j) || "Waiting for the job to start…",
      null, el("p", {}, ["Opening ", link, " when it is done."])));
  };
  show(job);
  const done = (j) => {
    if (j.status === "succeeded") {
      window.location.assign(`/viewer/response?job=${encodeURIComponent(j.id)}&from=${encodeURIComponent(state.source.job || "")}`);
    } else {
      clear(banner).append(messageBox("error", `The new job ${j.status}`, j.error || "", null, el("p", {}, [link])));
    }
  };
  if (!ACTIVE_STATUSES.has(job.status)) done(job);
  else watchJob(job.id, { onProgress: show, onEnd: done });
}

// ---------------------------------------------------------------- grow in place

/** Grow the stored job at position `i`'s alternative `alt`; the path follows the new branch as it grows. */
async function growAt(i, alt) {
  const parent = state.path[i].parent;
  const before = state.path.slice(0, i).map((n) => n.key);
  const banner = clear($("#banner"));
  let job;
  try {
    job = await requestGrowth(state.source.job, parent.id, alt.tokenId);
  } catch (err) {
    banner.append(messageBox("error", "Could not grow the tree here", err.message));
    return;
  }
  const jobId = job.id;
  const show = (j) => {
    state.job = j;
    clear(banner).append(messageBox("info", `Growing “${truncate(visibleWs(alt.text), 40)}”: ${j.status}`,
      progressText(j) || "Waiting for the job to start…"));
  };
  // Take the grown tree and follow the new branch: the path to it as it was, then the new child's most
  // probable continuation (so far).
  const follow = async () => {
    const tree = parseTreeText(await fetchText(`/v1/jobs/${encodeURIComponent(jobId)}/tree`), `job ${jobId}`);
    const byKey = new Map(tree.nodes.map((n) => [n.key, n]));
    const at = byKey.get(parent.key);
    const child = at && at.children.find((c) => c.tokenId === alt.tokenId);
    if (!child) return;
    const kept = state.selected;
    setTree(tree, state.job);
    state.path = before.map((k) => byKey.get(k)).concat([child], mostProbableContinuation(child));
    state.selected = kept === null ? i : kept;
    renderTokens();
    renderPanel();
  };
  const refresh = throttle(() => follow().catch(() => {}), 1000);
  show(job);
  refresh();
  watchJob(jobId, {
    onProgress: (j) => { show(j); refresh(); },
    onEnd: async (j) => {
      state.job = j;
      refresh.flush();
      if (j.status === "succeeded") clear(banner).append(messageBox("info", "Grown in place", progressText(j)));
      else clear(banner).append(messageBox("error", `The growth ${j.status}`, j.error || ""));
    },
  });
}

// ---------------------------------------------------------------- loading

function setTree(tree, job) {
  state.tree = tree;
  state.metadata = Object.assign({}, job ? jobMetadata(job) : {}, tree.metadata || {});
  state.original = mostProbableContinuation(tree.root);
  state.path = state.original.slice();
  state.selected = null;
  $("#empty-state").classList.add("hidden");
  $("#response-card").classList.remove("hidden");
  const promptBox = clear($("#prompt"));
  promptBox.append(tree.root.text);
  // In chat mode the prompt is the user's turn (it went through the chat template): labelled as such, with
  // the response below it. The response (the forced prefix, then the tokens) is shown by renderTokens.
  $("#response-card").classList.toggle("chat", Boolean(state.metadata.chat));
  $("#download").disabled = false;
  renderTokens();
  renderPanel();
  setPageState("ready");
}

/** The tree JSON's metadata as a job's fields, for trees that come without (the tree's own wins). */
function jobMetadata(job) {
  return { prompt: job.prompt, model: job.model, parameters: job.parameters || {}, chat: job.chat, prefix: job.prefix };
}

// ---------------------------------------------------------------- wiring

function main() {
  const q = queryParams();
  const from = q.get("job") && q.get("from");
  if (from) {
    clear($("#banner")).append(messageBox("info", "Explored from another tree", null, null,
      el("p", {}, ["This job continues a path of ", el("a", { href: `/viewer/response?job=${encodeURIComponent(from)}`, text: `job ${from}` }), "."])));
  }
  $("#tokens").addEventListener("click", (e) => {
    const span = e.target.closest(".tok");
    if (span) select(Number(span.dataset.index));
  });
  // Keys on a token: ← → the parent and the child along the path, ↑ ↓ the explored siblings (the path
  // switches to that branch), Enter or Space opens the token's alternatives.
  const focusToken = (j) => {
    const next = document.querySelector(`#tokens .tok[data-index="${j}"]`);
    if (next) next.focus();
  };
  $("#tokens").addEventListener("keydown", (e) => {
    const span = e.target.closest(".tok");
    if (!span) return;
    const i = Number(span.dataset.index);
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); select(i); }
    if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      e.preventDefault();
      const j = Math.max(0, Math.min(state.path.length - 1, i + (e.key === "ArrowRight" ? 1 : -1)));
      select(j);
      focusToken(j);
    }
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      const node = state.path[i];
      const siblings = node.parent.children.slice().sort((a, b) => b.prob - a.prob);
      const sibling = siblings[siblings.indexOf(node) + (e.key === "ArrowDown" ? 1 : -1)];
      if (sibling) switchTo(i, sibling);
      focusToken(i);
    }
  });
  $("#show-ws").addEventListener("change", (e) => {
    state.showWs = e.target.checked;
    if (state.tree) renderTokens();
  });
  $("#reset").addEventListener("click", resetPath);
  $("#download").addEventListener("click", () => state.tree && downloadPath());
  startLoader({
    view: "response",
    kind: "tree",
    parse: parseTreeText,
    show: (tree, { job }) => setTree(tree, job),
    hasDocument: () => state.tree !== null,
    messages: "#message",
    waitingText: "The response appears when the job is done.",
    // Keep the user's switches: take the finished job's tree only if nothing was changed yet.
    acceptFinal: () => !state.tree || state.path.every((n, k) => n === state.original[k]),
    onSource: (source) => { state.source = source; state.job = null; },
    onJob: (job) => { state.job = job; },
  });
}

main();
