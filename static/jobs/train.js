// The parts of the dashboard for fine-tuning and synthesis that a JSON Schema cannot describe: the
// datasets to pick or upload, the user's chats, the agent that writes examples, what runs after a
// job; and in the job list, the live loss sparkline, the loss-curve picture and a run's numbers.
// Names, dataset errors and chat titles are untrusted: text only, never HTML.

import { apiFetch, h, timeLabel } from "../chat/util.js";

const SVG = "http://www.w3.org/2000/svg";
const FIGURE_EVERY_MS = 5000;

/** Labels where the schema's title would not say enough (keys: field, or object-sub-field). */
export const LABELS = {
  self_cognition: "Self-cognition",
  "self_cognition-name": "Name",
  "self_cognition-author": "Author",
  "self_cognition-name_zh": "Chinese name",
  "self_cognition-author_zh": "Chinese author",
  "self_cognition-languages": "Languages",
  "self_cognition-languages.en": "English",
  "self_cognition-languages.zh": "Chinese",
  datasets: "Datasets",
  sessions: "Learn from these chats",
  preferences: "Learn the replies I picked in compare",
  target_modules: "Target modules",
  then: "Then",
  spec: "Spec (JSON)",
};

export const HINTS = {
  self_cognition: "Teach the model its name and who made it (built-in question-and-answer rows).",
  "self_cognition-name": null,
  "self_cognition-author": null,
  "self_cognition-author_zh": null,
  "self_cognition-name_zh": null,
  "self_cognition-languages": "Chinese rows use Name and Author unless the Chinese ones are given.",
  preferences: "Where you picked one of two replies in a compare chat: the one you picked.",
  sessions: "Your own chats; each is copied when the job starts, so later edits do not change it.",
  spec: "A domain, its intents and their slots. Checked when you press Start.",
};

/** Settings most runs leave at their defaults: folded under "More settings". */
export const ADVANCED = {
  finetune_lora: ["repeat", "rank", "alpha", "dropout", "target_modules", "max_length", "seed", "keep_checkpoints",
    "resume_from", "device"],
  synthesize: ["max_attempts", "top_p", "seed", "max_tokens"],
};

/** What a JSON field starts with: a two-intent example a user edits into their own. */
export const EXAMPLES = {
  spec: {
    domain: "meeting room control",
    language: "en",
    intents: [
      {
        name: "meeting.start",
        description: "Start a meeting in a room",
        slots: { room: { type: "string", description: "The meeting room", examples: ["Orion", "Room 4"] } },
        required: ["room"],
        examples: ["Start the meeting in Orion", "Kick off our call in room 4"],
      },
      {
        name: "meeting.mute",
        description: "Mute a participant",
        slots: { participant: { type: "string", description: "Who to mute", values: ["Alice", "Bob", "Carol"] } },
        required: ["participant"],
        examples: ["Mute Bob", "Please silence Carol"],
      },
    ],
  },
};

// Presets for `then`: jobs to run in turn on a Hugging Face model a job made.
const THEN_PRESETS = [
  { label: "nothing more", value: [] },
  { label: "Convert to GGUF (f16)", value: [{ kind: "convert", params: { to: "gguf", outtype: "f16" } }] },
  {
    label: "Convert to GGUF, quantize Q4_K_M",
    value: [
      { kind: "convert", params: { to: "gguf", outtype: "f16" } },
      { kind: "quantize_gguf", params: { type: "Q4_K_M" } },
    ],
  },
  { label: "Export to OpenVINO int4", value: [{ kind: "export_openvino", params: { weight_format: "int4" } }] },
];
// The kinds whose result the presets fit (a float Hugging Face model), and when.
const THEN_KINDS = {
  finetune_lora: () => true,
  convert: (container) => container.querySelector('select[name="to"]')?.value === "hf",
};

export function artifactOptions(select, artifacts, formats, { allowNone = false, noneLabel = "none" } = {}) {
  const previous = select.value;
  select.replaceChildren();
  if (allowNone) select.append(h("option", { value: "", text: noneLabel }));
  const matching = artifacts.filter((a) => formats.includes(a.format));
  for (const a of [...matching].reverse()) {
    const quant = a.quantization ? ` ${a.quantization}` : "";
    select.append(h("option", { value: a.id, title: `${a.format}${quant}`, text: `#${a.id} ${a.name}` }));
  }
  if (!allowNone && !matching.length) {
    select.append(h("option", { value: "", text: `no ${formats.join(" / ")} artifact yet` }));
  }
  if ([...select.options].some((o) => o.value === previous)) select.value = previous;
}

