// A fine-tune's progress in the job table: the loss sparkline, the chain of jobs it belongs to,
// and, in its expanded row, the loss picture (loss.png) with the run's numbers.

import { h } from "../lib/dom.js";
import { num } from "../lib/format.js";

const SVG = "http://www.w3.org/2000/svg";
const FIGURE_EVERY_MS = 5000;

/** The loss by step as a small inline SVG (DOM APIs only), or null with under two points. */
export function sparkline(history, label) {
  const points = (history || []).filter((p) => Array.isArray(p) && Number.isFinite(p[1]));
  if (points.length < 2) return null;
  const width = 72;
  const height = 16;
  const steps = points.map((p) => p[0]);
  const losses = points.map((p) => p[1]);
  const [x0, x1] = [Math.min(...steps), Math.max(...steps)];
  const [y0, y1] = [Math.min(...losses), Math.max(...losses)];
  const x = (s) => (x1 === x0 ? 0 : ((s - x0) / (x1 - x0)) * (width - 2)) + 1;
  const y = (l) => (y1 === y0 ? height / 2 : 1 + (1 - (l - y0) / (y1 - y0)) * (height - 2));
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(height));
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const title = document.createElementNS(SVG, "title");
  title.textContent = label;
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" "));
  const last = points[points.length - 1];
  const dot = document.createElementNS(SVG, "circle");
  dot.setAttribute("cx", x(last[0]).toFixed(1));
  dot.setAttribute("cy", y(last[1]).toFixed(1));
  dot.setAttribute("r", "1.8");
  svg.append(title, line, dot);
  return svg;
}

/** A fine-tune's loss by step: the finished run's whole curve, else the live one. */
export function lossHistory(job) {
  const done = job.result && job.result.finetune_lora;
  return (done && done.loss_history) || (job.metrics && job.metrics.loss_history) || [];
}

/** "← after #12 · then: convert → quantize_gguf" (and "resumes #9" for a resumed fine-tune), or "". */
export function chainText(job) {
  const parts = [];
  if (job.after != null) parts.push(`← after #${job.after}`);
  if (job.params && job.params.resume_from != null) parts.push(`resumes #${job.params.resume_from}`);
  const then = job.params && Array.isArray(job.params.then) ? job.params.then : [];
  if (then.length) parts.push(`then: ${then.map((step) => step.kind).join(" → ")}`);
  return parts.join(" · ");
}

/** A fine-tune's numbers: the finished run's from its result, else the live ones. */
export function trainFacts(job) {
  const done = job.result && job.result.finetune_lora;
  if (done) {
    const parts = [`${done.steps} steps`, `loss ${num(done.first_loss, 3)} → ${num(done.last_loss, 3)}`,
      `${num(done.train_seconds, 1)} s training`];
    if (done.examples != null) parts.push(`${done.examples} examples`);
    if (done.stopped) parts.push("stopped early: resumable");
    return parts.join(" · ");
  }
  const m = job.metrics || {};
  if (m.step == null) return "";
  const parts = [`step ${m.step}/${m.steps ?? "?"}`, `loss ${num(m.loss, 3)}`];
  if (m.learning_rate != null) parts.push(`lr ${Number(m.learning_rate).toExponential(1)}`);
  if (m.epoch != null) parts.push(`epoch ${num(m.epoch, 2)}`);
  return parts.join(" · ");
}

// The loss picture of each open job: the job it was last asked for, and when.
const figures = new Map(); // job id -> {job, at, key, timer}

function figureLoad(img, job) {
  const url = job.files && job.files["loss.png"];
  const seen = figures.get(job.id);
  if (!url || !seen) return;
  const key = `${job.status}:${job.metrics?.step ?? ""}:${job.finished_at || ""}`;
  if (seen.key === key) return;
  const wait = seen.at + FIGURE_EVERY_MS - Date.now();
  if (wait > 0) {
    // At most one load every few seconds; the newest state is loaded when the time comes.
    if (!seen.timer) {
      seen.timer = setTimeout(() => {
        seen.timer = 0;
        if (img.isConnected) figureLoad(img, seen.job);
      }, wait);
    }
    return;
  }
  seen.key = key;
  seen.at = Date.now();
  img.hidden = false;
  img.src = `${url}?v=${encodeURIComponent(key)}`; // a new address: the browser reads the file again
}

/** The expanded row's loss picture and numbers, kept between events so the image does not flicker. */
export function patchFigure(body, job) {
  const url = job.files && job.files["loss.png"];
  let figure = body.querySelector(".loss-figure");
  const facts = job.kind === "finetune_lora" ? trainFacts(job) : "";
  if (!url && !facts) {
    figure?.remove();
    body.classList.remove("with-figure");
    return;
  }
  if (!figure) {
    forgetFigure(job.id); // a new picture element: load it now
    const img = h("img", { class: "loss", alt: `Training loss by optimizer step, job ${job.id}`, width: 640, height: 360,
      hidden: true });
    img.addEventListener("error", () => (img.hidden = true));
    figure = h("figure", { class: "loss-figure" }, img, h("figcaption", {}));
    body.append(figure);
    body.classList.add("with-figure");
  }
  const caption = figure.querySelector("figcaption");
  if (caption.textContent !== facts) caption.textContent = facts;
  const seen = figures.get(job.id) || { at: 0, key: "", timer: 0 };
  seen.job = job;
  figures.set(job.id, seen);
  figureLoad(figure.querySelector("img"), job);
}

/** The job's log was folded: forget its picture's timer. */
export function forgetFigure(id) {
  const seen = figures.get(id);
  if (seen && seen.timer) clearTimeout(seen.timer);
  figures.delete(id);
}
