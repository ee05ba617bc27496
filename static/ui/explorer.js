// The method explorer: one form per method the session's introspection
// lists, arguments typed as JSON, results and errors rendered readably.

import { h } from "./dom.js";
import { describeError, repr } from "./format.js";

/** @typedef {import("../pbgateway.js").Client} Client */
/** @typedef {import("../pbgateway.js").MethodInfo} MethodInfo */
/** @typedef {import("../pbgateway.js").Param} Param */
/** @typedef {import("./history.js").History} History */

/** A problem with what the user typed. */
export class InputError extends Error {
  /** @param {string} message @param {string} [field] the parameter at fault */
  constructor(message, field) {
    super(message);
    this.name = "InputError";
    this.field = field;
  }
}

/**
 * One argument as typed: JSON (tagged values allowed, e.g. {"$bytes": "aGk="}),
 * or, when it does not start like JSON, the text itself as a string.  For a
 * parameter annotated `str` the text is the string unless JSON-quoted.
 * @param {string} text
 * @param {string} name the parameter, for messages
 * @param {string | null} [annotation]
 */
export function parseArgument(text, name, annotation = null) {
  const trimmed = text.trim();
  if (annotation === "str" && !trimmed.startsWith('"')) return trimmed;
  try {
    return JSON.parse(trimmed);
  } catch {
    if (/^[[{"]/.test(trimmed)) throw new InputError(`${name}: not valid JSON`, name);
    return trimmed;
  }
}

/** @param {Param} param */
function optional(param) {
  return "defaultRepr" in param || "default" in param || param.kind.startsWith("var-");
}

/**
 * The JSON-RPC params for a method from its filled-in fields: an array when
 * the given arguments are the leading positional ones, else an object of
 * keyword arguments (JSON-RPC carries one or the other).
 * @param {MethodInfo} method
 * @param {(name: string) => string} valueOf the text typed for a parameter
 * @returns {any[] | Record<string, any>}
 */
export function buildParams(method, valueOf) {
  /** @type {any[]} */
  const positional = [];
  /** @type {Record<string, any>} */
  const named = {};
  /** @type {any[]} */
  let rest = [];
  let skipped = false;
  for (const param of method.params) {
    const text = valueOf(param.name).trim();
    if (text === "") {
      if (!optional(param)) throw new InputError(`${param.name} is required`, param.name);
      if (param.kind === "positional" || param.kind === "positional-only") skipped = true;
      continue;
    }
    const value = parseArgument(text, param.name, param.annotation);
    if (param.kind === "positional-only") {
      if (skipped) throw new InputError(`${param.name}: fill in the parameters before it`, param.name);
      positional.push(value);
    } else if (param.kind === "positional") {
      if (skipped) named[param.name] = value;
      else positional.push(value);
    } else if (param.kind === "var-positional") {
      if (!Array.isArray(value)) throw new InputError(`${param.name}: give a JSON array`, param.name);
      rest = value;
    } else if (param.kind === "keyword-only") {
      named[param.name] = value;
    } else {
      if (value === null || typeof value !== "object" || Array.isArray(value)) {
        throw new InputError(`${param.name}: give a JSON object`, param.name);
      }
      Object.assign(named, value);
    }
  }
  if (Object.keys(named).length === 0) return [...positional, ...rest];
  if (rest.length > 0) {
    throw new InputError("JSON-RPC sends positional or keyword arguments, not both");
  }
  const names = method.params.filter((p) => p.kind === "positional").map((p) => p.name);
  if (method.params.some((p) => p.kind === "positional-only") && positional.length > 0) {
    throw new InputError("positional-only arguments cannot go with keyword arguments");
  }
  positional.forEach((value, i) => (named[names[i]] = value));
  return named;
}

/** A parameter as shown in a signature. @param {Param} param */
function paramText(param) {
  const star = param.kind === "var-positional" ? "*" : param.kind === "var-keyword" ? "**" : "";
  const annotation = param.annotation ? `: ${param.annotation}` : "";
  const fallback = param.defaultRepr !== undefined ? ` = ${param.defaultRepr}` : "";
  return `${star}${param.name}${annotation}${fallback}`;
}

/**
 * Show a call's outcome in an <output>.
 * @param {HTMLElement} output
 * @param {{value?: any, error?: unknown}} outcome
 * @param {(HTMLElement | string)[]} [extra] shown under a value (e.g. "opened" notes)
 */
export function renderOutcome(output, outcome, extra = []) {
  output.classList.toggle("failed", "error" in outcome);
  if ("error" in outcome) {
    const { message, details } = describeError(outcome.error);
    output.replaceChildren(
      h("div", { class: "error-box", role: "alert" }, h("strong", {}, message), h("small", {}, details)),
    );
  } else {
    output.replaceChildren(h("pre", { class: "value" }, repr(outcome.value)), ...extra);
  }
}

/**
 * The explorer: a filterable list of method forms and a free-form call.
 */
export class Explorer {
  /**
   * @param {object} parts
   * @param {HTMLElement} parts.list where the methods go
   * @param {HTMLInputElement} parts.filter narrows the list by name or doc
   * @param {HTMLElement} parts.none shown when the service has no introspection
   * @param {(method: string, params: any) => Promise<{value?: any, error?: unknown, extra?: HTMLElement[]}>} parts.run
   *   makes the call (and records it)
   */
  constructor({ list, filter, none, run }) {
    this.list = list;
    this.filter = filter;
    this.none = none;
    this.run = run;
    filter.addEventListener("input", () => this.#applyFilter());
  }

  /** @param {MethodInfo[] | null} methods */
  setMethods(methods) {
    this.list.replaceChildren(...(methods ?? []).map((method) => this.#item(method)));
    this.none.hidden = methods !== null;
    this.filter.disabled = methods === null;
    this.#applyFilter();
  }

  #applyFilter() {
    const needle = this.filter.value.trim().toLowerCase();
    for (const item of this.list.children) {
      const text = /** @type {HTMLElement} */ (item).dataset.search ?? "";
      /** @type {HTMLElement} */ (item).hidden = needle !== "" && !text.includes(needle);
    }
  }

  /** @param {MethodInfo} method */
  #item(method) {
    const fields = method.params.map((param) => {
      const id = `m-${method.name}-${param.name}`;
      const hint = [param.annotation, param.kind.startsWith("var-") ? param.kind : null,
        param.defaultRepr !== undefined ? `default ${param.defaultRepr}` : null].filter(Boolean).join(", ");
      const placeholder = param.kind === "var-positional" ? "JSON array"
        : param.kind === "var-keyword" ? "JSON object"
        : param.annotation === "str" ? "text" : "JSON, or plain text";
      return h(
        "div",
        { class: "field" },
        h("label", { for: id }, param.name, hint ? h("small", {}, ` ${hint}`) : null),
        h("input", {
          id, name: param.name, autocomplete: "off", spellcheck: "false", placeholder,
          required: !optional(param),
        }),
      );
    });
    const output = h("output", { class: "result", "aria-live": "polite" });
    const button = h("button", { type: "submit" }, `Call ${method.name}`);
    const form = h(
      "form",
      { class: "call-form", novalidate: true },
      ...fields,
      h("div", { class: "actions" }, button),
      output,
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const elements = /** @type {HTMLFormElement} */ (form).elements;
      let params;
      try {
        params = buildParams(method, (name) =>
          /** @type {HTMLInputElement} */ (elements.namedItem(name))?.value ?? "");
      } catch (error) {
        renderOutcome(output, { error });
        if (error instanceof InputError && error.field) {
          /** @type {HTMLInputElement | null} */ (elements.namedItem(error.field))?.focus();
        }
        return;
      }
      button.setAttribute("aria-busy", "true");
      const outcome = await this.run(method.name, params);
      button.removeAttribute("aria-busy");
      renderOutcome(output, outcome, outcome.extra);
    });
    const signature = `${method.name}(${method.params.map(paramText).join(", ")})`;
    return h(
      "li",
      { class: "method", "data-method": method.name, "data-search": `${method.name} ${method.doc ?? ""}`.toLowerCase() },
      h(
        "details",
        {},
        h("summary", {}, h("code", { class: "signature" }, signature),
          method.doc ? h("span", { class: "doc" }, method.doc) : null),
        form,
      ),
    );
  }
}