function checkedValues(list) {
  return [...list.querySelectorAll("input[type=checkbox]:checked")].map((box) => Number(box.value));
}

function showFieldError(id, message) {
  const box = document.getElementById(`${id}-error`);
  if (!box) return;
  box.textContent = message;
  box.hidden = !message;
  const control = document.getElementById(id);
  if (message) {
    control?.setAttribute("aria-invalid", "true");
    control?.setAttribute("aria-errormessage", box.id);
  } else {
    control?.removeAttribute("aria-invalid");
  }
}

/** POST a file to /api/datasets/ with the page's CSRF token; resolves to {ok, body}. */
async function uploadDataset(file) {
  const form = new FormData();
  form.append("file", file);
  const token = document.querySelector('meta[name="csrf-token"]')?.content || "";
  try {
    const response = await fetch("/api/datasets/", {
      method: "POST", credentials: "same-origin", body: form,
      headers: { Accept: "application/json", "X-CSRFToken": token },
    });
    let body = null;
    try {
      body = await response.json();
    } catch {
      /* not JSON */
    }
    const message = body?.message || body?.detail || `HTTP ${response.status}`;
    return { ok: response.ok, body, message };
  } catch (err) {
    return { ok: false, body: null, message: `The upload did not reach the server (${err.message}); try again.` };
  }
}

function datasetsWidget({ id, ctx }) {
  const list = h("div", { class: "checklist", id, tabindex: -1 });
  const uploaded = new Map(); // shown even before the artifact list is read again
  const render = (artifacts) => {
    const keep = new Set(checkedValues(list));
    const known = new Set(artifacts.map((a) => a.id));
    const all = [...artifacts.filter((a) => a.format === "dataset"), ...[...uploaded.values()].filter((a) => !known.has(a.id))];
    all.sort((a, b) => b.id - a.id);
    list.replaceChildren();
    for (const a of all) {
      const box = h("input", { type: "checkbox", value: a.id });
      box.checked = keep.has(a.id);
      const rows = a.details && a.details.records != null ? `${a.details.records} rows` : "";
      list.append(h("label", { class: "check", title: a.name }, box, h("span", { class: "item-name", text: ` #${a.id} ${a.name}` }),
        rows ? h("span", { class: "item-meta", text: rows }) : null));
    }
    if (!all.length) list.append(h("p", { class: "muted small empty", text: "No dataset yet: upload a JSONL file of chats." }));
  };
  render(ctx.artifacts);
  const file = h("input", { type: "file", id: `${id}-file`, class: "visually-hidden",
    accept: ".jsonl,.json,.txt,application/jsonl,application/x-ndjson,application/json" });
  const status = h("span", { class: "muted small upload-status", role: "status" });
  file.addEventListener("change", async () => {
    const chosen = file.files && file.files[0];
    if (!chosen) return;
    showFieldError(id, "");
    status.textContent = `uploading ${chosen.name}…`;
    const result = await uploadDataset(chosen);
    file.value = ""; // the same file again after fixing it is a new choice
    if (!result.ok) {
      status.textContent = "";
      showFieldError(id, result.message);
      return;
    }
    const artifact = result.body;
    uploaded.set(artifact.id, artifact);
    render(ctx.artifacts);
    const box = list.querySelector(`input[value="${artifact.id}"]`);
    if (box) box.checked = true;
    status.textContent = `added #${artifact.id} (${artifact.details?.records ?? "?"} rows)`;
  });
  const control = h("div", { class: "dataset-picker" }, list,
    h("div", { class: "upload-line" }, h("label", { class: "button small upload" }, "Upload JSONL…", file), status));
  return {
    control, group: true, type: "datasets",
    hint: 'JSONL, one chat a line: {"messages": [{"role": "user", …}, {"role": "assistant", …}]}.',
    read: () => checkedValues(list),
    refresh: (artifacts) => {
      ctx.artifacts = artifacts;
      render(artifacts);
    },
  };
}

