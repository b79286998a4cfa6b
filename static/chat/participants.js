// The agents taking part in a chat and its turn policy: chips with a remove button, an "add"
// menu, and a policy picker. Changes go to PATCH /api/sessions/{id}/ (the server checks them).
// An agent that has tools says so: a badge on its chip naming them, and in the "add" menu.

import { h } from "../lib/dom.js";
import { apiFetch } from "../lib/http.js";
import { icon, iconButton } from "./util.js";

/**
 * Each agent's ``tools`` (names as agents list them: "calculator", "demo.add"), taken into the
 * ``agents`` map. The page's config may carry them; if it does not, GET /api/agents/ (every page
 * of it) does. Resolves to whether anything was learnt.
 */
export async function loadAgentTools(agents) {
  if ([...agents.values()].every((agent) => Array.isArray(agent.tools))) return false;
  let url = "/api/agents/";
  while (url) {
    const page = await apiFetch("GET", url);
    for (const row of page.results || []) {
      const agent = agents.get(row.slug);
      if (agent && Array.isArray(row.tools)) agent.tools = row.tools;
    }
    url = page.next;
  }
  return true;
}

/** "Tools: calculator, demo.add", or "" for an agent without tools. */
export function toolsLine(agent) {
  const tools = agent?.tools || [];
  return tools.length ? `Tools: ${tools.join(", ")}` : "";
}

/** A chip's badge for an agent's tools: a wrench and how many, naming them on hover; or null. */
function toolsBadge(agent) {
  const line = toolsLine(agent);
  if (!line) return null;
  return h("span", { class: "chip-tools", title: line, "aria-label": line, role: "img" },
    icon("tool", "icon"), h("span", { text: String(agent.tools.length), "aria-hidden": "true" }));
}

/** "🤖 Helper · 2 tools" in the "add" menu. */
function optionText(agent) {
  const n = agent.tools?.length || 0;
  return `${agent.emoji || "🤖"} ${agent.name}${n ? ` · ${n} tool${n > 1 ? "s" : ""}` : ""}`;
}

const KINDS = {
  manual: "Manual: @mentions answer, else the first",
  round_robin: "Round robin: everyone in turn",
  debate: "Debate: two argue, a judge decides",
  supervisor: "Supervisor: one agent picks who speaks",
};

export class Participants {
  /**
   * @param {HTMLElement} root
   * @param {object} options  sessionId, agents (Map by slug), session ({agents, turn_policy}),
   *                          onChange(session), onError(text)
   */
  constructor(root, { sessionId, agents, session, onChange, onError }) {
    this.root = root;
    this.sessionId = sessionId;
    this.agents = agents;
    this.slugs = session.agents || [];
    this.policy = session.turn_policy || { kind: "manual" };
    this.onChange = onChange;
    this.onError = onError;
    this.render();
    // Filled in where they stand, not re-rendered: the reader may be using the policy form.
    loadAgentTools(agents).then((learnt) => {
      if (learnt) this.showTools();
    }, () => {}); // without the list the chips just do not name tools
  }

  showTools() {
    for (const chip of this.root.querySelectorAll(".chip[data-agent]")) {
      const badge = toolsBadge(this.agents.get(chip.dataset.agent));
      if (badge && !chip.querySelector(".chip-tools")) chip.querySelector(".chip-name").after(badge);
    }
    for (const option of this.root.querySelectorAll(".chip-add option[value]")) {
      const agent = this.agents.get(option.value);
      if (agent) Object.assign(option, { textContent: optionText(agent), title: toolsLine(agent) });
    }
  }

  name(slug) {
    return this.agents.get(slug)?.name || slug;
  }

  async save(patch) {
    // Said once the server has stored it: a message sent before then would follow the old policy.
    this.status = "turn_policy" in patch ? "Saving…" : "";
    this.render();
    try {
      const session = await apiFetch("PATCH", `/api/sessions/${this.sessionId}/`, patch);
      this.slugs = session.agents;
      this.policy = session.turn_policy;
      this.status = "turn_policy" in patch ? "Applied" : "";
      this.onChange?.(session);
    } catch (error) {
      this.status = "";
      this.onError?.(error.message);
    }
    this.render();
  }

  render() {
    const chips = this.slugs.map((slug, index) => {
      const agent = this.agents.get(slug);
      const remove = iconButton("x", `Remove ${this.name(slug)}`, { "data-remove": slug, class: "icon-button chip-remove" });
      remove.disabled = this.slugs.length === 1;
      return h("li", { class: "chip", "data-agent": slug, title: index === 0 ? "Answers when nobody is named" : "" },
        h("span", { class: "chip-avatar", "aria-hidden": "true", text: agent?.emoji || "🤖" }),
        h("span", { class: "chip-name", text: this.name(slug) }),
        toolsBadge(agent),
        index === 0 ? h("span", { class: "chip-default muted", text: "default" }) : null,
        remove);
    });
    const addable = [...this.agents.values()].filter((a) => !this.slugs.includes(a.slug));
    const add = h("select", { class: "chip-add", "aria-label": "Add an agent to this chat" },
      h("option", { value: "", text: "+ Add agent" }),
      ...addable.map((a) => h("option", { value: a.slug, title: toolsLine(a), text: optionText(a) })));
    add.disabled = addable.length === 0;
    add.addEventListener("change", () => {
      if (add.value) this.save({ agents: [...this.slugs, add.value] });
    });
    const list = h("ul", { class: "chips", "aria-label": "Agents in this chat" }, ...chips);
    list.addEventListener("click", (event) => {
      const button = event.target.closest("[data-remove]");
      if (button) this.save({ agents: this.slugs.filter((s) => s !== button.dataset.remove) });
    });
    this.root.replaceChildren(list, add, this.policyForm());
  }

