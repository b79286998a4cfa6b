// Model output -> safe DOM. Model text is untrusted: it may carry script, event handlers,
// javascript:/data: links or trackers. Three walls, each enough on its own for scripts:
//   1. marked renders raw HTML in the text as text, never as markup;
//   2. DOMPurify keeps only plain HTML, with http(s)/mailto/relative links and no style;
//   3. the page's Content-Security-Policy runs no inline script.
// Images never load by themselves: each becomes a button that loads it on a click.

import { marked } from "../vendor/marked/marked.esm.js";
import DOMPurify from "../vendor/dompurify/purify.es.mjs";
import hljs from "../vendor/highlightjs/highlight.min.js";
import { h } from "../lib/dom.js";
import { icon } from "./util.js";

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escapeHtml = (text) => text.replace(/[&<>"']/g, (c) => ESCAPES[c]);

marked.use({
  gfm: true,
  breaks: false,
  renderer: {
    html({ text }) {
      return escapeHtml(text);
    },
  },
});

// http(s), mailto, and scheme-less (relative or #fragment) URLs; nothing else.
const SAFE_URL = /^(?:(?:https?|mailto):|[^a-z]|[a-z+.-]+(?:[^a-z+.\-:]|$))/i;

const PURIFY = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: [
    "style", "form", "button", "textarea", "select", "option", "iframe", "frame", "object", "embed",
    "video", "audio", "source", "track", "picture", "link", "meta", "base", "dialog", "template",
  ],
  FORBID_ATTR: ["style", "id", "name", "srcset", "background", "poster", "action", "formaction", "ping", "autofocus"],
  ALLOW_DATA_ATTR: false,
  ALLOWED_URI_REGEXP: SAFE_URL,
  RETURN_DOM_FRAGMENT: true,
};

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.nodeName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
  if (node.nodeName === "IMG") {
    // The fragment lives in DOMPurify's inert document, where nothing loads; take the address
    // away before it can reach the page.
    node.setAttribute("data-remote-src", node.getAttribute("src") || "");
    node.removeAttribute("src");
  }
});

const AUTO_DETECT_MAX_CHARS = 4000;

function highlight(code, final) {
  const language = (code.className.match(/language-([\w+#.-]+)/) || [])[1];
  const text = code.textContent;
  let result = null;
  if (language && hljs.getLanguage(language)) {
    result = hljs.highlight(text, { language, ignoreIllegals: true });
  } else if (final && text.length <= AUTO_DETECT_MAX_CHARS) {
    // Guessing tries every language: only once, when the reply is complete.
    result = hljs.highlightAuto(text);
  }
  if (result) {
    code.innerHTML = result.value; // highlight.js escapes the code it wraps in spans
    code.classList.add("hljs");
  }
  return language || (result && result.language) || "";
}

function decorate(fragment, final) {
  for (const pre of fragment.querySelectorAll("pre")) {
    const code = pre.querySelector("code") || pre;
    const language = highlight(code, final);
    const copy = h("button", { type: "button", class: "copy-code", "aria-label": "Copy code" },
      icon("copy"), h("span", { class: "label", text: "Copy" }));
    const block = h("div", { class: "code-block" },
      h("div", { class: "code-head" }, h("span", { text: language || "text" }), copy));
    pre.replaceWith(block);
    block.append(pre);
  }
  for (const table of fragment.querySelectorAll("table")) {
    const wrap = h("div", { class: "table-wrap" });
    table.replaceWith(wrap);
    wrap.append(table);
  }
  for (const img of fragment.querySelectorAll("img")) {
    img.replaceWith(imagePlaceholder(img.getAttribute("data-remote-src") || "", img.getAttribute("alt") || ""));
  }
}

function imagePlaceholder(src, alt) {
  let where = "";
  try {
    where = new URL(src, window.location.href).host;
  } catch {
    where = "";
  }
  const words = `Load image${alt ? `: ${alt}` : ""}${where ? ` (${where})` : ""}`;
  return h("button", { type: "button", class: "remote-image", dataset: { src, alt }, title: src },
    icon("image"), h("span", { text: words }));
}

function toFragment(html, final) {
  const fragment = DOMPurify.sanitize(html, PURIFY);
  decorate(fragment, final);
  return fragment;
}

/** Render `text` as sanitized Markdown into `target`, replacing what was there. */
export function renderMarkdown(target, text) {
  target.replaceChildren(toFragment(marked.parse(text, { async: false }), true));
}

/**
 * Render a reply that is still growing. Only the blocks that changed since the last call are
 * rendered again (in practice the last one or two), so a frame costs the same at token 2,000 as
 * at token 20. `cache` is an object kept per reply between calls; call `renderMarkdown` for the
 * final text, which also settles anything a later block changes in an earlier one (a reference
 * link defined at the end).
 */
export function renderMarkdownGrowing(target, text, cache) {
  const tokens = marked.lexer(text);
  cache.raws ||= [];
  cache.nodes ||= [];
  let same = 0;
  const reusable = Math.min(tokens.length - 1, cache.raws.length); // the last block may still grow
  while (same < reusable && tokens[same].raw === cache.raws[same]) same += 1;
  if (same === 0) {
    target.replaceChildren();
  } else {
    for (const nodes of cache.nodes.slice(same)) for (const node of nodes) node.remove();
  }
  cache.raws.length = same;
  cache.nodes.length = same;
  for (const token of tokens.slice(same)) {
    const one = [token];
    one.links = tokens.links;
    const fragment = toFragment(marked.parser(one), false);
    cache.raws.push(token.raw);
    cache.nodes.push([...fragment.childNodes]);
    target.append(fragment);
  }
}

/** Load a remote image the user asked for, if its address is http(s). */
export function loadImage(button) {
  let url;
  try {
    url = new URL(button.dataset.src, window.location.href);
  } catch {
    return;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    button.disabled = true;
    button.querySelector("span").textContent = "Image blocked: not an http(s) address";
    return;
  }
  const img = h("img", { alt: button.dataset.alt || "", referrerpolicy: "no-referrer", loading: "lazy" });
  img.src = url.href;
  button.replaceWith(img);
}
