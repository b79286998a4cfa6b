// The job dashboard: start jobs from each kind's schema, follow them live over /ws/jobs/, and
// browse the artifacts they made. Names, logs and samples are untrusted: text only, never HTML.

import { apiFetch, h } from "../chat/util.js";
import { FieldError, clearErrors, formParams, refreshArtifactSelects, renderFields, showError } from "./form.js";
import { chainText, forgetFigure, lossHistory, patchFigure, sparkline } from "./train.js";

const FINISHED = new Set(["succeeded", "failed", "cancelled", "interrupted"]);
const WORKERS_EVERY_MS = 5000;
const LOG_MAX_LINES = 2000;

const state = {
  kinds: {},
  jobs: new Map(), // id -> job payload
  artifacts: [],
  openLogs: new Set(), // job ids whose log is expanded
  madeAgents: new Map(), // artifact id -> slug made on this page
};

const $ = (id) => document.getElementById(id);

// --- formatting -------------------------------------------------------------------------------

function bytes(n) {
  if (n == null) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i += 1;
  }
  return `${n >= 100 || i === 0 ? n.toFixed(0) : n.toFixed(1)} ${units[i]}`;
}

function seconds(s) {
  if (s == null) return "–";
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

function num(x, digits = 1) {
  return x == null ? "–" : Number(x).toFixed(digits);
}

function artifactById(id) {
  return state.artifacts.find((a) => a.id === id);
}

function artifactLabel(id) {
  const a = artifactById(id);
  return a ? a.name : id == null ? "–" : `#${id}`;
}

function notice(text) {
  const box = $("notice");
  box.textContent = text;
  box.hidden = !text;
  clearTimeout(notice.timer);
  if (text) notice.timer = setTimeout(() => (box.hidden = true), 8000);
}

/** POST JSON; resolves to {ok, status, body} so that a 400's field can be shown where it belongs. */
async function post(url, body) {
  const token = document.querySelector('meta[name="csrf-token"]')?.content;
  let response;
  try {
    response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { Accept: "application/json", "Content-Type": "application/json", "X-CSRFToken": token || "" },
      body: JSON.stringify(body ?? {}),
    });
  } catch (err) {
    return { ok: false, status: 0, body: { message: `The server did not answer (${err.message}); try again.` } };
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    /* not JSON */
  }
  return { ok: response.ok, status: response.status, body: data };
}

function problem(result) {
  const body = result.body || {};
  return body.message || body.detail || (body && Object.keys(body).length ? JSON.stringify(body) : `HTTP ${result.status}`);
}

// --- the new-job form (static/jobs/form.js builds it from the kind's JSON Schema) ---------------

function currentKind() {
  return state.kinds[$("job-kind").value];
}

function renderForm() {
  const kind = currentKind();
  clearErrors($("job-form"));
  $("job-kind-help").textContent = kind ? kind.description : "";
  $("job-queue").textContent = kind ? `queue: ${kind.queue}` : "";
  renderFields($("job-fields"), kind, state.artifacts);
}

async function startJob(event) {
  event.preventDefault();
  clearErrors($("job-form"));
  const button = $("job-start");
  button.disabled = true;
  try {
    let params;
    try {
      params = formParams($("job-fields"));
    } catch (err) {
      if (!(err instanceof FieldError)) throw err;
      showError($("job-form"), { field: err.field, message: err.message });
      return;
    }
    const result = await post("/api/jobs/", { kind: $("job-kind").value, params });
    if (!result.ok) {
      showError($("job-form"), result.body, result.status);
      return;
    }
    upsertJob(result.body);
  } catch (err) {
    showError($("job-form"), { message: `The job was not started: ${err.message}` });
  } finally {
    button.disabled = false;
  }
}

// --- jobs ---------------------------------------------------------------------------------------

