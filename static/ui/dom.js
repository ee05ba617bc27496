// Tiny DOM helpers for the dashboard (no framework).

/**
 * Make an element: `h("button", {type: "button", onclick: fn}, "Call")`.
 * Attributes named on* take listeners; `true`/`false` set or omit boolean
 * attributes; children are nodes or strings (as text, never HTML).
 * @param {string} tag
 * @param {Record<string, any>} [attrs]
 * @param {...(Node | string | number | null | undefined | false)} children
 * @returns {HTMLElement}
 */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(element, ...children);
  return element;
}

/**
 * @param {Element} parent
 * @param {...(Node | string | number | null | undefined | false)} children
 */
export function append(parent, ...children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** @param {string} id */
export function byId(id) {
  const element = document.getElementById(id);
  if (!element) throw new Error(`the page lacks #${id}`);
  return element;
}

/**
 * Restart a CSS animation class on an element (e.g. a highlight).
 * @param {Element} element
 * @param {string} className
 */
export function flash(element, className) {
  element.classList.remove(className);
  void (/** @type {HTMLElement} */ (element).offsetWidth); // reflow: the animation starts over
  element.classList.add(className);
}

/** The time of day as hh:mm:ss. @param {Date} [date] */
export function clock(date = new Date()) {
  return date.toTimeString().slice(0, 8);
}
