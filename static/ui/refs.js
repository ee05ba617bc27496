// Reference panels: call the remote_* methods of an object lent by reference.

import { h } from "./dom.js";
import { parseArgument, renderOutcome } from "./explorer.js";

/** @typedef {import("../pbgateway.js").RemoteRef} RemoteRef */
/** @typedef {import("./history.js").History} History */
/**
 * @typedef {object} Hooks
 * @property {History} history
 * @property {(value: any, name: string) => void} onValue
 * @property {() => void} onRemove
 */

let nextID = 1;

/**
 * One reference's panel: a method name, JSON arguments, Call, Release.
 */
class RefPanel {
  /**
   * @param {RemoteRef} ref
   * @param {string} name the call that returned it
   * @param {Hooks} hooks
   */
  constructor(ref, name, hooks) {
    const id = nextID++;
    this.ref = ref;
    this.output = h("output", { class: "result", "aria-live": "polite", for: `ref-${id}-method ref-${id}-args` });
    this.method = /** @type {HTMLInputElement} */ (h("input", {
      id: `ref-${id}-method`, name: "method", required: true, autocomplete: "off", spellcheck: "false",
      placeholder: "e.g. increment",
    }));
    this.args = /** @type {HTMLInputElement} */ (h("input", {
      id: `ref-${id}-args`, name: "args", autocomplete: "off", spellcheck: "false",
      placeholder: "JSON array, e.g. [2]",
    }));
    this.badge = h("span", { class: "badge" }, "reference");
    this.release = h("button", { type: "button", class: "small", onclick: () => this.#release(hooks) }, "Release");
    this.form = h(
      "form",
      { class: "call-form", onsubmit: (/** @type {Event} */ e) => this.#submit(e, name, hooks) },
      h("div", { class: "field" }, h("label", { for: `ref-${id}-method` }, "Method"), this.method),
      h("div", { class: "field" }, h("label", { for: `ref-${id}-args` }, "Arguments"), this.args),
      h("div", { class: "actions" }, h("button", { type: "submit" }, "Call")),
      this.output,
    );
    this.element = h(
      "article",
      { class: "panel ref", "data-ref": ref.handle, "aria-label": `Reference from ${name}` },
      h("header", {}, h("h3", {}, `${name}()`), h("span", { class: "meta" }, ref.handle), this.badge, this.release),
      this.form,
    );
    ref.on("stale", () => this.#gone("stale: its session ended"));
  }

  /** @param {Event} event @param {string} name @param {Hooks} hooks */
  async #submit(event, name, hooks) {
    event.preventDefault();
    const method = this.method.value.trim();
    let args;
    try {
      args = this.args.value.trim() === "" ? [] : parseArgument(this.args.value, "arguments");
      if (!Array.isArray(args)) throw new TypeError("arguments: give a JSON array");
    } catch (error) {
      renderOutcome(this.output, { error });
      return;
    }
    const label = `${name}().${method}`;
    const started = performance.now();
    try {
      const value = await this.ref.callJSON(method, args);
      renderOutcome(this.output, { value });
      hooks.history.add(label, args, { value }, performance.now() - started);
      hooks.onValue(value, `${label}`);
    } catch (error) {
      renderOutcome(this.output, { error });
      hooks.history.add(label, args, { error }, performance.now() - started);
    }
  }

  /** @param {Hooks} hooks */
  async #release(hooks) {
    if (!this.ref.released && !this.ref.stale) await this.ref.release().catch(() => {});
    this.element.remove();
    hooks.onRemove();
  }

  /** @param {string} why */
  #gone(why) {
    this.element.classList.add("closed");
    this.badge.textContent = "stale";
    this.badge.title = why;
    this.release.textContent = "Remove";
  }
}

/**
 * The references area.
 */
export class RefPanels {
  /** @type {Map<RemoteRef, RefPanel>} */
  #panels = new Map();

  /**
   * @param {HTMLElement} container
   * @param {HTMLElement} section hidden while there are no panels
   * @param {History} history
   * @param {(value: any, name: string) => void} onValue
   */
  constructor(container, section, history, onValue) {
    this.container = container;
    this.section = section;
    this.history = history;
    this.onValue = onValue;
  }

  /** @param {RemoteRef} ref @param {string} name */
  open(ref, name) {
    if (this.#panels.has(ref)) return;
    const panel = new RefPanel(ref, name, {
      history: this.history,
      onValue: this.onValue,
      onRemove: () => {
        this.#panels.delete(ref);
        this.#update();
      },
    });
    this.#panels.set(ref, panel);
    this.container.prepend(panel.element);
    this.#update();
  }

  clear() {
    this.#panels.clear();
    this.container.replaceChildren();
    this.#update();
  }

  #update() {
    this.section.hidden = this.#panels.size === 0;
  }
}
