// The new-job form, built from a kind's JSON Schema (GET /api/jobs/kinds/): an enum is a select, a
// boolean a checkbox, a number an input with the schema's bounds, a list of strings a comma
// separated input (of an enum: checkboxes), an optional object a fieldset with an on/off switch,
// any other object a JSON text area. `source` and `dataset` pick artifacts; the fields a schema
// cannot describe (datasets to upload, chats, agents, what to run next) come from ./train.js.
// A 400 from the server is shown under the top-level field it names (`params.self_cognition.name`).

import { h } from "../lib/dom.js";
import { problem } from "../lib/http.js";
import { ADVANCED, EXAMPLES, HINTS, LABELS, WIDGETS, artifactOptions } from "./train.js";

const NO_DATASET = "none: the built-in text";

/** A value a field cannot give (bad JSON, say): shown under the field, nothing is posted. */
export class FieldError extends Error {
  constructor(field, message) {
    super(message);
    this.field = field;
  }
}

// Per field wrapper: how to read its value (undefined: leave it out), how to refresh its choices.
const readers = new WeakMap();
const refreshers = new WeakMap();
const showIfs = new WeakMap();

function resolve(schema, defs) {
  return schema && schema.$ref ? defs[schema.$ref.split("/").pop()] || {} : schema || {};
}

/** The schema without its `anyOf [X, null]` wrapping; `nullable` says whether null was allowed. */
function unwrap(schema, defs) {
  const plain = resolve(schema, defs);
  if (!plain.anyOf) return { ...plain, nullable: false };
  const branches = plain.anyOf.filter((s) => s.type !== "null");
  const nullable = branches.length < plain.anyOf.length;
  if (branches.length !== 1) return { ...plain, nullable };
  const { anyOf, ...outer } = plain;
  const inner = resolve(branches[0], defs);
  return { ...inner, ...outer, title: outer.title ?? inner.title, description: outer.description ?? inner.description,
    nullable };
}

function fieldType(schema, defs) {
  if (schema.enum) return "enum";
  if (schema.type === "array") return resolve(schema.items, defs).enum ? "multi" : "list";
  if (schema.type === "object" || schema.properties) return schema.nullable ? "optional-object" : "json";
  return schema.type || "string";
}

