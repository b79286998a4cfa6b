// The job dashboard: start jobs from each kind's schema, follow them live over /ws/jobs/, and
// browse the artifacts they made. Names, logs and samples are untrusted: text only, never HTML.
// This module loads and wires; the table is ./rows.js, the artifacts ./artifacts.js, the form
// ./form.js (with ./train.js), the workers panel ./worker_list.js.

import { Connection, wsUrl } from "../lib/connection.js";
import { $, connState, h, notice as showNotice } from "../lib/dom.js";
import { getJSON, post } from "../lib/http.js";
import { renderArtifacts, slugFor } from "./artifacts.js";
import { FieldError, clearErrors, formParams, refreshArtifactSelects, renderFields, showError } from "./form.js";
import { forgetFigure } from "./loss.js";
import { appendLog, renderJobs } from "./rows.js";
import { FINISHED, later, state } from "./state.js";
import { loadWorkers } from "./worker_list.js";

const WORKERS_EVERY_MS = 5000;
const NOTICE_SHOWN_MS = 8000;

const notice = (text) => showNotice(text, NOTICE_SHOWN_MS);

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

async function loadJobs() {
  const data = await getJSON("/api/jobs/?limit=100");
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
    notice(`${verb} of job ${id} (${job?.kind}): ${result.message}`);
    button.disabled = false;
    return;
  }
  upsertJob(result.body);
}

// --- artifacts ----------------------------------------------------------------------------------

async function makeAgent(artifact, button) {
  button.disabled = true;
  const slug = slugFor(artifact);
  const result = await post("/api/agents/", { name: artifact.name.slice(0, 100), slug, model: artifact.id });
  if (!result.ok) {
    notice(`No agent made from ${artifact.name}: ${result.message}`);
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
    notice(`Evaluate ${artifact.name}: ${result.message}`);
    return;
  }
  upsertJob(result.body);
  $(`job-${result.body.id}`)?.scrollIntoView({ block: "nearest" });
}

function artifactAction(event) {
  const button = event.target.closest("button[data-action]");
  const id = Number(button?.closest("li[data-artifact]")?.dataset.artifact);
  const artifact = state.artifacts.find((a) => a.id === id);
  if (!artifact) return;
  if (button.dataset.action === "agent") makeAgent(artifact, button);
  else if (button.dataset.action === "evaluate") evaluate(artifact, button);
}

async function loadArtifacts() {
  try {
    const data = await getJSON("/api/artifacts/");
    state.artifacts = data.results;
  } catch (err) {
    notice(`Artifacts not loaded: ${err.message}`);
    return;
  }
  renderArtifacts();
  refreshArtifactSelects($("job-fields"), currentKind(), state.artifacts);
  renderJobs(); // source names
}

// --- the live socket ------------------------------------------------------------------------------

function onEvent(event) {
  if (event.type === "job") upsertJob(event.job, event.lines || []);
  else if (event.type === "artifacts") loadArtifacts();
  else if (event.type === "error") notice(event.message);
}

function onState(name, text) {
  if (name === "open") {
    connState("open", "live");
    // Whatever changed while the socket was away: read it again.
    loadJobs().catch((err) => notice(`Jobs not loaded: ${err.message}`));
    loadArtifacts();
  } else if (name === "connecting") {
    connState("connecting", "connecting…");
  } else if (text) {
    connState(name, text); // "reconnecting in 4 s…", or why it stopped; a retry keeps those words
  }
}

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
  $("artifacts").addEventListener("click", artifactAction);
  try {
    state.kinds = await getJSON("/api/jobs/kinds/");
    const data = await getJSON("/api/artifacts/");
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
  const connection = new Connection(wsUrl("/ws/jobs/"), {
    onEvent,
    onState,
    fatal: { 4401: "signed out: reload", 4403: "staff only" },
    retryText: (s) => `reconnecting in ${s} s…`,
  });
  connection.start();
  document.body.dataset.ready = "1";
}

main();
