// The artifacts panel (the lineage tree, with "Make agent" and "Evaluate" on each) and the
// evaluations table. The buttons' clicks are handled by ./jobs.js (data-action on each).

import { $, h } from "../lib/dom.js";
import { bytes, num } from "../lib/format.js";
import { csrfToken } from "../lib/http.js";
import { state } from "./state.js";

/** A fresh agent slug for an artifact: its name, made URL-safe, and a random tail. */
export function slugFor(artifact) {
  const base = artifact.name.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 60);
  const random = crypto.getRandomValues(new Uint32Array(1))[0].toString(36).slice(0, 5);
  return `${base || "model"}-${random}`;
}

function chatLink(slug) {
  // Starting a chat is a POST (it creates a session), like the picker on the chat page.
  return h("form", { method: "post", action: "/s/new/", class: "inline-form" },
    h("input", { type: "hidden", name: "csrfmiddlewaretoken", value: csrfToken() }),
    h("input", { type: "hidden", name: "agent", value: slug }),
    h("button", { type: "submit", class: "button small primary", text: `Chat with @${slug} →` }));
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
  const li = h("li", { dataset: { artifact: artifact.id } }, row);
  if (children.length) li.append(h("ul", {}, ...children));
  return li;
}

export function renderArtifacts() {
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
