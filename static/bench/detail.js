// The chosen benchmark's panels: its head (machine, model, parameters), its runs, the platform
// against the raw engine, the pictures and the external tools, all read from its bench.json.
// Everything read from the API is untrusted: text only (textContent), never HTML.

import { h } from "../lib/dom.js";
import { isNum, list, num, seconds, text } from "../lib/format.js";
import { ACTIVE, agentOf, arr, keyOf, obj, paramsOf, progressBar } from "./parts.js";

const TARGET_ORDER = ["raw_inprocess", "raw_server", "v1", "websocket"];

// A comparison's measured field, its target's direction and unit (bench.json's `targets` keys).
const GOALS = [
  { key: "ttft_added_ms_p50", label: "TTFT added p50", cmp: "≤", unit: " ms", digits: 1 },
  { key: "decode_ratio", label: "Decode ratio", cmp: "≥", unit: "", digits: 3 },
  { key: "e2e_tps_ratio", label: "E2E tok/s ratio", cmp: "≥", unit: "", digits: 3 },
  { key: "output_tps_ratio", label: "Output tok/s ratio", cmp: "≥", unit: "", digits: 3 },
];

function panel(title, id, ...children) {
  return h("section", { class: "panel", "aria-labelledby": id }, h("h2", { id, text: title }), ...children);
}

function facts(pairs, label) {
  const dl = h("dl", { class: "bench-facts", "aria-label": label });
  for (const [name, value] of pairs) {
    if (value === null) continue;
    dl.append(h("div", {}, h("dt", { text: name }), h("dd", { text: value })));
  }
  return dl;
}

function labels(runs) {
  const names = new Map();
  for (const run of runs) if (run.target && !names.has(run.target)) names.set(run.target, text(run.label || run.target));
  return (target) => names.get(target) || text(target);
}

function headPanel(job, bench) {
  const files = obj(job.files);
  const params = paramsOf(job, bench);
  const title = h("h2", { id: "bench-title" },
    h("span", { text: `Benchmark #${job.id} · ${agentOf(params)}` }), " ",
    h("span", { class: `pill pill-${job.status}`, text: job.status }));
  const downloads = h("span", { class: "bench-downloads" },
    ...["bench.json", "bench.csv"].filter((name) => files[name]).map((name) =>
      h("a", { class: "button small", href: files[name], download: `benchmark-${job.id}-${name}`,
        "aria-label": `Download ${name}`, text: `${name} ↓` })));
  const section = h("section", { class: "panel bench-head", "aria-labelledby": "bench-title" },
    h("div", { class: "bench-title-line" }, title, downloads));
  const when = bench && bench.when ? new Date(bench.when) : null;
  section.append(h("p", { class: "muted small bench-when-line", text: [
    when && !Number.isNaN(when.getTime()) ? `measured ${when.toLocaleString()}` : null,
    job.duration_seconds != null ? `took ${seconds(job.duration_seconds)}` : null,
    job.worker ? `on ${job.worker}` : null,
    job.created_by ? `started by ${job.created_by}` : null,
  ].filter(Boolean).join(" · ") || "–" }));
  if (ACTIVE.has(job.status)) {
    section.append(progressBar(job), h("p", { class: "muted small", text:
      `${Math.round(Number(job.progress) || 0)} %${job.stage ? ` · ${job.stage}` : ""}` }));
  }
  if (job.error) section.append(h("p", { class: "job-error bench-error", text: job.error }));
  if (bench) {
    const m = obj(bench.machine);
    const perCore = isNum(m.threads_per_core) ? ` · ${m.threads_per_core} thread${m.threads_per_core === 1 ? "" : "s"}/core` : "";
    const cores = isNum(m.cores) ? `${m.cores}${perCore}` : "–";
    section.append(h("h3", { text: "Machine" }), facts([
      ["CPU", text(m.cpu)],
      ["Cores", cores],
      ["ISA", Array.isArray(m.isa) && m.isa.length ? m.isa.join(" ") : "–"],
      ["Memory", isNum(m.memory_gib) ? `${num(m.memory_gib, 1)} GiB` : "–"],
      ["Memory bandwidth", isNum(m.memory_bandwidth_gbs) ? `${num(m.memory_bandwidth_gbs, 1)} GB/s` : "–"],
      ["llama.cpp CPU variant", text(m.llama_cpu_variant)],
      ["Host", text(m.hostname)],
    ], "Machine"));
    const model = obj(bench.model);
    section.append(h("h3", { text: "Model" }), facts([
      ["Name", text(model.name)], ["Backend", text(model.backend)], ["Format", text(model.format)]], "Model"));
  }
  section.append(h("h3", { text: "Parameters" }), facts([
    ["Agent", params.agent != null ? `@${params.agent}` : "–"],
    ["Artifact", params.artifact != null ? `#${params.artifact}` : "–"],
    ["Concurrency", list(params.concurrency)],
    ["Requests per level", text(params.requests)],
    ["Input tokens", text(params.input_tokens)],
    ["Output tokens", text(params.output_tokens)],
    ["Compared with raw", params.compare_raw == null ? "–" : params.compare_raw ? "yes" : "no"],
    ["Doors", list(params.doors)],
  ], "Parameters"));
  return section;
}

