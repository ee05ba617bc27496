// pbgateway.js: the browser client of pb-gateway's WebSocket bridge.
//
// One ES module, no dependencies, no build step:
//
//   import { connect } from "/pbgateway.js";
//   const client = connect();                         // ws(s)://<this host>/ws
//   await client.login({ username: "alice", password: "password" });
//   await client.call("add", 5, 3);                   // 8
//   const stats = await client.call("stats");         // a LiveObject
//   stats.on("update", () => console.log(stats.seq, stats.state));
//
// The client reconnects by itself (exponential backoff with jitter), rejoins
// its session with the session token, and resubscribes every live object from
// the last sequence number it saw, so no update is missed.  When the session
// itself is gone (the broker or the gateway restarted), it logs in again with
// the credentials it keeps in memory and reopens every live object by
// repeating the call that returned it.  See docs/dashboard.md.

import { applyDelta, DeltaError } from "./lib/delta.js";
import { Emitter } from "./lib/events.js";
import { decode, encode } from "./lib/values.js";

export { applyDelta, DeltaError, DELTA_METHODS } from "./lib/delta.js";
export { Emitter } from "./lib/events.js";
export {
  Copy,
  Decimal,
  decode,
  encode,
  FrozenSet,
  isTuple,
  PyDate,
  PyTime,
  Timedelta,
  tuple,
  Unpersistable,
} from "./lib/values.js";

/** The JSON-RPC code of a "the broker is unavailable" error. */
export const BROKER_UNAVAILABLE = -32020;
/** The `rpc.session` reason the gateway gives when it lost the broker. */
export const BROKER_LOST = "broker connection lost";

const LIVE_TYPES = new Set(["pb.live.LiveDict", "pb.live.LiveList"]);
const ERROR_TYPES = new Map([
  [-32700, "parse_error"],
  [-32600, "invalid_request"],
  [-32601, "no_such_method"],
  [-32602, "bad_request"],
]);

/**
 * @typedef {"connecting" | "connected" | "reconnecting" | "disconnected"} ConnectionState
 *
 * @typedef {object} Status
 * @property {ConnectionState} state
 * @property {boolean} brokerDown the gateway said its broker is unreachable
 * @property {string | null} reason why the state last changed, when known
 * @property {number | null} retryIn milliseconds until the next attempt, when waiting
 *
 * @typedef {{username: string, password: string} | {anonymous: true} | {token: string}} Credentials
 *
 * @typedef {object} Param
 * @property {string} name
 * @property {"positional" | "positional-only" | "keyword-only" | "var-positional" | "var-keyword"} kind
 * @property {string | null} annotation
 * @property {any} [default]
 * @property {string} [defaultRepr]
 *
 * @typedef {object} MethodInfo
 * @property {string} name
 * @property {string | null} doc
 * @property {boolean} async
 * @property {Param[]} params
 *
 * @typedef {object} Session
 * @property {string} token joins the session from another socket or over REST
 * @property {string | null} username null for anonymous and token logins
 * @property {boolean} anonymous
 * @property {MethodInfo[] | null} methods null when the service has no introspection
 * @property {number} expiresIn idle seconds before the gateway ends the session
 *
 * @typedef {object} SessionEvent
 * @property {"active" | "lost" | "ended"} state active: logged in (again); lost: the gateway
 *   ended the session and the client is logging in again; ended: for good
 * @property {string | null} reason
 * @property {Session | null} session
 *
 * @typedef {object} Update
 * @property {string} method the delta's `observe_*` name, or "snapshot" for a whole new state
 * @property {any[]} args the delta's arguments (sequence number first), decoded
 * @property {number} seq
 * @property {boolean} snapshot the state was replaced as a whole
 *
 * @typedef {object} Options
 * @property {number} [minDelay] first reconnect delay, ms (250)
 * @property {number} [maxDelay] longest reconnect delay, ms (8000)
 * @property {number} [callTimeout] how long a call may wait for its answer, ms (35000)
 * @property {typeof WebSocket} [WebSocket] the WebSocket class to use
 */

/**
 * A failed call.  `code` is the JSON-RPC error code for errors the gateway
 * sent, null for failures on this side; `type` is a stable string for both
 * (e.g. "remote_exception", "unauthorized", "broker_unavailable", or here:
 * "connection_lost", "timeout", "stale_ref", "released", "closed").
 */