function sessionsWidget({ id }) {
  const list = h("div", { class: "checklist", id, tabindex: -1 }, h("p", { class: "muted small empty", text: "loading your chats…" }));
  apiFetch("GET", "/api/sessions/").then(
    (data) => {
      const sessions = Array.isArray(data) ? data : data.results || [];
      list.replaceChildren();
      for (const s of sessions) {
        const box = h("input", { type: "checkbox", value: s.id });
        list.append(h("label", { class: "check", title: s.title || "Untitled chat" }, box,
          h("span", { class: "item-name", text: ` ${s.title || "Untitled chat"}` }),
          h("span", { class: "item-meta", text: timeLabel(s.updated_at || s.created_at) })));
      }
      if (!sessions.length) list.append(h("p", { class: "muted small empty", text: "No chats of yours yet." }));
    },
    (err) => list.replaceChildren(h("p", { class: "muted small empty", text: `Your chats were not loaded: ${err.message}` })),
  );
  return { control: list, group: true, type: "sessions", read: () => checkedValues(list) };
}

function thenWidget({ id, name, ctx }) {
  const fits = THEN_KINDS[ctx.kind.name];
  if (!fits) return null; // a kind whose result no preset fits: `then` is left out
  const select = h("select", { id, name });
  THEN_PRESETS.forEach((preset, i) => select.append(h("option", { value: String(i), text: preset.label })));
  return {
    control: select, type: "then",
    hint: "Jobs to run in turn on the model this job makes, once it succeeds.",
    read: () => {
      const value = THEN_PRESETS[Number(select.value)].value;
      return value.length ? value : undefined;
    },
    showIf: fits,
  };
}

function agentWidget({ id, name, ctx }) {
  const select = h("select", { id, name }, h("option", { value: "", text: "loading agents…" }));
  apiFetch("GET", "/api/agents/").then(
    (data) => {
      const agents = Array.isArray(data) ? data : data.results || [];
      const formats = new Map(ctx.artifacts.map((a) => [a.id, a.format]));
      const fit = agents.filter((a) => a.model != null && ctx.kind.sources.includes(formats.get(a.model)));
      select.replaceChildren(h("option", { value: "", text: "none: use the Source below" }));
      for (const a of fit) {
        select.append(h("option", { value: a.slug, title: a.model_name || "", text: `${a.name} (@${a.slug})` }));
      }
      if (fit.length) select.value = fit[0].slug;
    },
    (err) => select.replaceChildren(h("option", { value: "", text: `agents not loaded: ${err.message}` })),
  );
  return {
    control: select, type: "agent", hint: "Its model writes the examples, with this job's own sampling settings.",
    read: () => select.value || undefined,
  };
}

export const WIDGETS = { datasets: datasetsWidget, sessions: sessionsWidget, then: thenWidget, agent: agentWidget };

// --- the job list ------------------------------------------------------------------------------

/** The loss by step as a small inline SVG (DOM APIs only), or null with under two points. */
export function sparkline(history, label) {
  const points = (history || []).filter((p) => Array.isArray(p) && Number.isFinite(p[1]));
  if (points.length < 2) return null;
  const width = 72;
  const height = 16;
  const steps = points.map((p) => p[0]);
  const losses = points.map((p) => p[1]);
  const [x0, x1] = [Math.min(...steps), Math.max(...steps)];
  const [y0, y1] = [Math.min(...losses), Math.max(...losses)];
  const x = (s) => (x1 === x0 ? 0 : ((s - x0) / (x1 - x0)) * (width - 2)) + 1;
  const y = (l) => (y1 === y0 ? height / 2 : 1 + (1 - (l - y0) / (y1 - y0)) * (height - 2));
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(height));
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const title = document.createElementNS(SVG, "title");
  title.textContent = label;
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" "));
  const last = points[points.length - 1];
  const dot = document.createElementNS(SVG, "circle");
  dot.setAttribute("cx", x(last[0]).toFixed(1));
  dot.setAttribute("cy", y(last[1]).toFixed(1));
  dot.setAttribute("r", "1.8");
  svg.append(title, line, dot);
  return svg;
}