function runsPanel(runs) {
  const order = (t) => (TARGET_ORDER.includes(t) ? TARGET_ORDER.indexOf(t) : TARGET_ORDER.length);
  const sorted = [...runs].sort((a, b) => order(a.target) - order(b.target)
    || String(a.target).localeCompare(String(b.target)) || (a.concurrency ?? 0) - (b.concurrency ?? 0));
  const col = (label, extra = {}) => h("th", { scope: "col", class: "num", ...extra, text: label });
  const head = h("thead", {},
    h("tr", {},
      h("th", { scope: "col", rowspan: 2, text: "Target" }),
      col("Conc.", { rowspan: 2, title: "concurrent requests" }),
      col("Done / failed", { rowspan: 2 }),
      col("req/s", { rowspan: 2 }),
      col("Output tok/s", { rowspan: 2 }),
      h("th", { scope: "colgroup", colspan: 2, class: "group", text: "TTFT ms" }),
      h("th", { scope: "colgroup", colspan: 2, class: "group", text: "ITL ms" }),
      col("E2E ms p50", { rowspan: 2 }),
      col("Prefill tok/s", { rowspan: 2, title: "median prefill tokens per second" }),
      col("Decode tok/s", { rowspan: 2, title: "median decode tokens per second" })),
    h("tr", {}, col("p50"), col("p99"), col("p50"), col("p99")));
  const rows = sorted.map((run, i) => {
    const ttft = obj(run.ttft_ms);
    const itl = obj(run.itl_ms);
    const failed = isNum(run.failed) && run.failed > 0;
    const cell = (value, digits) => h("td", { class: "num", text: num(value, digits) });
    const start = i > 0 && sorted[i - 1].target !== run.target;
    return h("tr", { class: start ? "group-start" : null, dataset: { target: text(run.target), concurrency: text(run.concurrency) } },
      h("th", { scope: "row", class: "target", title: text(run.target), text: text(run.label || run.target) }),
      h("td", { class: "num", text: text(run.concurrency) }),
      h("td", { class: `num${failed ? " failed" : ""}`, text: `${text(run.completed)} / ${text(run.failed)}` }),
      cell(run.request_throughput, 2), cell(run.output_tps, 1),
      cell(ttft.p50, 1), cell(ttft.p99, 1), cell(itl.p50, 1), cell(itl.p99, 1), cell(obj(run.e2e_ms).p50, 0),
      cell(run.prefill_tps_p50, 0), cell(run.decode_tps_p50, 1));
  });
  const table = h("table", { class: "grid-table bench-runs", id: "bench-runs" },
    h("caption", { class: "visually-hidden", text: "Runs by target and concurrency" }), head, h("tbody", {}, ...rows));
  const section = panel("Runs", "bench-runs-title", h("div", { class: "table-scroll" }, table));
  if (!rows.length) section.append(h("p", { class: "muted small empty", text: "No runs recorded." }));
  const failures = sorted.filter((run) => arr(run.errors).length);
  if (failures.length) {
    const errors = h("ul", { class: "bench-errors", id: "bench-errors", "aria-label": "Errors by run" });
    for (const run of failures) {
      for (const error of arr(run.errors).slice(0, 20)) {
        errors.append(h("li", {},
          h("span", { class: "muted", text: `${text(run.label || run.target)} · c ${text(run.concurrency)}: ` }),
          h("span", { text: typeof error === "string" ? error : JSON.stringify(error) })));
      }
    }
    section.append(h("h3", { text: "Errors" }), errors);
  }
  return section;
}

function goalCell(comparison, goal) {
  const value = comparison[goal.key];
  const target = obj(comparison.targets)[goal.key];
  const met = obj(comparison.met)[goal.key];
  const cell = h("td", { class: "num goal", dataset: { goal: goal.key } },
    h("span", { class: "value", text: isNum(value) ? `${value.toFixed(goal.digits)}${goal.unit}` : "–" }));
  if (typeof met === "boolean") {
    cell.dataset.met = String(met);
    cell.append(" ", h("span", { class: `mark ${met ? "met" : "missed"}`, text: met ? "✓ met" : "✗ missed" }));
  }
  if (isNum(target)) cell.append(h("div", { class: "target-line", text: `target ${goal.cmp} ${target}${goal.unit}` }));
  return cell;
}

