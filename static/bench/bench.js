// The benchmarks page: the benchmark jobs on the left, the chosen one's bench.json on the right
// (machine, parameters, runs, platform-vs-raw comparisons, pictures, external tools: ./detail.js).
// Everything read from the API is untrusted: text only (textContent), never HTML.

import { $, connState, h, notice } from "../lib/dom.js";
import { isNum, timeLabel } from "../lib/format.js";
import { getJSON } from "../lib/http.js";
import { detailPanels } from "./detail.js";
import { ACTIVE, agentOf, arr, keyOf, obj, paramsOf, progressBar, shapeOf } from "./parts.js";

const ACTIVE_EVERY_MS = 3000; // while a benchmark runs
const IDLE_EVERY_MS = 30000; // to notice one started elsewhere

const state = {
  jobs: [], // newest first
  selected: null, // job id
  extra: null, // a job chosen by ?job= that is not in the list (older than the list's limit)
  bench: new Map(), // job id -> {key, data, error}
  shownKey: "", // what the detail panel shows now, so a poll that changed nothing leaves it alone
  timer: 0,
  reading: false,
  again: false,
};

// --- the list ------------------------------------------------------------------------------------

function listItem(job) {
  const params = paramsOf(job, state.bench.get(job.id)?.data);
  const chosen = job.id === state.selected;
  const when = timeLabel(job.finished_at || job.started_at || job.created_at);
  const runs = obj(job.result).runs;
  const link = h("a", { href: `?job=${job.id}`, class: "bench-item", "aria-current": chosen ? "true" : null,
    dataset: { id: job.id, status: job.status } },
    h("span", { class: "bench-item-head" },
      h("span", { class: "bench-agent", text: agentOf(params) }),
      h("span", { class: `pill pill-${job.status}`, text: job.status })),
    h("span", { class: "bench-item-facts" },
      h("span", { title: "input/output tokens", text: shapeOf(params) }),
      h("span", { title: "concurrency levels", text: `conc. ${Array.isArray(params.concurrency) ? params.concurrency.join(" · ") : "–"}` }),
      isNum(runs) ? h("span", { text: `${runs} runs` }) : null,
      h("span", { class: "bench-when", text: `#${job.id} · ${when || "–"}` })));
  if (ACTIVE.has(job.status)) {
    const stage = job.stage && job.stage !== "queued" ? ` · ${job.stage}` : "";
    link.append(progressBar(job),
      h("span", { class: "bar-text", text: `${Math.round(Number(job.progress) || 0)} %${stage}` }));
  }
  return h("li", {}, link);
}

function renderList() {
  const jobs = [...state.jobs];
  if (state.extra && !jobs.some((j) => j.id === state.extra.id)) jobs.push(state.extra);
  $("bench-list").replaceChildren(...jobs.map(listItem));
  $("bench-empty").hidden = jobs.length > 0;
  const running = jobs.filter((j) => ACTIVE.has(j.status)).length;
  $("bench-count").textContent = jobs.length ? `${jobs.length}${running ? ` · ${running} running` : ""}` : "";
}

// --- the chosen job -----------------------------------------------------------------------------

function jobById(id) {
  return state.jobs.find((j) => j.id === id) || (state.extra && state.extra.id === id ? state.extra : null);
}

async function loadBench(job) {
  const url = obj(job.files)["bench.json"];
  const key = keyOf(job);
  const known = state.bench.get(job.id);
  if (!url || (known && known.key === key)) return;
  try {
    const data = await getJSON(`${url}?v=${encodeURIComponent(key)}`);
    state.bench.set(job.id, { key, data: obj(data), error: "" });
  } catch (err) {
    state.bench.set(job.id, { key, data: null, error: err.message });
  }
}

function renderDetail() {
  const box = $("bench-detail");
  const job = state.selected == null ? null : jobById(state.selected);
  if (!job) {
    const message = state.selected == null ? "Choose a benchmark on the left." : `No benchmark job #${state.selected}.`;
    box.replaceChildren(h("section", { class: "panel" }, h("p", { class: "muted small empty", id: "bench-none", text: message })));
    state.shownKey = "";
    return;
  }
  const loaded = state.bench.get(job.id);
  const key = `${keyOf(job)}|${loaded ? loaded.key : ""}|${loaded?.error || ""}`;
  if (key === state.shownKey) return; // a poll that changed nothing: keep the pictures and the scroll
  state.shownKey = key;
  box.replaceChildren(...detailPanels(job, loaded));
}

// --- loading and choosing ------------------------------------------------------------------------

function chosenFromUrl() {
  const raw = new URLSearchParams(location.search).get("job");
  return raw && /^\d+$/.test(raw) ? Number(raw) : null;
}

/** Read the list (and the chosen job's bench.json), show them, and plan the next read. One read
 * at a time: a choice made during one is read again right after it. */
async function refresh() {
  if (state.reading) {
    state.again = true;
    return;
  }
  state.reading = true;
  clearTimeout(state.timer);
  let ok = false;
  try {
    const data = await getJSON("/api/jobs/?kind=benchmark&limit=100");
    state.jobs = arr(data.results).sort((a, b) => b.id - a.id);
    if (state.selected == null && state.jobs.length) state.selected = state.jobs[0].id;
    if (state.selected != null && !state.jobs.some((j) => j.id === state.selected)) {
      // Chosen by address but not among the newest: read it alone (a 404 leaves the message).
      state.extra = await getJSON(`/api/jobs/${state.selected}/`).then(
        (job) => (job && job.kind === "benchmark" ? job : null), () => null);
    } else if (state.extra) {
      state.extra = null;
    }
    const job = state.selected == null ? null : jobById(state.selected);
    if (job) await loadBench(job);
    notice("");
    ok = true;
  } catch (err) {
    notice(`Benchmarks not loaded: ${err.message}`);
    connState("reconnecting", "retrying…");
  }
  state.reading = false;
  renderList();
  renderDetail();
  document.body.dataset.ready = "1";
  if (state.again) {
    state.again = false;
    refresh();
    return;
  }
  const active = state.jobs.some((j) => ACTIVE.has(j.status)) || (state.extra && ACTIVE.has(state.extra.status));
  if (ok) {
    // The words change only with the mode, so that a screen reader is not told every few seconds.
    connState("open", active ? `live: every ${ACTIVE_EVERY_MS / 1000} s` : "up to date");
    $("conn").title = `read at ${new Date().toLocaleTimeString()}`;
  }
  state.timer = setTimeout(refresh, active ? ACTIVE_EVERY_MS : IDLE_EVERY_MS);
}

function choose(id, push) {
  if (push && chosenFromUrl() !== id) history.pushState({ job: id }, "", `?job=${id}`);
  if (id === state.selected) return;
  state.selected = id;
  renderList();
  renderDetail();
  refresh(); // its bench.json, and the list's news
}

$("bench-list").addEventListener("click", (event) => {
  const link = event.target.closest("a.bench-item");
  if (!link || event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  choose(Number(link.dataset.id), true);
});

window.addEventListener("popstate", () => choose(chosenFromUrl() ?? state.jobs[0]?.id ?? null, false));

state.selected = chosenFromUrl();
refresh();
