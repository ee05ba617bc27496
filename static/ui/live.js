// Live panels: one per live object the user opened, showing its state as a
// table (changed cells flash) and its numeric fields as moving charts.

import { Sparkline } from "./chart.js";
import { clock, flash, h } from "./dom.js";
import { repr, short } from "./format.js";

/** @typedef {import("../pbgateway.js").LiveObject} LiveObject */
/** @typedef {import("../pbgateway.js").Update} Update */

/** @param {any} value */
function isRecord(value) {
  return (
    value instanceof Map ||
    (value !== null && typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype)
  );
}

/** @param {any} value @returns {Array<[string, any]>} */
function entriesOf(value) {
  if (Array.isArray(value)) return value.map((item, i) => [String(i), item]);
  if (value instanceof Map) return [...value].map(([k, v]) => [typeof k === "string" ? k : repr(k), v]);
  if (isRecord(value)) return Object.entries(value);
  return [];
}

/**
 * The state as table rows: a dict or list of records gets a column per
 * field, anything else a single "value" column.
 * @param {any} state
 */
function tableOf(state) {
  const entries = entriesOf(state);
  const records = entries.length > 0 && entries.every(([, value]) => isRecord(value));
  /** @type {string[]} */
  const columns = [];
  if (records) {
    for (const [, record] of entries) {
      for (const [field] of entriesOf(record)) if (!columns.includes(field)) columns.push(field);
    }
  } else {
    columns.push("value");
  }
  const rows = entries.map(([key, value]) => {
    /** @type {Map<string, any>} */
    const cells = new Map(records ? entriesOf(value) : [["value", value]]);
    return { key, cells };
  });
  return { columns, rows, keyTitle: Array.isArray(state) ? "#" : "key" };
}

/** A table cell's text: strings as they are, other values as written. @param {any} value */
function cellText(value) {
  if (typeof value !== "string") return short(value, 60);
  return value.length > 80 ? `${value.slice(0, 79)}…` : value;
}

/** @param {any} value */
function isNumber(value) {
  return typeof value === "number" && Number.isFinite(value);
}

/**
 * One live object's panel.
 */
class LivePanel {
  /** @type {Map<string, string>} cell texts of the last render, by row and column */
  #cells = new Map();
  /** @type {Map<string, Sparkline>} */
  #charts = new Map();
  #rendered = false;
  /** @type {Array<() => void>} */
  #unsubscribe = [];

