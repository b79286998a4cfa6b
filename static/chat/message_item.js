// One message of the conversation view: its <article>, brought up to date with the server's
// payload, and its body rendered (plain text for the user's words, Markdown for a reply).
// A reasoning model's thinking is a folded block above the answer: open while it streams,
// folded once the answer starts (the reader may open it again), "Thought for N s" after.
// An agent's tool calls are cards between the thinking and the answer (./tool_calls.js).
// ./messages.js keeps the list of them in step with the events.

import { h } from "../lib/dom.js";
import { timeLabel, tokensPerSecond } from "../lib/format.js";
import { renderMarkdown, renderMarkdownGrowing } from "./markdown.js";
import { hasRunningCall, renderCalls, takeCalls } from "./tool_calls.js";
import { iconButton } from "./util.js";

export const STATUS_WORDS = {
  sending: "sending",
  unsent: "not sent",
  queued: "queued",
  streaming: "generating",
  complete: "done",
  cancelled: "stopped",
  failed: "failed",
  interrupted: "interrupted",
};
export const ACTIVE = new Set(["queued", "streaming"]);

function avatarOf(message, agent, username) {
  const user = message.role === "user";
  const avatar = h("div", { class: user ? "avatar avatar-user" : "avatar", "aria-hidden": "true" });
  if (user) avatar.textContent = (username[0] || "?").toUpperCase();
  else if (agent?.image) avatar.append(h("img", { src: agent.image, alt: "" }));
  else if (/^(\/|https?:)/.test(message.agent_avatar || "")) avatar.append(h("img", { src: message.agent_avatar, alt: "" }));
  else avatar.textContent = agent?.emoji || message.agent_avatar || "🤖";
  return avatar;
}

function actionsOf(message) {
  const actions = h("div", { class: "msg-actions" }, iconButton("copy", "Copy message", { "data-action": "copy" }));
  if (message.role === "user") {
    actions.append(iconButton("edit", "Edit and resend", { "data-action": "edit" }));
  } else {
    actions.append(
      iconButton("refresh", "Regenerate this reply", { "data-action": "regenerate", class: "icon-button act-regenerate" }),
      iconButton("stop", "Stop this reply", { "data-action": "stop", class: "icon-button act-stop" }),
    );
    if (message.compare) {
      actions.prepend(h("button", { type: "button", class: "button small act-pick", "data-action": "pick",
        text: "Pick as best" }));
    }
  }
  return actions;
}

/** A new item for ``message``: its element and the parts later events change. Not yet filled in. */
export function buildItem(message, agents, username) {
  const user = message.role === "user";
  const agent = agents.get(message.agent) || null;
  const who = user ? "You" : message.role === "system" ? "Note"
    : message.agent_name || agent?.name || message.agent || "Assistant";
  const statusEl = h("span", { class: "status" });
  const body = h("div", { class: user ? "msg-body" : "msg-body markdown" });
  const errorEl = h("p", { class: "msg-error", role: "alert", hidden: true });
  const thinkSummary = h("summary", { class: "thinking-summary" });
  const thinkBody = h("div", { class: "thinking-body markdown" });
  const thinkEl = h("details", { class: "thinking", hidden: true }, thinkSummary, thinkBody);
  const toolsEl = h("div", { class: "tool-calls", role: "group", "aria-label": "Tool calls", hidden: true });
  const noteEl = h("p", { class: "msg-note", hidden: true });
  const statsEl = h("span", { class: "msg-stats" });
  const kind = user ? "msg-user" : message.role === "system" ? "msg-system" : "msg-assistant";
  const el = h("article", { class: `msg ${kind}${message.compare ? " msg-compare" : ""}`, "aria-label": `${who} said` },
    avatarOf(message, agent, username),
    h("div", { class: "msg-main" },
      h("header", { class: "msg-head" },
        h("span", { class: "msg-who", text: who }),
        user ? null : statusEl,
        h("time", { class: "msg-time", datetime: message.created_at || "", text: timeLabel(message.created_at) })),
      user ? null : thinkEl, user ? null : toolsEl, body, errorEl, noteEl,
      h("footer", { class: "msg-foot" }, statsEl, actionsOf(message))));
  return {
    data: {}, el, body, statusEl, errorEl, noteEl, statsEl, text: "", seq: 0, rendered: null, blocks: {},
    // The thinking: its text, its element, and where the automatic folding is ("" not yet
    // shown, "open" shown open while it streams, "done" folded when the answer began).
    reasoning: "", thinkEl, thinkSummary, thinkBody, thinkBlocks: {}, thinkFold: "", thinkTimes: {}, thinkRendered: null,
    // The tool calls, in call order, and their cards by call id.
    calls: [], callsVersion: 0, callCards: new Map(), callsRendered: null, toolsEl,
  };
}

export function setStatus(item, status) {
  item.data.status = status;
  item.el.dataset.status = status;
  item.statusEl.className = `status status-${status}`;
  item.statusEl.textContent = STATUS_WORDS[status] || status;
  // Screen readers announce a streaming reply once, when it is complete.
  item.body.setAttribute("aria-busy", ACTIVE.has(status) ? "true" : "false");
}

/** "Assistant · llama.cpp · 120 tokens · 31 prompt · TTFT 85 ms · 31.4 tokens/s · model". */
export function statsLine(data, agents) {
  const agent = agents.get(data.agent);
  const parts = [data.agent_name || agent?.name || data.agent, agent?.backend_label || data.backend];
  const s = data.stats || {};
  if (s.completion_tokens != null) parts.push(`${s.completion_tokens} tokens`);
  if (s.prompt_tokens != null) parts.push(`${s.prompt_tokens} prompt`);
  if (s.ttft_ms != null) parts.push(`TTFT ${Math.round(s.ttft_ms)} ms`);
  if (s.decode_tps != null) parts.push(tokensPerSecond(s.decode_tps));
  if (data.model) parts.push(data.model);
  return parts.filter(Boolean).join(" · ");
}

