// Building DOM from untrusted data: every page's text goes in as textContent, never as HTML.

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

export const $ = (id) => document.getElementById(id);

const noticeTimers = new WeakMap();

/** Show `text` in the page's #notice box (empty: hide it); with `hideAfterMs`, it hides itself. */
export function notice(text, hideAfterMs = 0) {
  const box = $("notice");
  box.textContent = text;
  box.hidden = !text;
  clearTimeout(noticeTimers.get(box));
  if (text && hideAfterMs) noticeTimers.set(box, setTimeout(() => (box.hidden = true), hideAfterMs));
}

/** The page's #conn badge: its state (styled and read by tests) and its words. */
export function connState(name, text) {
  const conn = $("conn");
  conn.dataset.state = name;
  conn.textContent = text;
}
