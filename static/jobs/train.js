// The parts of the dashboard for fine-tuning and synthesis that a JSON Schema cannot describe: the
// datasets to pick or upload, the user's chats, the agent that writes examples, what runs after a
// job (the job list's loss pictures are ./loss.js). Names, dataset errors and chat titles are
// untrusted: text only, never HTML.

import { h } from "../lib/dom.js";
import { timeLabel } from "../lib/format.js";
import { getJSON, send } from "../lib/http.js";

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

/** POST a file to /api/datasets/; resolves to {ok, body, message}. */
async function uploadDataset(file) {
  const form = new FormData();
  form.append("file", file);
  const result = await send("POST", "/api/datasets/", form);
  if (result.status === 0) {
    return { ...result, message: `The upload did not reach the server (${result.message}); try again.` };
  }
  return result;
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
  getJSON("/api/sessions/").then(
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
  getJSON("/api/agents/").then(
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