function progressCell(job) {
  const value = Math.max(0, Math.min(100, job.progress || 0));
  const fill = h("span", { class: "bar-fill" });
  fill.style.width = `${value}%`; // CSSOM, which the page's CSP allows (a style attribute it would not)
  const bar = h(
    "div",
    { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": value,
      "aria-label": `Job ${job.id} progress` },
    fill,
  );
  const parts = [job.status === "succeeded" ? "done" : `${value.toFixed(0)} %`];
  if (job.stage && !["done", "queued"].includes(job.stage)) parts.push(job.stage);
  if (job.status === "running" && job.eta_seconds != null) parts.push(`ETA ${seconds(job.eta_seconds)}`);
  if (job.cancel_requested && job.status === "running") parts.push("cancelling…");
  const history = lossHistory(job);
  const last = history[history.length - 1];
  const spark = sparkline(history, last ? `Loss by step: ${history[0][1]} at step ${history[0][0]}, ${last[1]} at step ${last[0]}` : "");
  return h("td", { class: "progress-col" }, bar,
    h("div", { class: "bar-line" }, h("span", { class: "bar-text", title: parts.join(" · "), text: parts.join(" · ") }), spark));
}

function kindCell(job) {
  const chain = chainText(job);
  const cell = h("td", {}, h("span", { class: "kind", text: job.kind }));
  if (chain) cell.append(h("div", { class: "chain", title: chain, text: chain }));
  return cell;
}

function jobRow(job) {
  const actions = h("td", { class: "actions" });
  if (job.status === "running" || job.status === "queued") {
    actions.append(h("button", { type: "button", class: "button small", dataset: { action: "cancel" }, text: "Cancel",
      disabled: job.cancel_requested }));
  } else {
    if (job.resumable) {
      actions.append(h("button", { type: "button", class: "button small", dataset: { action: "resume" }, text: "Resume",
        title: "Go on from the last checkpoint, as a new job" }));
    }
    actions.append(h("button", { type: "button", class: "button small", dataset: { action: "retry" }, text: "Retry" }));
  }
  const open = state.openLogs.has(job.id);
  actions.append(h("button", { type: "button", class: "button small ghost", dataset: { action: "log" },
    "aria-expanded": String(open), "aria-controls": `log-${job.id}`, text: open ? "Log ▴" : "Log ▾" }));
  const status = h("span", { class: `pill pill-${job.status}`, title: job.error || null, text: job.status });
  const statusCell = h("td", {}, status);
  if (job.error && (job.status === "failed" || job.status === "interrupted")) {
    statusCell.append(h("div", { class: "job-error", title: job.error, text: job.error }));
  }
  const source = job.params && job.params.source;
  const sourceArtifact = artifactById(source);
  const sourceText = sourceArtifact
    ? `#${source} ${sourceArtifact.format} ${sourceArtifact.quantization || ""}`.trim()
    : artifactLabel(source);
  return h("tr", { class: "job", id: `job-${job.id}`, dataset: { id: job.id, status: job.status } },
    h("td", { class: "num muted", text: job.id }),
    kindCell(job),
    h("td", { class: "source", title: artifactLabel(source), text: sourceText }),
    statusCell,
    progressCell(job),
    h("td", { class: "num", text: seconds(job.duration_seconds) }),
    h("td", { class: "worker", title: job.worker || "", text: job.worker || "–" }),
    actions,
  );
}

function logLinks(job) {
  const result = job.result && Object.keys(job.result).length ? JSON.stringify(job.result) : "";
  const chain = chainText(job);
  return h("div", { class: "log-links" },
    h("a", { href: `/api/jobs/${job.id}/log/`, target: "_blank", rel: "noopener", text: "Whole log ↗" }),
    job.after != null ? h("a", { href: `#job-${job.after}`, class: "job-link", text: `← after job ${job.after}` }) : null,
    chain.includes("then:") ? h("span", { class: "muted", text: chain.slice(chain.indexOf("then:")) }) : null,
    job.peak_rss_bytes ? h("span", { class: "muted", text: `peak memory ${bytes(job.peak_rss_bytes)}` }) : null,
    result ? h("code", { class: "result", title: result, text: `result ${result}` }) : null);
}

