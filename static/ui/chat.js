// The chat panel: the demo service's chat room.  The page joins with
// `joinChat()`, talks with `say(text)` and leaves with `leaveChat()`; every
// message reaches the page as the service's call `receive(sender, text)` on
// the session's mind (docs/mind-calls.md).  The sender "*" is the room itself
// ("bob joined", "bob left").

import { clock, h } from "./dom.js";
import { describeError } from "./format.js";

/** @typedef {import("../pbgateway.js").Session} Session */
/** @typedef {{value?: any, error?: unknown}} Outcome */
/** @typedef {(method: string, params: any[]) => Promise<Outcome>} Run */
/** @typedef {"unavailable" | "out" | "joining" | "in" | "leaving" | "rejoining"} ChatState */

/** The methods the panel needs from the service. */
export const CHAT_METHODS = ["joinChat", "say", "leaveChat"];
/** The sender of the room's own notices. */
export const ROOM = "*";
// A tab that is in the room remembers it, so that a reload (which rejoins the
// same session) shows the room again.
const STORED = "pb-gateway.chat";
const KEEP = 200;
const NOTICE = /^(.+) (joined|left)$/;
// How close to the bottom (in pixels) the list must be to follow new messages.
const STICKY = 24;

/** @type {Record<ChatState, string>} */
const STATUS = {
  unavailable: "",
  out: "Not in the room",
  joining: "Joining…",
  in: "In the room",
  leaving: "Leaving…",
  rejoining: "Session lost; rejoining…",
};

/**
 * @param {ParentNode} root
 * @param {string} part the element's `data-chat` name
 * @returns {HTMLElement}
 */
function part(root, part) {
  const element = root.querySelector(`[data-chat="${part}"]`);
  if (!element) throw new Error(`the chat panel lacks [data-chat="${part}"]`);
  return /** @type {HTMLElement} */ (element);
}

/**
 * The chat section of the page (its markup is in index.html): Join and Leave,
 * the members, the messages and a form to send one.
 */
export class ChatPanel {
  /** @type {ChatState} */
  #state = "unavailable";
  /** the user joined and has not left: a new session rejoins */
  #wanted = false;
  /** @type {Set<string>} */
  #members = new Set();
  /** @type {string | null} the user's own name, when known (guests' names are not) */
  #self = null;
  /** counts sessions, so that an answer from an earlier session is ignored */
  #epoch = 0;