  policyForm() {
    const kind = h("select", { name: "kind", "aria-label": "Turn policy" },
      ...Object.entries(KINDS).map(([value, label]) => h("option", { value, text: label })));
    kind.value = this.policy.kind;
    const agentSelect = (name, label, value) => {
      const select = h("select", { name, "aria-label": label },
        ...this.slugs.map((slug) => h("option", { value: slug, text: this.name(slug) })));
      if (value) select.value = value;
      return h("label", { class: "policy-field", "data-field": name }, h("span", { text: label }), select);
    };
    const number = (name, label, value, max) => h("label", { class: "policy-field", "data-field": name },
      h("span", { text: label }),
      h("input", { type: "number", name, min: "1", max: String(max), value: String(value ?? 1), "aria-label": label }));
    const fields = {
      rounds: number("rounds", "Rounds", this.policy.rounds ?? 1, 10),
      judge: agentSelect("judge", "Judge", this.policy.judge),
      supervisor: agentSelect("supervisor", "Supervisor", this.policy.supervisor),
      max_turns: number("max_turns", "Most turns", this.policy.max_turns ?? 4, 12),
    };
    const shown = { manual: [], round_robin: ["rounds"], debate: ["rounds", "judge"], supervisor: ["supervisor", "max_turns"] };
    const apply = h("button", { type: "submit", class: "button small", text: "Apply" });
    apply.disabled = this.status === "Saving…";
    const status = h("span", { class: "policy-status muted", role: "status", text: this.status || "" });
    const form = h("form", { class: "policy", "aria-label": "Who answers" }, kind, ...Object.values(fields), apply, status);
    const showFields = () => {
      for (const [name, field] of Object.entries(fields)) field.hidden = !shown[kind.value].includes(name);
    };
    kind.addEventListener("change", showFields);
    form.addEventListener("input", () => {
      this.status = "";
      status.textContent = "";
    });
    showFields();
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const policy = { kind: kind.value };
      for (const name of shown[kind.value]) {
        const input = form.elements[name];
        policy[name] = input.type === "number" ? Number(input.value) : input.value;
      }
      this.save({ turn_policy: policy });
    });
    return form;
  }
}

/** "@" completion in the message box: the chat's agents whose slug starts with what was typed. */
export function mentionCompleter(textarea, list, slugsOf, nameOf) {
  let matches = [];
  let active = 0;
  const close = () => {
    list.hidden = true;
    matches = [];
  };
  const word = () => {
    const before = textarea.value.slice(0, textarea.selectionStart);
    const found = /(?:^|\s)@([\w-]*)$/.exec(before);
    return found ? found[1] : null;
  };
  const show = () => {
    list.replaceChildren(...matches.map((slug, i) => h("li", {
      role: "option", id: `mention-${slug}`, "data-slug": slug, "aria-selected": String(i === active),
      text: `@${slug} · ${nameOf(slug)}`,
    })));
    list.hidden = matches.length === 0;
    textarea.setAttribute("aria-activedescendant", matches.length ? `mention-${matches[active]}` : "");
  };
  const insert = (slug) => {
    const start = textarea.selectionStart;
    const before = textarea.value.slice(0, start).replace(/@[\w-]*$/, `@${slug} `);
    textarea.value = before + textarea.value.slice(start);
    textarea.selectionStart = textarea.selectionEnd = before.length;
    close();
    textarea.dispatchEvent(new Event("input"));
  };
  textarea.addEventListener("input", () => {
    const typed = word();
    if (typed === null) return close();
    matches = slugsOf().filter((slug) => slug.startsWith(typed));
    active = 0;
    show();
  });
  textarea.addEventListener("keydown", (event) => {
    if (list.hidden || !matches.length) return;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      active = (active + (event.key === "ArrowDown" ? 1 : matches.length - 1)) % matches.length;
      show();
    } else if (event.key === "Enter" || event.key === "Tab") {
      event.preventDefault();
      event.stopImmediatePropagation(); // not a send
      insert(matches[active]);
    } else if (event.key === "Escape") {
      close();
    }
  });
  list.addEventListener("mousedown", (event) => {
    const option = event.target.closest("[data-slug]");
    if (option) {
      event.preventDefault();
      insert(option.dataset.slug);
    }
  });
  textarea.addEventListener("blur", () => setTimeout(close, 100));
}