function logRow(job) {
  const pre = h("pre", { class: "log", id: `log-${job.id}`, tabindex: 0, "aria-label": `Log of job ${job.id}` });
  pre.textContent = job.log_tail || "(no output yet)";
  const body = h("div", { class: "log-body" }, pre);
  patchFigure(body, job);
  return h("tr", { class: "log-row", dataset: { logFor: job.id } }, h("td", { colspan: 8 }, body, logLinks(job)));
}

/** Replace only the cells that changed, so a button under the pointer survives a progress event. */
function patchRow(tr, fresh) {
  tr.dataset.status = fresh.dataset.status;
  const old = [...tr.cells];
  [...fresh.cells].forEach((cell, i) => {
    if (!old[i]) tr.append(cell);
    else if (old[i].outerHTML !== cell.outerHTML) old[i].replaceWith(cell);
  });
}

function renderJobs() {
  const body = $("jobs").tBodies[0];
  const jobs = [...state.jobs.values()].sort((a, b) => b.id - a.id);
  let cursor = body.firstElementChild;
  const place = (row) => {
    if (row !== cursor) body.insertBefore(row, cursor);
    cursor = row.nextElementSibling;
  };
  for (const job of jobs) {
    const fresh = jobRow(job);
    const tr = $(`job-${job.id}`);
    if (tr) patchRow(tr, fresh);
    place(tr || fresh);
    let log = body.querySelector(`tr[data-log-for="${job.id}"]`);
    if (state.openLogs.has(job.id)) {
      if (log) {
        const links = logLinks(job);
        const oldLinks = log.querySelector(".log-links");
        if (oldLinks.outerHTML !== links.outerHTML) oldLinks.replaceWith(links);
        patchFigure(log.querySelector(".log-body"), job);
      }
      log = log || logRow(job);
      place(log);
    } else if (log) {
      if (log === cursor) cursor = log.nextElementSibling;
      log.remove();
    }
  }
  while (cursor) {
    const next = cursor.nextElementSibling;
    cursor.remove();
    cursor = next;
  }
  $("jobs-empty").hidden = jobs.length > 0;
  const running = jobs.filter((j) => j.status === "running").length;
  $("jobs-count").textContent = jobs.length ? `${jobs.length}${running ? ` · ${running} running` : ""}` : "";
}

/** Append streamed lines to an open log, keeping it scrolled to the end if it was. */
function appendLog(job, lines) {
  const pre = $(`log-${job.id}`);
  if (!pre) return;
  const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
  if (lines.length) {
    const text = pre.textContent === "(no output yet)" ? "" : pre.textContent;
    let all = (text ? `${text}\n` : "") + lines.join("\n");
    const split = all.split("\n");
    if (split.length > LOG_MAX_LINES) all = split.slice(-LOG_MAX_LINES).join("\n");
    pre.textContent = all;
  }
  if (!lines.length && job.log_tail) {
    // A read over REST (after a reconnect) or the final event: catch up from the tail. The outcome
    // line is written after the last streamed batch, so it arrives only this way.
    const shown = pre.textContent.split("\n");
    const tail = job.log_tail.split("\n");
    const at = tail.lastIndexOf(shown[shown.length - 1]);
    if (at === -1) pre.textContent = job.log_tail;
    else if (at < tail.length - 1) pre.textContent += `\n${tail.slice(at + 1).join("\n")}`;
  }
  if (atEnd) pre.scrollTop = pre.scrollHeight;
}

function upsertJob(incoming, lines = []) {
  const before = state.jobs.get(incoming.id);
  const job = later(before, incoming);
  state.jobs.set(job.id, job);
  renderJobs();
  appendLog(job, job === incoming ? lines : []);
  if (!before || before.status !== job.status) loadWorkers(); // who runs what changed
  if (FINISHED.has(job.status) && before && !FINISHED.has(before.status)) {
    // A finished job may have made artifacts or an evaluation.
    loadArtifacts();
  }
}

/** The later of two payloads of one job (a job only moves forward: queued, running, ended). A
 * POST's answer or a REST read may arrive after a websocket event that is newer than it. */