  /**
   * @param {HTMLElement} root the chat section
   * @param {Run} run makes a call of the session (and records it)
   */
  constructor(root, run) {
    this.root = root;
    this.run = run;
    this.status = part(root, "status");
    this.joinButton = /** @type {HTMLButtonElement} */ (part(root, "join"));
    this.leaveButton = /** @type {HTMLButtonElement} */ (part(root, "leave"));
    this.membersBox = part(root, "members-box");
    this.membersList = part(root, "members");
    this.empty = part(root, "empty");
    this.messages = part(root, "messages");
    this.form = /** @type {HTMLFormElement} */ (part(root, "form"));
    this.input = /** @type {HTMLInputElement} */ (part(root, "text"));
    this.sendButton = /** @type {HTMLButtonElement} */ (part(root, "send"));
    this.error = part(root, "error");
    this.joinButton.addEventListener("click", () => this.join());
    this.leaveButton.addEventListener("click", () => this.leave());
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.send();
    });
    this.input.addEventListener("input", () => this.#render());
    this.#render();
  }

  // -- the session's life ----------------------------------------------

  /**
   * A session began (a login, or a reload that rejoined the session by its
   * token): the panel shows if the service has a chat room, and a resumed
   * session goes back into the room if this tab was in it.
   * @param {Session} session
   * @param {{resumed?: boolean, name?: string | null}} [options] `name`: the
   *   user's name in the room, when known (a guest's is the service's choice)
   */
  start(session, { resumed = false, name = session.username } = {}) {
    const wasIn = resumed && sessionStorage.getItem(STORED) === "in";
    this.#reset();
    this.#self = name;
    const offered = new Set((session.methods ?? []).map((method) => method.name));
    this.#state = CHAT_METHODS.every((method) => offered.has(method)) ? "out" : "unavailable";
    this.#render();
    if (wasIn && this.#state === "out") this.#enter({ focus: false });
  }

  /** The gateway ended the session and the client is logging in again. */
  sessionLost() {
    if (this.#wanted) this.#setState("rejoining");
  }

  /** The client logged in again (a new session): back into the room if the user was in it. */
  sessionRenewed() {
    this.#epoch += 1;
    if (this.#wanted) this.#enter({ focus: false });
  }

  /** The session ended (logout, or for good). */
  stop() {
    this.#reset();
    this.#render();
  }

  // -- what the user and the service do --------------------------------

  /** Join the room (the Join button). */
  join() {
    return this.#enter({ focus: true });
  }

  /** Leave the room (the Leave button). */
  async leave() {
    const epoch = this.#epoch;
    this.#setState("leaving");
    const outcome = await this.run("leaveChat", []);
    if (epoch !== this.#epoch) return;
    if ("error" in outcome) {
      this.#showError("Could not leave the room", outcome.error);
      this.#setState("in");
      return;
    }
    this.#left();
    this.joinButton.focus();
  }

  /** Send what the input holds; empty text is not sent. */
  async send() {
    const text = this.input.value.trim();
    if (text === "" || this.#state !== "in") return;
    const epoch = this.#epoch;
    this.sendButton.setAttribute("aria-busy", "true");
    const outcome = await this.run("say", [text]);
    this.sendButton.removeAttribute("aria-busy");
    if (epoch !== this.#epoch) return;
    if ("error" in outcome) {
      this.#showError("Your message was not sent", outcome.error);
    } else {
      this.#clearError();
      if (this.input.value.trim() === text) this.input.value = "";
    }
    this.#render();
    this.input.focus();
  }

  /**
   * The service's `receive(sender, text)`: show the message.  The room's
   * notices also keep the member list current.
   * @param {any} sender
   * @param {any} text
   */
  receive(sender, text) {
    const who = String(sender);
    const what = String(text);
    const room = who === ROOM;
    if (room && this.#state === "in") {
      const notice = NOTICE.exec(what);
      if (notice && notice[2] === "joined") this.#members.add(notice[1]);
      else if (notice) this.#members.delete(notice[1]);
      this.#renderMembers();
    }
    this.#addMessage(room
      ? h("li", { class: "message room" }, h("time", {}, clock()), " ", h("span", { class: "text" }, what))
      : h(
        "li",
        { class: who === this.#self ? "message own" : "message", "data-sender": who },
        h("time", {}, clock()),
        " ",
        h("strong", { class: "sender" }, who),
        " ",
        h("span", { class: "text" }, what),
      ));
    return null;
  }

  /**
   * Follow `joinChat` and `leaveChat` called by hand (from the method
   * explorer), so the panel tells the truth about the session.
   * @param {string} method
   * @param {Outcome} outcome
   */
  observe(method, outcome) {
    if ("error" in outcome || this.#state === "unavailable") return;
    if (method === "joinChat" && Array.isArray(outcome.value)) this.#entered(outcome.value);
    else if (method === "leaveChat") this.#left();
  }

  // -- inside ----------------------------------------------------------

  /** @param {{focus: boolean}} options */
  async #enter({ focus }) {
    const epoch = this.#epoch;
    const again = this.#wanted;
    this.#setState(again ? "rejoining" : "joining");
    const outcome = await this.run("joinChat", []);
    if (epoch !== this.#epoch) return;
    if ("error" in outcome) {
      this.#showError(again ? "Could not rejoin the room" : "Could not join the room", outcome.error);
      this.#left();
      return;
    }
    this.#entered(Array.isArray(outcome.value) ? outcome.value : []);
    if (focus) this.input.focus();
  }

  /** @param {any[]} members */
  #entered(members) {
    this.#wanted = true;
    sessionStorage.setItem(STORED, "in");
    this.#members = new Set(members.map(String));
    this.#clearError();
    this.#setState("in");
  }

  #left() {
    this.#wanted = false;
    sessionStorage.removeItem(STORED);
    this.#members.clear();
    this.#setState("out");
  }

  #reset() {
    this.#epoch += 1;
    this.#wanted = false;
    sessionStorage.removeItem(STORED);
    this.#members.clear();
    this.#self = null;
    this.#state = "unavailable";
    this.messages.replaceChildren();
    this.input.value = "";
    this.#clearError();
  }

  /** @param {ChatState} state */
  #setState(state) {
    this.#state = state;
    this.#render();
  }

  #render() {
    const state = this.#state;
    const inRoom = state === "in";
    this.root.hidden = state === "unavailable";
    this.root.dataset.state = state;
    this.status.textContent = STATUS[state];
    // Leave stays in place (disabled) while leaving or rejoining, so that the focus is not lost.
    this.joinButton.hidden = inRoom || state === "leaving" || state === "rejoining";
    this.joinButton.disabled = state !== "out";
    this.leaveButton.hidden = !this.joinButton.hidden;
    this.leaveButton.disabled = !inRoom;
    this.input.disabled = !inRoom;
    this.input.placeholder = inRoom ? "Say something (Enter sends)" : "Join the room to send messages";
    this.sendButton.disabled = !inRoom || this.input.value.trim() === "";
    this.empty.hidden = this.messages.children.length > 0;
    this.messages.hidden = !this.empty.hidden;
    this.#renderMembers();
  }

  /** The member list, and its size in the status line. */
  #renderMembers() {
    const inRoom = this.#state === "in";
    this.membersBox.hidden = !inRoom;
    if (!inRoom) return;
    const names = [...this.#members].sort();
    this.membersList.replaceChildren(...names.map((name) => name === this.#self
      ? h("li", { class: "member own" }, name, h("small", {}, " (you)"))
      : h("li", { class: "member" }, name)));
    this.status.textContent = `${STATUS.in} · ${names.length} ${names.length === 1 ? "member" : "members"}`;
  }

  /** @param {HTMLElement} item */
  #addMessage(item) {
    const list = this.messages;
    const following = list.scrollHeight - list.scrollTop - list.clientHeight <= STICKY;
    list.append(item);
    while (list.children.length > KEEP) list.firstElementChild?.remove();
    this.empty.hidden = true;
    list.hidden = false;
    if (following) list.scrollTop = list.scrollHeight;
  }

  /** @param {string} what @param {unknown} error */
  #showError(what, error) {
    const { message, details } = describeError(error);
    this.error.replaceChildren(h(
      "div",
      { class: "error-box", role: "alert" },
      h("strong", {}, `${what}: ${message}`),
      details ? h("small", {}, details) : null,
    ));
  }

  #clearError() {
    this.error.replaceChildren();
  }
}
