// The chat page: wires the sidebar, the conversation, the composer and the websocket together.
// Protocol: sessions_app/consumers.py (its docstring lists every event).

import { Connection, wsUrl } from "../lib/connection.js";
import { apiFetch } from "../lib/http.js";
import { MessageList } from "./messages.js";
import { Participants, mentionCompleter } from "./participants.js";
import { Sidebar } from "./sidebar.js";
import { debounce, uuid } from "./util.js";

const config = JSON.parse(document.getElementById("chat-config").textContent);
const agents = new Map(config.agents.map((agent) => [agent.slug, agent]));
const sessionId = config.session ? config.session.id : null;

// Errors the server answers a `message` frame with: that message was not stored.
const SEND_ERRORS = new Set([
  "empty_content", "content_too_long", "invalid_content", "invalid_client_id", "no_agent", "unknown_agent", "not_found",
  "invalid_compare", "invalid_text", "bad_json",
]);

const sidebar = new Sidebar({
  sessions: config.sessions,
  currentId: sessionId,
  agents,
  onRenamed: (id, title) => {
    if (id === sessionId) setTitle(title);
  },
});

function setTitle(title) {
  const heading = document.getElementById("session-title");
  if (heading) heading.textContent = title || "New chat";
  document.title = `${title || "New chat"} · chatsite`;
}

let toastTimer = 0;
function toast(text) {
  const box = document.getElementById("toast");
  if (!box) return;
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    box.hidden = true;
  }, 6000);
}

if (sessionId !== null) startChat();

