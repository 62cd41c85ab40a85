// Growing a stored tree job in place (POST /v1/jobs/{id}/expand), for the tree and response viewers: the
// "grow" buttons on a node's unexplored candidates (recorded candidates that are not its children) and on
// a leaf a limit left unexpanded ("grow further"), the request, and what to say when it is refused. A
// viewer then follows the job as it runs again (its loader), and the new branch appears as it grows.
import { el, fetchJSON, ACTIVE_STATUSES } from "../common.js";

/** Whether a viewer shows a stored job that can grow now: a job's tree (not a file), the job ended. */
export function canGrow(source, job) {
  return Boolean(source && source.job && job && job.id === source.job && job.kind === "tree"
    && !ACTIVE_STATUSES.has(job.status));
}

/** The node's recorded candidates that are not its children (those a growth can make children). */
export function unexploredCandidates(node) {
  const children = new Set(node.children.map((c) => c.tokenId));
  return node.candidates.filter((c) => c.tokenId !== null && !children.has(c.tokenId));
}

/** Whether "more" applies: a leaf the depth limit (or another limit) left unexpanded, not a stop. */
export function growsFurther(node) {
  return node.id !== null && !node.children.length && node.threshold === null && node.finishReason !== "stop";
}

/** What the service said, in its own words (never a status line or a URL). */
function refusal(err) {
  const detail = err && err.body && err.body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((d) => d.msg).join("; ");
  return (err && err.message) || String(err);
}

/**
 * Ask the service to grow job `jobId` at node `nodeId`: its candidate `tokenId`, or with null the node
 * itself. Resolves with the job (queued again); rejects with an Error whose message says why not.
 */
export async function requestGrowth(jobId, nodeId, tokenId) {
  const body = tokenId === null ? { node_id: nodeId } : { node_id: nodeId, token_id: tokenId };
  try {
    return await fetchJSON(`/v1/jobs/${encodeURIComponent(jobId)}/expand`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  } catch (err) {
    throw new Error(refusal(err));
  }
}

/** A small "grow" button; `onGrow` runs on click (the button is disabled while it does). */
export function growButton(label, title, onGrow) {
  const button = el("button", {
    class: "btn small grow",
    text: label,
    attrs: { type: "button", title, "data-role": "grow" },
  });
  button.addEventListener("click", async (e) => {
    e.stopPropagation();
    button.disabled = true;
    try {
      await onGrow();
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

/**
 * The tree viewer's side: add "grow" buttons to the details panel `body` (details.js marks each candidate
 * list with its node's key and each candidate with its token id). `grow(node, tokenId)` makes the request
 * (tokenId null: the node itself); nothing is added unless `allowed()`.
 */
export function addGrowButtons(body, nodesByKey, allowed, grow) {
  if (!allowed()) return;
  for (const list of body.querySelectorAll("ul.cand-list[data-owner]")) {
    const owner = nodesByKey(list.dataset.owner);
    if (!owner || owner.id === null) continue;
    const open = new Set(unexploredCandidates(owner).map((c) => String(c.tokenId)));
    for (const item of list.querySelectorAll("li[data-token-id]")) {
      if (!open.has(item.dataset.tokenId)) continue;
      item.append(growButton("grow", "Grow this candidate in place: it becomes a child of the node and grows by "
        + "the tree's rule, with its probability as recorded", () => grow(owner, Number(item.dataset.tokenId))));
    }
  }
  const key = body.dataset.key;
  const shown = key ? nodesByKey(body.dataset.endKey || key) : null;
  if (shown && growsFurther(shown)) {
    body.append(el("div", { class: "grow-more" }, [growButton("grow this node further",
      "This leaf was left unexpanded by a limit: grow it by the tree's rule, in place", () => grow(shown, null))]));
  }
}
