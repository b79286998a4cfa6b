// The conversation view: one <article> per message (./message_item.js), kept in step with the
// server's events.
// Streaming text is re-rendered at most once per animation frame, whatever the delta rate.

import { h } from "../lib/dom.js";
import { loadImage } from "./markdown.js";
import { ACTIVE, applyMessage, buildItem, openEditor, renderBody, setStatus } from "./message_item.js";
import { upsertCall } from "./tool_calls.js";
import { copyText, flashCopied } from "./util.js";

const NEAR_BOTTOM_PX = 80;

export class MessageList {
  /**
   * @param {HTMLElement} root      the role=log container
   * @param {HTMLElement} scroller  the element that scrolls
   * @param {object} options        agents (by slug), username, and the actions' callbacks
   */
  constructor(root, scroller, { agents, username, onStop, onRegenerate, onEdit, onPick, onChange }) {
    this.root = root;
    this.scroller = scroller;
    this.agents = agents;
    this.username = username;
    this.callbacks = { onStop, onRegenerate, onEdit, onPick, onChange };
    this.groups = new Map(); // user message id -> the row holding its compared replies
    this.items = new Map(); // message id -> item
    this.pending = new Map(); // client_id -> item, a message sent but not yet stored
    this.dirty = new Set();
    this.frame = 0;
    this.stick = true; // follow the stream while the reader is at the bottom
    this.settling = 0;
    root.addEventListener("click", (event) => this.onClick(event));
    for (const kind of ["wheel", "touchstart", "keydown", "mousedown"]) {
      scroller.addEventListener(kind, () => {
        this.settling = 0; // the reader took over
      }, { passive: true });
    }
    scroller.addEventListener("scroll", () => {
      this.stick = this.nearBottom();
      this.callbacks.onChange?.();
    }, { passive: true });
  }

  nearBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < NEAR_BOTTOM_PX;
  }

  scrollToBottom() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
    this.stick = true;
  }

  /**
   * Messages off screen have an estimated height until first shown (content-visibility), so the
   * bottom moves for a few frames after a jump to it; keep following it until it settles.
   */
  settleAtBottom(frames = 10) {
    this.settling = frames;
    const step = () => {
      if (this.settling <= 0) return;
      this.settling -= 1;
      const before = this.scroller.scrollHeight;
      this.scrollToBottom();
      const moving = this.scroller.scrollHeight !== before;
      const early = this.settling > frames - 3; // the first frames may not have laid out yet
      if (this.settling > 0 && (moving || early)) requestAnimationFrame(step);
    };
    this.scrollToBottom();
    requestAnimationFrame(step);
  }

  /** The persisted state sent on every (re)connect: replace ours with it. */
  loadSnapshot(messages) {
    const first = this.items.size === 0 && this.pending.size === 0;
    const follow = this.stick; // a reconnect must not pull a reader away from what they read
    const seen = new Set();
    const fragment = document.createDocumentFragment();
    for (const message of messages) {
      seen.add(message.id);
      let item = this.items.get(message.id) || this.adoptPending(message);
      if (item) {
        this.update(item, message, { replaceText: true });
      } else {
        item = this.create(message);
      }
      fragment.append(this.placed(item)); // moves existing nodes into server order
    }
    for (const [id, item] of this.items) {
      if (!seen.has(id)) {
        item.el.remove();
        this.items.delete(id);
      }
    }
    this.dropEmptyGroups();
    for (const item of this.pending.values()) fragment.append(item.el);
    this.root.append(fragment);
    this.flush();
    this.markLast();
    if (first || follow) this.settleAtBottom();
  }

  /** A `message` event: created, or changed state (an edit, a reply starting). */
  upsert(message) {
    const item = this.items.get(message.id) || this.adoptPending(message);
    if (item) {
      this.update(item, message, { replaceText: message.role === "user" || !ACTIVE.has(message.status) });
    } else {
      this.root.append(this.placed(this.create(message)));
    }
    this.markLast();
  }

  /** A `picked` event: ``pickedId`` is now the best of the replies to ``replyTo``. */
  picked(replyTo, pickedId) {
    for (const item of this.items.values()) {
      if (item.data.reply_to === replyTo && item.data.compare) {
        this.update(item, { ...item.data, picked: item.data.id === pickedId }, { replaceText: false });
      }
    }
  }

  /** The node to put in the log for ``item``: a compared reply goes in its message's row. */
  placed(item) {
    if (!item.data.compare || !item.data.reply_to) return item.el;
    let group = this.groups.get(item.data.reply_to);
    if (!group) {
      group = h("div", { class: "compare-row", "data-reply-to": item.data.reply_to, role: "group",
        "aria-label": "Replies compared side by side" });
      this.groups.set(item.data.reply_to, group);
    }
    if (item.el.parentNode !== group) group.append(item.el);
    return group;
  }

  dropEmptyGroups() {
    for (const [id, group] of this.groups) {
      if (!group.childElementCount) {
        group.remove();
        this.groups.delete(id);
      }
    }
  }

  /**
   * A `delta` event: it extends the answer, or with part "reasoning" the model's thinking.
   * Returns false when a delta is missing (the caller resyncs).
   */
  delta({ message_id: id, seq, text, part }) {
    const item = this.items.get(id);
    if (!item) return true; // a reply of a message we have not seen: the next snapshot has it
    if (seq <= item.seq) return true; // already in the text we have
    if (seq !== item.seq + 1) return false;
    if (part === "reasoning") item.reasoning += text;
    else item.text += text;
    item.seq = seq;
    if (item.data.status === "queued") setStatus(item, "streaming");
    this.schedule(item);
    return true;
  }

  /**
   * A `tool_call` (a call started) or `tool_result` (it ended) event: its card appears or is
   * brought up to date. A lost one is made good by the `done` event, which carries every call.
   */
  tool({ message_id: id, call }) {
    const item = this.items.get(id);
    if (!item || !call?.id) return; // a reply we have not seen: the next snapshot has it
    upsertCall(item, call);
    item.data.tool_calls = item.calls;
    if (item.data.status === "queued") setStatus(item, "streaming");
    this.schedule(item);
  }

  /** A `done` event: the final text, status and stats. */
  done(event) {
    const item = this.items.get(event.message_id);
    if (!item) {
      this.upsert(event.message);
      return;
    }
    this.update(item, event.message, { replaceText: true });
    this.markLast();
  }

  remove(ids) {
    for (const id of ids) {
      const item = this.items.get(id);
      if (item) {
        item.el.remove();
        this.items.delete(id);
        this.dirty.delete(item);
      }
    }
    this.dropEmptyGroups();
    this.markLast();
  }

  /** Show a message the user just sent, before the server has stored it. */
  addPending(clientId, content) {
    const item = this.create({ id: null, role: "user", content, status: "sending", client_id: clientId });
    this.pending.set(clientId, item);
    this.root.append(item.el);
    this.settleAtBottom();
    return item;
  }

  failPending(clientId, reason) {
    const item = this.pending.get(clientId);
    if (!item) return;
    this.pending.delete(clientId);
    setStatus(item, "unsent");
    item.errorEl.textContent = reason;
    item.errorEl.hidden = false;
  }

  hasPending(clientId) {
    return this.pending.has(clientId);
  }

  hasActive() {
    for (const item of this.items.values()) if (ACTIVE.has(item.data.status)) return true;
    return false;
  }

  get size() {
    return this.items.size + this.pending.size;
  }

  adoptPending(message) {
    if (message.role !== "user" || !message.client_id) return null;
    const item = this.pending.get(message.client_id);
    if (!item) return null;
    this.pending.delete(message.client_id);
    this.items.set(message.id, item);
    return item;
  }

  // --- building and updating elements --------------------------------------------------------

  create(message) {
    const item = buildItem(message, this.agents, this.username);
    this.update(item, message, { replaceText: true });
    if (message.id !== null) this.items.set(message.id, item);
    return item;
  }

  update(item, message, { replaceText }) {
    const wasActive = ACTIVE.has(item.data.status);
    applyMessage(item, message, this.agents, replaceText);
    this.schedule(item);
    if (wasActive && !ACTIVE.has(message.status)) this.flushItem(item); // final text, highlighted now
  }

  markLast() {
    let last = null;
    for (const item of this.items.values()) {
      item.el.classList.remove("is-last");
      if (item.data.role === "assistant") last = item;
    }
    last?.el.classList.add("is-last");
    this.callbacks.onChange?.();
  }

  // --- rendering -----------------------------------------------------------------------------

  schedule(item) {
    this.dirty.add(item);
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
    const follow = this.stick;
    for (const item of this.dirty) this.flushItem(item);
    this.dirty.clear();
    if (follow) this.scrollToBottom();
  }

  flushItem(item) {
    this.dirty.delete(item);
    renderBody(item);
  }

  // --- actions -------------------------------------------------------------------------------

  async onClick(event) {
    const target = event.target.closest("button");
    if (!target || !this.root.contains(target)) return;
    if (target.classList.contains("copy-code")) {
      const code = target.closest(".code-block")?.querySelector("pre")?.textContent || "";
      flashCopied(target, await copyText(code));
      return;
    }
    if (target.classList.contains("remote-image")) {
      loadImage(target);
      return;
    }
    const action = target.dataset.action;
    const article = target.closest("article");
    const id = Number(article?.dataset.id);
    const item = this.items.get(id);
    if (!action || !item) return;
    if (action === "copy") flashCopied(target, await copyText(item.text));
    else if (action === "stop") this.callbacks.onStop(id);
    else if (action === "regenerate") this.callbacks.onRegenerate(id);
    else if (action === "edit") this.startEdit(item);
    else if (action === "pick") this.callbacks.onPick?.(id);
  }

  startEdit(item) {
    openEditor(item, (content) => {
      this.callbacks.onEdit(item.data.id, content);
      this.schedule(item);
    });
  }
}