export class RPCError extends Error {
  /**
   * @param {string} message
   * @param {{code?: number | null, type: string, data?: any, method?: string}} details
   */
  constructor(message, { code = null, type, data = null, method }) {
    super(message);
    this.name = "RPCError";
    /** @type {number | null} */
    this.code = code;
    /** @type {string} */
    this.type = type;
    /** @type {any} the error's `data` object from the gateway */
    this.data = data;
    /** @type {string | null} e.g. "builtins.ValueError" for a remote exception */
    this.remoteType = data?.remote_type ?? null;
    /** @type {string | undefined} */
    this.method = method;
  }

  /** @param {{code: number, message: string, data?: any}} error @param {string} method */
  static fromResponse(error, method) {
    const type = error.data?.type ?? ERROR_TYPES.get(error.code) ?? "error";
    return new RPCError(error.message, { code: error.code, type, data: error.data, method });
  }
}

/**
 * The URL of the gateway's WebSocket, from a URL relative to the page.
 * @param {string} [url]
 */
function socketURL(url = "/ws") {
  const resolved = new URL(url, globalThis.location?.href);
  if (resolved.protocol === "http:") resolved.protocol = "ws:";
  if (resolved.protocol === "https:") resolved.protocol = "wss:";
  return resolved.href;
}

/**
 * The `$cache` objects in a raw result, in the order decode() meets them.
 * @param {any} json
 * @param {any[]} [found]
 * @returns {any[]}
 */
function cachesIn(json, found = []) {
  if (json === null || typeof json !== "object") return found;
  if (Array.isArray(json)) {
    for (const item of json) cachesIn(item, found);
  } else if (typeof json.$cache === "string") {
    found.push(json);
  } else {
    for (const key of Object.keys(json)) cachesIn(json[key], found);
  }
  return found;
}

/**
 * A remote object lent by reference (`{"$ref": handle}`); calls its
 * `remote_*` methods.  It goes stale when its session ends.
 */
export class RemoteRef extends Emitter {
  #client;

  /** @param {Client} client @param {string} handle */
  constructor(client, handle) {
    super();
    this.#client = client;
    this.handle = handle;
    /** the session that lent it has ended: calls fail with type "stale_ref" */
    this.stale = false;
    this.released = false;
  }

  /**
   * Call `remote_<method>(...args)`.
   * @param {string} method
   * @param {...any} args
   * @returns {Promise<any>}
   */
  call(method, ...args) {
    return this.callKw(method, args, {});
  }

  /**
   * Call `remote_<method>(*args, **kwargs)`.
   * @param {string} method
   * @param {any[]} [args]
   * @param {Record<string, any>} [kwargs]
   * @returns {Promise<any>}
   */
  callKw(method, args = [], kwargs = {}) {
    const handles = this.#client._handles();
    let encoded;
    try {
      encoded = [encode(args, handles), encode(kwargs, handles)];
    } catch (error) {
      return Promise.reject(error);
    }
    return this.callJSON(method, ...encoded);
  }

  /**
   * Call `remote_<method>` with arguments already in the JSON value mapping.
   * @param {string} method
   * @param {any[]} [args]
   * @param {Record<string, any>} [kwargs]
   * @returns {Promise<any>}
   */
  callJSON(method, args = [], kwargs = {}) {
    if (this.released || this.stale) {
      const why = this.released ? "was released" : "belongs to an ended session";
      return Promise.reject(
        new RPCError(`reference ${this.handle} ${why}`, {
          type: this.released ? "released" : "stale_ref",
          method,
        }),
      );
    }
    const params = { ref: this.handle, method, args, kwargs };
    return this.#client._call("rpc.call", params, { ref: this, method, params });
  }

  /** Let the broker forget the object (the gateway sends the decref). */
  async release() {
    if (this.released) return;
    this.released = true;
    await this.#client._release(this);
  }

  /** @internal the session is gone */
  _stale() {
    if (this.stale || this.released) return;
    this.stale = true;
    this.emit("stale");
  }
}

/**
 * A Cacheable the gateway mirrors for us (`{"$cache": handle, ...}`).  For
 * live objects (`pb.live.LiveDict`/`LiveList`) `state` is the plain object,
 * Map or Array, kept current by applying each delta; for other Cacheables
 * `state` is the state they arrived with and updates only carry the
 * `observe_*` calls.
 *
 * Events: "update" (Update) after each change, "release" ({reason}) when
 * no more updates will come.
 */
