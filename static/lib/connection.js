// A websocket that reconnects by itself with backoff, and notices a dead link. The chat (one
// session's events) and the job dashboard (every job's) both use it.

const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 15000;
const PING_EVERY_MS = 20000;
const SILENT_LIMIT_MS = 45000; // no frame for this long: the link is dead even if the socket says open

/** The ws:// or wss:// address of `path` on this page's host. */
export function wsUrl(path) {
  return `${window.location.protocol === "https:" ? "wss" : "ws"}://${window.location.host}${path}`;
}

export class Connection {
  /**
   * @param {string} url  ws:// or wss:// address
   * @param {object} options
   * @param {function(object)} options.onEvent  every event but "pong"
   * @param {function(string, string=)} options.onState  "connecting", "open", "reconnecting" or
   *   "fatal", and for "reconnecting" after a close (`retryText`) and "fatal" (`fatal`) a message
   * @param {string|null} options.readyOn  the event that makes the link "open" (the chat's snapshot,
   *   "session"); null: open as soon as the socket is
   * @param {Object<number, string>} options.fatal  close codes that stop reconnecting, with their words
   * @param {function(number): string} options.retryText  the words while waiting so many seconds
   */
  constructor(url, { onEvent, onState, readyOn = null, fatal = {}, retryText = (s) => `Reconnecting in ${s} s…` }) {
    this.url = url;
    this.onEvent = onEvent;
    this.onState = onState;
    this.readyOn = readyOn;
    this.fatal = fatal;
    this.retryText = retryText;
    this.ws = null;
    this.ready = false;
    this.attempt = 0;
    this.timer = 0;
    this.lastFrame = 0;
    this.started = false;
    this.stopped = false;
    setInterval(() => this.heartbeat(), PING_EVERY_MS);
    // Back online, or back to a tab the browser froze: retry now rather than at the backoff.
    window.addEventListener("online", () => {
      if (this.started && !this.ws) this.reconnectNow();
    });
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && this.started && !this.ws) this.reconnectNow();
    });
  }

  start() {
    this.started = true;
    this.open();
  }

  open() {
    clearTimeout(this.timer);
    this.timer = 0;
    this.ready = false;
    this.onState(this.attempt ? "reconnecting" : "connecting");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.lastFrame = Date.now();
      if (this.readyOn === null) this.becameReady();
    };
    ws.onmessage = (message) => {
      if (this.ws !== ws) return;
      this.lastFrame = Date.now();
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      if (event.type === "pong") return;
      if (event.type === this.readyOn) this.becameReady();
      this.onEvent(event);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return; // an old socket we already replaced
      this.ws = null;
      this.ready = false;
      if (this.fatal[event.code]) {
        this.stopped = true;
        this.onState("fatal", this.fatal[event.code]);
        return;
      }
      this.schedule();
    };
  }

  becameReady() {
    this.attempt = 0;
    this.ready = true;
    this.onState("open");
  }

  schedule() {
    if (this.stopped || this.timer) return;
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt) * (0.5 + Math.random() / 2);
    this.attempt += 1;
    this.onState("reconnecting", this.retryText(Math.ceil(delay / 1000)));
    this.timer = setTimeout(() => this.open(), delay);
  }

  /** Drop the current socket (if any) and open a fresh one; the page resyncs when it is open. */
  reconnectNow() {
    if (this.stopped) return;
    const old = this.ws;
    this.ws = null;
    if (old) {
      old.onclose = null;
      old.close();
    }
    this.attempt = Math.max(this.attempt, 1);
    this.open();
  }

  /** Send an event if the link is open (for the chat: the snapshot has arrived); returns whether it went out. */
  send(event) {
    if (!this.ready || !this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(event));
    return true;
  }

  /** Keep the socket from idling out behind proxies, and replace one that went silent. */
  heartbeat() {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    if (Date.now() - this.lastFrame > SILENT_LIMIT_MS) {
      this.reconnectNow();
      return;
    }
    this.ws.send(JSON.stringify({ type: "ping" }));
  }
}
