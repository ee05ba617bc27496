// The JSON value mapping (docs/json-mapping.md) in the browser: tagged JSON
// from the gateway to JavaScript values and back.
//
//   {"$bytes": b64}        <-> Uint8Array
//   {"$tuple": [...]}      <-> a frozen Array marked as a tuple (see tuple())
//   {"$set": [...]}        <-> Set
//   {"$frozenset": [...]}  <-> FrozenSet (a Set that refuses changes)
//   {"$datetime": iso}     <-> Date (the naive wall-clock time, read as local time)
//   {"$date": iso}         <-> PyDate        {"$time": iso}      <-> PyTime
//   {"$timedelta": s}      <-> Timedelta     {"$decimal": "1.10"} <-> Decimal
//   {"$float": "nan"|...}  <-> NaN, Infinity, -Infinity
//   {"$dict": [[k, v]]}    <-> Map (plain objects whose keys start with "$" also go out as $dict)
//   {"$copy": T, "state"}  <-> Copy
//   {"$unpersistable": r}  --> Unpersistable
//   {"$ref": H}, {"$cache": H, ...} <-> handle objects, through the `handles` argument
//
// JSON numbers are JavaScript numbers: integers beyond 2**53 lose precision.

const TUPLE = Symbol("pb.tuple");
const FROZEN = new WeakSet();

/**
 * A Python frozenset: a Set whose content cannot change once built.
 * @template T
 * @extends {Set<T>}
 */
export class FrozenSet extends Set {
  /** @param {Iterable<T>} [items] */
  constructor(items) {
    super(items);
    FROZEN.add(this);
  }

  /** @param {T} item */
  add(item) {
    if (FROZEN.has(this)) throw new TypeError("a FrozenSet cannot change");
    return super.add(item);
  }

  /** @param {T} item */
  delete(item) {
    if (FROZEN.has(this)) throw new TypeError("a FrozenSet cannot change");
    return super.delete(item);
  }

  clear() {
    throw new TypeError("a FrozenSet cannot change");
  }
}

/** A value carried as an ISO 8601 string under its tag (`$date`, `$time`). */
class IsoValue {
  /** @param {string} iso */
  constructor(iso) {
    this.iso = iso;
    Object.freeze(this);
  }

  toString() {
    return this.iso;
  }

  toJSON() {
    return { [/** @type {any} */ (this.constructor).tag]: this.iso };
  }
}

/** A calendar date without a time (Python `datetime.date`), e.g. "2026-11-26". */
export class PyDate extends IsoValue {
  static tag = "$date";
}

/** A time of day without a date (Python `datetime.time`, naive), e.g. "13:20:03.5". */
export class PyTime extends IsoValue {
  static tag = "$time";
}

/** A duration (Python `datetime.timedelta`), in seconds. */
export class Timedelta {
  /** @param {number} seconds */
  constructor(seconds) {
    this.seconds = seconds;
    Object.freeze(this);
  }

  toString() {
    return `${this.seconds} s`;
  }

  toJSON() {
    return { $timedelta: this.seconds };
  }
}

/** An exact decimal number (Python `decimal.Decimal`), kept as its text. */
export class Decimal {
  /** @param {string} text e.g. "1.10" */
  constructor(text) {
    this.text = text;
    Object.freeze(this);
  }

  toString() {
    return this.text;
  }

  toJSON() {
    return { $decimal: this.text };
  }
}

/** A Copyable's state: a copy of a remote object, by type name. */
export class Copy {
  /**
   * @param {string} type the Copyable's type name
   * @param {any} state its attributes
   */
  constructor(type, state) {
    this.type = type;
    this.state = state;
  }
}

/** What a Twisted peer could not send (`{"$unpersistable": reason}`). */
export class Unpersistable {
  /** @param {string} reason */
  constructor(reason) {
    this.reason = reason;
    Object.freeze(this);
  }
}

/**
 * A Python tuple: a frozen Array that travels as `{"$tuple": [...]}`.
 * @param {...any} items
 * @returns {ReadonlyArray<any>}
 */
export function tuple(...items) {
  Object.defineProperty(items, TUPLE, { value: true });
  return Object.freeze(items);
}

/**
 * Whether `value` was made by tuple() (or decoded from a `$tuple`).
 * @param {unknown} value
 */
export function isTuple(value) {
  return Array.isArray(value) && /** @type {any} */ (value)[TUPLE] === true;
}

/**
 * How the codec turns handles into objects and back; a Client provides it.
 * @typedef {object} Handles
 * @property {(handle: string) => any} ref the object for `{"$ref": handle}`
 * @property {(json: {$cache: string, type: string, state: any, seq: number}) => any} cache
 *   the object for a `$cache`
 * @property {(value: any) => object | undefined} [encodeHandle] the `$ref`/`$cache` JSON for
 *   a handle object, undefined for anything else
 */

const FLOATS = { nan: NaN, inf: Infinity, "-inf": -Infinity };