export class LiveObject extends Emitter {
  #client;
  #resyncing = false;

  /**
   * @param {Client} client
   * @param {{$cache: string, type: string, state: any, seq: number}} json
   * @param {any} origin how it was obtained (to reopen it in a new session)
   * @param {number} originIndex its place among the caches of that result
   */
  constructor(client, json, origin, originIndex) {
    super();
    this.#client = client;
    /** @type {string} */
    this.handle = json.$cache;
    /** @type {string} the Cacheable's type name, e.g. "pb.live.LiveDict" */
    this.type = json.type;
    /** @type {boolean} a pb.live object: `state` follows every delta */
    this.live = LIVE_TYPES.has(json.type);
    /** @type {any} */
    this.state = decode(json.state, client._handles());
    /** @type {number} the sequence number of the last change applied */
    this.seq = json.seq;
    this.released = false;
    /** @internal */
    this._origin = origin;
    /** @internal */
    this._originIndex = originIndex;
  }

  /** Stop the updates; the broker's `stoppedObserving` runs. */
  async release() {
    if (this.released) return;
    this._released("released");
    await this.#client._release(this);
  }

  /**
   * @internal an rpc.update notification
   * @param {{cache: string, seq: number, method: string, args?: any[]}} params
   */
  _update(params) {
    if (this.released || params.seq <= this.seq) return; // already applied (a replay)
    const args = decode(params.args ?? [], this.#client._handles());
    if (this.live) {
      if (params.seq !== this.seq + 1) {
        this._resync();
        return;
      }
      try {
        this.state = applyDelta(this.state, params.method, args);
      } catch (error) {
        if (!(error instanceof DeltaError)) throw error;
        this._resync();
        return;
      }
    }
    this.seq = params.seq;
    this.emit("update", { method: params.method, args, seq: this.seq, snapshot: false });
  }

  /**
   * @internal a whole new state (rpc.snapshot, or the cache reopened)
   * @param {{$cache: string, type: string, state: any, seq: number}} json
   */
  _snapshot(json) {
    if (this.released) return;
    this.handle = json.$cache;
    this.type = json.type;
    this.state = decode(json.state, this.#client._handles());
    this.seq = json.seq;
    this.emit("update", { method: "snapshot", args: [], seq: this.seq, snapshot: true });
  }

  /** @internal ask for the missing deltas (or a snapshot) after a gap */
  _resync() {
    if (this.#resyncing) return;
    this.#resyncing = true;
    this.#client
      ._subscribe(this)
      .catch(() => {})
      .finally(() => {
        this.#resyncing = false;
      });
  }

  /** @internal @param {string} reason */
  _released(reason) {
    if (this.released) return;
    this.released = true;
    this.emit("release", { reason });
  }
}

/**
 * One connection to a gateway, kept up across drops.
 *
 * Events: "status" (Status) when the connection state changes,
 * "session" (SessionEvent) when a session starts, is lost or ends.
 */
export class Client extends Emitter {
  /** @type {Required<Options>} */
  #options;
  /** @type {WebSocket | null} */
  #socket = null;
  #nextID = 1;
  /** @type {Map<number, {resolve: (v: any) => void, reject: (e: any) => void, method: string, timer: any}>} */
  #pending = new Map();
  /** @type {Array<{message: object, id: number}>} requests waiting for the connection */
  #queue = [];
  /** @type {Credentials | null} what logs in again when the session is gone */
  #credentials = null;
  /** @type {string | null} */
  #token = null;
  #wantSession = false;
  #restoring = false;
  #attempt = 0;
  /** @type {any} */
  #timer = null;
  #closed = false;
  /** @type {Map<string, RemoteRef>} */
  #refs = new Map();
  /** @type {Map<string, LiveObject>} */
  #caches = new Map();
  /** @type {Map<string, (...args: any[]) => any>} handlers of the service's calls */
  #exposed = new Map();

  /**
   * @param {string} url the gateway's WebSocket URL
   * @param {Options} [options]
   */
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.#options = {
      minDelay: 250,
      maxDelay: 8000,
      callTimeout: 35000,
      WebSocket: globalThis.WebSocket,
      ...options,
    };
    /** @type {ConnectionState} */
    this.state = "connecting";
    this.brokerDown = false;
    /** @type {Session | null} */
    this.session = null;
    this.#open();
  }

  // -- public API ------------------------------------------------------

  /** @returns {Status} */
  get status() {
    return { state: this.state, brokerDown: this.brokerDown, reason: null, retryIn: null };
  }

  /**
   * Log in (ending the current session first, if any).  The credentials stay
   * in this object's memory, never in storage, to log in again after the
   * gateway or its broker restarted; a `{token}` login cannot be renewed.
   * @param {Credentials} credentials
   * @returns {Promise<Session>}
   */
  async login(credentials) {
    if (this.session) await this.logout().catch(() => {});
    if (this.#socketOpen()) clearTimeout(this.#timer); // a pending session restore
    const session = await this.#login(credentials);
    this.#credentials = "token" in credentials ? null : { ...credentials };
    this.#wantSession = true;
    this.#restoring = false;
    this.#setStatus(this.#socketOpen() ? "connected" : this.state);
    this.emit("session", { state: "active", reason: null, session });
    this.#flush();
    return session;
  }

  /**
   * End the session: the gateway logs out of the broker; every reference and
   * live object of the session is released here.
   */
  async logout() {
    const hadSession = this.session !== null || this.#wantSession;
    this.#wantSession = false;
    this.#credentials = null;
    this.#restoring = false;
    clearTimeout(this.#timer);
    try {
      if (this.session && this.#socketOpen()) await this.#request("rpc.logout", null, true);
    } finally {
      this.#dropSession("logged out");
      this.#rejectQueue("logged out");
      if (this.#socketOpen()) this.#setStatus("connected");
      if (hadSession) this.emit("session", { state: "ended", reason: "logged out", session: null });
    }
  }

  /**
   * Call a method of the session's perspective (before login: of the root
   * object) with positional arguments.
   * @param {string} method
   * @param {...any} args
   * @returns {Promise<any>}
   */
  call(method, ...args) {
    return this.callKw(method, args, {});
  }

  /**
   * Call a method with positional and keyword arguments.  JSON-RPC carries
   * one or the other: when both are given, the positional ones are named
   * from the session's introspection.
   * @param {string} method
   * @param {any[]} [args]
   * @param {Record<string, any>} [kwargs]
   * @returns {Promise<any>}
   */
  callKw(method, args = [], kwargs = {}) {
    if (method.startsWith("rpc.")) {
      return Promise.reject(new TypeError(`${method} is the protocol's own: use login()/logout()`));
    }
    let params;
    try {
      params = this.#params(method, args, kwargs);
    } catch (error) {
      return Promise.reject(error);
    }
    return this._call(method, params, { method, params });
  }

  /**
   * Call a method with params already in the JSON value mapping (tagged JSON,
   * as a method explorer takes them): an array of positional arguments or an
   * object of keyword arguments, sent as they are.  The result is decoded.
   * @param {string} method
   * @param {any[] | Record<string, any>} [params]
   * @returns {Promise<any>}
   */
  callJSON(method, params = []) {
    if (method.startsWith("rpc.")) {
      return Promise.reject(new TypeError(`${method} is the protocol's own: use login()/logout()`));
    }
    return this._call(method, params, { method, params });
  }

  /**
   * The introspection of the session's perspective (before login: the root).
   * @returns {Promise<{methods: MethodInfo[]} | null>}
   */
  describe() {
    return this._call("rpc.describe", null, null);
  }

  /**
   * Answer the service's calls of `method` on this page: the service's
   * `mind.callRemote(method, ...args)` (docs/mind-calls.md) runs
   * `handler(...args)`, with keyword arguments, if any, as a last object.
   * Its return value (or what its Promise resolves to) is the call's result;
   * if it throws, the service's call fails with a pb.Error carrying the
   * message.  Exposure is per socket: the client repeats it after every
   * reconnect.
   * @param {string} method
   * @param {(...args: any[]) => any} handler
   * @returns {Promise<void>} settles once the gateway knows (or the socket is down)
   */
  async expose(method, handler) {
    this.#exposed.set(method, handler);
    if (this.#socketOpen()) await this.#request("rpc.expose", { methods: [method] }, true);
  }

  /** Close for good: no more reconnects; pending calls fail with type "closed". */
  close() {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#socket?.close(1000, "closed by the page");
    this.#socket = null;
    this.#rejectPending("closed", "the client was closed");
    this.#rejectQueue("the client was closed", "closed");
    this.#setStatus("disconnected", { reason: "closed" });
  }

  // -- for RemoteRef and LiveObject ------------------------------------

  /** @internal the codec's view of this client's handles */
  _handles(origin = null) {
    let index = 0;
    return {
      ref: (/** @type {string} */ handle) => this.#refFor(handle),
      cache: (/** @type {any} */ json) => this.#cacheFor(json, origin, index++),
      encodeHandle: (/** @type {any} */ value) => {
        if (value instanceof RemoteRef) return { $ref: value.handle };
        if (value instanceof LiveObject) return { $cache: value.handle };
        return undefined;
      },
    };
  }

  /**
   * @internal send a call and decode its result
   * @param {string} method
   * @param {any} params
   * @param {any} origin how to repeat the call (for caches in the result)
   */
  async _call(method, params, origin) {
    const raw = await this.#request(method, params, false);
    return decode(raw, this._handles(origin));
  }

  /** @internal @param {RemoteRef | LiveObject} target */
  async _release(target) {
    const isRef = target instanceof RemoteRef;
    (isRef ? this.#refs : this.#caches).delete(target.handle);
    if (!this.session || !this.#socketOpen()) return;
    await this.#request("rpc.release", isRef ? { ref: target.handle } : { cache: target.handle });
  }

  /** @internal resubscribe a live object from its last seq (replay or snapshot) */
  _subscribe(/** @type {LiveObject} */ cache) {
    return this.#request("rpc.subscribe", { cache: cache.handle, since: cache.seq }, true);
  }

  // -- requests --------------------------------------------------------

  #socketOpen() {
    return this.#socket !== null && this.#socket.readyState === 1;
  }

  /**
   * Send a request; user calls wait while the connection or the session is
   * being restored, internal ones (login, resubscribe) go out at once.
   * @param {string} method
   * @param {any} params
   * @param {boolean} [internal]
   * @returns {Promise<any>}
   */
  #request(method, params, internal = false) {
    if (this.#closed) {
      return Promise.reject(new RPCError("the client was closed", { type: "closed", method }));
    }
    const id = this.#nextID++;
    /** @type {any} */
    const message = { jsonrpc: "2.0", id, method };
    if (params !== null && params !== undefined) message.params = params;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        this.#queue = this.#queue.filter((queued) => queued.id !== id);
        reject(new RPCError(`no answer to ${method} within the call timeout`, {
          type: "timeout",
          method,
        }));
      }, this.#options.callTimeout);
      this.#pending.set(id, { resolve, reject, method, timer });
      if (internal ? this.#socketOpen() : this.#ready()) {
        this.#socket?.send(JSON.stringify(message));
      } else if (internal) {
        this.#settle(id, null, new RPCError("not connected", { type: "connection_lost", method }));
      } else {
        this.#queue.push({ message, id });
      }
    });
  }

  #ready() {
    return this.#socketOpen() && !this.#restoring;
  }

  #flush() {
    if (!this.#ready()) return;
    const queue = this.#queue;
    this.#queue = [];
    for (const { message } of queue) this.#socket?.send(JSON.stringify(message));
  }

  /** @param {number} id @param {any} result @param {RPCError | null} error */
  #settle(id, result, error) {
    const entry = this.#pending.get(id);
    if (!entry) return;
    this.#pending.delete(id);
    clearTimeout(entry.timer);
    if (error) entry.reject(error);
    else entry.resolve(result);
  }

  /** @param {string} type @param {string} message */
  #rejectPending(type, message) {
    for (const [id, entry] of [...this.#pending]) {
      if (this.#queue.some((queued) => queued.id === id)) continue;
      this.#settle(id, null, new RPCError(message, { type, method: entry.method }));
    }
  }

  /** @param {string} message @param {string} [type] */
  #rejectQueue(message, type = "no_session") {
    const queue = this.#queue;
    this.#queue = [];
    for (const { id } of queue) {
      this.#settle(id, null, new RPCError(message, { type, method: this.#pending.get(id)?.method }));
    }
  }

  /**
   * Positional and keyword arguments as JSON-RPC params.
   * @param {string} method @param {any[]} args @param {Record<string, any>} kwargs
   */
  #params(method, args, kwargs) {
    const handles = this._handles();
    const named = Object.keys(kwargs).length > 0;
    if (!named) return encode(args, handles);
    if (args.length === 0) return encode(kwargs, handles);
    const info = this.session?.methods?.find((m) => m.name === method);
    const names = info?.params
      .filter((p) => p.kind === "positional")
      .map((p) => p.name);
    if (!names || names.length < args.length) {
      throw new TypeError(
        `${method}: give positional or keyword arguments, not both (no introspection to name them)`,
      );
    }
    /** @type {Record<string, any>} */
    const all = {};
    args.forEach((arg, i) => (all[names[i]] = arg));
    for (const [key, value] of Object.entries(kwargs)) {
      if (key in all) throw new TypeError(`${method}: ${key} given twice`);
      all[key] = value;
    }
    return encode(all, handles);
  }

