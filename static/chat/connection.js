// The websocket to one session: reconnects by itself with backoff, and notices a dead link.

const FATAL = {
  4401: "You are signed out. Reload the page to sign in again.",
  4403: "This page's address is not allowed to connect (check ALLOWED_HOSTS).",
  4404: "This chat no longer exists.",
};
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 15000;
const PING_EVERY_MS = 20000;
const SILENT_LIMIT_MS = 45000; // no frame for this long: the link is dead even if the socket says open

export class Connection {
  /**
   * @param {string} url  ws:// or wss:// address of the session
   * @param {{onEvent: function(object), onState: function(string, string=)}} handlers
   *   onState gets "connecting", "open" (after the snapshot), "reconnecting" or "fatal" and a message.
   */
  constructor(url, { onEvent, onState }) {
    this.url = url;
    this.onEvent = onEvent;
    this.onState = onState;
    this.ws = null;
    this.ready = false;
    this.attempt = 0;
    this.timer = 0;
    this.lastFrame = 0;
    this.stopped = false;
    setInterval(() => this.heartbeat(), PING_EVERY_MS);
    // Back online, or back to a tab the browser froze: retry now rather than at the backoff.
    window.addEventListener("online", () => {
      if (!this.ws) this.reconnectNow();
    });
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && !this.ws) this.reconnectNow();
    });
  }

  start() {
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
      this.lastFrame = Date.now();
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
      if (event.type === "session") {
        this.attempt = 0;
        this.ready = true;
        this.onState("open");
      }
      this.onEvent(event);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return; // an old socket we already replaced
      this.ws = null;
      this.ready = false;
      if (FATAL[event.code]) {
        this.stopped = true;
        this.onState("fatal", FATAL[event.code]);
        return;
      }
      this.schedule();
    };
  }

  schedule() {
    if (this.stopped || this.timer) return;
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt) * (0.5 + Math.random() / 2);
    this.attempt += 1;
    this.onState("reconnecting", `Reconnecting in ${Math.ceil(delay / 1000)} s…`);
    this.timer = setTimeout(() => this.open(), delay);
  }

  /** Drop the current socket (if any) and open a fresh one; its snapshot resyncs the page. */
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

  /** Send an event if the snapshot has arrived; returns whether it went out. */
  send(event) {
    if (!this.ready || !this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(event));
    return true;
  }

  heartbeat() {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    if (Date.now() - this.lastFrame > SILENT_LIMIT_MS) {
      this.reconnectNow();
      return;
    }
    this.ws.send(JSON.stringify({ type: "ping" }));
  }
}
