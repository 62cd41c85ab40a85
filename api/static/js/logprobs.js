// Log-probability viewer: one card per JSONL record, tokens coloured by probability. Records of a greedy
// generation (`tokentree logprobs`) and of a scored text (`tokentree score`: each token's `rank`,
// `entropy` and `part`, and the record's `totals`) alike. A token the model found unlikely (probability
// under UNLIKELY, the CLI's rule too) is marked.
import {
  $, el, clear, visibleWs, fmtProb, fmtNum, probClass, probColor, probBar, setPageState, FormatError,
} from "./common.js";
import { startLoader } from "./loader.js";

/** Below this probability a token is marked unlikely (`tokentree score` marks the same ones with "!"). */
export const UNLIKELY = 0.01;

/** Not log-probability records; `hint`: "tree" when it is a token tree instead. */
export class LogprobsFormatError extends FormatError {}

const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const isNum = (v) => typeof v === "number" && Number.isFinite(v);

function tokenEntry(t, where) {
  if (!isObj(t)) throw new LogprobsFormatError(`${where} must be an object with "token" and "prob"/"logprob".`);
  if (typeof t.token !== "string") {
    throw new LogprobsFormatError(`${where}.token is ${t.token === undefined ? "missing" : "not a string"}.`);
  }
  let pct = t.prob;
  if (pct !== undefined && pct !== null && !isNum(pct)) throw new LogprobsFormatError(`${where}.prob must be a number (a percentage, 0–100).`);
  if (!isNum(pct)) {
    if (!isNum(t.logprob)) throw new LogprobsFormatError(`${where} needs "prob" (percentage) or "logprob".`);
    pct = Math.exp(t.logprob) * 100;
  }
  if (pct < 0 || pct > 100.0001) throw new LogprobsFormatError(`${where}.prob is ${pct}; expected a percentage between 0 and 100.`);
  // The model's own probability, before the sampler settings (`raw_prob`, a percentage): recorded when
  // the job had any; null when it is the same as `prob`.
  const rawP = isNum(t.raw_prob) && Math.abs(t.raw_prob - pct) > 1e-9 ? t.raw_prob / 100 : null;
  return { token: t.token, p: pct / 100, rawP, logprob: isNum(t.logprob) ? t.logprob : Math.log(Math.max(pct / 100, 1e-300)) };
}

function validateRecord(rec, where) {
  if (!isObj(rec)) throw new LogprobsFormatError(`${where} must be a JSON object; it is ${Array.isArray(rec) ? "an array" : typeof rec}.`);
  if ("tree" in rec && !("data" in rec)) {
    throw new LogprobsFormatError(`${where} is a token tree, not a log-probability record. Open it in the tree viewer.`, "tree");
  }
  if (!Array.isArray(rec.data)) {
    throw new LogprobsFormatError(`${where} has no "data" array (keys: ${Object.keys(rec).slice(0, 8).join(", ") || "none"}).`);
  }
  if (rec.prompt !== undefined && typeof rec.prompt !== "string") throw new LogprobsFormatError(`${where}.prompt must be a string.`);
  const data = rec.data.map((d, i) => {
    const t = tokenEntry(d, `${where}: data[${i}]`);
    const others = d.other_tokens === undefined || d.other_tokens === null ? [] : d.other_tokens;
    if (!Array.isArray(others)) throw new LogprobsFormatError(`${where}: data[${i}].other_tokens must be an array.`);
    t.others = others.map((o, j) => tokenEntry(o, `${where}: data[${i}].other_tokens[${j}]`));
    // A scored text's figures (engine/score.py): the token's rank among the model's, the entropy there,
    // and whether it is the prompt's (include_prompt) or the text's.
    t.rank = isNum(d.rank) ? d.rank : null;
    t.entropy = isNum(d.entropy) ? d.entropy : null;
    t.part = d.part === "prompt" ? "prompt" : "text";
    return t;
  });
  const totals = isObj(rec.totals) && isObj(rec.totals.text) ? rec.totals : null;
  return { prompt: rec.prompt ?? "", response: typeof rec.response === "string" ? rec.response : null, data, totals };
}

/** Parse JSONL text (or a JSON array / single record) into validated records. */
export function parseLogprobs(text, name = "the file") {
  const trimmed = String(text).trim();
  if (!trimmed) throw new LogprobsFormatError(`${name} is empty.`);
  if (trimmed.startsWith("[")) {
    let arr;
    try { arr = JSON.parse(trimmed); } catch (err) { throw new LogprobsFormatError(`${name} is not valid JSON: ${err.message}`); }
    return arr.map((r, i) => validateRecord(r, `record ${i + 1}`));
  }
  const lines = trimmed.split(/\r?\n/);
  const records = [];
  if (lines.length > 1 || !trimmed.includes("\n")) {
    // JSONL; a single pretty-printed object spans lines, try that when line 1 alone is not JSON.
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i].trim();
      if (!line) continue;
      let rec;
      try {
        rec = JSON.parse(line);
      } catch (err) {
        if (i === 0) {
          try {
            return [validateRecord(JSON.parse(trimmed), "the record")];
          } catch (inner) {
            if (inner instanceof LogprobsFormatError) throw inner;
          }
        }
        throw new LogprobsFormatError(`line ${i + 1} of ${name} is not valid JSON: ${err.message}`);
      }
      records.push(validateRecord(rec, `line ${i + 1}`));
    }
  }
  if (!records.length) throw new LogprobsFormatError(`${name} has no records.`);
  return records;
}

// ---------------------------------------------------------------- rendering

let showWs = true;
let records = [];

function tokenText(s) {
  if (!showWs) return s;
  return s.split("\n").map(visibleWs).join("↵\n");
}

