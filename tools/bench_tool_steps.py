"""Benchmark: the time the platform adds to each tool step of an agent, on the deployed shape.

daphne, Redis and one Celery worker process (as ``tools.bench_reply`` starts them) host agents on
the bundled model that must call one tool and then answer (``tool_choice: "required"``,
``max_tool_steps: 1``): the built-in ``calculator``, and ``add`` of an MCP server over stdio (the
tests' server, ``tests/tools/mcp_server.py``). The worker records, per call, the platform's own
time around the tool (``tool_calls[].overhead_ms``):

- ``start``: the call parsed from the model's output -> the tool started (storing the call and
  announcing it to the clients);
- ``resume``: the tool's result -> the next generation started (storing and announcing the
  result, building the next prompt).

The tool's own time (``duration_ms``) is reported apart: a stdio MCP server is started for each
call. Prints p50 and p90 of each and saves JSON.

    python -m tools.bench_tool_steps --runs 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from tools.benchmarks import DEFAULT_THREADS, bench_platform_start, run_benchmark
from tools.launch import ROOT, Platform, manage

QUESTIONS = ["What is 2 plus 3?", "Add 17 and 25.", "What is 6 times 7?", "Sum 100 and 23."]
AGENTS = {"calc": ["calculator"], "mcp": ["demo.add"]}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_tool_steps", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="Replies per agent.")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"))
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", ""))
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="llama.cpp threads.")
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench" / "tool_steps.json"))
    return parser


def quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p90": float("nan"), "n": 0}
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {"p50": round(statistics.median(ordered), 2), "p90": round(p90, 2), "n": len(ordered)}


def _agents(plat: Platform) -> None:
    manage(
        plat.env, "shell", "-c",
        "from agents.models import Agent, ToolServer\n"
        "from agents.tool_servers import tool_server_save\n"
        "ToolServer.objects.filter(name='demo').delete()\n"
        f"server = ToolServer(name='demo', transport='stdio', timeout_seconds=60, command=[{sys.executable!r},"
        f" '-m', 'tests.tools.mcp_server', 'stdio'], env={{'PYTHONPATH': {str(ROOT)!r}}})\n"
        "tool_server_save(server=server)\n"
        "base = Agent.objects.get(slug='assistant')\n"
        f"for slug, tools in {AGENTS!r}.items():\n"
        "    Agent.objects.update_or_create(slug=slug, defaults=dict(name=slug, model=base.model,\n"
        "        backend=base.backend, backend_options=base.backend_options, system_prompt='', tools=tools,\n"
        "        tool_choice='required', max_tool_steps=1, max_tokens=160, temperature=0.0))\n",
    )  # fmt: skip


def _reply(plat: Platform, token: str, agent: str, question: str) -> dict[str, Any]:
    """One reply in a fresh session over the websocket: its stored calls and the client's view."""
    from websockets.sync.client import connect

    headers = {"Authorization": f"Token {token}"}
    body = json.dumps({"agent": agent}).encode()
    request = urllib.request.Request(
        f"{plat.http}/api/sessions/", data=body, method="POST", headers={**headers, "Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        session_id = json.loads(response.read())["id"]
    seen: dict[str, float] = {}
    with connect(f"{plat.ws}/ws/sessions/{session_id}/", additional_headers=headers) as ws:
        json.loads(ws.recv(timeout=30))
        ws.send(json.dumps({"type": "message", "content": question}))
        while True:
            event = json.loads(ws.recv(timeout=300))
            if event["type"] in ("tool_call", "tool_result") and event["type"] not in seen:
                seen[event["type"]] = time.perf_counter()
            elif event["type"] == "delta" and "tool_result" in seen and "answer" not in seen:
                seen["answer"] = time.perf_counter()
            elif event["type"] == "done":
                message = event["message"]
                break
    return {"message": message, "seen": seen}


def bench_tool_steps(opts: dict[str, Any]) -> dict[str, Any]:
    import redis

    data = Path(tempfile.mkdtemp(prefix="chatsite-bench-tools-"))
    plat, token = bench_platform_start(
        data=data, redis_url=opts["redis_url"], database_url=opts["database_url"] or None, max_tokens=160,
        threads=opts["threads"],
    )  # fmt: skip
    results: dict[str, Any] = {}
    load_before = os.getloadavg()
    try:
        _agents(plat)
        for agent in AGENTS:
            _reply(plat, token, agent, QUESTIONS[0])  # the worker loads the model, the MCP SDK
            start, resume, duration, client_gap = [], [], [], []
            statuses: dict[str, int] = {}
            replies: dict[str, int] = {}
            for i in range(opts["runs"]):
                r = _reply(plat, token, agent, QUESTIONS[i % len(QUESTIONS)])
                ended = r["message"]["status"] + (f" ({r['message']['error'][:60]})" if r["message"]["error"] else "")
                replies[ended] = replies.get(ended, 0) + 1
                for call in r["message"]["tool_calls"]:
                    statuses[call["status"]] = statuses.get(call["status"], 0) + 1
                    overhead = call.get("overhead_ms") or {}
                    if overhead.get("start") is not None:
                        start.append(overhead["start"])
                    if overhead.get("resume") is not None:
                        resume.append(overhead["resume"])
                    duration.append(call["duration_ms"])
                seen = r["seen"]
                if "tool_call" in seen and "tool_result" in seen:
                    client_gap.append((seen["tool_result"] - seen["tool_call"]) * 1000)
            results[agent] = {
                "tools": AGENTS[agent],
                "start_ms": quantiles(start),
                "resume_ms": quantiles(resume),
                "tool_duration_ms": quantiles([float(d) for d in duration]),
                "client_call_to_result_ms": quantiles(client_gap),
                "statuses": statuses,
                "replies": replies,
            }
            q = results[agent]
            print(
                f"{agent:5} ({', '.join(AGENTS[agent])}): start p50 {q['start_ms']['p50']} / p90 "
                f"{q['start_ms']['p90']} ms · resume p50 {q['resume_ms']['p50']} / p90 {q['resume_ms']['p90']} ms · "
                f"tool p50 {q['tool_duration_ms']['p50']} ms · client saw call->result p50 "
                f"{q['client_call_to_result_ms']['p50']} ms · calls {statuses} · replies {replies}"
            )  # fmt: skip
    finally:
        plat.stop_all()
        redis.Redis.from_url(opts["redis_url"]).flushdb()
    out = {
        "runs": opts["runs"], "threads": opts["threads"], "agents": results,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
    }  # fmt: skip
    path = Path(opts["out"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"saved {path}")
    return out


def main(argv: list[str] | None = None) -> None:
    run_benchmark(_parser(), bench_tool_steps, argv)


if __name__ == "__main__":
    main()
