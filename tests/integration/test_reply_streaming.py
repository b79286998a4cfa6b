"""A message sent over the websocket is answered by the bundled model on a real Celery worker,
streamed through daphne and Redis, and recorded in PostgreSQL."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from tests.integration.chat_client import Watcher, api, send, ws_open
from tests.integration.conftest import Platform

pytestmark = pytest.mark.slow


def new_session(platform: Platform, user: str = "alice") -> int:
    status, body = api(platform.http, platform.tokens[user], "POST", "/api/sessions/", {"agent": "assistant"})
    assert status == 201, body
    return int(body["id"])


def ask(platform: Platform, content: str, user: str = "alice") -> tuple[Watcher, int, int]:
    """A new session, a websocket on it and ``content`` sent: the watcher, session id, reply id."""
    sid = new_session(platform, user)
    watcher = Watcher(ws_open(platform.ws, sid, platform.tokens[user]))
    watcher.recv()
    send(watcher.ws, type="message", content=content)
    return watcher, sid, watcher.first_reply_id()


def stored(platform: Platform, session_id: int, message_id: int, user: str = "alice") -> dict:
    status, body = api(
        platform.http, platform.tokens[user], "GET", f"/api/sessions/{session_id}/messages/{message_id}/"
    )
    assert status == 200, body
    return dict(body)


def test_a_streamed_reply_lands_complete_and_equals_its_deltas(platform: Platform) -> None:
    sid = new_session(platform)
    watcher = Watcher(ws_open(platform.ws, sid, platform.tokens["alice"]))
    assert watcher.recv()["type"] == "session"
    send(watcher.ws, type="message", content="What is the capital of France?", client_id=str(uuid.uuid4()))
    reply_id = watcher.first_reply_id()
    reply = watcher.until_done(reply_id)
    watcher.close()

    assert reply.done is not None and reply.done["status"] == "complete"
    assert len(reply.deltas) >= 2
    # Rising seqs that end at the stored one (the page's door may merge deltas 50 ms apart).
    assert reply.seqs == sorted(set(reply.seqs)) and reply.seqs[0] >= 1
    row = stored(platform, sid, reply_id)
    assert row["status"] == "complete"
    assert row["content"] == reply.text and row["seq"] == reply.seqs[-1]
    assert "Paris" in row["content"]
    stats = row["stats"]
    assert stats["prompt_tokens"] > 10 and stats["completion_tokens"] > 0
    assert stats["ttft_ms"] > 0 and stats["decode_tps"] > 0


def test_two_clients_on_one_session_see_the_same_text(platform: Platform) -> None:
    sid = new_session(platform)
    first = Watcher(ws_open(platform.ws, sid, platform.tokens["alice"]))
    second = Watcher(ws_open(platform.ws, sid, platform.tokens["alice"]))
    first.recv(), second.recv()
    send(first.ws, type="message", content="Name three colours.", client_id=str(uuid.uuid4()))
    reply_id = first.first_reply_id()
    a = first.until_done(reply_id)
    b = second.until_done(reply_id)
    first.close(), second.close()
    assert a.text == b.text != ""
    assert stored(platform, sid, reply_id)["content"] == a.text


def test_stop_ends_the_reply_and_keeps_its_partial_text(platform: Platform) -> None:
    watcher, sid, reply_id = ask(platform, "Write a very long story about a lighthouse keeper and the sea.")
    watcher.until(lambda e: e["type"] == "delta" and e["seq"] >= 3)
    stop_sent = time.monotonic()
    send(watcher.ws, type="stop")
    reply = watcher.until_done(reply_id, timeout=30)
    stop_latency = time.monotonic() - stop_sent
    watcher.close()
    assert reply.done is not None and reply.done["status"] == "cancelled"
    row = stored(platform, sid, reply_id)
    assert row["status"] == "cancelled"
    assert row["content"] == reply.text and len(row["content"]) > 0
    # Well under the 512-token budget: generation really stopped (reported, not a timing test).
    assert row["stats"]["completion_tokens"] < 500
    print(f"stop latency (client-observed): {stop_latency * 1000:.0f} ms")


def test_a_client_joining_mid_reply_gets_the_text_so_far_then_the_rest(platform: Platform) -> None:
    writer, sid, reply_id = ask(platform, "Tell me a long story about a dragon who learns to bake bread.")
    writer.until(lambda e: e["type"] == "delta" and e["seq"] >= 5)
    # A reload: a new connection in the middle of the stream.
    late = Watcher(ws_open(platform.ws, sid, platform.tokens["alice"]))
    snap = late.recv()
    assert snap["type"] == "session"
    joined = late.replies[reply_id]
    assert joined.snapshot_seq >= 5 and joined.snapshot_text
    full = writer.until_done(reply_id)
    seen = late.until_done(reply_id)
    writer.close(), late.close()
    # Nothing missing, nothing doubled: deltas continue after the snapshot, in order (the page's
    # door may coalesce deltas that arrive within 50 ms into one, carrying the last seq).
    assert seen.seqs == sorted(set(seen.seqs)) and seen.seqs[0] > joined.snapshot_seq
    assert seen.seqs[-1] == stored(platform, sid, reply_id)["seq"]
    assert seen.text == full.text
    assert stored(platform, sid, reply_id)["content"] == full.text


def test_four_concurrent_sessions_on_one_worker_all_complete(platform: Platform) -> None:
    sessions = [new_session(platform) for _ in range(4)]
    results: dict[int, tuple[str, str]] = {}
    errors: list[BaseException] = []

    def chat(sid: int, n: int) -> None:
        try:
            watcher = Watcher(ws_open(platform.ws, sid, platform.tokens["alice"]))
            watcher.recv()
            send(watcher.ws, type="message", content=f"Count from 1 to {n + 3}.")
            rid = watcher.first_reply_id()
            reply = watcher.until_done(rid, timeout=300)
            watcher.close()
            row = stored(platform, sid, rid)
            results[sid] = (reply.text, row["content"])
            assert row["status"] == "complete"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=chat, args=(sid, i)) for i, sid in enumerate(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(400)
    assert not errors, errors
    assert len(results) == 4
    for streamed, saved in results.values():
        assert streamed == saved != ""


def test_a_resent_message_is_stored_once(platform: Platform) -> None:
    sid = new_session(platform)
    watcher = Watcher(ws_open(platform.ws, sid, platform.tokens["alice"]))
    watcher.recv()
    send(watcher.ws, type="message", content="Say hi.", client_id="same-id")
    reply_id = watcher.first_reply_id()
    watcher.until_done(reply_id)
    send(watcher.ws, type="message", content="Say hi.", client_id="same-id")
    # Frames are handled in order: once the pong is back, the resent message has been handled.
    send(watcher.ws, type="ping")
    watcher.until(lambda e: e["type"] == "pong")
    watcher.close()
    status, body = api(platform.http, platform.tokens["alice"], "GET", f"/api/sessions/{sid}/messages/")
    assert status == 200
    assert [m["role"] for m in body["results"]] == ["user", "assistant"]


def test_editing_a_message_mid_reply_replaces_the_reply(platform: Platform) -> None:
    sid = new_session(platform)
    watcher = Watcher(ws_open(platform.ws, sid, platform.tokens["alice"]))
    watcher.recv()
    send(watcher.ws, type="message", content="Write a very long story about a lighthouse keeper.")
    first_reply = watcher.first_reply_id()
    user_id = next(
        e["message"]["id"] for e in watcher.events if e["type"] == "message" and e["message"]["role"] == "user"
    )
    watcher.until(lambda e: e["type"] == "delta" and e["seq"] >= 3)
    send(watcher.ws, type="edit", message_id=user_id, content="What is the capital of France?")
    deleted = watcher.until(lambda e: e["type"] == "deleted")
    assert first_reply in deleted["message_ids"]
    new_reply = watcher.until(lambda e: e["type"] == "message" and e["message"]["role"] == "assistant")["message"]["id"]
    assert watcher.until_done(new_reply).done["status"] == "complete"  # type: ignore[index]
    watcher.close()
    status, body = api(platform.http, platform.tokens["alice"], "GET", f"/api/sessions/{sid}/messages/")
    rows = [(m["role"], m["content"]) for m in body["results"]]
    assert rows[0] == ("user", "What is the capital of France?")
    assert len(rows) == 2 and "Paris" in rows[1][1]


def test_the_worker_loads_its_model_when_it_starts(platform: Platform) -> None:
    log = platform.log_dir / "worker.log"
    deadline = time.monotonic() + 60
    while "preloaded the models of assistant" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
        time.sleep(0.5)
