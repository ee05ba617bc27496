// A small time-series chart (a sparkline) drawn as inline SVG.

import { h } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 120;
const HEIGHT = 36;
const MIN_SLOTS = 20;

/**
 * @param {string} tag
 * @param {Record<string, string | number>} attrs
 */
function svg(tag, attrs) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, String(value));
  return element;
}

/** @param {number} n */
function number(n) {
  if (Number.isInteger(n)) return n.toLocaleString("en");
  return n.toLocaleString("en", { maximumFractionDigits: 2 });
}

/**
 * The last `capacity` samples of one numeric field, as a line.  The figure
 * carries `data-key`, `data-points` (samples shown) and `data-samples`
 * (samples ever taken), which the browser tests read.
 */
export class Sparkline {
  /** @type {number[]} */
  #values = [];
  #samples = 0;

  /**
   * @param {string} key the field's name
   * @param {number} [capacity] how many samples the line shows
   */
  constructor(key, capacity = 60) {
    this.key = key;
    this.capacity = capacity;
    this.line = svg("polyline", { class: "line", points: "", "vector-effect": "non-scaling-stroke" });
    this.area = svg("polygon", { class: "area", points: "" });
    this.svg = svg("svg", {
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      preserveAspectRatio: "none",
      role: "img",
      "aria-label": key,
    });
    this.svg.append(this.area, this.line);
    this.last = h("span", { class: "last" });
    this.range = h("span", { class: "range" });
    this.element = h(
      "figure",
      { class: "chart", "data-key": key, "data-points": 0, "data-samples": 0 },
      h("figcaption", {}, h("span", { class: "key" }, key), this.last),
      this.svg,
      this.range,
    );
  }

  /** Add a sample and redraw. @param {number} value */
  push(value) {
    this.#values.push(value);
    if (this.#values.length > this.capacity) this.#values.shift();
    this.#samples += 1;
    this.#draw();
  }

  #draw() {
    const values = this.#values;
    const low = Math.min(...values);
    const high = Math.max(...values);
    const span = high - low;
    // Until there are enough samples the line spans fewer slots, so a young
    // series is not a sliver at the right edge.
    const slots = Math.min(this.capacity, Math.max(values.length, MIN_SLOTS));
    const step = WIDTH / (slots - 1);
    const offset = WIDTH - (values.length - 1) * step; // the newest sample sits at the right edge
    const points = values.map((value, i) => {
      const y = span === 0 ? HEIGHT / 2 : HEIGHT - 2 - ((value - low) / span) * (HEIGHT - 4);
      return `${(offset + i * step).toFixed(2)},${y.toFixed(2)}`;
    });
    this.line.setAttribute("points", points.join(" "));
    this.area.setAttribute(
      "points",
      values.length > 1 ? `${offset.toFixed(2)},${HEIGHT} ${points.join(" ")} ${WIDTH},${HEIGHT}` : "",
    );
    const latest = values[values.length - 1];
    this.last.textContent = number(latest);
    this.range.textContent = span === 0 ? `steady at ${number(low)}` : `${number(low)} – ${number(high)}`;
    this.svg.setAttribute(
      "aria-label",
      `${this.key}: ${number(latest)}, between ${number(low)} and ${number(high)} over the last ${values.length} updates`,
    );
    this.element.dataset.points = String(values.length);
    this.element.dataset.samples = String(this.#samples);
  }
}
