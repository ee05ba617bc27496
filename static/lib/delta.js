// Live-object deltas (docs/live-objects.md): the browser's twin of
// pb.live.applyDelta.  A LiveDict's state is a plain object (a Map when a key
// is not a string), a LiveList's an Array.

/** The seven delta methods a live object sends. */
export const DELTA_METHODS = Object.freeze([
  "observe_set",
  "observe_update",
  "observe_delete",
  "observe_insert",
  "observe_replace",
  "observe_remove",
  "observe_reset",
]);

/** A delta that does not apply: the copy needs a fresh snapshot. */
export class DeltaError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "DeltaError";
  }
}

/** @param {unknown} value */
function isSeq(value) {
  return typeof value === "number" && Number.isInteger(value);
}

/** @param {unknown} value */
function isDict(value) {
  return (
    value instanceof Map ||
    (value !== null && typeof value === "object" && !Array.isArray(value) &&
      Object.getPrototypeOf(value) === Object.prototype)
  );
}

/** @param {string} method @param {any[]} args @param {number} count */
function arity(method, args, count) {
  if (args.length !== count) {
    throw new DeltaError(`${method} takes ${count} arguments, not ${args.length}`);
  }
}

/** @param {any[]} list @param {unknown} index @param {boolean} end @param {string} method */
function checkIndex(list, index, end, method) {
  const limit = end ? list.length : list.length - 1;
  if (!isSeq(index) || /** @type {number} */ (index) < 0 || /** @type {number} */ (index) > limit) {
    throw new DeltaError(`${method}: index ${String(index)} out of range`);
  }
  return /** @type {number} */ (index);
}

/** @param {Map<any, any> | Record<string, any>} dict @param {unknown} key @param {string} method */
function checkKey(dict, key, method) {
  if (!(dict instanceof Map) && typeof key !== "string") {
    throw new DeltaError(`${method}: key ${String(key)} is not a string`);
  }
}

/**
 * Apply one delta to a live object's state, in place, and return it.
 *
 * `args` are the delta's arguments with the new sequence number first, as in
 * an `rpc.update` notification.  Like the Python original, a delta that does
 * not fit (unknown method, wrong kind of value, bad arity, index out of range,
 * missing key) throws a DeltaError and leaves the state unchanged.
 *
 * @template {Record<string, any> | Map<any, any> | any[]} T
 * @param {T} value the current state
 * @param {string} method an `observe_*` name
 * @param {any[]} args the arguments, sequence number first
 * @returns {T}
 */
export function applyDelta(value, method, args) {
  if (!DELTA_METHODS.includes(method)) throw new DeltaError(`unknown delta method ${method}`);
  if (!Array.isArray(args) || !isSeq(args[0])) {
    throw new DeltaError(`${method} needs the sequence number (an integer) first`);
  }
  const list = Array.isArray(value) ? /** @type {any[]} */ (value) : null;
  const dict = isDict(value) ? /** @type {Map<any, any> | Record<string, any>} */ (value) : null;
  if (method === "observe_reset") {
    arity(method, args, 2);
    const fresh = args[1];
    if (list && Array.isArray(fresh)) {
      list.splice(0, list.length, ...fresh);
    } else if (dict instanceof Map && isDict(fresh)) {
      dict.clear();
      for (const [k, v] of fresh instanceof Map ? fresh : Object.entries(fresh)) dict.set(k, v);
    } else if (dict && !(dict instanceof Map) && isDict(fresh) && !(fresh instanceof Map)) {
      for (const key of Object.keys(dict)) delete dict[key];
      Object.assign(dict, fresh);
    } else {
      throw new DeltaError(`${method}: cannot reset this value to that`);
    }
    return value;
  }
  if (method === "observe_set" || method === "observe_update" || method === "observe_delete") {
    if (!dict) throw new DeltaError(`${method} applies to a dict`);
    if (method === "observe_set") {
      arity(method, args, 3);
      checkKey(dict, args[1], method);
      if (dict instanceof Map) dict.set(args[1], args[2]);
      else dict[args[1]] = args[2];
    } else if (method === "observe_update") {
      arity(method, args, 2);
      const changes = args[1];
      if (!isDict(changes)) throw new DeltaError(`${method} changes must be a dict`);
      const entries = changes instanceof Map ? [...changes] : Object.entries(changes);
      for (const [key] of entries) checkKey(dict, key, method);
      for (const [key, item] of entries) {
        if (dict instanceof Map) dict.set(key, item);
        else dict[key] = item;
      }
    } else {
      arity(method, args, 2);
      const key = args[1];
      checkKey(dict, key, method);
      const present = dict instanceof Map ? dict.has(key) : Object.hasOwn(dict, key);
      if (!present) throw new DeltaError(`${method}: no key ${String(key)}`);
      if (dict instanceof Map) dict.delete(key);
      else delete dict[key];
    }
    return value;
  }
  if (!list) throw new DeltaError(`${method} applies to a list`);
  if (method === "observe_insert") {
    arity(method, args, 3);
    list.splice(checkIndex(list, args[1], true, method), 0, args[2]);
  } else if (method === "observe_replace") {
    arity(method, args, 3);
    list[checkIndex(list, args[1], false, method)] = args[2];
  } else {
    arity(method, args, 2);
    list.splice(checkIndex(list, args[1], false, method), 1);
  }
  return value;
}