function later(known, incoming) {
  if (!known) return incoming;
  const rank = (j) => (FINISHED.has(j.status) ? 2 : j.status === "running" ? 1 : 0);
  if (rank(known) !== rank(incoming)) return rank(known) > rank(incoming) ? known : incoming;
  return (incoming.progress || 0) >= (known.progress || 0) ? incoming : known;
}

async function loadJobs() {
  const data = await apiFetch("GET", "/api/jobs/?limit=100");
  state.jobs = new Map(data.results.map((j) => [j.id, later(state.jobs.get(j.id), j)]));
  renderJobs();
  for (const id of state.openLogs) {
    const job = state.jobs.get(id);
    if (job) appendLog(job, []);
  }
}

async function jobAction(event) {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const id = Number(button.closest("tr").dataset.id);
  const job = state.jobs.get(id);
  if (button.dataset.action === "log") {
    if (state.openLogs.has(id)) {
      state.openLogs.delete(id);
      forgetFigure(id);
    } else {
      state.openLogs.add(id);
    }
    renderJobs();
    const pre = $(`log-${id}`);
    if (pre) pre.scrollTop = pre.scrollHeight;
    return;
  }
  button.disabled = true;
  const result = await post(`/api/jobs/${id}/${button.dataset.action}/`);
  if (!result.ok) {
    const verb = { cancel: "Cancel", retry: "Retry", resume: "Resume" }[button.dataset.action];
    notice(`${verb} of job ${id} (${job?.kind}): ${problem(result)}`);
    button.disabled = false;
    return;
  }
  upsertJob(result.body);
}

// --- artifacts: the lineage tree and the evaluations ------------------------------------------

function slugFor(artifact) {
  const base = artifact.name.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 60);
  const random = crypto.getRandomValues(new Uint32Array(1))[0].toString(36).slice(0, 5);
  return `${base || "model"}-${random}`;
}

function chatLink(slug) {
  // Starting a chat is a POST (it creates a session), like the picker on the chat page.
  const token = document.querySelector('meta[name="csrf-token"]')?.content || "";
  return h("form", { method: "post", action: "/s/new/", class: "inline-form" },
    h("input", { type: "hidden", name: "csrfmiddlewaretoken", value: token }),
    h("input", { type: "hidden", name: "agent", value: slug }),
    h("button", { type: "submit", class: "button small primary", text: `Chat with @${slug} →` }));
}

async function makeAgent(artifact, cell) {
  const button = cell.querySelector('[data-action="agent"]');
  button.disabled = true;
  const slug = slugFor(artifact);
  const result = await post("/api/agents/", { name: artifact.name.slice(0, 100), slug, model: artifact.id });
  if (!result.ok) {
    notice(`No agent made from ${artifact.name}: ${problem(result)}`);
    button.disabled = false;
    return;
  }
  state.madeAgents.set(artifact.id, result.body.slug);
  loadArtifacts();
}

async function evaluate(artifact, button) {
  button.disabled = true;
  const result = await post("/api/jobs/", { kind: "evaluate", params: { source: artifact.id } });
  button.disabled = false;
  if (!result.ok) {
    notice(`Evaluate ${artifact.name}: ${problem(result)}`);
    return;
  }
  upsertJob(result.body);
  $(`job-${result.body.id}`)?.scrollIntoView({ block: "nearest" });
}

