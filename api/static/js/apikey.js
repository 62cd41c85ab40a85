// The API key the pages send, and the top bar's field to enter it.
//
// The key lives in this tab's sessionStorage only: never in a URL (which ends up in logs and history)
// nor in a cookie (which the browser would attach to requests other sites make). It goes out as
// `Authorization: Bearer <key>` on requests to this service's own origin, and never to another one
// (a tree file opened with `?file=URL` must not see it). The event stream is read with fetch, which
// can send the header, rather than EventSource, which cannot (common.js `watchJob`).

const STORAGE_KEY = "tokentree.apiKey";
const WHERE = "top bar, “API key”";
// What a header value can hold (a key from `tokentree keys create` is "tt_" and URL-safe base64): anything
// else would make fetch throw before sending, which would read as the service being down.
const KEY_CHARS = /^[\x21-\x7e]+$/;

/** The key entered in this tab ("" when none). */
export function apiKey() {
  try {
    return sessionStorage.getItem(STORAGE_KEY) || "";
  } catch (_) {
    return ""; // storage disabled: the pages work without a key
  }
}

function storeKey(key) {
  try {
    if (key) sessionStorage.setItem(STORAGE_KEY, key);
    else sessionStorage.removeItem(STORAGE_KEY);
  } catch (_) { /* storage disabled */ }
}

/** Whether `url` goes to this service (the only place the key is sent). */
export function isServiceUrl(url) {
  try {
    return new URL(url, window.location.href).origin === window.location.origin;
  } catch (_) {
    return false;
  }
}

/** fetch() options for `url` with the key's Authorization header added (for this service only). */
export function withApiKey(url, options = {}) {
  const key = apiKey();
  if (!key || !KEY_CHARS.test(key) || !isServiceUrl(url)) return options;
  const headers = new Headers(options.headers || {});
  headers.set("Authorization", `Bearer ${key}`);
  return { ...options, headers };
}

/** The service answered 401: open the key field, and say whether the key is missing or was refused. */
export function askForKey() {
  openKeyField(true);
  return apiKey()
    ? { title: "API key refused", text: `The service refused your API key (unknown or revoked). Enter a valid API key (${WHERE}).` }
    : { title: "API key needed", text: `This service needs an API key. Enter your API key (${WHERE}).` };
}

// ---------------------------------------------------------------- the top bar's field

function keyBox() {
  return document.getElementById("key-box");
}

function showKeyState() {
  const box = keyBox();
  if (!box) return;
  const set = Boolean(apiKey());
  box.dataset.key = set ? "set" : "none";
  document.getElementById("key-toggle").textContent = set ? "API key ✓" : "API key";
  document.getElementById("key-forget").disabled = !set;
}

/** Open (or close) the key form; `needed`: the service asked for a key, so say so. */
export function openKeyField(needed = false) {
  const box = keyBox();
  if (!box) return;
  const form = document.getElementById("key-form");
  if (needed) box.classList.add("needed");
  if (!form.classList.contains("hidden")) return; // open already: leave the focus where the user put it
  form.classList.remove("hidden");
  document.getElementById("key-toggle").setAttribute("aria-expanded", "true");
  document.getElementById("api-key").focus();
}

function closeKeyField() {
  document.getElementById("key-form").classList.add("hidden");
  document.getElementById("key-toggle").setAttribute("aria-expanded", "false");
}

/** Wire the top bar's key field (every page has one). A new key reloads the page: everything it
 * asked the service for is asked again, with the key. */
function setupKeyField() {
  if (!keyBox()) return;
  showKeyState();
  const input = document.getElementById("api-key");
  document.getElementById("key-toggle").addEventListener("click", () => {
    if (document.getElementById("key-form").classList.contains("hidden")) openKeyField();
    else closeKeyField();
  });
  document.getElementById("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    if (!KEY_CHARS.test(key)) {
      input.setCustomValidity("An API key has no spaces or accented letters: paste it as `tokentree keys create` printed it.");
      input.reportValidity();
      return;
    }
    storeKey(key);
    window.location.reload();
  });
  document.getElementById("key-forget").addEventListener("click", () => {
    storeKey("");
    window.location.reload();
  });
  input.addEventListener("input", () => input.setCustomValidity(""));
  input.addEventListener("keydown", (e) => { if (e.key === "Escape") closeKeyField(); });
}

setupKeyField();
