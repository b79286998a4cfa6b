// The workers page: every worker with its queues, processes, memory, loaded and lately unloaded
// models and running tasks, read from /api/workers/ every 2 s. A worker that leaves the list
// (killed, or its beat expired) stays on screen as "lost" for a while, so its loss is noticed.
// Host names, model paths and task arguments are untrusted: text only, never HTML.

import { $, connState, h, notice } from "../lib/dom.js";
import { bytes, seconds, sinceEpoch } from "../lib/format.js";
import { getJSON } from "../lib/http.js";

const EVERY_MS = 2000;
const LOST_KEPT_MS = 10 * 60 * 1000; // how long a lost worker stays on screen
const UNLOADED_SHOWN = 4;

const known = new Map(); // hostname -> {worker, seenAt, lostAt}

const basename = (path) => String(path || "").split(/[\\/]/).filter(Boolean).pop() || String(path || "?");
const shortTask = (name) => String(name || "?").split(".").pop();

function argsText(kwargs) {
  return Object.entries(kwargs || {}).map(([k, v]) => `${k.replace(/_id$/, "")} ${v}`).join(", ");
}

// --- cells ------------------------------------------------------------------------------------

function workerCell(w) {
  const pool = w.pool ? `${w.pool}${w.concurrency ? ` × ${w.concurrency}` : ""}` : null;
  const up = w.started_at ? `up ${seconds(sinceEpoch(w.started_at))}` : null;
  const facts = [w.host, pool, up].filter(Boolean).join(" · ");
  return h("td", { class: "w-name" },
    h("div", { class: "hostname", title: w.hostname, text: w.hostname }),
    h("div", { class: "muted small", text: facts }));
}

function queuesCell(w) {
  return h("td", { class: "w-queues" }, ...(w.queues || []).map((q) => h("span", { class: "badge", text: q })));
}

function beatCell(w, entry) {
  const state = entry.lostAt ? "lost" : w.state || "online";
  const age = entry.lostAt
    ? (w.beat_age_seconds || 0) + (Date.now() - entry.seenAt) / 1000
    : w.beat_age_seconds;
  const text = entry.lostAt ? `last beat ${seconds(age)} ago` : `${seconds(age)} ago`;
  return h("td", { class: "w-beat" },
    h("span", { class: `pill pill-${state}`, text: state }),
    h("div", { class: `small num-text ${!entry.lostAt && age > 4 ? "stale" : "muted"}`, text }));
}

function memoryCell(w) {
  const procs = (w.processes || []).map((p) =>
    h("li", { class: "proc", dataset: { pid: String(p.pid), role: p.role } },
      h("span", { class: "proc-role", text: p.role === "main" ? "main" : "pool" }),
      h("span", { class: "proc-pid", text: `pid ${p.pid}` }),
      h("span", { class: "proc-rss", text: bytes(p.rss_bytes) }),
      p.tasks_done ? h("span", { class: "muted", text: `${p.tasks_done} done` }) : null));
  return h("td", { class: "w-memory" },
    h("div", { class: "total", text: bytes(w.rss_bytes) }),
    procs.length ? h("ul", { class: "procs small" }, ...procs) : null);
}

function modelsCell(w) {
  const models = (w.models && w.models.loaded) || [];
  const keepAlive = w.models && w.models.keep_alive_seconds;
  if (!models.length) return h("td", { class: "w-models muted", text: "none" });
  return h("td", { class: "w-models" },
    h("ul", { class: "items" }, ...models.map((m) =>
      h("li", { class: "model-loaded", dataset: { model: m.model, pid: String(m.pid) } },
        h("span", { class: "model-name", title: m.model, text: basename(m.model) }),
        h("span", { class: "badge", text: m.backend }),
        h("span", { class: "small muted", text: bytes(m.bytes) }),
        m.in_use
          ? h("span", { class: "pill pill-running", text: "in use" })
          : h("span", { class: "small muted", text: `idle ${seconds(m.idle_seconds)}` }),
        h("span", { class: "small muted", text: `pid ${m.pid}` })))),
    keepAlive ? h("div", { class: "small muted", text: `unloads after ${seconds(keepAlive)} idle` }) : null);
}