function comparisonsPanel(comparisons, labelOf) {
  const head = h("thead", {}, h("tr", {},
    h("th", { scope: "col", text: "Platform vs raw" }),
    h("th", { scope: "col", class: "num", text: "Conc." }),
    ...GOALS.map((g) => h("th", { scope: "col", class: "num", text: g.label }))));
  const rows = comparisons.map((c) => {
    const row = obj(c);
    const met = Object.values(obj(row.met)).filter((v) => typeof v === "boolean");
    const verdict = met.length ? `${met.filter(Boolean).length} of ${met.length} targets met` : "";
    return h("tr", { dataset: { door: text(row.door), concurrency: text(row.concurrency) } },
      h("th", { scope: "row" }, h("span", { class: "door", text: labelOf(row.door) }),
        h("span", { class: "muted", text: " vs " }), h("span", { text: labelOf(row.raw) }),
        verdict ? h("div", { class: "target-line", text: verdict }) : null),
      h("td", { class: "num", text: text(row.concurrency) }),
      ...GOALS.map((g) => goalCell(row, g)));
  });
  return panel("Platform vs raw", "bench-comparisons-title",
    h("div", { class: "table-scroll" }, h("table", { class: "grid-table bench-comparisons", id: "bench-comparisons" },
      h("caption", { class: "visually-hidden", text: "The platform's doors against the raw engine, with each target met or missed" }),
      head, h("tbody", {}, ...rows))));
}

function figuresPanel(job, key) {
  const files = obj(job.files);
  const pictures = [
    ["throughput.png", "Throughput", `Output tokens per second by concurrency for each target, benchmark ${job.id}`],
    ["ttft.png", "Time to first token", `Time to first token by concurrency for each target, benchmark ${job.id}`],
  ].filter(([name]) => files[name]);
  if (!pictures.length) return null;
  return panel("Pictures", "bench-figures-title", h("div", { class: "bench-figures" },
    ...pictures.map(([name, caption, alt]) => {
      const img = h("img", { src: `${files[name]}?v=${encodeURIComponent(key)}`, alt,
        dataset: { file: name }, width: 640, height: 400 });
      img.addEventListener("error", () => img.replaceWith(h("p", { class: "muted small", text: `${name} could not be loaded.` })));
      return h("figure", { class: "bench-figure" },
        h("a", { href: files[name], target: "_blank", rel: "noopener", "aria-label": `${caption}, full size` }, img),
        h("figcaption", { text: caption }));
    })));
}

function resultFacts(result) {
  const pairs = Object.entries(obj(result)).slice(0, 16).map(([name, value]) => [
    name,
    isNum(value) ? String(Math.round(value * 1000) / 1000) : typeof value === "object" && value !== null ? JSON.stringify(value) : text(value),
  ]);
  return pairs.length ? facts(pairs, "Key numbers") : null;
}

function externalPanel(external) {
  return panel("External tools", "bench-external-title", h("ul", { class: "bench-external", id: "bench-external" },
    ...external.map((entry) => {
      const e = obj(entry);
      return h("li", {}, h("h3", { text: text(e.tool) }),
        e.command ? h("pre", { class: "log" }, h("code", { text: String(e.command) })) : null,
        resultFacts(e.result));
    })));
}

/** The panels that show ``job``, with its bench.json as read (``loaded``: {data, error}, or none yet). */
export function detailPanels(job, loaded) {
  const bench = loaded && loaded.data;
  const parts = [headPanel(job, bench)];
  if (bench) {
    const runs = arr(bench.runs).map(obj);
    parts.push(runsPanel(runs));
    if (arr(bench.comparisons).length) parts.push(comparisonsPanel(arr(bench.comparisons), labels(runs)));
    parts.push(figuresPanel(job, keyOf(job)));
    if (arr(bench.external).length) parts.push(externalPanel(arr(bench.external)));
  } else {
    let message = "The numbers appear here when the benchmark has written bench.json.";
    if (obj(job.files)["bench.json"] && !loaded) message = "Loading bench.json…";
    else if (loaded && loaded.error) message = `bench.json could not be read: ${loaded.error}`;
    else if (job.status === "succeeded") message = "This job left no bench.json.";
    else if (!ACTIVE.has(job.status)) message = `The benchmark ${job.status} before it wrote bench.json.`;
    parts.push(h("section", { class: "panel" }, h("p", { class: "muted small empty", id: "bench-none", text: message })));
  }
  return parts.filter(Boolean);
}
