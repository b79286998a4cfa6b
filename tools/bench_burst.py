"""Load: a burst of websockets opened at once, some of them streaming a reply, then many idle
sockets held open. Measured from outside, as browsers would meet it: handshake outcomes (HTTP
status or close code), connect time (handshake to the session snapshot), each stream checked
exact (its deltas, in order, equal the stored reply), the slowest stream, and daphne's memory.

    python -m tools.bench_burst --sockets 200 --streaming 64 --idle 500 --hold 60

Prints a summary and saves JSON (``--out``). The integration test
``tests/integration/test_websocket_burst.py`` runs the same burst and asserts no handshake failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.benchmarks import bench_platform_start, result_record, rss_mb, run_benchmark
from tools.launch import ROOT, PrivateRedis

QUESTION = "Say hello to me in one short sentence."


@dataclass
class Socket:
    """What one client saw."""

    index: int
    asked: bool
    handshake: str = ""  # "ok", "http 500", an exception name
    handshake_error: str = ""  # the exception, its cause and when it came
    connect_s: float | None = None
    close_code: int | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    stream_s: float | None = None
    status: str = ""
    exact: bool | None = None


def sessions_create(http: str, token: str, count: int) -> list[int]:
    ids = []
    for _ in range(count):
        request = urllib.request.Request(
            http + "/api/sessions/", data=b"{}", method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Token {token}"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as response:
            ids.append(json.loads(response.read())["id"])
    return ids


async def _client(
    ws_base: str, token: str, session_id: int, sock: Socket, release: asyncio.Event, timeout: float
) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    started = time.perf_counter()
    try:
        ws = await connect(
            f"{ws_base}/ws/sessions/{session_id}/",
            additional_headers={"Authorization": f"Token {token}"},
            open_timeout=timeout,
            max_size=None,
        )
    except InvalidStatus as exc:
        sock.handshake = f"http {exc.response.status_code}"
        return
    except Exception as exc:
        sock.handshake = type(exc).__name__
        cause = f" ({type(exc.__cause__).__name__}: {exc.__cause__})" if exc.__cause__ else ""
        sock.handshake_error = f"{type(exc).__name__}: {exc}{cause} after {time.perf_counter() - started:.2f} s"
        return
    try:
        first = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if first["type"] != "session":
            sock.handshake = f"first event {first['type']}"
            sock.errors.append(first)
            return
        sock.handshake = "ok"
        sock.connect_s = time.perf_counter() - started
        if sock.asked:
            await _ask(ws, sock, timeout)
        await release.wait()
    except ConnectionClosed as exc:
        sock.close_code = exc.rcvd.code if exc.rcvd else None
    except Exception as exc:
        sock.errors.append({"type": "client", "error": f"{type(exc).__name__}: {exc}"})
    finally:
        await ws.close()


async def _ask(ws: Any, sock: Socket, timeout: float) -> None:
    sent = time.perf_counter()
    await ws.send(json.dumps({"type": "message", "content": QUESTION}))
    reply_id = None
    deltas: list[tuple[int, str]] = []
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        kind = event["type"]
        if kind == "error":
            sock.errors.append(event)
        elif kind == "message" and event["message"]["role"] == "assistant" and reply_id is None:
            reply_id = event["message"]["id"]
        elif kind == "delta" and event["message_id"] == reply_id:
            deltas.append((event["seq"], event["text"]))
        elif kind == "done" and event["message_id"] == reply_id:
            sock.stream_s = time.perf_counter() - sent
            sock.status = event["status"]
            # The page's door may merge deltas that arrive within 50 ms into one carrying the last
            # seq: in order means rising seqs that end at the stored reply's.
            seqs = [s for s, _ in deltas]
            in_order = seqs == sorted(set(seqs)) and bool(seqs) and seqs[-1] == event["message"]["seq"]
            sock.exact = in_order and "".join(t for _, t in deltas) == event["message"]["content"]
            return


async def _burst(ws_base: str, token: str, session_ids: list[int], streaming: int, timeout: float) -> list[Socket]:
    release = asyncio.Event()
    socks = [Socket(i, asked=i < streaming) for i in range(len(session_ids))]
    tasks = [
        asyncio.create_task(_client(ws_base, token, sid, sock, release, timeout))
        for sid, sock in zip(session_ids, socks, strict=True)
    ]
    askers = [t for t, s in zip(tasks, socks, strict=True) if s.asked]
    # Every socket stays open until every stream has ended: the burst is all of them at once.
    while not all(s.stream_s is not None or s.errors or s.handshake not in ("", "ok") for s in socks if s.asked):
        if all(t.done() for t in askers):
            break
        await asyncio.sleep(0.2)
    release.set()
    await asyncio.gather(*tasks)
    return socks


def burst(ws_base: str, token: str, session_ids: list[int], streaming: int, timeout: float = 300) -> list[Socket]:
    """Open one websocket per session, all at once; the first ``streaming`` ask a question."""
    return asyncio.run(_burst(ws_base, token, session_ids, streaming, timeout))


def burst_summary(socks: list[Socket]) -> dict[str, Any]:
    handshakes: dict[str, int] = {}
    for s in socks:
        handshakes[s.handshake] = handshakes.get(s.handshake, 0) + 1
    connects = sorted(s.connect_s for s in socks if s.connect_s is not None)
    streams = [s for s in socks if s.asked]
    times = [s.stream_s for s in streams if s.stream_s is not None]
    return {
        "sockets": len(socks),
        "handshakes": handshakes,
        "handshake_errors": sorted({s.handshake_error for s in socks if s.handshake_error})[:5],
        "errors": sum(len(s.errors) for s in socks),
        "closed_by_server": sum(s.close_code is not None for s in socks),
        "connect_p50_s": statistics.median(connects) if connects else None,
        "connect_p95_s": connects[int(0.95 * (len(connects) - 1))] if connects else None,
        "connect_max_s": connects[-1] if connects else None,
        "streams": len(streams),
        "streams_complete": sum(s.status == "complete" for s in streams),
        "streams_exact": sum(bool(s.exact) for s in streams),
        "stream_p50_s": statistics.median(times) if times else None,
        "stream_slowest_s": max(times) if times else None,
    }


async def _hold_idle(ws_base: str, token: str, session_ids: list[int], hold: float, daphne_pid: int) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    memory: list[tuple[float, float]] = []
    before = rss_mb(daphne_pid)
    started = time.perf_counter()

    async def open_one(sid: int) -> Any:
        ws = await connect(
            f"{ws_base}/ws/sessions/{sid}/", additional_headers={"Authorization": f"Token {token}"}, open_timeout=120
        )
        assert json.loads(await ws.recv())["type"] == "session"
        return ws

    opened = await asyncio.gather(*(open_one(sid) for sid in session_ids), return_exceptions=True)
    sockets = [ws for ws in opened if not isinstance(ws, BaseException)]
    connected_s = time.perf_counter() - started
    after_connect = rss_mb(daphne_pid)
    held_from = time.perf_counter()
    while time.perf_counter() - held_from < hold:
        memory.append((round(time.perf_counter() - held_from, 1), rss_mb(daphne_pid)))
        await asyncio.sleep(2)
    # Still open and answering after the hold: a ping each, a pong back.
    alive = 0

    async def ping(ws: Any) -> bool:
        await ws.send(json.dumps({"type": "ping"}))
        while True:
            if json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "pong":
                return True

    answers = await asyncio.gather(*(ping(ws) for ws in sockets), return_exceptions=True)
    alive = sum(a is True for a in answers)
    end = rss_mb(daphne_pid)
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    await asyncio.sleep(3)
    return {
        "sockets": len(session_ids),
        "opened": len(sockets),
        "open_errors": sorted({f"{type(e).__name__}: {e}" for e in opened if isinstance(e, BaseException)})[:5],
        "all_open_s": round(connected_s, 2),
        "answering_after_hold": alive,
        "hold_s": hold,
        "daphne_rss_mb": {
            "before": round(before, 1),
            "after_connect": round(after_connect, 1),
            "peak_during_hold": round(max(m for _, m in memory), 1) if memory else None,
            "end_of_hold": round(end, 1),
            "after_close": round(rss_mb(daphne_pid), 1),
        },
        "rss_samples": memory,
    }


def _daphne_memory(pid: int, stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        out.append(rss_mb(pid))
        stop.wait(0.5)


def bench_burst(opts: dict[str, Any]) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="bench-burst-"))
    redis_server = PrivateRedis(data)
    redis_server.start()
    plat, token = bench_platform_start(
        data=data, redis_url=redis_server.url, database_url=opts["database_url"] or None,
        max_tokens=opts["max_tokens"], threads=1,
    )  # fmt: skip
    try:
        daphne_pid = plat.procs["daphne"].pid
        session_ids = sessions_create(plat.http, token, max(opts["sockets"], opts["idle"]))
        idle_rss = rss_mb(daphne_pid)
        samples: list[float] = []
        stop = threading.Event()
        sampler = threading.Thread(target=_daphne_memory, args=(daphne_pid, stop, samples), daemon=True)
        sampler.start()
        socks = burst(plat.ws, token, session_ids[: opts["sockets"]], opts["streaming"])
        stop.set()
        sampler.join()
        summary = burst_summary(socks)
        summary["daphne_rss_mb"] = {"before": round(idle_rss, 1), "peak": round(max(samples), 1)}
        print(json.dumps(summary, indent=2))
        idle = asyncio.run(_hold_idle(plat.ws, token, session_ids[: opts["idle"]], opts["hold"], daphne_pid))
        print(json.dumps({k: v for k, v in idle.items() if k != "rss_samples"}, indent=2))
        record = result_record(
            summary={"burst": summary, "idle": idle}, raw=[], plat=[],
            settings={k: opts[k] for k in ("sockets", "streaming", "idle", "hold", "max_tokens")},
            database="postgresql" if opts["database_url"] else "sqlite",
        )  # fmt: skip
        Path(opts["out"]).parent.mkdir(parents=True, exist_ok=True)
        Path(opts["out"]).write_text(json.dumps(record, indent=2) + "\n")
        print(f"saved {opts['out']}")
        return record
    finally:
        plat.stop_all()
        redis_server.stop()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=200, help="Websockets opened at once.")
    parser.add_argument("--streaming", type=int, default=64, help="How many of them ask a question.")
    parser.add_argument("--idle", type=int, default=500, help="Idle websockets held afterwards.")
    parser.add_argument("--hold", type=float, default=60, help="Seconds to hold the idle sockets.")
    parser.add_argument("--max-tokens", type=int, default=32, help="The agent's reply limit.")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", ""))
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench" / "bench_burst.json"))
    return parser


def main(argv: list[str] | None = None) -> None:
    run_benchmark(_parser(), bench_burst, argv)


if __name__ == "__main__":
    main()
