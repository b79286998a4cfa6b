// The workers panel of the job dashboard: who runs what, and which models each has loaded.

import { $, h } from "../lib/dom.js";
import { bytes, seconds } from "../lib/format.js";
import { getJSON } from "../lib/http.js";

export async function loadWorkers() {
  let data;
  try {
    data = await getJSON("/api/workers/");
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
