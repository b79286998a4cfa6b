// An agent's tool calls in its reply: one folded card per call, in call order, above the answer
// (below the thinking). A card appears when its call starts ("running…") and is brought up to date
// when it ends. The `done` event's payload and every snapshot carry all of a reply's calls, so a
// missed `tool_call`/`tool_result` event, a reconnect or a reload shows the same cards.
// Arguments (the model's) and results (a tool's) are untrusted: they go in as textContent, never
// through the Markdown renderer, so markup in them is shown as the characters it is.

import { h } from "../lib/dom.js";
import { icon } from "./util.js";

const STATUS_WORDS = {
  running: "running…",
  ok: "ok",
  error: "error",
  cancelled: "stopped",
  unfinished: "did not finish", // "running" in a reply that has ended: its worker died mid-call
};
const FINAL = new Set(["ok", "error", "cancelled"]);
const PREVIEW_CHARS = 80;

/** "12 ms", "1.4 s", "2m 05s". */
export function callDuration(ms) {
  if (typeof ms !== "number" || !Number.isFinite(ms)) return "";
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
}

function parsed(text) {
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch {
    return { ok: false, value: null };
  }
}

/** The arguments as indented JSON; text that is not JSON as it came. */
export function prettyArguments(text) {
  const json = parsed(text || "");
  return json.ok ? JSON.stringify(json.value, null, 2) : text || "";
}

/** One line for the folded card: `expression: 6*7`, cut short. */
function preview(text) {
  const json = parsed(text || "");
  let line = text || "";
  if (json.ok && json.value && typeof json.value === "object" && !Array.isArray(json.value)) {
    line = Object.entries(json.value)
      .map(([key, value]) => `${key}: ${typeof value === "string" ? value : JSON.stringify(value)}`)
      .join(", ");
  } else if (json.ok) {
    line = JSON.stringify(json.value);
  }
  line = line.replace(/\s+/g, " ").trim();
  return line.length > PREVIEW_CHARS ? `${line.slice(0, PREVIEW_CHARS - 1)}…` : line;
}

/** The call's status as the card shows it: a call left running in an ended reply did not finish. */
function shownStatus(call, active) {
  const status = call.status || "running";
  return status === "running" && !active ? "unfinished" : status;
}

/**
 * Take a payload's ``tool_calls`` into ``item``: the payload's list and order, but a call this page
 * already saw end stays ended (an older payload cannot take it back to "running"). While the reply
 * is active, calls the page heard of that the payload does not have yet are kept.
 */
export function takeCalls(item, calls, active) {
  const known = new Map(item.calls.map((call) => [call.id, call]));
  const next = calls.map((call) => {
    const seen = known.get(call.id);
    return seen && FINAL.has(seen.status) && !FINAL.has(call.status) ? seen : call;
  });
  if (active) {
    const ids = new Set(next.map((call) => call.id));
    for (const call of item.calls) if (!ids.has(call.id)) next.push(call);
  }
  const before = JSON.stringify(item.calls);
  item.calls = next;
  if (JSON.stringify(next) !== before) item.callsVersion += 1;
}

/** A `tool_call` or `tool_result` event: the call started or ended. Upserted by its id. */
export function upsertCall(item, call) {
  const index = item.calls.findIndex((c) => c.id === call.id);
  if (index === -1) item.calls = [...item.calls, call];
  else if (FINAL.has(item.calls[index].status) && !FINAL.has(call.status)) return; // a late "started"
  else item.calls = item.calls.map((c, i) => (i === index ? { ...c, ...call } : c));
  item.callsVersion += 1;
}

export function hasRunningCall(item) {
  return item.calls.some((call) => (call.status || "running") === "running");
}

function buildCard() {
  const name = h("span", { class: "tool-name" });
  const previewEl = h("span", { class: "tool-preview" });
  const spinner = h("span", { class: "tool-spinner", "aria-hidden": "true" });
  const status = h("span", { class: "tool-status" });
  const duration = h("span", { class: "tool-duration" });
  const args = h("pre", { class: "tool-code tool-args" });
  const outLabel = h("div", { class: "tool-label" });
  const out = h("pre", { class: "tool-code tool-out" });
  const outPart = h("div", { class: "tool-part tool-out-part" }, outLabel, out);
  const el = h("details", { class: "tool-call" },
    h("summary", { class: "tool-summary" },
      h("span", { class: "tool-glyph", "aria-hidden": "true" }, icon("tool", "icon tool-icon")),
      name, previewEl,
      h("span", { class: "tool-state" }, spinner, status),
      duration),
    h("div", { class: "tool-detail" },
      h("div", { class: "tool-part" }, h("div", { class: "tool-label", text: "Arguments" }), args),
      outPart));
  return { el, name, previewEl, status, duration, args, outLabel, out, outPart, shown: "" };
}

function fillCard(card, call, active) {
  const status = shownStatus(call, active);
  const key = JSON.stringify([call, status]);
  if (card.shown === key) return; // unchanged: leave the node (and the reader's selection) alone
  card.shown = key;
  card.el.dataset.callId = call.id;
  card.el.dataset.status = status;
  card.el.dataset.tool = call.name || "";
  card.name.textContent = call.name || "tool";
  card.previewEl.textContent = preview(call.arguments);
  card.status.textContent = STATUS_WORDS[status] || status;
  card.duration.textContent = status === "running" ? "" : callDuration(call.duration_ms);
  card.args.textContent = prettyArguments(call.arguments);
  const failed = status === "error" || ((status === "cancelled" || status === "unfinished") && call.error);
  card.outPart.hidden = status === "running";
  card.outLabel.textContent = failed ? "Error" : "Result";
  card.out.classList.toggle("tool-error", Boolean(failed));
  card.out.classList.toggle("tool-empty", false);
  let text = failed ? call.error : call.result;
  if (!text) {
    card.out.classList.add("tool-empty");
    text = status === "ok" ? "(no output)"
      : status === "cancelled" ? "Stopped before it finished."
        : status === "unfinished" ? "The reply ended before this call finished." : "(no message)";
  }
  card.out.textContent = text;
}

/** Bring the reply's cards in line with ``item.calls``: new ones added, ended ones updated. */
export function renderCalls(item, active) {
  const key = `${item.callsVersion}|${active}`;
  if (item.callsRendered === key) return;
  item.callsRendered = key;
  item.toolsEl.hidden = item.calls.length === 0;
  const ids = new Set();
  for (const [index, call] of item.calls.entries()) {
    ids.add(call.id);
    let card = item.callCards.get(call.id);
    if (!card) {
      card = buildCard();
      item.callCards.set(call.id, card);
    }
    fillCard(card, call, active);
    const there = item.toolsEl.children[index];
    if (there !== card.el) item.toolsEl.insertBefore(card.el, there || null); // in call order
  }
  for (const [id, card] of item.callCards) {
    if (!ids.has(id)) {
      card.el.remove();
      item.callCards.delete(id);
    }
  }
}