/** A fine-tune's loss by step: the finished run's whole curve, else the live one. */
export function lossHistory(job) {
  const done = job.result && job.result.finetune_lora;
  return (done && done.loss_history) || (job.metrics && job.metrics.loss_history) || [];
}

/** "← after #12 · then: convert → quantize_gguf" (and "resumes #9" for a resumed fine-tune), or "". */
export function chainText(job) {
  const parts = [];
  if (job.after != null) parts.push(`← after #${job.after}`);
  if (job.params && job.params.resume_from != null) parts.push(`resumes #${job.params.resume_from}`);
  const then = job.params && Array.isArray(job.params.then) ? job.params.then : [];
  if (then.length) parts.push(`then: ${then.map((step) => step.kind).join(" → ")}`);
  return parts.join(" · ");
}

function fixed(x, digits) {
  return x == null || !Number.isFinite(Number(x)) ? "–" : Number(x).toFixed(digits);
}

/** A fine-tune's numbers: the finished run's from its result, else the live ones. */
export function trainFacts(job) {
  const done = job.result && job.result.finetune_lora;
  if (done) {
    const parts = [`${done.steps} steps`, `loss ${fixed(done.first_loss, 3)} → ${fixed(done.last_loss, 3)}`,
      `${fixed(done.train_seconds, 1)} s training`];
    if (done.examples != null) parts.push(`${done.examples} examples`);
    if (done.stopped) parts.push("stopped early: resumable");
    return parts.join(" · ");
  }
  const m = job.metrics || {};
  if (m.step == null) return "";
  const parts = [`step ${m.step}/${m.steps ?? "?"}`, `loss ${fixed(m.loss, 3)}`];
  if (m.learning_rate != null) parts.push(`lr ${Number(m.learning_rate).toExponential(1)}`);
  if (m.epoch != null) parts.push(`epoch ${fixed(m.epoch, 2)}`);
  return parts.join(" · ");
}

// The loss picture of each open job: the job it was last asked for, and when.
const figures = new Map(); // job id -> {job, at, key, timer}

function figureLoad(img, job) {
  const url = job.files && job.files["loss.png"];
  const seen = figures.get(job.id);
  if (!url || !seen) return;
  const key = `${job.status}:${job.metrics?.step ?? ""}:${job.finished_at || ""}`;
  if (seen.key === key) return;
  const wait = seen.at + FIGURE_EVERY_MS - Date.now();
  if (wait > 0) {
    // At most one load every few seconds; the newest state is loaded when the time comes.
    if (!seen.timer) {
      seen.timer = setTimeout(() => {
        seen.timer = 0;
        if (img.isConnected) figureLoad(img, seen.job);
      }, wait);
    }
    return;
  }
  seen.key = key;
  seen.at = Date.now();
  img.hidden = false;
  img.src = `${url}?v=${encodeURIComponent(key)}`; // a new address: the browser reads the file again
}

/** The expanded row's loss picture and numbers, kept between events so the image does not flicker. */
export function patchFigure(body, job) {
  const url = job.files && job.files["loss.png"];
  let figure = body.querySelector(".loss-figure");
  const facts = job.kind === "finetune_lora" ? trainFacts(job) : "";
  if (!url && !facts) {
    figure?.remove();
    body.classList.remove("with-figure");
    return;
  }
  if (!figure) {
    forgetFigure(job.id); // a new picture element: load it now
    const img = h("img", { class: "loss", alt: `Training loss by optimizer step, job ${job.id}`, width: 640, height: 360,
      hidden: true });
    img.addEventListener("error", () => (img.hidden = true));
    figure = h("figure", { class: "loss-figure" }, img, h("figcaption", {}));
    body.append(figure);
    body.classList.add("with-figure");
  }
  const caption = figure.querySelector("figcaption");
  if (caption.textContent !== facts) caption.textContent = facts;
  const seen = figures.get(job.id) || { at: 0, key: "", timer: 0 };
  seen.job = job;
  figures.set(job.id, seen);
  figureLoad(figure.querySelector("img"), job);
}

/** The job's log was folded: forget its picture's timer. */
export function forgetFigure(id) {
  const seen = figures.get(id);
  if (seen && seen.timer) clearTimeout(seen.timer);
  figures.delete(id);
}
