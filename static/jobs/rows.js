// The job table: one row per job, its log row when expanded, patched in place so that a button
// under the pointer survives a progress event. Names, logs and samples are text only.

import { $, h } from "../lib/dom.js";
import { bytes, seconds } from "../lib/format.js";
import { artifactById, artifactLabel, state } from "./state.js";
import { chainText, lossHistory, patchFigure, sparkline } from "./loss.js";

const LOG_MAX_LINES = 2000;

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

export function renderJobs() {
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
export function appendLog(job, lines) {
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