function artifactNode(artifact, children) {
  const facts = h("span", { class: "facts" },
    h("span", { class: `badge fmt-${artifact.format}`, text: artifact.format }),
    artifact.quantization ? h("span", { class: "badge", text: artifact.quantization }) : null,
    h("span", { class: "muted", text: bytes(artifact.size_bytes) }),
    h("span", { class: "muted", text: artifact.backend ? `runs on ${artifact.backend}` : "not servable" }),
    artifact.agents.length ? h("span", { class: "muted", text: `· ${artifact.agents.length} agent${artifact.agents.length > 1 ? "s" : ""}` }) : null,
    artifact.job ? h("a", { href: `#job-${artifact.job}`, class: "job-link", text: `job ${artifact.job}` }) : null);
  const actions = h("span", { class: "actions" });
  if (artifact.backend) {
    actions.append(h("button", { type: "button", class: "button small", dataset: { action: "agent" }, text: "Make agent" }));
  }
  if (state.kinds.evaluate && state.kinds.evaluate.sources.includes(artifact.format)) {
    actions.append(h("button", { type: "button", class: "button small", dataset: { action: "evaluate" }, text: "Evaluate" }));
  }
  const made = state.madeAgents.get(artifact.id);
  if (made) actions.append(chatLink(made));
  const row = h("div", { class: "node" }, h("span", { class: "name", title: artifact.path || "", text: artifact.name }), facts, actions);
  row.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    if (button.dataset.action === "agent") makeAgent(artifact, row);
    else if (button.dataset.action === "evaluate") evaluate(artifact, button);
  });
  const li = h("li", { dataset: { artifact: artifact.id } }, row);
  if (children.length) li.append(h("ul", {}, ...children));
  return li;
}

function renderArtifacts() {
  const byParent = new Map();
  const ids = new Set(state.artifacts.map((a) => a.id));
  for (const a of state.artifacts) {
    const parent = a.parent != null && ids.has(a.parent) ? a.parent : null;
    if (!byParent.has(parent)) byParent.set(parent, []);
    byParent.get(parent).push(a);
  }
  const build = (a) => artifactNode(a, (byParent.get(a.id) || []).map(build));
  $("artifacts").replaceChildren(...(byParent.get(null) || []).map(build));
  $("artifacts-empty").hidden = state.artifacts.length > 0;
  $("artifacts-count").textContent = state.artifacts.length ? String(state.artifacts.length) : "";
  renderEvaluations();
}

function renderEvaluations() {
  const rows = [];
  const evaluated = state.artifacts.filter((a) => a.evaluations.length);
  const best = Math.min(...evaluated.map((a) => a.evaluations[0].perplexity ?? Infinity));
  for (const a of evaluated) {
    const e = a.evaluations[0]; // the newest
    const ppl = h("td", { class: "num", text: num(e.perplexity, 2) });
    if (e.perplexity === best && evaluated.length > 1) ppl.classList.add("best");
    rows.push(h("tr", { dataset: { artifact: a.id } },
      h("td", { class: "name", title: a.name, text: a.name }),
      h("td", { text: a.format }),
      h("td", { text: a.quantization || "–" }),
      h("td", { class: "num", text: bytes(e.size_bytes ?? a.size_bytes) }),
      ppl,
      h("td", { class: "num", text: num(e.decode_tokens_per_s) }),
      h("td", { class: "num", text: num(e.prefill_tokens_per_s) }),
      h("td", { class: "sample", title: e.sample || "", text: e.sample || "–" })));
  }
  $("evaluations").tBodies[0].replaceChildren(...rows);
  $("evaluations-empty").hidden = rows.length > 0;
}

async function loadArtifacts() {
  try {
    const data = await apiFetch("GET", "/api/artifacts/");
    state.artifacts = data.results;
  } catch (err) {
    notice(`Artifacts not loaded: ${err.message}`);
    return;
  }
  renderArtifacts();
  refreshArtifactSelects($("job-fields"), currentKind(), state.artifacts);
  renderJobs(); // source names
}

// --- workers --------------------------------------------------------------------------------------

