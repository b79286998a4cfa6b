// Small helpers shared by the chat modules: building DOM, icons, clipboard, ids.

const ICONS = new URL("./icons.svg", import.meta.url).pathname;
const SVG = "http://www.w3.org/2000/svg";

/** An element with attributes and children; `text` sets textContent, never HTML. */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

/** A sprite icon (decorative: screen readers read the button's label instead). */
export function icon(name, className = "icon") {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", className);
  svg.setAttribute("aria-hidden", "true");
  const use = document.createElementNS(SVG, "use");
  use.setAttribute("href", `${ICONS}#${name}`);
  svg.append(use);
  return svg;
}

/** An icon-only button with an accessible name. */
export function iconButton(name, label, attrs = {}) {
  return h("button", { type: "button", class: "icon-button", "aria-label": label, title: label, ...attrs }, icon(name));
}

/** Copy text; the Clipboard API needs a secure context, so plain-http LAN boxes use the old way. */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      /* fall through: permission denied or the document is not focused */
    }
  }
  const area = h("textarea", { readonly: true, class: "visually-hidden" });
  area.value = text;
  document.body.append(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } finally {
    area.remove();
  }
  return ok;
}

/** Briefly show "Copied" on a button, then put its label back. */
export function flashCopied(button, ok) {
  const label = button.querySelector("span.label");
  const original = button.getAttribute("aria-label");
  const word = ok ? "Copied" : "Copy failed";
  if (label) label.textContent = word;
  button.setAttribute("aria-label", word);
  button.classList.add("copied");
  setTimeout(() => {
    if (label) label.textContent = "Copy";
    if (original) button.setAttribute("aria-label", original);
    button.classList.remove("copied");
  }, 1500);
}

/** A v4 UUID; crypto.randomUUID exists only in secure contexts. */
export function uuid() {
  if (crypto.randomUUID && window.isSecureContext) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

// Formatters are costly to build; a session of 500 messages would build 1,000 of them.
const TIME = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit" });
const DATE_TIME = new Intl.DateTimeFormat([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });

export function timeLabel(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const today = new Date();
  const sameDay = date.getFullYear() === today.getFullYear() && date.getMonth() === today.getMonth()
    && date.getDate() === today.getDate();
  return (sameDay ? TIME : DATE_TIME).format(date);
}

/** Send a JSON request with the session cookie and the CSRF token; throws with the server's words. */
export async function apiFetch(method, url, body) {
  const headers = { Accept: "application/json" };
  const token = document.querySelector('meta[name="csrf-token"]')?.content;
  if (token) headers["X-CSRFToken"] = token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.redirected && new URL(response.url).pathname.startsWith("/login")) {
    window.location.assign(response.url); // signed out in another tab
    throw new Error("Signed out.");
  }
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`;
    try {
      const data = await response.json();
      detail = data.message || data.detail || JSON.stringify(data);
    } catch {
      /* not JSON */
    }
    throw new Error(detail);
  }
  return response.status === 204 ? null : response.json();
}