function humanize(name) {
  const text = name.replace(/_/g, " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** `id`'s label, hint and error box around a control; a group of controls is named by its label. */
function scaffold(name, id, type, label, hint, control, { group = false, tag = "div", sub = false } = {}) {
  const wrap = h(tag, { class: `field field-${type}`, dataset: sub ? { sub: name, type } : { param: name, type } });
  const help = hint ? h("p", { class: "hint", id: `${id}-help`, text: hint }) : null;
  const focusable = control.matches("input, select, textarea") ? control : control.querySelector(`#${CSS.escape(id)}`);
  if (help && focusable) focusable.setAttribute("aria-describedby", `${id}-help`);
  if (type === "boolean") {
    wrap.append(h("label", { class: "check" }, control, ` ${label}`));
  } else if (group) {
    control.setAttribute("role", "group");
    control.setAttribute("aria-labelledby", `${id}-label`);
    if (help) control.setAttribute("aria-describedby", `${id}-help`);
    wrap.append(h("span", { class: "field-label", id: `${id}-label`, text: label }), control);
  } else {
    wrap.append(h("label", { for: id, text: label }), control);
  }
  if (help) wrap.append(help);
  wrap.append(h("p", { class: "field-error", id: `${id}-error`, hidden: true }));
  return wrap;
}

function numberInput(id, name, type, schema) {
  const input = h("input", {
    id, name, type: "number", inputmode: type === "integer" ? "numeric" : "decimal",
    step: type === "integer" ? "1" : "any",
    min: schema.minimum ?? schema.exclusiveMinimum, max: schema.maximum ?? schema.exclusiveMaximum,
    placeholder: schema.nullable && schema.default == null ? "none" : null,
  });
  if (schema.default != null) input.value = String(schema.default);
  return input;
}

function buildField(name, rawSchema, ctx, prefix = "") {
  const schema = unwrap(rawSchema, ctx.defs);
  const id = `param-${prefix}${name}`;
  const type = fieldType(schema, ctx.defs);
  const key = `${prefix}${name}`;
  const label = LABELS[key] || schema.title || humanize(name);
  const hint = key in HINTS ? HINTS[key] : name === "source" ? null : schema.description;
  const sub = Boolean(prefix);
  const widget = !sub && WIDGETS[name];
  if (widget) {
    const made = widget({ id, name, schema, ctx });
    if (!made) return null;
    const wrap = scaffold(name, id, made.type || type, label, made.hint ?? hint, made.control, { group: made.group });
    readers.set(wrap, made.read);
    if (made.refresh) refreshers.set(wrap, made.refresh);
    if (made.showIf) showIfs.set(wrap, made.showIf);
    return wrap;
  }
  let input;
  let read;
  let group = false;
  if (name === "source") {
    input = h("select", { id, name });
    const none = schema.nullable ? { allowNone: true, noneLabel: "none: the agent's model" } : {};
    artifactOptions(input, ctx.artifacts, ctx.kind.sources, none);
    refreshers.set(input, (artifacts) => artifactOptions(input, artifacts, ctx.kind.sources, none));
    read = () => (input.value === "" ? undefined : Number(input.value));
  } else if (name === "dataset") {
    input = h("select", { id, name });
    const none = { allowNone: true, noneLabel: NO_DATASET };
    artifactOptions(input, ctx.artifacts, ["dataset"], none);
    refreshers.set(input, (artifacts) => artifactOptions(input, artifacts, ["dataset"], none));
    read = () => (input.value === "" ? null : Number(input.value));
  } else if (type === "enum") {
    input = h("select", { id, name });
    for (const value of schema.enum) input.append(h("option", { value: String(value), text: String(value) }));
    if (schema.default !== undefined) input.value = String(schema.default);
    read = () => schema.enum.find((v) => String(v) === input.value);
  } else if (type === "boolean") {
    input = h("input", { id, name, type: "checkbox" });
    input.checked = Boolean(schema.default);
    read = () => input.checked;
  } else if (type === "integer" || type === "number") {
    input = numberInput(id, name, type, schema);
    // Empty: left out, so the server's default applies (null for a nullable number).
    read = () => (input.value === "" ? undefined : Number(input.value));
  } else if (type === "multi") {
    group = true;
    input = h("div", { class: "choices", id, tabindex: -1 });
    const values = resolve(schema.items, ctx.defs).enum;
    const chosen = new Set(schema.default || []);
    for (const value of values) {
      const box = h("input", { type: "checkbox", name: key, value: String(value) });
      box.checked = chosen.has(value);
      input.append(h("label", { class: "check" }, box, ` ${LABELS[`${key}.${value}`] || value}`));
    }
    read = () => values.filter((v) => input.querySelector(`input[value="${CSS.escape(String(v))}"]`).checked);
  } else if (type === "list") {
    input = h("input", { id, name, type: "text", placeholder: "comma separated" });
    if (Array.isArray(schema.default)) input.value = schema.default.join(", ");
    const number = ["integer", "number"].includes(resolve(schema.items, ctx.defs).type);
    read = () => {
      const items = input.value.split(",").map((s) => s.trim()).filter(Boolean);
      if (!items.length) return undefined;
      return number ? items.map(Number) : items;
    };
  } else if (type === "optional-object") {
    return objectField(name, id, schema, label, hint, ctx);
  } else if (type === "json") {
    input = h("textarea", { id, name, class: "json", rows: 12, wrap: "off", spellcheck: "false", autocomplete: "off" });
    const example = EXAMPLES[key] ?? schema.default;
    input.value = example === undefined ? "{}" : JSON.stringify(example, null, 2);
    read = () => {
      try {
        return JSON.parse(input.value);
      } catch (err) {
        throw new FieldError(`params.${key}`, `${key}: not valid JSON (${err.message})`);
      }
    };
  } else {
    input = h("input", { id, name, type: "text", minlength: schema.minLength, maxlength: schema.maxLength,
      placeholder: schema.nullable ? "optional" : null });
    if (schema.default != null) input.value = String(schema.default);
    // An empty optional text is left out; an empty required one is sent, so the server names it.
    read = () => (input.value === "" && (schema.nullable || schema.default !== undefined) ? undefined : input.value);
  }
  const wrap = scaffold(name, id, type, label, hint, input, { group, sub });
  if (input.type === "number") wrap.classList.add("pair"); // two to a line
  readers.set(wrap, read);
  if (refreshers.has(input)) refreshers.set(wrap, refreshers.get(input));
  return wrap;
}

/** A nullable object (`self_cognition`): a fieldset switched on by its checkbox, its own fields inside. */
function objectField(name, id, schema, label, hint, ctx) {
  const toggle = h("input", { type: "checkbox", id: `${id}-on`, "aria-controls": `${id}-fields` });
  const inner = h("div", { class: "subfields", id: `${id}-fields`, hidden: true });
  const subs = [];
  for (const [sub, subSchema] of Object.entries(schema.properties || {})) {
    const field = buildField(sub, subSchema, ctx, `${name}-`);
    if (field) {
      inner.append(field);
      subs.push(field);
    }
  }
  toggle.addEventListener("change", () => {
    inner.hidden = !toggle.checked;
    if (toggle.checked) inner.querySelector("input, select, textarea")?.focus();
  });
  const wrap = h("fieldset", { class: "field field-object", id, tabindex: -1, dataset: { param: name, type: "object" } },
    h("legend", {}, h("label", { class: "check" }, toggle, ` ${label}`)),
    hint ? h("p", { class: "hint", id: `${id}-help`, text: hint }) : null,
    inner,
    h("p", { class: "field-error", id: `${id}-error`, hidden: true }));
  if (hint) toggle.setAttribute("aria-describedby", `${id}-help`);
  readers.set(wrap, () => {
    if (!toggle.checked) return schema.default === undefined ? null : undefined;
    const value = {};
    for (const field of subs) {
      const v = readers.get(field)();
      if (v !== undefined) value[field.dataset.sub] = v;
    }
    return value;
  });
  return wrap;
}

function syncVisibility(container) {
  for (const wrap of container.querySelectorAll("[data-param]")) {
    const showIf = showIfs.get(wrap);
    if (showIf) wrap.hidden = !showIf(container);
  }
}

/** Replace the fields in `container` with those of `kind`, defaults filled in; its less common
 * settings (ADVANCED) go in a folded "More settings". */
export function renderFields(container, kind, artifacts) {
  container.replaceChildren();
  if (!kind) return;
  const ctx = { kind, artifacts, defs: kind.schema.$defs || {}, container };
  const advanced = ADVANCED[kind.name] || [];
  const more = h("div", { class: "more-fields" });
  for (const [name, schema] of Object.entries(kind.schema.properties || {})) {
    const field = buildField(name, schema, ctx);
    if (field) (advanced.includes(name) ? more : container).append(field);
  }
  if (more.childElementCount) {
    container.append(h("details", { class: "more" },
      h("summary", { text: `More settings (${more.childElementCount})` }), more));
  }
  if (!container.dataset.watching) {
    container.dataset.watching = "1";
    container.addEventListener("change", () => syncVisibility(container));
  }
  syncVisibility(container);
}

/** The artifacts changed: offer the new ones, keeping what is picked. */
export function refreshArtifactSelects(container, kind, artifacts) {
  if (!kind) return;
  for (const wrap of container.querySelectorAll("[data-param]")) refreshers.get(wrap)?.(artifacts);
}

/** The params as the schema types them; an empty field is left out, so the default applies. A
 * value that cannot be read throws FieldError naming it. */
export function formParams(container) {
  const params = {};
  for (const wrap of container.querySelectorAll("[data-param]")) {
    if (wrap.hidden) continue;
    const value = readers.get(wrap)?.();
    if (value !== undefined) params[wrap.dataset.param] = value;
  }
  return params;
}

export function clearErrors(form) {
  for (const box of form.querySelectorAll(".field-error")) {
    box.hidden = true;
    box.textContent = "";
  }
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
}

/** Show a 400's message under the field it names (`params.type`), else above the Start button. The
 * deepest control the path names is marked invalid (`params.self_cognition.name`: its Name). */
export function showError(form, body, status) {
  const field = (body && body.field) || "";
  const path = field.startsWith("params.") ? field.slice("params.".length).split(".") : field ? [field] : [];
  const name = path[0] || "";
  const box = name ? form.querySelector(`#param-${CSS.escape(name)}-error`) : null;
  const message = problem(body, `HTTP ${status}`);
  const target = box || form.querySelector("#job-form-error");
  target.textContent = message;
  target.hidden = false;
  let input = null;
  for (let n = path.length; n > 0 && !input; n -= 1) {
    input = form.querySelector(`#param-${CSS.escape(path.slice(0, n).join("-"))}`);
  }
  if (input) {
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-errormessage", target.id);
    input.closest("details")?.setAttribute("open", "");
    input.focus();
  }
}
