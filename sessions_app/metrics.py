"""``GET /metrics``: the platform's numbers in Prometheus' text format (prometheus-client).

Read at scrape time from what every process already writes, so daphne, the workers and the
embedded default need no shared multiprocess directory:

- replies by agent, backend and status, and their TTFT and decode-speed histograms (the
  database: each finished reply stores ``ttft_ms`` and ``decode_tps``);
- jobs by kind and status (the database);
- Celery queue depths (the length of each queue's Redis list);
- the workers online, their memory and running tasks, and the models each has loaded (in any of
  its processes), with their size and idle time (the workers' beats in Redis, ``inference.workers``).

Who may read it: staff (session or API token), or a scraper sending ``Authorization: Bearer
$METRICS_TOKEN`` when that setting is set. Anyone else: 401 / 403.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from rest_framework.request import Request
from rest_framework.views import APIView

from inference.backends.registry import backend_classes
from inference.models import Job
from inference.workers import workers_online
from sessions_app.models import Message

log = logging.getLogger(__name__)

TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)  # seconds
DECODE_BUCKETS = (1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 200.0, 500.0)  # tokens per second


def _histogram(name: str, doc: str, field: str, buckets: tuple[float, ...], scale: float) -> HistogramMetricFamily:
    """A histogram per (agent, backend) of a reply field, counted by the database in one query."""
    family = HistogramMetricFamily(name, doc, labels=["agent", "backend"])
    counts = {f"le{i}": Count("pk", filter=Q(**{f"{field}__lte": b * scale})) for i, b in enumerate(buckets)}
    rows = (
        Message.objects.filter(role=Message.Role.ASSISTANT, **{f"{field}__isnull": False})
        .values("agent__slug", "backend")
        .annotate(n=Count("pk"), total=Sum(field), **counts)
        .order_by("agent__slug", "backend")
    )
    for row in rows:
        cumulative = [(str(b), float(row[f"le{i}"])) for i, b in enumerate(buckets)] + [("+Inf", float(row["n"]))]
        family.add_metric([row["agent__slug"] or "", row["backend"] or ""], cumulative, (row["total"] or 0) / scale)
    return family


def _queue_depths() -> dict[str, int]:
    if settings.EMBEDDED or not settings.REDIS_URL:
        return {}
    import redis

    queues = sorted({*backend_classes(), "default", "jobs", settings.JOB_GPU_QUEUE})
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    with client.pipeline() as pipe:
        for queue in queues:
            pipe.llen(queue)
        return dict(zip(queues, (int(n) for n in pipe.execute()), strict=True))


class PlatformCollector:
    def collect(self) -> Iterator[Metric]:
        replies = CounterMetricFamily(
            "chatsite_replies", "Replies by agent, backend and status.", labels=["agent", "backend", "status"]
        )
        rows = (
            Message.objects.filter(role=Message.Role.ASSISTANT)
            .values("agent__slug", "backend", "status")
            .annotate(n=Count("pk"))
            .order_by("agent__slug", "backend", "status")
        )
        for row in rows:
            replies.add_metric([row["agent__slug"] or "", row["backend"] or "", row["status"]], row["n"])
        yield replies
        yield _histogram("chatsite_reply_ttft_seconds", "Time to first token of replies.", "ttft_ms", TTFT_BUCKETS,
                         1000.0)  # fmt: skip
        yield _histogram("chatsite_reply_decode_tokens_per_second", "Decode speed of replies (tokens after the "
                         "first / time after the first).", "decode_tps", DECODE_BUCKETS, 1.0)  # fmt: skip

        jobs = GaugeMetricFamily("chatsite_jobs", "Jobs by kind and status.", labels=["kind", "status"])
        for row in Job.objects.values("kind", "status").annotate(n=Count("pk")).order_by("kind", "status"):
            jobs.add_metric([row["kind"], row["status"]], row["n"])
        yield jobs

        depth = GaugeMetricFamily("chatsite_queue_depth", "Tasks waiting in each Celery queue.", labels=["queue"])
        try:
            for queue, n in _queue_depths().items():
                depth.add_metric([queue], n)
        except Exception as exc:  # Redis is away: the other numbers still come
            log.warning("queue depths unavailable: %s", exc)
        yield depth

        yield from _worker_metrics(workers_online())


def _worker_metrics(workers: list[dict[str, Any]]) -> Iterator[Metric]:
    online = GaugeMetricFamily("chatsite_workers_online", "Workers whose beat is fresh.")
    online.add_metric([], len(workers))
    yield online
    beat = GaugeMetricFamily("chatsite_worker_beat_age_seconds", "Seconds since a worker's last beat.",
                             labels=["worker"])  # fmt: skip
    rss = GaugeMetricFamily("chatsite_worker_resident_bytes", "A worker's resident memory, all its processes.",
                            labels=["worker"])  # fmt: skip
    loaded = GaugeMetricFamily("chatsite_model_loaded_bytes", "Models loaded in a worker and their size.",
                               labels=["worker", "backend", "model"])  # fmt: skip
    idle = GaugeMetricFamily("chatsite_model_idle_seconds", "Seconds since a loaded model was last used.",
                             labels=["worker", "backend", "model"])  # fmt: skip
    tasks = GaugeMetricFamily("chatsite_worker_tasks_running", "Tasks a worker runs now.", labels=["worker"])
    for worker in workers:
        name = str(worker.get("hostname", ""))
        beat.add_metric([name], float(worker.get("beat_age_seconds") or 0))
        if worker.get("rss_bytes") is not None:  # all its processes: the main one and its pool's
            rss.add_metric([name], float(worker["rss_bytes"]))
        tasks.add_metric([name], float(len(worker.get("tasks") or [])))
        # Two pool processes may hold the same model: one sample per model, their memory summed.
        models: dict[tuple[str, str], tuple[float, float]] = {}
        for model in (worker.get("models") or {}).get("loaded", []):
            key = (str(model.get("backend", "")), str(model.get("model", "")))
            size, idle_for = models.get(key, (0.0, float("inf")))
            models[key] = (size + float(model.get("bytes") or 0), min(idle_for, float(model.get("idle_seconds") or 0)))
        for (backend, model_name), (size, idle_for) in sorted(models.items()):
            loaded.add_metric([name, backend, model_name], size)
            idle.add_metric([name, backend, model_name], idle_for)
    yield from (beat, rss, loaded, idle, tasks)


_registry = CollectorRegistry(auto_describe=False)
_registry.register(PlatformCollector())  # type: ignore[arg-type]


def metrics_text() -> bytes:
    return generate_latest(_registry)


class MetricsView(APIView):
    """Staff (session or API token), or ``Authorization: Bearer $METRICS_TOKEN``."""

    permission_classes: list[Any] = []

    def _scraper(self, request: Request) -> bool:
        expected = settings.METRICS_TOKEN
        header = request.META.get("HTTP_AUTHORIZATION", "")
        return bool(expected) and header.startswith("Bearer ") and hmac.compare_digest(header[7:], expected)

    def get_authenticators(self) -> list[Any]:
        # A scraper's bearer token is not an API token: don't let the token scheme reject it.
        header = self.request.META.get("HTTP_AUTHORIZATION", "") if getattr(self, "request", None) else ""
        return [] if header.startswith("Bearer ") else super().get_authenticators()

    @extend_schema(exclude=True)  # Prometheus' text format, not part of the JSON API
    def get(self, request: Request) -> HttpResponse:
        if not self._scraper(request):
            user = request.user
            if not (user and user.is_authenticated):
                return HttpResponse("Sign in as staff, or send Authorization: Bearer <METRICS_TOKEN>.\n",
                                    status=401, content_type="text/plain")  # fmt: skip
            if not user.is_staff:
                return HttpResponse("Staff only.\n", status=403, content_type="text/plain")
        return HttpResponse(metrics_text(), content_type=CONTENT_TYPE_LATEST)
