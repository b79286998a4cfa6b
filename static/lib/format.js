// How the pages write numbers, sizes, durations and times. A value that is not there (null, not
// a number) is written "–", so a table cell never says "NaN" or "undefined".

export const DASH = "–";

export function isNum(x) {
  return typeof x === "number" && Number.isFinite(x);
}

/** A number with `digits` decimals. */
export function num(x, digits = 1) {
  return isNum(x) ? x.toFixed(digits) : DASH;
}

/** Any value as text; empty ones as a dash. */
export function text(x) {
  return x === null || x === undefined || x === "" ? DASH : String(x);
}

/** A list as "a, b, c"; an empty one (or none) as a dash. */
export function list(x) {
  return Array.isArray(x) && x.length ? x.map(String).join(", ") : DASH;
}

/** A size in decimal units: "512 B", "1.5 MB", "120 GB". */
export function bytes(n) {
  if (!isNum(n)) return DASH;
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i += 1;
  }
  return `${n >= 100 || i === 0 ? n.toFixed(0) : n.toFixed(1)} ${units[i]}`;
}

/** A duration: "4.2 s", "12 s", "3m 05s", "2h 07m" (a clock's small skew below zero is 0). */
export function seconds(s) {
  if (!isNum(s)) return DASH;
  s = Math.max(0, s);
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

/** Seconds since a Unix time in seconds (a worker's `started_at`), or null. */
export function sinceEpoch(t) {
  return t == null ? null : Date.now() / 1000 - Number(t);
}

/** A speed: "31.4 tokens/s". */
export function tokensPerSecond(x) {
  return `${num(x, 1)} tokens/s`;
}

// Formatters are costly to build; a session of 500 messages would build 1,000 of them.
const TIME = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit" });
const DATE_TIME = new Intl.DateTimeFormat([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });

/** An ISO time as "14:05" today, "Mar 3, 14:05" another day; "" for none. */
export function timeLabel(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const today = new Date();
  const sameDay = date.getFullYear() === today.getFullYear() && date.getMonth() === today.getMonth()
    && date.getDate() === today.getDate();
  return (sameDay ? TIME : DATE_TIME).format(date);
}