/** Take ``message``'s fields into ``item`` (the text only with ``replaceText``), all but the body. */
export function applyMessage(item, message, agents, replaceText) {
  item.data = { ...item.data, ...message };
  if (message.id) item.el.dataset.id = message.id;
  if (replaceText) {
    item.text = message.content || "";
    item.reasoning = message.reasoning || "";
    item.seq = message.seq || 0;
  }
  setStatus(item, message.status);
  if (Array.isArray(message.tool_calls)) takeCalls(item, message.tool_calls, ACTIVE.has(message.status));
  item.data.tool_calls = item.calls;
  const failed = message.status === "failed" || message.status === "unsent";
  item.errorEl.hidden = !(failed && message.error);
  item.errorEl.textContent = failed ? message.error || "" : "";
  item.noteEl.hidden = message.status !== "interrupted";
  item.noteEl.textContent = message.status === "interrupted"
    ? "This reply was interrupted (its worker stopped); the text so far is kept." : "";
  item.statsEl.textContent = message.role === "assistant" ? statsLine(item.data, agents) : "";
  item.el.classList.toggle("is-picked", Boolean(item.data.picked));
  const pick = item.el.querySelector(".act-pick");
  if (pick) {
    pick.hidden = item.data.status !== "complete";
    pick.textContent = item.data.picked ? "Picked" : "Pick as best";
    pick.setAttribute("aria-pressed", String(Boolean(item.data.picked)));
  }
}

/** "Thought for 12 s": how long the thinking lasted, from the server, else as this page saw it. */
export function thoughtFor(ms) {
  return ms == null ? "Thought" : `Thought for ${Math.max(1, Math.round(ms / 1000))} s`;
}

/** The thinking block as it is now: shown when there is thinking, open while only it streams. */
function renderThinking(item, active) {
  item.thinkEl.hidden = !item.reasoning;
  if (!item.reasoning) return;
  const answering = Boolean(item.text) || item.calls.length > 0 || !active; // acting ends the thinking
  const times = item.thinkTimes; // as this page saw it, until the server's reasoning_ms arrives
  if (!answering) times.start ??= performance.now();
  else if (times.start != null) times.end ??= performance.now();
  if (!answering && item.thinkFold === "") {
    item.thinkFold = "open";
    item.thinkEl.open = true;
  } else if (answering && item.thinkFold === "open") {
    item.thinkFold = "done";
    item.thinkEl.open = false; // the answer has begun: fold the thinking; the reader may open it
  }
  const seen = times.end != null ? times.end - times.start : null;
  item.thinkSummary.textContent = answering ? thoughtFor(item.data.reasoning_ms ?? seen) : "Thinking…";
  const key = `${active}|${item.reasoning.length}`;
  if (item.thinkRendered === key) return; // the answer grows, the thinking does not
  item.thinkRendered = key;
  // Model text: the same Markdown and sanitizer as the answer.
  if (active) renderMarkdownGrowing(item.thinkBody, item.reasoning, item.thinkBlocks);
  else {
    renderMarkdown(item.thinkBody, item.reasoning);
    item.thinkBlocks = {};
  }
}

/** Show the item's text as it is now, unless the screen already shows it. */
export function renderBody(item) {
  const key = `${item.data.status}|${item.seq}|${item.text.length}|${item.reasoning.length}|${item.callsVersion}`;
  if (item.rendered === key) return;
  item.rendered = key;
  const active = ACTIVE.has(item.data.status);
  if (item.data.role === "assistant") {
    renderThinking(item, active);
    renderCalls(item, active);
  }
  if (item.data.role === "user") {
    item.body.textContent = item.text;
  } else if (!item.text && active && hasRunningCall(item)) {
    item.body.replaceChildren(); // the running call's card says what is happening
  } else if (!item.text && active) {
    item.body.replaceChildren(h("span", { class: "typing", "aria-label": "Thinking" },
      h("span"), h("span"), h("span")));
  } else if (active) {
    renderMarkdownGrowing(item.body, item.text, item.blocks);
  } else {
    renderMarkdown(item.body, item.text);
    item.blocks = {};
  }
  item.body.dataset.seq = item.seq; // what the screen shows, for tests and the benchmark
}

/** Edit a user message in place; ``onSave(content)`` gets the new words (the item shows them). */
export function openEditor(item, onSave) {
  if (item.el.querySelector(".edit-form")) return;
  const area = h("textarea", { "aria-label": "Edit your message" });
  area.value = item.text;
  const cancel = h("button", { type: "button", class: "button small", text: "Cancel" });
  const form = h("form", { class: "edit-form" }, area,
    h("div", { class: "edit-actions" },
      h("span", { class: "muted", text: "Sending replaces the replies after this message." }),
      cancel,
      h("button", { type: "submit", class: "button small primary", text: "Save & send" })));
  const close = () => {
    form.remove();
    item.body.hidden = false;
    item.el.querySelector('[data-action="edit"]')?.focus();
  };
  cancel.addEventListener("click", close);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const content = area.value;
    if (!content.trim()) return;
    item.text = content;
    item.rendered = null;
    close();
    onSave(content);
  });
  area.addEventListener("keydown", (event) => {
    if (event.key === "Escape") close();
    else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  item.body.hidden = true;
  item.body.after(form);
  area.focus();
  area.setSelectionRange(area.value.length, area.value.length);
}
