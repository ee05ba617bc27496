// A minimal event emitter shared by the client library's objects.

/**
 * Listeners by event name; `on` returns a function that removes the listener.
 * A listener that throws does not stop the others (the error is re-thrown
 * asynchronously, so it still reaches the console and window.onerror).
 */
export class Emitter {
  /** @type {Map<string, Set<(...args: any[]) => void>>} */
  #listeners = new Map();

  /**
   * @param {string} event
   * @param {(...args: any[]) => void} listener
   * @returns {() => void} removes the listener
   */
  on(event, listener) {
    let listeners = this.#listeners.get(event);
    if (!listeners) this.#listeners.set(event, (listeners = new Set()));
    listeners.add(listener);
    return () => this.off(event, listener);
  }

  /**
   * @param {string} event
   * @param {(...args: any[]) => void} listener
   */
  off(event, listener) {
    this.#listeners.get(event)?.delete(listener);
  }

  /**
   * @param {string} event
   * @param {...any} args
   */
  emit(event, ...args) {
    for (const listener of [...(this.#listeners.get(event) ?? [])]) {
      try {
        listener(...args);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }
}