  // -- handles ---------------------------------------------------------

  /** @param {string} handle */
  #refFor(handle) {
    let ref = this.#refs.get(handle);
    if (!ref) this.#refs.set(handle, (ref = new RemoteRef(this, handle)));
    return ref;
  }

  /** @param {any} json @param {any} origin @param {number} index */
  #cacheFor(json, origin, index) {
    let cache = this.#caches.get(json.$cache);
    if (!cache) {
      cache = new LiveObject(this, json, origin, index);
      this.#caches.set(cache.handle, cache);
    } else if (json.seq > cache.seq) {
      cache._snapshot(json);
    }
    return cache;
  }

  /** The session is gone: references go stale; live objects are released. */
  #dropSession(/** @type {string} */ reason) {
    this.session = null;
    this.#token = null;
    for (const ref of this.#refs.values()) ref._stale();
    this.#refs.clear();
    for (const cache of this.#caches.values()) cache._released(reason);
    this.#caches.clear();
  }

  // -- the session -----------------------------------------------------

  /** @param {Credentials} credentials */
  async #login(credentials) {
    if (!this.#socketOpen()) await this.#whenOpen();
    const result = await this.#request("rpc.login", credentials, true);
    this.#token = result.token;
    this.session = {
      token: result.token,
      username: "username" in credentials ? credentials.username : null,
      anonymous: "anonymous" in credentials && credentials.anonymous === true,
      methods: result.methods ?? null,
      expiresIn: result.expires_in,
    };
    return this.session;
  }

  #whenOpen() {
    return new Promise((resolve, reject) => {
      const off = this.on("status", (/** @type {Status} */ status) => {
        if (this.#socketOpen()) {
          off();
          resolve(undefined);
        } else if (status.state === "disconnected") {
          off();
          reject(new RPCError("the client was closed", { type: "closed" }));
        }
      });
    });
  }

  /**
   * Get the session back after the socket reconnected or the gateway ended
   * the session: rejoin with the token, else log in again and reopen the
   * live objects.  Retries with backoff while the broker is unavailable.
   */
  async #restore() {
    if (!this.#wantSession || !this.#socketOpen()) return;
    this.#restoring = true;
    this.#setStatus("reconnecting", { reason: "restoring the session" });
    try {
      if (this.#token !== null && (await this.#rejoin())) {
        if (this.#wantSession) this.#restored();
        return;
      }
      if (this.#credentials === null) {
        this.#giveUp("the session ended and cannot be renewed from a token");
        return;
      }
      await this.#login(this.#credentials);
      if (!this.#wantSession) {
        // logout() was called meanwhile: end the session this login just opened.
        this.#request("rpc.logout", null, true).catch(() => {});
        this.session = null;
        this.#token = null;
        return;
      }
      for (const ref of this.#refs.values()) ref._stale();
      this.#refs.clear();
      await this.#reopenCaches();
      this.#restored();
      this.emit("session", { state: "active", reason: "logged in again", session: this.session });
    } catch (error) {
      if (!(error instanceof RPCError) || error.type === "connection_lost" || this.#closed ||
          !this.#wantSession) {
        return; // the socket closed (its reconnect restores the session), or logged out
      }
      if (error.code === BROKER_UNAVAILABLE || error.type === "timeout") {
        this.#brokerState(true, error.message);
        this.#timer = setTimeout(() => this.#restore(), this.#backoff());
        this.#setStatus("reconnecting", { reason: error.message });
        return;
      }
      this.#giveUp(error.message);
    }
  }

  /** Rejoin the session with its token and resubscribe; false if it is gone. */
  async #rejoin() {
    try {
      const token = /** @type {string} */ (this.#token);
      const result = await this.#request("rpc.login", { token }, true);
      if (this.session) this.session.methods = result.methods ?? this.session.methods;
    } catch (error) {
      if (error instanceof RPCError && error.code !== null) {
        this.#token = null;
        if (error.code === BROKER_UNAVAILABLE) this.#brokerState(true, error.message);
        return false;
      }
      throw error;
    }
    /** @type {LiveObject[]} */
    const unknown = [];
    for (const cache of [...this.#caches.values()]) {
      try {
        await this._subscribe(cache);
      } catch (error) {
        if (!(error instanceof RPCError) || error.code === null) throw error;
        unknown.push(cache); // e.g. the socket dropped while it was being reopened
      }
    }
    if (unknown.length > 0) await this.#reopenCaches(unknown);
    return true;
  }

  /**
   * In a new session: repeat the calls that returned these live objects
   * (by default all of them) and follow the caches they return now.
   * @param {LiveObject[]} [which]
   */
  async #reopenCaches(which = [...this.#caches.values()]) {
    /** @type {Map<any, LiveObject[]>} */
    const byOrigin = new Map();
    for (const cache of which) {
      const group = byOrigin.get(cache._origin) ?? [];
      group.push(cache);
      byOrigin.set(cache._origin, group);
    }
    for (const [origin, caches] of byOrigin) {
      /** @type {any[]} */
      let found = [];
      let why = "it cannot be reopened: it did not come from a perspective method";
      if (origin && !origin.ref) {
        try {
          found = cachesIn(await this.#request(origin.method, origin.params, true));
        } catch (error) {
          if (error instanceof RPCError && (error.type === "connection_lost" ||
              error.type === "timeout" || error.code === BROKER_UNAVAILABLE)) {
            throw error; // try again later; the caches keep their old handles meanwhile
          }
          why = `reopening it failed: ${error instanceof Error ? error.message : error}`;
        }
      }
      for (const cache of caches) this.#caches.delete(cache.handle);
      for (const cache of caches) {
        const json = found[cache._originIndex];
        if (json && json.type === cache.type && !this.#caches.has(json.$cache)) {
          cache._snapshot(json);
          this.#caches.set(cache.handle, cache);
        } else {
          cache._released(json ? "its call returned something else" : why);
        }
      }
    }
  }

  #restored() {
    this.#restoring = false;
    this.#attempt = 0;
    this.#brokerState(false);
    this.#setStatus("connected", { reason: "session restored" });
    this.#flush();
  }

  /** @param {string} reason */
  #giveUp(reason) {
    this.#restoring = false;
    this.#wantSession = false;
    this.#credentials = null;
    this.#dropSession(reason);
    this.#rejectQueue(`the session ended: ${reason}`);
    this.#setStatus(this.#socketOpen() ? "connected" : this.state, { reason });
    this.emit("session", { state: "ended", reason, session: null });
  }

  /** @param {{state: string, reason?: string}} params an rpc.session notification */
  #sessionEnded(params) {
    const reason = params.reason ?? "ended";
    if (!this.#wantSession) return;
    this.session = null;
    this.#token = null;
    if (reason === "logged out" || this.#credentials === null) {
      this.#giveUp(reason);
      return;
    }
    for (const ref of this.#refs.values()) ref._stale();
    this.#refs.clear();
    this.#restoring = true;
    if (reason === BROKER_LOST) this.#brokerState(true, reason);
    this.emit("session", { state: "lost", reason, session: null });
    clearTimeout(this.#timer);
    const delay = this.#backoff();
    this.#timer = setTimeout(() => this.#restore(), delay);
    this.#setStatus("reconnecting", { reason, retryIn: delay });
  }

  // -- the socket ------------------------------------------------------

  #open() {
    if (this.#closed) return;
    const socket = new this.#options.WebSocket(this.url);
    this.#socket = socket;
    socket.onopen = () => {
      if (this.#socket !== socket) return;
      if (this.#exposed.size > 0) {
        this.#request("rpc.expose", { methods: [...this.#exposed.keys()] }, true).catch(() => {});
      }
      if (this.#wantSession) {
        this.#restore();
      } else {
        this.#attempt = 0;
        this.#setStatus("connected");
        this.#flush();
      }
    };
    socket.onmessage = (event) => {
      if (this.#socket === socket) this.#received(event.data);
    };
    socket.onclose = (event) => {
      if (this.#socket !== socket) return;
      this.#socket = null;
      this.#rejectPending(
        "connection_lost",
        "the connection to the gateway was lost before the answer came (the call may have run)",
      );
      if (this.#closed) return;
      clearTimeout(this.#timer);
      const delay = this.#backoff();
      this.#timer = setTimeout(() => this.#open(), delay);
      const reason = event.reason || `connection closed (${event.code})`;
      this.#setStatus("reconnecting", { reason, retryIn: delay });
    };
  }

  /** The next reconnect delay: exponential, capped, with jitter. */
  #backoff() {
    const { minDelay, maxDelay } = this.#options;
    const ceiling = Math.min(maxDelay, minDelay * 2 ** this.#attempt);
    this.#attempt += 1;
    return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
  }

  /** @param {string} data */
  #received(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return; // the gateway only sends JSON; nothing sensible to do otherwise
    }
    for (const item of Array.isArray(message) ? message : [message]) {
      if (item === null || typeof item !== "object") continue;
      if ("id" in item && item.id !== null && ("result" in item || "error" in item)) {
        const method = this.#pending.get(item.id)?.method ?? "?";
        if (item.error) {
          const error = RPCError.fromResponse(item.error, method);
          if (error.code === BROKER_UNAVAILABLE) this.#brokerState(true, error.message);
          this.#settle(item.id, null, error);
        } else {
          if (this.brokerDown && !this.#restoring) this.#brokerState(false);
          this.#settle(item.id, item.result, null);
        }
      } else if (item.method === "rpc.update") {
        this.#caches.get(item.params?.cache)?._update(item.params);
      } else if (item.method === "rpc.snapshot") {
        this.#caches.get(item.params?.$cache)?._snapshot(item.params);
      } else if (item.method === "rpc.session" && item.params?.state === "ended") {
        this.#sessionEnded(item.params);
      } else if (typeof item.method === "string" && !item.method.startsWith("rpc.")) {
        this.#mindCall(item);
      }
    }
  }

  /**
   * The service called an exposed method (a request when it has an id, else
   * a notification): run the handler and answer.
   * @param {{id?: string, method: string, params?: any}} request
   */
  async #mindCall(request) {
    const socket = this.#socket;
    /** @param {object} answer */
    const reply = (answer) => {
      if (request.id !== undefined && socket === this.#socket && this.#socketOpen()) {
        socket?.send(JSON.stringify({ jsonrpc: "2.0", id: request.id, ...answer }));
      }
    };
    const handler = this.#exposed.get(request.method);
    if (!handler) {
      reply({ error: { code: -32601, message: `this page does not handle ${request.method}` } });
      return;
    }
    const params = request.params ?? [];
    const handles = this._handles();
    /** @type {any[]} */
    let args;
    if (Array.isArray(params)) {
      args = decode(params, handles);
    } else if (Object.keys(params).length === 2 && Array.isArray(params.args) && params.kwargs) {
      args = [...decode(params.args, handles), decode(params.kwargs, handles)];
    } else {
      args = [decode(params, handles)];
    }
    try {
      reply({ result: encode(await handler(...args), handles) });
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      reply({ error: { code: -32000, message } });
    }
  }

  /** @param {boolean} down @param {string} [reason] */
  #brokerState(down, reason) {
    if (this.brokerDown === down) return;
    this.brokerDown = down;
    this.emit("status", { ...this.status, reason: reason ?? null });
  }

  /**
   * @param {ConnectionState} state
   * @param {{reason?: string, retryIn?: number}} [details]
   */
  #setStatus(state, details = {}) {
    this.state = state;
    this.emit("status", {
      state,
      brokerDown: this.brokerDown,
      reason: details.reason ?? null,
      retryIn: details.retryIn ?? null,
    });
  }
}

/**
 * Connect to a gateway's WebSocket (by default this page's `/ws`).  The
 * client starts connecting at once; calls made before it is connected wait.
 * @param {string} [url] absolute, or relative to the page
 * @param {Options} [options]
 * @returns {Client}
 */
export function connect(url, options) {
  return new Client(socketURL(url), options);
}
