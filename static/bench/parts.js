// What the benchmark list and the chosen benchmark's panels both need: guards for untrusted
// JSON, a job's parameters and agent, its progress bar, and the key of what it shows.

import { h } from "../lib/dom.js";
import { text } from "../lib/format.js";

export const ACTIVE = new Set(["queued", "running"]);

/** ``x`` if it is a plain object, else {}: bench.json is read, never trusted. */
export function obj(x) {
  return x && typeof x === "object" && !Array.isArray(x) ? x : {};
}

/** ``x`` if it is an array, else []. */
export function arr(x) {
  return Array.isArray(x) ? x : [];
}

/** The params a job was started with, or those its bench.json (``bench``, if read) reports. */
export function paramsOf(job, bench) {
  return { ...obj(job.params), ...obj(bench?.params) };
}

export function agentOf(params) {
  if (params.agent) return `@${params.agent}`;
  if (params.artifact != null) return `artifact #${params.artifact}`;
  return "–";
}

export function shapeOf(params) {
  return `${text(params.input_tokens)}/${text(params.output_tokens)}`;
}

export function progressBar(job) {
  const value = Math.max(0, Math.min(100, Number(job.progress) || 0));
  const fill = h("span", { class: "bar-fill" });
  fill.style.width = `${value}%`; // CSSOM, which the page's CSP allows
  return h("div", { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
    "aria-valuenow": value, "aria-label": `Benchmark ${job.id} progress` }, fill);
}

/** What changes the detail panel: the job's state and its files. */
export function keyOf(job) {
  return `${job.id}:${job.status}:${job.progress}:${job.finished_at || ""}:${Object.keys(obj(job.files)).join(",")}`;
}
