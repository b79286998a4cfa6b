"""Browser benchmark of the chat page: ``python -m tests.ui.bench_ui``.

(a) Streaming: a fake websocket in the page feeds a reply of 2,000 tokens at 50 events a second;
    for every event we record when the page first shows its text (the reply's ``data-seq``
    attribute, set by the render that put it on screen) and report how far the screen lags
    behind the stream: lag = shown - due, where ``due`` is when the event was scheduled to
    arrive, so time the page spent blocked before it could even receive an event counts too.
(b) Opening a session of 500 messages stored in the database: time from navigation start to
    the snapshot rendered (a ``performance.mark`` the page sets), over a few page loads.

Prints the numbers and saves them to docs/bench/bench_ui.json. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright

from tests.ui.site import launch, log_in, open_session, running_platform, seed_session
from tools.launch import ROOT, Platform

OUT = ROOT / "docs" / "bench" / "bench_ui.json"

FAKE_SOCKET = """
(() => {
  class FakeSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      window.__fakeSocket = this;
      setTimeout(() => { this.readyState = 1; this.onopen && this.onopen({}); }, 0);
    }
    send(data) { this.sent.push(data); }
    close() { this.readyState = 3; }
    deliver(event) { this.onmessage && this.onmessage({ data: JSON.stringify(event) }); }
  }
  Object.assign(FakeSocket, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
  window.WebSocket = FakeSocket;
})();
"""

STREAM = """
async ({ events, intervalMs }) => {
  const n = events.length;
  const target = document.querySelector('article[data-id="2"] .msg-body');
  const shownAt = new Array(n + 1).fill(null);
  let shown = 0;
  let renders = 0;
  const observer = new MutationObserver(() => {
    const seq = Number(target.dataset.seq || 0);
    const now = performance.now();
    if (seq > shown) {
      renders += 1;
      for (let k = shown + 1; k <= seq; k++) shownAt[k] = now;
      shown = seq;
    }
  });
  observer.observe(target, { attributes: true, attributeFilter: ["data-seq"] });
  const longTasks = [];
  const perf = new PerformanceObserver((list) => longTasks.push(...list.getEntries().map((e) => e.duration)));
  try { perf.observe({ type: "longtask" }); } catch (e) { /* not supported */ }

  const ws = window.__fakeSocket;
  const start = performance.now() + 50;
  const due = (k) => start + (k - 1) * intervalMs;
  let next = 1;
  await new Promise((resolve) => {
    // Deliver on schedule; if the page was busy, deliver everything overdue at once, as the
    // socket's buffer would.
    const tick = () => {
      const now = performance.now();
      while (next <= n && due(next) <= now) {
        ws.deliver({ type: "delta", message_id: 2, seq: next, text: events[next - 1] });
        next += 1;
      }
      if (next > n) resolve();
      else setTimeout(tick, Math.max(0, due(next) - performance.now()));
    };
    setTimeout(tick, Math.max(0, start - performance.now()));
  });
  await new Promise((resolve) => {
    const check = () => (shown >= n ? resolve() : requestAnimationFrame(check));
    check();
  });
  const content = events.join("");
  const before = performance.now();
  ws.deliver({
    type: "done", message_id: 2, status: "complete", error: "",
    stats: { prompt_tokens: 12, completion_tokens: 2000, ttft_ms: 100, decode_tps: 50 },
    message: {
      id: 2, session: 1, role: "assistant", agent: "assistant", agent_name: "Assistant", reply_to: 1,
      content, status: "complete", error: "", client_id: null, seq: n, backend: "llama_cpp", model: "bench",
      stats: { prompt_tokens: 12, completion_tokens: 2000, ttft_ms: 100, decode_tps: 50 },
      created_at: new Date().toISOString(), started_at: null, finished_at: null,
    },
  });
  const finalRenderMs = performance.now() - before;
  observer.disconnect();
  perf.disconnect();
  const lags = [];
  for (let k = 1; k <= n; k++) lags.push(shownAt[k] - due(k));
  return {
    lags,
    renders,
    finalRenderMs,
    longTasks,
    shownChars: target.textContent.length,
    contentChars: content.length,
  };
}
"""


def bench_text(tokens: int) -> list[str]:
    """A reply of about ``tokens`` word-sized tokens: prose, lists, code and tables, as models write."""
    pieces: list[str] = []
    n = 0
    while len(pieces) < tokens:
        n += 1
        section = (
            f"## Step {n}: what to do\n\n"
            f"This part explains **step {n}** in plain words, with `inline_code({n})` and a "
            "[link](https://example.org/docs) to the manual. The reader should follow along and "
            "check each result before moving on to the next part of the guide.\n\n"
            f"- first, prepare the input for step {n}\n- then run the command below\n- finally compare the output\n\n"
            f"```python\ndef step_{n}(values: list[int]) -> int:\n    total = 0\n"
            f"    for value in values:\n        total += value * {n}\n    return total\n```\n\n"
            f"| input | output |\n| --- | --- |\n| [1, 2] | {3 * n} |\n| [4] | {4 * n} |\n\n"
        )
        pieces.extend(re.findall(r"\S+\s*|\s+", section))
    return pieces[:tokens]


def stream_bench(page: Page, platform: Platform, tokens: int, per_event: int, interval_ms: float) -> dict[str, Any]:
    session_id = seed_session(platform, "alice", "Streaming benchmark", [])
    page.add_init_script(FAKE_SOCKET)
    page.goto(f"{platform.http}/s/{session_id}/")
    page.wait_for_function("() => window.__fakeSocket && window.__fakeSocket.readyState === 1")
    page.evaluate(
        """() => window.__fakeSocket.deliver({type: "session",
             session: {id: 1, title: "Streaming benchmark", agent: "assistant", archived: false},
             messages: [
               {id: 1, role: "user", content: "Write the guide.", status: "complete", client_id: null, seq: 0,
                agent: null, agent_name: null, stats: {}, error: "", created_at: new Date().toISOString()},
               {id: 2, role: "assistant", content: "", status: "queued", client_id: null, seq: 0,
                agent: "assistant", agent_name: "Assistant", backend: "llama_cpp", stats: {}, error: "",
                created_at: new Date().toISOString()}]})"""
    )
    page.wait_for_selector("body[data-ready='1']")
    words = bench_text(tokens)
    events = ["".join(words[i : i + per_event]) for i in range(0, len(words), per_event)]
    result = page.evaluate(STREAM, {"events": events, "intervalMs": interval_ms})
    lags = sorted(result["lags"])
    return {
        "tokens": tokens,
        "tokens_per_event": per_event,
        "events": len(events),
        "events_per_second": round(1000 / interval_ms, 1),
        "reply_chars": result["contentChars"],
        "lag_ms_max": round(lags[-1], 1),
        "lag_ms_p95": round(lags[int(0.95 * (len(lags) - 1))], 1),
        "lag_ms_median": round(statistics.median(lags), 1),
        "renders": result["renders"],
        "final_render_ms": round(result["finalRenderMs"], 1),
        "long_tasks_over_50ms": len(result["longTasks"]),
        "longest_task_ms": round(max(result["longTasks"], default=0), 1),
    }


def long_session(count: int) -> list[tuple[str, str]]:
    messages: list[tuple[str, str]] = []
    for i in range(count // 2):
        messages.append(("user", f"Question {i}: how do I configure part {i} of the system, and why?"))
        reply = (
            f"For part {i}, set the option in the settings file and restart the service. "
            "It matters because the default is tuned for small machines, and larger ones can use "
            "more memory for caching. Check the logs afterwards to confirm the change took effect.\n\n"
            "1. Open the settings\n2. Change the value\n3. Restart\n"
        )
        if i % 3 == 0:
            reply += f"\n```bash\nexport PART_{i}_CACHE=512\nsystemctl restart chatsite\n```\n"
        if i % 5 == 0:
            reply += "\n| setting | small | large |\n| --- | --- | --- |\n| cache | 64 | 512 |\n| threads | 2 | 8 |\n"
        messages.append(("assistant", reply))
    return messages


def open_bench(page: Page, platform: Platform, count: int, loads: int) -> dict[str, Any]:
    session_id = seed_session(platform, "alice", f"{count} messages", long_session(count))
    runs = []
    for _ in range(loads):
        open_session(page, platform, session_id)
        marks = page.evaluate(
            """() => Object.fromEntries(performance.getEntriesByType('mark')
                 .map((m) => [m.name, m.startTime]))"""
        )
        shown = page.locator("#messages article").count()
        assert shown == count, f"{shown} messages on the page, expected {count}"
        runs.append(
            {
                "rendered_ms": round(marks["chat:snapshot-rendered"], 1),
                "snapshot_received_ms": round(marks["chat:snapshot-received"], 1),
            }
        )
    rendered = [r["rendered_ms"] for r in runs]
    return {
        "messages": count,
        "loads": runs,
        "open_ms_first": rendered[0],
        "open_ms_median": round(statistics.median(rendered), 1),
        "open_ms_max": max(rendered),
        "render_ms_median": round(statistics.median(r["rendered_ms"] - r["snapshot_received_ms"] for r in runs), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--events-per-second", type=float, default=50)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    interval = 1000 / args.events_per_second

    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": host.platform(), "browser": "Debian chromium, headless"},
    }
    with tempfile.TemporaryDirectory() as data, running_platform(Path(data)) as platform, sync_playwright() as p:
        browser = launch(p)
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        log_in(context, platform, "alice").close()
        results["streaming"] = [
            stream_bench(context.new_page(), platform, args.tokens, per_event, interval) for per_event in (1, 5)
        ]
        results["open_session"] = open_bench(context.new_page(), platform, args.messages, args.loads)
        results["chromium"] = browser.version
        browser.close()

    print(json.dumps(results, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