/** @param {string} text */
function bytesFromBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** @param {Uint8Array} bytes */
function base64FromBytes(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/** @param {number} n @param {number} [width] */
function pad(n, width = 2) {
  return String(n).padStart(width, "0");
}

/**
 * The naive ISO text of a Date's local wall-clock time (what PB's naive
 * datetimes mean), to the millisecond.
 * @param {Date} date
 */
export function isoFromDate(date) {
  if (Number.isNaN(date.getTime())) throw new TypeError("cannot send an invalid Date");
  const ms = date.getMilliseconds();
  return (
    `${pad(date.getFullYear(), 4)}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}` +
    `T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}` +
    (ms ? `.${pad(ms, 3)}` : "")
  );
}

const NAIVE = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?$/;

/**
 * A Date for a naive ISO datetime, read as local wall-clock time.
 * @param {string} iso
 */
export function dateFromISO(iso) {
  const m = NAIVE.exec(iso);
  if (!m) return new Date(iso);
  const ms = m[7] ? Math.floor(Number(m[7].padEnd(6, "0")) / 1000) : 0;
  return new Date(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +(m[6] || 0), ms);
}

/**
 * The JavaScript value for gateway JSON.
 * @param {any} json a parsed JSON value
 * @param {Handles} [handles] turns `$ref`/`$cache` into objects (raw JSON without)
 * @returns {any}
 */
export function decode(json, handles) {
  if (json === null || typeof json !== "object") return json;
  if (Array.isArray(json)) return json.map((item) => decode(item, handles));
  const keys = Object.keys(json);
  const tag = keys.find((key) => key.startsWith("$"));
  if (tag === undefined) {
    /** @type {Record<string, any>} */
    const out = {};
    for (const key of keys) out[key] = decode(json[key], handles);
    return out;
  }
  const payload = json[tag];
  switch (tag) {
    case "$bytes":
      return bytesFromBase64(payload);
    case "$tuple":
      return tuple(...payload.map((/** @type {any} */ item) => decode(item, handles)));
    case "$set":
      return new Set(payload.map((/** @type {any} */ item) => decode(item, handles)));
    case "$frozenset":
      return new FrozenSet(payload.map((/** @type {any} */ item) => decode(item, handles)));
    case "$dict":
      return new Map(
        payload.map((/** @type {[any, any]} */ [key, value]) => [
          decode(key, handles),
          decode(value, handles),
        ]),
      );
    case "$datetime":
      return dateFromISO(payload);
    case "$date":
      return new PyDate(payload);
    case "$time":
      return new PyTime(payload);
    case "$timedelta":
      return new Timedelta(payload);
    case "$decimal":
      return new Decimal(payload);
    case "$float":
      return FLOATS[/** @type {keyof typeof FLOATS} */ (payload)];
    case "$copy":
      return new Copy(payload, decode(json.state, handles));
    case "$unpersistable":
      return new Unpersistable(payload);
    case "$ref":
      return handles ? handles.ref(payload) : json;
    case "$cache":
      return handles ? handles.cache(json) : json;
    default:
      // A tag this library does not know yet: hand it over untouched.
      return json;
  }
}

/**
 * The gateway JSON for a JavaScript value (the inverse of decode()).
 * @param {any} value
 * @param {Handles} [handles] turns handle objects back into `$ref`/`$cache`
 * @returns {any}
 */
export function encode(value, handles) {
  switch (typeof value) {
    case "string":
    case "boolean":
      return value;
    case "number":
      if (Number.isFinite(value)) return value;
      return { $float: Number.isNaN(value) ? "nan" : value > 0 ? "inf" : "-inf" };
    case "undefined":
      return null;
    case "bigint":
      if (value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER)) {
        return Number(value);
      }
      throw new TypeError("a BigInt beyond 2**53 has no exact JSON form here");
    case "function":
    case "symbol":
      throw new TypeError(`a ${typeof value} cannot be sent`);
  }
  if (value === null) return null;
  const handle = handles?.encodeHandle?.(value);
  if (handle !== undefined) return handle;
  if (Array.isArray(value)) {
    const items = value.map((item) => encode(item, handles));
    return isTuple(value) ? { $tuple: items } : items;
  }
  if (value instanceof Uint8Array) return { $bytes: base64FromBytes(value) };
  if (value instanceof ArrayBuffer) return { $bytes: base64FromBytes(new Uint8Array(value)) };
  if (value instanceof Date) return { $datetime: isoFromDate(value) };
  if (value instanceof FrozenSet) return { $frozenset: [...value].map((v) => encode(v, handles)) };
  if (value instanceof Set) return { $set: [...value].map((v) => encode(v, handles)) };
  if (value instanceof Map) {
    return { $dict: [...value].map(([k, v]) => [encode(k, handles), encode(v, handles)]) };
  }
  if (
    value instanceof PyDate ||
    value instanceof PyTime ||
    value instanceof Timedelta ||
    value instanceof Decimal
  ) {
    return value.toJSON();
  }
  if (value instanceof Copy) return { $copy: value.type, state: encode(value.state, handles) };
  if (value instanceof Unpersistable) throw new TypeError("an Unpersistable cannot be sent back");
  const keys = Object.keys(value);
  if (keys.some((key) => key.startsWith("$"))) {
    // The gateway would read such a key as a tag: send the object as pairs.
    return { $dict: keys.map((key) => [key, encode(value[key], handles)]) };
  }
  /** @type {Record<string, any>} */
  const out = {};
  for (const key of keys) out[key] = encode(value[key], handles);
  return out;
}
