// Readable text for the values the client library decodes: JSON-like for
// plain data, Python-like for what JSON lacks (bytes, tuples, sets, ...).

import {
  Copy,
  Decimal,
  FrozenSet,
  isTuple,
  LiveObject,
  PyDate,
  PyTime,
  RemoteRef,
  RPCError,
  Timedelta,
  Unpersistable,
} from "../pbgateway.js";

const WIDTH = 60;

/** @param {Uint8Array} bytes */
function bytesRepr(bytes) {
  let text = "";
  for (const byte of bytes.subarray(0, 200)) {
    if (byte === 0x27 || byte === 0x5c) text += `\\${String.fromCharCode(byte)}`;
    else if (byte >= 0x20 && byte < 0x7f) text += String.fromCharCode(byte);
    else text += `\\x${byte.toString(16).padStart(2, "0")}`;
  }
  return `b'${text}'${bytes.length > 200 ? `… (${bytes.length} bytes)` : ""}`;
}

/** @param {Date} date */
function dateRepr(date) {
  if (Number.isNaN(date.getTime())) return "datetime(invalid)";
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return `datetime ${local.toISOString().slice(0, 23).replace(/\.000$/, "")}`;
}

/**
 * Items of a container as [open, parts, close], or null for a scalar.
 * @param {any} value
 * @param {number} depth
 * @returns {[string, string[][], string] | null}
 */
function parts(value, depth) {
  /** @param {any} item */
  const inner = (item) => lines(item, depth + 1);
  if (Array.isArray(value)) {
    return isTuple(value) ? ["(", value.map(inner), value.length === 1 ? ",)" : ")"]
      : ["[", value.map(inner), "]"];
  }
  if (value instanceof FrozenSet) return ["frozenset({", [...value].map(inner), "})"];
  if (value instanceof Set) return value.size ? ["{", [...value].map(inner), "}"] : ["set(", [], ")"];
  if (value instanceof Map) {
    return ["{", [...value].map(([k, v]) => prefix(`${repr(k, depth + 1)}: `, inner(v))), "}"];
  }
  if (value instanceof Copy) {
    return [`${value.type} {`, entries(value.state, depth), "}"];
  }
  if (value !== null && typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype) {
    return ["{", entries(value, depth), "}"];
  }
  return null;
}

/** @param {any} object @param {number} depth */
function entries(object, depth) {
  if (object === null || typeof object !== "object") return [[repr(object, depth + 1)]];
  return Object.entries(object).map(([k, v]) => prefix(`${JSON.stringify(k)}: `, lines(v, depth + 1)));
}

/** @param {string} head @param {string[]} body */
function prefix(head, body) {
  return [head + body[0], ...body.slice(1)];
}

/** A scalar's text. @param {any} value */
function scalar(value) {
  if (value === null || value === undefined) return "null";
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number") {
    if (Number.isNaN(value)) return "NaN";
    return String(value);
  }
  if (typeof value === "boolean" || typeof value === "bigint") return String(value);
  if (value instanceof Uint8Array) return bytesRepr(value);
  if (value instanceof Date) return dateRepr(value);
  if (value instanceof PyDate) return `date ${value.iso}`;
  if (value instanceof PyTime) return `time ${value.iso}`;
  if (value instanceof Timedelta) return `timedelta(seconds=${value.seconds})`;
  if (value instanceof Decimal) return `Decimal('${value.text}')`;
  if (value instanceof Unpersistable) return `<unpersistable: ${value.reason}>`;
  if (value instanceof RemoteRef) return `<reference ${value.handle}>`;
  if (value instanceof LiveObject) return `<live ${value.type} ${value.handle}, seq ${value.seq}>`;
  return JSON.stringify(value) ?? String(value);
}

/**
 * The value as lines: one line when it fits, else one item per line.
 * @param {any} value
 * @param {number} depth
 * @returns {string[]}
 */
function lines(value, depth) {
  const container = depth < 50 ? parts(value, depth) : null;
  if (!container) return [scalar(value)];
  const [open, items, close] = container;
  const flat = `${open}${items.map((item) => item.join(" ")).join(", ")}${close}`;
  if (items.every((item) => item.length === 1) && flat.length <= WIDTH) return [flat];
  const body = items.flatMap((item, i) =>
    item.map((line, j) => `  ${line}${j === item.length - 1 && i < items.length - 1 ? "," : ""}`));
  return [open, ...body, close];
}

/**
 * A value's readable text (multi-line for big containers).
 * @param {any} value
 * @param {number} [depth]
 */
export function repr(value, depth = 0) {
  return lines(value, depth).join("\n");
}

/**
 * One line for a history list: cut to `max` characters.
 * @param {any} value
 * @param {number} [max]
 */
export function short(value, max = 80) {
  const text = lines(value, 0).map((line) => line.trim()).join(" ");
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/**
 * An error's text and details for display.
 * @param {unknown} error
 * @returns {{message: string, details: string}}
 */
export function describeError(error) {
  if (error instanceof RPCError) {
    const details = [error.type];
    if (error.remoteType) details.push(error.remoteType);
    if (error.code !== null) details.push(`code ${error.code}`);
    return { message: error.message, details: details.join(" · ") };
  }
  if (error instanceof Error) return { message: error.message, details: error.name };
  return { message: String(error), details: "" };
}

/**
 * The references and live objects inside a value.
 * @param {any} value
 * @param {{refs: RemoteRef[], caches: LiveObject[]}} [found]
 */
export function handlesIn(value, found = { refs: [], caches: [] }) {
  if (value instanceof RemoteRef) found.refs.push(value);
  else if (value instanceof LiveObject) found.caches.push(value);
  else if (Array.isArray(value) || value instanceof Set) for (const item of value) handlesIn(item, found);
  else if (value instanceof Map) for (const [k, v] of value) handlesIn(k, found), handlesIn(v, found);
  else if (value instanceof Copy) handlesIn(value.state, found);
  else if (value !== null && typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype) {
    for (const item of Object.values(value)) handlesIn(item, found);
  }
  return found;
}
