// The pb-gateway dashboard: wires the client library to the page.
//
// Connection indicator, login (password, guest, or the token of this tab's
// last session), the method explorer, live panels for every live object a call
// returns, reference panels, the demo's chat room, and the history of calls
// (and of the service's calls to the page).

import { BROKER_LOST, connect } from "./pbgateway.js";
import { ChatPanel } from "./ui/chat.js";
import { byId, h } from "./ui/dom.js";
import { Explorer, renderOutcome } from "./ui/explorer.js";
import { handlesIn } from "./ui/format.js";
import { History } from "./ui/history.js";
import { LivePanels } from "./ui/live.js";
import { RefPanels } from "./ui/refs.js";

/** @typedef {import("./pbgateway.js").Status} Status */
/** @typedef {import("./pbgateway.js").SessionEvent} SessionEvent */

// The token (never the password) lets a reload of this tab rejoin its session.
const STORED = "pb-gateway.session";

const client = connect();

const page = {
  connection: byId("connection"),
  connectionText: byId("connection-text"),
  who: byId("who"),
  whoName: byId("who-name"),
  logout: /** @type {HTMLButtonElement} */ (byId("logout")),
  login: byId("login"),
  loginForm: /** @type {HTMLFormElement} */ (byId("login-form")),
  loginError: byId("login-error"),
  username: /** @type {HTMLInputElement} */ (byId("username")),
  password: /** @type {HTMLInputElement} */ (byId("password")),
  guest: /** @type {HTMLButtonElement} */ (byId("guest")),
  app: byId("app"),
  anyForm: /** @type {HTMLFormElement} */ (byId("any-form")),
  anyOutput: byId("any-output"),
};

const history = new History(byId("history"), byId("history-empty"));
const panels = new LivePanels(byId("panels"), byId("live-empty"));
const refs = new RefPanels(byId("refs"), byId("refs-section"), history, openHandles);
const chat = new ChatPanel(byId("chat"), call);
const explorer = new Explorer({
  list: byId("methods"),
  filter: /** @type {HTMLInputElement} */ (byId("method-filter")),
  none: byId("methods-none"),
  run: callByHand,
});

/**
 * Open panels for the live objects and references in a result; the notes
 * (with a button to reach each panel) go under the result.
 * @param {any} value
 * @param {string} name what was called
 * @returns {HTMLElement[]}
 */
function openHandles(value, name) {
  const { refs: found, caches } = handlesIn(value);
  const notes = [];
  for (const cache of caches) {
    panels.open(cache, name);
    notes.push(h("p", { class: "opened" }, `Live object shown under Live objects. `,
      h("button", { type: "button", class: "link", onclick: () => panels.focus(cache) }, "Go to panel")));
  }
  for (const ref of found) {
    refs.open(ref, name);
    notes.push(h("p", { class: "opened" }, "Reference shown under References."));
  }
  return notes;
}

/**
 * Make a call from the explorer, record it, open what it returned.
 * @param {string} method
 * @param {any} params
 */
async function call(method, params) {
  const started = performance.now();
  try {
    const value = await client.callJSON(method, params);
    history.add(method, params, { value }, performance.now() - started);
    return { value, extra: openHandles(value, method) };
  } catch (error) {
    history.add(method, params, { error }, performance.now() - started);
    return { error };
  }
}

/**
 * A call the user typed (the explorer, or a call by name): the chat panel
 * follows a `joinChat` or `leaveChat` made this way.
 * @param {string} method
 * @param {any} params
 */
async function callByHand(method, params) {
  const outcome = await call(method, params);
  chat.observe(method, outcome);
  return outcome;
}

// The service may call the page back (its mind): `receive(sender, text)` is
// what PB chat services, the demo's among them, call.  Shown in the history
// and in the chat panel.  Exposed before any login, so that the service can
// reach the page as soon as it joins the chat.
client.expose("receive", (sender, text) => {
  history.incoming("receive", [sender, text]);
  return chat.receive(sender, text);
});

// -- the connection indicator ------------------------------------------

/** @type {Record<string, string>} */
const LABELS = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  disconnected: "Disconnected",
};