  /**
   * @param {LiveObject} cache
   * @param {string} name what the user called to get it
   * @param {(panel: LivePanel) => void} onRemove
   */
  constructor(cache, name, onRemove) {
    this.cache = cache;
    this.name = name;
    const titleID = `live-${cache.handle}`;
    this.seq = h("span", { class: "seq" });
    this.state = h("span", { class: "badge" }, "live");
    this.closeButton = h(
      "button",
      { type: "button", class: "small", "aria-label": `Close ${name}`, onclick: () => this.close(onRemove) },
      "Close",
    );
    this.charts = h("div", { class: "charts" });
    this.table = h("table");
    this.raw = h("pre", { class: "value", hidden: true });
    this.updated = h("span", { class: "updated" });
    this.element = h(
      "article",
      { class: "panel live", "data-name": name, "data-type": cache.type, "aria-labelledby": titleID, tabindex: -1 },
      h(
        "header",
        {},
        h("h3", { id: titleID }, name),
        h("span", { class: "meta" }, cache.type, " · seq ", this.seq),
        this.state,
        this.closeButton,
      ),
      this.charts,
      h("div", { class: "table-wrap" }, this.table),
      this.raw,
      h("p", { class: "footnote" }, this.updated),
    );
    this.#unsubscribe.push(
      cache.on("update", (/** @type {Update} */ update) => this.render(update)),
      cache.on("release", (/** @type {{reason: string}} */ event) => this.released(event.reason)),
    );
    this.render(null);
    if (cache.released) this.released("released");
  }

  /** @param {Update | null} update */
  render(update) {
    const cache = this.cache;
    this.seq.textContent = String(cache.seq);
    // Counters the browser tests check: with no update missed and no
    // snapshot, seq == opened-seq + deltas.
    const data = this.element.dataset;
    data.seq = String(cache.seq);
    if (!update) {
      data.openedSeq = String(cache.seq);
      data.deltas = data.snapshots = "0";
    } else if (update.snapshot) {
      data.snapshots = String(Number(data.snapshots) + 1);
    } else {
      data.deltas = String(Number(data.deltas) + 1);
    }
    this.updated.textContent = update
      ? `${update.snapshot ? "New snapshot" : `Last change: ${update.method}`} at ${clock()}`
      : `Opened at ${clock()}`;
    if (!cache.live && !(isRecord(cache.state) || Array.isArray(cache.state))) {
      this.raw.hidden = false;
      this.raw.textContent = repr(cache.state);
      return;
    }
    this.#renderTable();
    this.#renderCharts();
    this.#rendered = true;
  }

  #renderTable() {
    const { columns, rows, keyTitle } = tableOf(this.cache.state);
    /** @type {Map<string, string>} */
    const cells = new Map();
    const head = h("thead", {}, h("tr", {}, h("th", { scope: "col" }, keyTitle),
      ...columns.map((column) => h("th", { scope: "col" }, column))));
    const body = h("tbody");
    for (const row of rows) {
      const tr = h("tr", { "data-key": row.key }, h("th", { scope: "row" }, row.key));
      for (const column of columns) {
        const value = row.cells.get(column);
        const text = row.cells.has(column) ? cellText(value) : "";
        const id = `${row.key}\u0000${column}`;
        const td = h("td", { class: isNumber(value) ? "number" : null, "data-column": column }, text);
        if (this.#rendered && this.#cells.get(id) !== text) flash(td, "changed");
        cells.set(id, text);
        tr.append(td);
      }
      body.append(tr);
    }
    if (rows.length === 0) {
      body.append(h("tr", {}, h("td", { colspan: columns.length + 1, class: "empty" }, "(empty)")));
    }
    this.table.replaceChildren(head, body);
    this.#cells = cells;
  }

  #renderCharts() {
    const state = this.cache.state;
    if (Array.isArray(state)) return;
    const numeric = entriesOf(state).filter(([, value]) => isNumber(value));
    const keys = new Set(numeric.map(([key]) => key));
    for (const [key, chart] of this.#charts) {
      if (!keys.has(key)) {
        chart.element.remove();
        this.#charts.delete(key);
      }
    }
    for (const [key, value] of numeric) {
      let chart = this.#charts.get(key);
      if (!chart) {
        chart = new Sparkline(key);
        this.#charts.set(key, chart);
        this.charts.append(chart.element);
      }
      chart.push(value);
    }
  }

  /** @param {string} reason */
  released(reason) {
    this.element.classList.add("closed");
    this.state.textContent = "closed";
    this.state.title = reason;
    this.updated.textContent = `Closed at ${clock()}: ${reason}`;
    this.closeButton.textContent = "Remove";
  }

  /** @param {(panel: LivePanel) => void} onRemove */
  close(onRemove) {
    for (const off of this.#unsubscribe) off();
    this.cache.release().catch(() => {});
    this.element.remove();
    onRemove(this);
  }
}

/**
 * The live panels area.
 */
export class LivePanels {
  /** @type {Map<LiveObject, LivePanel>} */
  #panels = new Map();

  /**
   * @param {HTMLElement} container
   * @param {HTMLElement} empty shown while there are no panels
   */
  constructor(container, empty) {
    this.container = container;
    this.empty = empty;
  }

  /**
   * Show a live object (once: opening it again focuses its panel).
   * @param {LiveObject} cache
   * @param {string} name
   */
  open(cache, name) {
    let panel = this.#panels.get(cache);
    if (!panel) {
      panel = new LivePanel(cache, name, (closed) => {
        this.#panels.delete(closed.cache);
        this.#update();
      });
      this.#panels.set(cache, panel);
      this.container.prepend(panel.element);
      this.#update();
    }
    return panel;
  }

  /** Show the panel of a live object, if open. @param {LiveObject} cache */
  focus(cache) {
    const panel = this.#panels.get(cache);
    panel?.element.scrollIntoView({ block: "nearest" });
    panel?.element.focus({ preventScroll: true });
  }

  /** Remove every panel (after logout). */
  clear() {
    for (const panel of [...this.#panels.values()]) panel.close(() => {});
    this.#panels.clear();
    this.#update();
  }

  #update() {
    this.empty.hidden = this.#panels.size > 0;
  }
}
