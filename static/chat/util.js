// Small helpers of the chat modules: icons, clipboard, ids. DOM building, formatting and the
// REST calls are shared with the other pages: ../lib/.

import { h } from "../lib/dom.js";

const ICONS = new URL("./icons.svg", import.meta.url).pathname;
const SVG = "http://www.w3.org/2000/svg";

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
