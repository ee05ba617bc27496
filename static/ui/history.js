// The history of calls: newest first, kept to the last 50.

import { clock, h } from "./dom.js";
import { describeError, short } from "./format.js";

const KEEP = 50;

/** The arguments as they would be written in a call. @param {any} params */
function argumentText(params) {
  if (Array.isArray(params)) return params.map((p) => JSON.stringify(p)).join(", ");
  if (params && typeof params === "object") {
    return Object.entries(params).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ");
  }
  return "";
}

export class History {
  /**
   * @param {HTMLOListElement | HTMLElement} list
   * @param {HTMLElement} empty shown while the history is empty
   */
  constructor(list, empty) {
    this.list = list;
    this.empty = empty;
  }

  /**
   * @param {string} label what was called
   * @param {any} params its JSON arguments
   * @param {{value?: any, error?: unknown}} outcome
   * @param {number} ms how long it took
   */
  add(label, params, outcome, ms) {
    const failed = "error" in outcome;
    const result = failed
      ? h("span", { class: "error-text" }, `✗ ${describeError(outcome.error).message}`)
      : h("span", { class: "ok-text" }, `→ ${short(outcome.value, 100)}`);
    this.#prepend(
      h(
        "li",
        { class: failed ? "failed" : "ok" },
        h("time", {}, clock()),
        " ",
        h("code", {}, `${label}(${argumentText(params)})`),
        " ",
        result,
        " ",
        h("small", {}, `${Math.round(ms)} ms`),
      ),
    );
  }

  /**
   * A call the service made on this page (a mind call).
   * @param {string} method
   * @param {any[]} args
   */
  incoming(method, args) {
    this.#prepend(
      h(
        "li",
        { class: "incoming" },
        h("time", {}, clock()),
        " ← ",
        h("code", {}, `${method}(${args.map((arg) => short(arg, 60)).join(", ")})`),
        " ",
        h("small", {}, "called by the service"),
      ),
    );
  }

  /** A line about the session (lost, renewed). @param {string} text */
  note(text) {
    this.#prepend(h("li", { class: "note" }, h("time", {}, clock()), " ", text));
  }

  clear() {
    this.list.replaceChildren();
    this.empty.hidden = false;
  }

  /** @param {HTMLElement} item */
  #prepend(item) {
    this.list.prepend(item);
    while (this.list.children.length > KEEP) this.list.lastElementChild?.remove();
    this.empty.hidden = true;
  }
}
