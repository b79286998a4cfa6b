"""GET /metrics: who may read it, and that its numbers are the database's and the workers'."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from agents.models import Agent
from inference.cache import ModelCache
from inference.models import Job
from sessions_app import metrics
from sessions_app.models import Message, Session


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_only_staff_or_the_scrape_token_may_read_it(api: APIClient, staff_api: APIClient, settings: Any) -> None:
    anon = APIClient()
    assert anon.get("/metrics").status_code == 401
    assert api.get("/metrics").status_code == 403
    ok = staff_api.get("/metrics")
    assert ok.status_code == 200 and ok["Content-Type"].startswith("text/plain; version=")
    settings.METRICS_TOKEN = "s3cret-scrape"
    assert anon.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape").status_code == 200
    assert anon.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    settings.METRICS_TOKEN = ""
    assert anon.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401


def test_replies_jobs_and_histograms_come_from_the_database(
    staff_api: APIClient, user: Any, agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = Session.objects.create(owner=user, agent=agent)
    replies = [("complete", 80.0, 40.0), ("complete", 300.0, 120.0), ("failed", None, None), ("complete", 2000.0, 8.0)]
    for status, ttft, tps in replies:
        Message.objects.create(session=session, role="assistant", content="x", status=status, agent=agent,
                               backend="llama_cpp", ttft_ms=ttft, decode_tps=tps)  # fmt: skip
    Message.objects.create(session=session, role="user", content="hi")
    Job.objects.create(kind="convert", status="succeeded")
    Job.objects.create(kind="convert", status="failed")
    Job.objects.create(kind="finetune_lora", status="running")
    monkeypatch.setattr(metrics, "_queue_depths", lambda: {"llama_cpp": 3, "jobs": 0})
    got = samples(staff_api.get("/metrics").content)
    labels = (("agent", agent.slug), ("backend", "llama_cpp"))
    assert got[("chatsite_replies_total", (*labels, ("status", "complete")))] == 3
    assert got[("chatsite_replies_total", (*labels, ("status", "failed")))] == 1
    ttft = "chatsite_reply_ttft_seconds"
    assert got[(f"{ttft}_bucket", (*labels[:1], ("backend", "llama_cpp"), ("le", "0.1")))] == 1
    assert got[(f"{ttft}_bucket", (*labels[:1], ("backend", "llama_cpp"), ("le", "0.5")))] == 2
    assert got[(f"{ttft}_bucket", (*labels[:1], ("backend", "llama_cpp"), ("le", "+Inf")))] == 3
    assert got[(f"{ttft}_count", labels)] == 3 and got[(f"{ttft}_sum", labels)] == pytest.approx(2.38)
    decode = "chatsite_reply_decode_tokens_per_second"
    assert got[(f"{decode}_bucket", (*labels[:1], ("backend", "llama_cpp"), ("le", "10.0")))] == 1
    assert got[(f"{decode}_bucket", (*labels[:1], ("backend", "llama_cpp"), ("le", "50.0")))] == 2
    assert got[("chatsite_jobs", (("kind", "convert"), ("status", "failed")))] == 1
    assert got[("chatsite_jobs", (("kind", "finetune_lora"), ("status", "running")))] == 1
    assert got[("chatsite_queue_depth", (("queue", "llama_cpp"),))] == 3


def test_loaded_models_and_their_unloading_show_per_worker(
    staff_api: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Fake:
        def load(self) -> None:
            pass

        def memory_bytes(self) -> int:
            return 98_000_000

        def close(self) -> None:
            pass

    now = [100.0]
    cache = ModelCache(max_bytes=10**9, idle_seconds=30, clock=lambda: now[0])
    monkeypatch.setattr(cache, "_start_sweeper", lambda: None)
    with cache.use(("llama_cpp", "/models/a.gguf"), Fake):
        pass
    now[0] = 110.0
    stats = cache.stats()
    assert [(m["backend"], m["model"], m["idle_seconds"]) for m in stats["loaded"]] == [
        ("llama_cpp", "/models/a.gguf", 10.0)
    ]
    worker = {"hostname": "w1@h", "beat_age_seconds": 1.5, "rss_bytes": 123456, "models": stats}
    monkeypatch.setattr(metrics, "workers_online", lambda: [worker])
    got = samples(staff_api.get("/metrics").content)
    model = (("backend", "llama_cpp"), ("model", "/models/a.gguf"), ("worker", "w1@h"))
    assert got[("chatsite_workers_online", ())] == 1
    assert got[("chatsite_worker_resident_bytes", (("worker", "w1@h"),))] == 123456
    assert got[("chatsite_model_loaded_bytes", model)] == 98_000_000
    assert got[("chatsite_model_idle_seconds", model)] == 10.0
    # Idle past the keep-alive: unloaded, and reported as such.
    now[0] = 200.0
    assert cache.sweep() == 1
    stats = cache.stats()
    assert stats["loaded"] == [] and stats["unloaded"][-1]["model"] == "/models/a.gguf"
    worker["models"] = stats
    got = samples(staff_api.get("/metrics").content)
    assert ("chatsite_model_loaded_bytes", model) not in got


def test_a_model_held_by_two_pool_processes_is_one_sample_with_their_memory(
    staff_api: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inference.workers import workers_merge

    def child(pid: int, idle: float) -> dict[str, Any]:
        loaded = [{"backend": "llama_cpp", "model": "/models/a.gguf", "bytes": 98_000_000, "idle_seconds": idle}]
        task = {"id": f"t{pid}", "name": "x", "kwargs": {}, "started_at": 0}
        return {"hostname": "w1@h", "worker_pid": 1, "pid": pid, "rss_bytes": 200_000_000, "beat_at": 0,
                "models": {"loaded": loaded}, "tasks": [task]}  # fmt: skip

    main = {"hostname": "w1@h", "pid": 1, "rss_bytes": 50_000_000, "beat_at": 0, "queues": ["llama_cpp"]}
    merged = workers_merge([main], [child(2, 12.0), child(3, 3.0)], now=1.0)
    monkeypatch.setattr(metrics, "workers_online", lambda: merged)
    got = samples(staff_api.get("/metrics").content)
    model = (("backend", "llama_cpp"), ("model", "/models/a.gguf"), ("worker", "w1@h"))
    assert got[("chatsite_worker_resident_bytes", (("worker", "w1@h"),))] == 450_000_000
    assert got[("chatsite_model_loaded_bytes", model)] == 196_000_000
    assert got[("chatsite_model_idle_seconds", model)] == 3.0
    assert got[("chatsite_worker_tasks_running", (("worker", "w1@h"),))] == 2