function runningCell(w) {
  const tasks = (w.tasks || []).map((t) =>
    h("li", { class: "task", dataset: { task: t.name } },
      h("span", { class: "task-name", title: t.name, text: shortTask(t.name) }),
      h("span", { class: "small", text: argsText(t.kwargs) }),
      h("span", { class: "small muted num-text", text: seconds(sinceEpoch(t.started_at)) }),
      h("span", { class: "small muted", text: `pid ${t.pid}` })));
  const jobs = (w.jobs || []).map((j) =>
    h("li", { class: "job" },
      h("a", { class: "job-link", href: "/jobs/", text: `job #${j.id}` }),
      h("span", { class: "small", text: j.kind }),
      h("span", { class: "small muted num-text", text: `${Math.round(j.progress || 0)} %` })));
  if (!tasks.length && !jobs.length) return h("td", { class: "w-running muted", text: "idle" });
  return h("td", { class: "w-running" }, h("ul", { class: "items" }, ...tasks, ...jobs));
}

function unloadedCell(w) {
  const all = ((w.models && w.models.unloaded) || []).slice().reverse(); // newest first
  if (!all.length) return h("td", { class: "w-unloaded muted", text: "–" });
  const shown = all.slice(0, UNLOADED_SHOWN).map((m) =>
    h("li", { class: "model-unloaded", dataset: { model: m.model } },
      h("span", { class: "model-name", title: m.model, text: basename(m.model) }),
      h("span", { class: `small reason reason-${m.reason || "unknown"}`, text: m.reason || "unloaded" }),
      h("span", { class: "small muted", text: `${seconds(sinceEpoch(m.unloaded_at))} ago` }),
      h("span", { class: "small muted", text: bytes(m.bytes) }),
      m.pid ? h("span", { class: "small muted", text: `pid ${m.pid}` }) : null));
  const more = all.length > UNLOADED_SHOWN ? h("div", { class: "small muted", text: `+${all.length - UNLOADED_SHOWN} earlier` }) : null;
  return h("td", { class: "w-unloaded" }, h("ul", { class: "items" }, ...shown), more);
}

// --- the table --------------------------------------------------------------------------------

function render() {
  const now = Date.now();
  for (const [name, entry] of known) if (entry.lostAt && now - entry.lostAt > LOST_KEPT_MS) known.delete(name);
  const entries = [...known.values()].sort((a, b) =>
    (a.lostAt ? 1 : 0) - (b.lostAt ? 1 : 0) || a.worker.hostname.localeCompare(b.worker.hostname));
  const rows = entries.map((entry) => {
    const w = entry.worker;
    const state = entry.lostAt ? "lost" : w.state || "online";
    return h("tr", { class: "worker", dataset: { worker: w.hostname, state } },
      workerCell(w), queuesCell(w), beatCell(w, entry), memoryCell(w), modelsCell(w), runningCell(w),
      unloadedCell(w));
  });
  $("workers").tBodies[0].replaceChildren(...rows);
  $("workers-empty").hidden = rows.length > 0;
  const online = entries.filter((e) => !e.lostAt).map((e) => e.worker);
  const lost = entries.length - online.length;
  $("workers-count").textContent = entries.length ? `${online.length} online${lost ? ` · ${lost} lost` : ""}` : "";
  const sum = (f) => online.reduce((n, w) => n + f(w), 0);
  $("stat-workers").textContent = String(online.length);
  $("stat-processes").textContent = String(sum((w) => (w.processes || []).length));
  $("stat-memory").textContent = bytes(sum((w) => w.rss_bytes || 0));
  $("stat-models").textContent = String(sum((w) => ((w.models && w.models.loaded) || []).length));
  $("stat-tasks").textContent = String(sum((w) => (w.tasks || []).length + (w.jobs || []).length));
  $("stat-done").textContent = String(sum((w) => w.tasks_done || 0));
}

let busy = false;

async function refresh() {
  if (busy) return;
  busy = true;
  let data;
  try {
    data = await getJSON("/api/workers/");
  } catch (err) {
    // Who is online is unknown now: keep the last view rather than call everyone lost.
    connState("reconnecting", "not answering, retrying…");
    notice(`The worker list could not be read: ${err.message}`);
    return;
  } finally {
    busy = false;
  }
  const now = Date.now();
  const seen = new Set();
  for (const worker of data.results || []) {
    seen.add(worker.hostname);
    known.set(worker.hostname, { worker, seenAt: now, lostAt: null });
  }
  for (const [name, entry] of known) if (!seen.has(name) && !entry.lostAt) entry.lostAt = now;
  connState("open", `live · ${new Date(now).toLocaleTimeString()}`);
  notice("");
  render();
  document.body.dataset.ready = "1";
}

refresh();
setInterval(refresh, EVERY_MS);