/** @param {Status} status */
function showStatus(status) {
  /** @type {string} */
  let state = status.state;
  let text = LABELS[state] ?? state;
  if (status.brokerDown && state !== "disconnected") {
    state = "broker-down";
    text = "Broker down, retrying…";
  } else if (state === "reconnecting" && status.retryIn) {
    text = `Reconnecting… (next try in ${Math.max(1, Math.round(status.retryIn / 1000))} s)`;
  }
  page.connection.dataset.state = state;
  page.connectionText.textContent = text;
  page.connection.title = status.reason ?? "";
}

client.on("status", showStatus);
showStatus(client.status);

// -- the session -------------------------------------------------------

/** @param {import("./pbgateway.js").Session} session @param {string} [name] */
function showApp(session, name) {
  page.login.hidden = true;
  page.app.hidden = false;
  page.who.hidden = false;
  page.whoName.textContent = name ?? session.username ?? (session.anonymous ? "guest" : "session");
  explorer.setMethods(session.methods);
}

/** @param {string} [message] */
function showLogin(message) {
  page.app.hidden = true;
  page.who.hidden = true;
  page.login.hidden = false;
  panels.clear();
  refs.clear();
  chat.stop();
  history.clear();
  page.loginError.hidden = !message;
  page.loginError.textContent = message ?? "";
  page.username.focus();
}

/**
 * @param {import("./pbgateway.js").Credentials} credentials
 * @param {string} [name] shown as the user
 */
async function logIn(credentials, name) {
  const session = await client.login(credentials);
  const shown = name ?? session.username ?? (session.anonymous ? "guest" : "session");
  sessionStorage.setItem(STORED, JSON.stringify({ token: session.token, name: shown }));
  showApp(session, shown);
  chat.start(session, { resumed: "token" in credentials, name: session.anonymous ? null : shown });
  return session;
}

client.on("session", (/** @type {SessionEvent} */ event) => {
  if (event.state === "lost") {
    history.note(`Session lost (${event.reason}); logging in again…`);
    chat.sessionLost();
  } else if (event.state === "active" && event.reason) {
    const stored = JSON.parse(sessionStorage.getItem(STORED) ?? "null");
    if (event.session) {
      sessionStorage.setItem(STORED, JSON.stringify({ token: event.session.token, name: stored?.name }));
    }
    history.note(`Session renewed (${event.reason}).`);
    chat.sessionRenewed();
  } else if (event.state === "ended" && event.reason !== "logged out") {
    sessionStorage.removeItem(STORED);
    const why = event.reason === BROKER_LOST ? "the gateway lost its broker" : event.reason;
    showLogin(`Your session ended (${why}). Please log in again.`);
  }
});

page.loginForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  page.loginError.hidden = true;
  try {
    await logIn({ username: page.username.value, password: page.password.value });
    page.password.value = "";
  } catch (error) {
    page.loginError.hidden = false;
    page.loginError.textContent = error instanceof Error ? error.message : String(error);
    page.password.select();
  }
});

page.guest.addEventListener("click", async () => {
  page.loginError.hidden = true;
  try {
    await logIn({ anonymous: true });
  } catch (error) {
    page.loginError.hidden = false;
    page.loginError.textContent = error instanceof Error ? error.message : String(error);
  }
});

for (const button of document.querySelectorAll("[data-demo-user]")) {
  button.addEventListener("click", () => {
    const [username, password] = (/** @type {HTMLElement} */ (button).dataset.demoUser ?? "").split("/");
    page.username.value = username;
    page.password.value = password;
    page.password.focus();
  });
}

page.logout.addEventListener("click", async () => {
  sessionStorage.removeItem(STORED);
  try {
    await client.logout();
  } finally {
    showLogin();
  }
});

// -- a call by name (for services without introspection, or any method) -

page.anyForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(page.anyForm);
  const method = String(data.get("method") ?? "").trim();
  const text = String(data.get("params") ?? "").trim();
  let params;
  try {
    params = text === "" ? [] : JSON.parse(text);
    if (params === null || typeof params !== "object") throw new TypeError("arguments: a JSON array or object");
  } catch (error) {
    renderOutcome(page.anyOutput, { error });
    return;
  }
  const outcome = await callByHand(method, params);
  renderOutcome(page.anyOutput, outcome, outcome.extra);
});

// -- start -------------------------------------------------------------

async function start() {
  const stored = JSON.parse(sessionStorage.getItem(STORED) ?? "null");
  if (stored?.token) {
    try {
      await logIn({ token: stored.token }, stored.name);
      return;
    } catch {
      sessionStorage.removeItem(STORED);
    }
  }
  showLogin();
}

start();