function startChat() {
  const log = document.getElementById("messages");
  const thread = document.getElementById("thread");
  const empty = document.getElementById("thread-empty");
  const form = document.getElementById("composer");
  const prompt = document.getElementById("prompt");
  const stop = document.getElementById("stop");
  const jump = document.getElementById("jump-latest");
  const agentSelect = document.getElementById("reply-agent");
  const connState = document.getElementById("conn-state");
  const username = document.querySelector(".user-name")?.textContent.trim() || "";
  let title = config.session.title;

  // Messages sent but not yet stored, by client_id: resent after a reconnect, and the server
  // stores each client_id once, so a resend never doubles a message.
  const outbox = new Map();

  const requireConnection = (event) => {
    if (!connection.send(event)) toast("Not connected right now; try again in a moment.");
  };

  const messages = new MessageList(log, thread, {
    agents,
    username,
    onStop: (id) => requireConnection({ type: "stop", message_id: id }),
    onRegenerate: () => requireConnection({ type: "regenerate" }),
    onEdit: (id, content) => requireConnection({ type: "edit", message_id: id, content }),
    onPick: async (id) => {
      try {
        await apiFetch("POST", `/api/sessions/${sessionId}/messages/${id}/pick/`);
      } catch (error) {
        toast(error.message);
      }
    },
    onChange: () => {
      stop.hidden = !messages.hasActive();
      jump.hidden = messages.stick || messages.size === 0;
      empty.hidden = messages.size > 0;
    },
  });

  const refreshSidebar = debounce(() => sidebar.refresh(), 400);

  const onEvent = (event) => {
    switch (event.type) {
      case "session":
        performance.mark("chat:snapshot-received");
        title = event.session.title;
        setTitle(title);
        messages.loadSnapshot(event.messages);
        for (const message of event.messages) if (message.client_id) outbox.delete(message.client_id);
        for (const pending of outbox.values()) connection.send(pending);
        log.setAttribute("aria-busy", "false");
        document.body.dataset.ready = "1";
        performance.mark("chat:snapshot-rendered"); // read by tests/ui/bench_ui.py
        break;
      case "message":
        messages.upsert(event.message);
        if (event.message.role === "user") {
          if (event.message.client_id) outbox.delete(event.message.client_id);
          if (!title) {
            // The server names a chat after its first message; show that without a round trip.
            title = event.message.content.split(/\s+/).filter(Boolean).join(" ").slice(0, 60);
            setTitle(title);
          }
          sidebar.touch(sessionId, title);
          refreshSidebar();
        }
        break;
      case "delta":
        if (!messages.delta(event)) connection.reconnectNow(); // a gap: the snapshot fills it
        break;
      case "tool_call":
      case "tool_result":
        messages.tool(event);
        break;
      case "done":
        messages.done(event);
        break;
      case "deleted":
        messages.remove(event.message_ids);
        break;
      case "picked":
        messages.picked(event.reply_to, event.picked);
        break;
      case "turn":
        turnState.textContent = `${event.agent_name} is next (turn ${event.turn}${event.turns ? ` of ${event.turns}` : ""})`;
        break;
      case "error":
        if (SEND_ERRORS.has(event.code)) {
          const oldest = outbox.keys().next().value;
          if (oldest !== undefined) {
            outbox.delete(oldest);
            messages.failPending(oldest, event.message);
          }
        }
        toast(event.message);
        break;
      default:
        break;
    }
    messages.callbacks.onChange();
  };

  const STATE_WORDS = { connecting: "Connecting…", reconnecting: "Reconnecting…", open: "" };
  const onState = (state, detail) => {
    connState.dataset.state = state;
    connState.textContent = detail || STATE_WORDS[state] || "";
    if (state === "fatal") prompt.disabled = true;
  };

  // The link is open once the snapshot ("session") has arrived; these closes stop the retries.
  const connection = new Connection(wsUrl(`/ws/sessions/${sessionId}/`), {
    onEvent,
    onState,
    readyOn: "session",
    fatal: {
      4401: "You are signed out. Reload the page to sign in again.",
      4403: "This page's address is not allowed to connect (check ALLOWED_HOSTS).",
      4404: "This chat no longer exists.",
    },
  });
  connection.start();

  // --- participants, mentions and compare ---------------------------------------------------
  const turnState = document.getElementById("turn-state") || document.createElement("span");
  const participants = new Participants(document.getElementById("participants"), {
    sessionId,
    agents,
    session: config.session,
    onError: toast,
  });
  mentionCompleter(prompt, document.getElementById("mention-list"), () => participants.slugs,
    (slug) => agents.get(slug)?.name || slug);
  const comparePanel = document.getElementById("compare-panel");
  const compareToggle = document.getElementById("compare-toggle");
  compareToggle?.addEventListener("click", () => {
    comparePanel.hidden = !comparePanel.hidden;
    compareToggle.setAttribute("aria-expanded", String(!comparePanel.hidden));
    compareToggle.classList.toggle("primary", !comparePanel.hidden);
  });
  const compareChoice = () => (comparePanel && !comparePanel.hidden
    ? [...comparePanel.querySelectorAll("input:checked")].map((box) => box.value) : []);

  // --- composer ------------------------------------------------------------------------------
  const autosize = () => {
    prompt.style.height = "auto";
    prompt.style.height = `${prompt.scrollHeight}px`;
  };
  prompt.addEventListener("input", autosize);
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const content = prompt.value;
    if (!content.trim()) return;
    if (content.length > config.maxChars) {
      toast(`The message has ${content.length} characters; the limit is ${config.maxChars}.`);
      return;
    }
    const compare = compareChoice();
    if (comparePanel && !comparePanel.hidden && (compare.length < 2 || compare.length > 4)) {
      toast("Tick 2 to 4 agents to compare.");
      return;
    }
    const clientId = uuid();
    const message = { type: "message", content, client_id: clientId };
    if (compare.length) message.compare = compare;
    else if (agentSelect?.value) message.agent = agentSelect.value;
    turnState.textContent = "";
    outbox.set(clientId, message);
    messages.addPending(clientId, content);
    connection.send(message); // or, if not connected now, after the next snapshot
    prompt.value = "";
    autosize();
    messages.callbacks.onChange();
  });
  stop.addEventListener("click", () => requireConnection({ type: "stop" }));
  jump.addEventListener("click", () => {
    messages.scrollToBottom();
    messages.callbacks.onChange();
  });
  prompt.focus();
}
