// The parameters each kind of job takes, as this server applies them (GET /v1/parameters): for "tree",
// "logprobs" and "score", a list in the engine's order of {name, type ("integer" | "number" | "boolean"),
// default, minimum, maximum, description}. Asked once per page.
import { fetchJSON } from "./common.js";

let asked = null;

export function jobParameters() {
  if (!asked) {
    asked = fetchJSON("/v1/parameters").catch((err) => {
      asked = null; // ask again next time
      throw err;
    });
  }
  return asked;
}
