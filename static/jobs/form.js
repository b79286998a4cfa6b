// The new-job form, built from a kind's JSON Schema (GET /api/jobs/kinds/): an enum is a select, a
// boolean a checkbox, a number an input with the schema's bounds; `source` and `dataset` pick
// artifacts. A 400 from the server is shown under the field it names.

import { h } from "../chat/util.js";

const NO_DATASET = "none: the built-in text";

function fieldType(schema) {
  if (schema.enum) return "enum";
  if (schema.type) return schema.type;
  const types = (schema.anyOf || []).map((s) => s.type).filter((t) => t !== "null");
  return types[0] || "string";
}

function artifactOptions(select, artifacts, formats, { allowNone = false, noneLabel = "none" } = {}) {
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

function buildField(name, schema, kind, artifacts) {
  const id = `param-${name}`;
  const type = fieldType(schema);
  const label = schema.title || name;
  const wrap = h("div", { class: `field field-${type}`, dataset: { param: name, type } });
  let input;
  if (name === "source") {
    input = h("select", { id, name });
    artifactOptions(input, artifacts, kind.sources);
  } else if (name === "dataset") {
    input = h("select", { id, name });
    artifactOptions(input, artifacts, ["dataset"], { allowNone: true, noneLabel: NO_DATASET });
  } else if (type === "enum") {
    input = h("select", { id, name });
    for (const value of schema.enum) input.append(h("option", { value: String(value), text: String(value) }));
    if (schema.default !== undefined) input.value = String(schema.default);
  } else if (type === "boolean") {
    input = h("input", { id, name, type: "checkbox" });
    input.checked = Boolean(schema.default);
  } else if (type === "integer" || type === "number") {
    input = h("input", {
      id, name, type: "number", inputmode: type === "integer" ? "numeric" : "decimal",
      step: type === "integer" ? "1" : "any",
      min: schema.minimum ?? schema.exclusiveMinimum, max: schema.maximum ?? schema.exclusiveMaximum,
    });
    if (schema.default != null) input.value = String(schema.default);
  } else {
    input = h("input", { id, name, type: "text", minlength: schema.minLength, maxlength: schema.maxLength });
    if (schema.default != null) input.value = String(schema.default);
  }
  const help = schema.description && name !== "source" ? h("p", { class: "hint", id: `${id}-help`, text: schema.description }) : null;
  if (help) input.setAttribute("aria-describedby", `${id}-help`);
  const error = h("p", { class: "field-error", id: `${id}-error`, hidden: true });
  if (type === "boolean") wrap.append(h("label", { class: "check" }, input, ` ${label}`));
  else wrap.append(h("label", { for: id, text: label }), input);
  if (help) wrap.append(help);
  wrap.append(error);
  return wrap;
}

/** Replace the fields in `container` with those of `kind`, defaults filled in. */
export function renderFields(container, kind, artifacts) {
  container.replaceChildren();
  if (!kind) return;
  for (const [name, schema] of Object.entries(kind.schema.properties || {})) {
    container.append(buildField(name, schema, kind, artifacts));
  }
}

/** The artifacts changed: offer the new ones, keeping what is picked. */
export function refreshArtifactSelects(container, kind, artifacts) {
  if (!kind) return;
  const source = container.querySelector('select[name="source"]');
  if (source) artifactOptions(source, artifacts, kind.sources);
  const dataset = container.querySelector('select[name="dataset"]');
  if (dataset) artifactOptions(dataset, artifacts, ["dataset"], { allowNone: true, noneLabel: NO_DATASET });
}

/** The params as the schema types them; an empty field is left out, so the default applies. */
export function formParams(container, kind) {
  const params = {};
  for (const wrap of container.querySelectorAll(".field")) {
    const name = wrap.dataset.param;
    const input = wrap.querySelector("input, select");
    const type = wrap.dataset.type;
    if (type === "boolean") {
      params[name] = input.checked;
    } else if (input.value === "") {
      if (name === "dataset") params[name] = null;
      // Otherwise left out: the server's default applies, or it names the missing field.
    } else if (name === "source" || name === "dataset" || type === "integer" || type === "number") {
      params[name] = Number(input.value);
    } else if (type === "enum") {
      const schema = kind.schema.properties[name];
      params[name] = schema.enum.find((v) => String(v) === input.value);
    } else {
      params[name] = input.value;
    }
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

/** Show a 400's message under the field it names (`params.type`), else above the Start button. */
export function showError(form, body, status) {
  const field = (body && body.field) || "";
  const name = field.startsWith("params.") ? field.slice("params.".length).split(".")[0] : field;
  const box = name ? form.querySelector(`#param-${CSS.escape(name)}-error`) : null;
  const message = body ? body.message || body.detail || JSON.stringify(body) : `HTTP ${status}`;
  const target = box || form.querySelector("#job-form-error");
  target.textContent = message;
  target.hidden = false;
  const input = name ? form.querySelector(`#param-${CSS.escape(name)}`) : null;
  if (input) {
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-errormessage", target.id);
    input.focus();
  }
}
