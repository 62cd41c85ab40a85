// The job list's studies: a job made by a study shows the study's name, linking to its page
// (/viewer/study?id=...). The names come from the newest studies, read with each refresh of the list.
import { el, fetchJSON } from "./common.js";

let names = new Map(); // study id -> name

/** Read the newest studies' names (a study older than them shows the start of its id). */
export async function loadStudyNames() {
  try {
    const page = await fetchJSON("/v1/studies?limit=50");
    names = new Map((page.items || []).map((study) => [study.id, study.name]));
  } catch (_) { /* the rows show the study's id instead */ }
}

/** The row's study line, or null for a job submitted on its own. */
export function studyTag(job) {
  if (!job.study_id) return null;
  return el("div", { class: "study-tag", dataset: { study: job.study_id } }, [
    el("span", { class: "muted", text: "study " }),
    el("a", { href: `/viewer/study?id=${encodeURIComponent(job.study_id)}`, text: names.get(job.study_id) || job.study_id.slice(0, 8) }),
  ]);
}