function renderCards() {
  const cards = clear($("#cards"));
  records.forEach((rec, ri) => {
    const tokens = el("div", { class: "tokens" });
    rec.data.forEach((t, ti) => {
      const unlikely = t.p < UNLIKELY;
      tokens.append(el("span", {
        class: `tok ${probClass(t.p)}${unlikely ? " unlikely" : ""}${t.part === "prompt" ? " prompt-tok" : ""}`,
        text: t.token.length ? tokenText(t.token) : "∅",
        dataset: { record: String(ri), index: String(ti) },
        attrs: { tabindex: "0" },
      }));
    });
    const n = rec.data.length;
    const meanLp = n ? rec.data.reduce((s, t) => s + t.logprob, 0) / n : 0;
    const meanP = n ? rec.data.reduce((s, t) => s + t.p, 0) / n : 0;
    const low = rec.data.reduce((m, t) => (!m || t.p < m.p ? t : m), null);
    const unlikelyCount = rec.data.filter((t) => t.p < UNLIKELY).length;
    const stat = (k, v) => el("span", {}, [`${k} `, el("b", { text: v })]);
    // A scored text's totals, as the record gives them (of the text alone, not of the prompt's tokens).
    const scored = rec.totals ? el("div", { class: "lp-stats", attrs: { "data-role": "totals" } }, [
      stat("text tokens", String(rec.totals.text.tokens)),
      stat("sum logprob", fmtNum(rec.totals.text.sum_logprob, 4)),
      stat("mean logprob", fmtNum(rec.totals.text.mean_logprob, 4)),
      stat("perplexity", fmtNum(rec.totals.text.perplexity, 2)),
    ]) : null;
    cards.append(el("article", { class: "panel lp-card", dataset: { record: String(ri) } }, [
      el("header", {}, [el("span", { class: "idx", text: `#${ri + 1}` }), el("div", { class: "lp-prompt", text: rec.prompt || "(no prompt)" })]),
      tokens,
      el("div", { class: "lp-stats" }, [
        stat("tokens", String(n)),
        stat("mean probability", fmtProb(meanP)),
        stat("perplexity", n ? fmtNum(Math.exp(-meanLp), 2) : "—"),
        low ? stat("least likely", `${visibleWs(low.token)} (${fmtProb(low.p)})`) : null,
        stat("unlikely (< 1%)", String(unlikelyCount)),
      ]),
      scored,
    ]));
  });
}

function showTooltip(target) {
  const rec = records[Number(target.dataset.record)];
  const t = rec && rec.data[Number(target.dataset.index)];
  if (!t) return;
  const tip = clear($("#tooltip"));
  tip.append(el("div", { class: "tt-head" }, [
    el("span", { class: "tok-chip", text: visibleWs(t.token) || "∅" }),
    el("span", { class: "mono", text: `${fmtProb(t.p)} · logprob ${fmtNum(t.logprob)}` }),
  ]));
  if (t.rawP !== null) {
    tip.append(el("div", { class: "tt-facts mono", text: `model's own ${fmtProb(t.rawP)} (before the sampler settings)` }));
  }
  if (t.rank !== null) {
    const facts = [`rank ${t.rank}`, t.entropy !== null ? `entropy ${fmtNum(t.entropy)} nats` : null,
      t.part === "prompt" ? "a prompt token" : null, t.p < UNLIKELY ? "unlikely (< 1%)" : null];
    tip.append(el("div", { class: "tt-facts mono", text: facts.filter(Boolean).join(" · ") }));
  }
  const table = el("table");
  const others = t.others.length ? t.others : [t];
  for (const o of others.slice().sort((a, b) => b.p - a.p)) {
    const chosen = o.token === t.token;
    table.append(el("tr", { class: chosen ? "chosen" : "" }, [
      el("td", { class: "t", text: visibleWs(o.token) || "∅" }),
      el("td", { class: "b" }, [probBar(o.p, probColor(o.p))]),
      el("td", { class: "p", text: fmtProb(o.p) }),
    ]));
  }
  tip.append(table);
  tip.classList.remove("hidden");
  const r = target.getBoundingClientRect();
  const tw = tip.offsetWidth;
  const th = tip.offsetHeight;
  let x = Math.min(window.innerWidth - tw - 8, Math.max(8, r.left));
  let y = r.bottom + 8;
  if (y + th > window.innerHeight - 8) y = Math.max(8, r.top - th - 8);
  tip.style.left = `${x}px`;
  tip.style.top = `${y}px`;
}

function hideTooltip() {
  $("#tooltip").classList.add("hidden");
}

// ---------------------------------------------------------------- loading

function setRecords(recs) {
  records = recs;
  $("#empty-state").classList.add("hidden");
  renderCards();
  setPageState("ready");
}

function main() {
  const cards = $("#cards");
  cards.addEventListener("mouseover", (e) => {
    const t = e.target.closest(".tok");
    if (t) showTooltip(t);
  });
  cards.addEventListener("mouseout", (e) => {
    const t = e.target.closest(".tok");
    if (t && !t.contains(e.relatedTarget)) hideTooltip();
  });
  cards.addEventListener("focusin", (e) => { const t = e.target.closest(".tok"); if (t) showTooltip(t); });
  cards.addEventListener("focusout", hideTooltip);
  $("#show-ws").addEventListener("change", (e) => { showWs = e.target.checked; if (records.length) renderCards(); });
  startLoader({
    view: "logprobs",
    kind: "logprobs",
    parse: parseLogprobs,
    show: setRecords,
    hasDocument: () => records.length > 0,
    messages: "#message",
    waitingText: "The records appear when the job is done.",
  });
}

main();