async function loadWorkers() {
  let data;
  try {
    data = await apiFetch("GET", "/api/workers/");
  } catch {
    return; // shown as stale by the next successful read; the notice would repeat every 5 s
  }
  const rows = data.results.map((w) => {
    // Jobs, and the other tasks its processes run now (replies), by their short name.
    const running = [
      ...w.jobs.map((j) => `#${j.id} ${j.kind} · ${Math.round(j.progress)} %`),
      ...(w.tasks || []).filter((t) => !t.name.endsWith(".job_run")).map((t) => t.name.split(".").pop()),
    ];
    const jobs = running.length ? running.join(", ") : "idle";
    // Loaded models (idle ones unload after the keep-alive, and then leave this list).
    const models = ((w.models && w.models.loaded) || []).map(
      (m) => `${m.backend}: ${m.model.split("/").pop()} (${bytes(m.bytes)}, idle ${seconds(m.idle_seconds)})`);
    const memory = w.rss_bytes ? `${bytes(w.rss_bytes)} resident` : "";
    return h("tr", { dataset: { worker: w.hostname } },
      h("td", { class: "worker", title: `${w.host} · pid ${w.pid}` }, w.hostname,
        memory ? h("div", { class: "muted small", text: memory }) : null),
      h("td", { text: w.queues.join(", ") }),
      h("td", { class: running.length ? "" : "muted" }, jobs,
        ...models.map((m) => h("div", { class: "muted small model-loaded", text: m }))),
      h("td", { class: `num ${w.beat_age_seconds > 4 ? "stale" : ""}`, text: `${seconds(w.beat_age_seconds)} ago` }));
  });
  $("workers").tBodies[0].replaceChildren(...rows);
  $("workers-empty").hidden = rows.length > 0;
  $("workers-count").textContent = rows.length ? String(rows.length) : "";
}

// --- the live socket ------------------------------------------------------------------------------

const socket = { ws: null, attempt: 0, timer: 0 };

function connState(name, text) {
  const conn = $("conn");
  conn.dataset.state = name;
  conn.textContent = text;
}

function connect() {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/jobs/`;
  const ws = new WebSocket(url);
  socket.ws = ws;
  ws.onopen = () => {
    socket.attempt = 0;
    connState("open", "live");
    // Whatever changed while the socket was away: read it again.
    loadJobs().catch((err) => notice(`Jobs not loaded: ${err.message}`));
    loadArtifacts();
  };
  ws.onmessage = (message) => {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    if (event.type === "job") upsertJob(event.job, event.lines || []);
    else if (event.type === "artifacts") loadArtifacts();
    else if (event.type === "error") notice(event.message);
  };
  ws.onclose = (event) => {
    if (socket.ws !== ws) return;
    socket.ws = null;
    if (event.code === 4401 || event.code === 4403) {
      connState("fatal", event.code === 4401 ? "signed out: reload" : "staff only");
      return;
    }
    const delay = Math.min(15000, 500 * 2 ** socket.attempt) * (0.5 + Math.random() / 2);
    socket.attempt += 1;
    connState("reconnecting", `reconnecting in ${Math.ceil(delay / 1000)} s…`);
    socket.timer = setTimeout(connect, delay);
  };
}

// Keep the socket from idling out behind proxies; a dead one is noticed by its close.
setInterval(() => {
  if (socket.ws && socket.ws.readyState === WebSocket.OPEN) socket.ws.send(JSON.stringify({ type: "ping" }));
}, 20000);

// Durations and ETAs of running jobs move between events.
setInterval(() => {
  let changed = false;
  for (const job of state.jobs.values()) {
    if (job.status !== "running" || job.duration_seconds == null) continue;
    job.duration_seconds += 1;
    if (job.eta_seconds != null) job.eta_seconds = Math.max(0, job.eta_seconds - 1);
    changed = true;
  }
  if (changed) renderJobs();
}, 1000);

// --- start -----------------------------------------------------------------------------------------

async function main() {
  $("job-form").addEventListener("submit", startJob);
  $("job-kind").addEventListener("change", renderForm);
  $("jobs").addEventListener("click", jobAction);
  try {
    state.kinds = await apiFetch("GET", "/api/jobs/kinds/");
    const data = await apiFetch("GET", "/api/artifacts/");
    state.artifacts = data.results;
  } catch (err) {
    notice(`The dashboard could not load: ${err.message}`);
    return;
  }
  for (const [name, kind] of Object.entries(state.kinds)) {
    kind.name = name;
    $("job-kind").append(h("option", { value: name, title: kind.description, text: name }));
  }
  renderForm();
  renderArtifacts();
  await loadJobs().catch((err) => notice(`Jobs not loaded: ${err.message}`));
  loadWorkers();
  setInterval(loadWorkers, WORKERS_EVERY_MS);
  connect();
  document.body.dataset.ready = "1";
}

main();
