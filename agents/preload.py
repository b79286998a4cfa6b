"""Load the models a worker will serve when it starts, not on its first reply.

A vLLM engine takes a minute or more to start; without this the first person to ask waits for
it. Loading runs in a background thread, so the worker takes tasks at once: a reply that arrives
mid-load waits for that load (the model cache loads each model once) instead of starting another.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from django.conf import settings
from django.db import close_old_connections

from inference.runtime.heap import heap_freeze

log = logging.getLogger(__name__)


def models_preload(*, queues: Iterable[str]) -> list[str]:
    """Load, in this process, the model of every active agent routed to one of ``queues``.

    Returns the slugs of the agents whose model is now loaded; a model that fails to load is
    logged and skipped (its replies will say why).
    """
    from agents.models import Agent
    from inference.cache import model_cache

    wanted = set(queues)
    loaded: list[str] = []
    seen: set[tuple[object, ...]] = set()
    try:
        for agent in Agent.objects.filter(is_active=True).select_related("model").order_by("pk"):
            if agent.queue not in wanted:
                continue
            try:
                plan = agent.load_plan()
                if plan.key not in seen:
                    seen.add(plan.key)
                    with model_cache().use(plan.key, plan.build):
                        pass
                loaded.append(agent.slug)
            except Exception:
                log.exception("preloading the model of agent %s failed", agent.slug)
    finally:
        close_old_connections()
    if loaded:
        log.info("preloaded the models of %s", ", ".join(loaded))
        # The models' Python side (tokenizers, clients) lives as long as the worker.
        heap_freeze("worker, its models loaded", views=False)
    return loaded


def models_preload_in_background(*, queues: Iterable[str]) -> threading.Thread | None:
    if not settings.PRELOAD_MODELS:
        return None
    names = sorted(set(queues))
    thread = threading.Thread(target=models_preload, kwargs={"queues": names}, name="model-preload", daemon=True)
    thread.start()
    return thread
