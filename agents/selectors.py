"""Reads of agents. Every door that lists or picks an agent for a user goes through here."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import QuerySet

from agents.models import Agent


def agent_list_for_user(*, user: Any, include_inactive: bool = False) -> QuerySet[Agent]:
    """The agents ``user`` may chat with (staff may also see inactive ones), with their models."""
    qs = Agent.objects.visible_to(user).select_related("model")
    if not include_inactive:
        qs = qs.filter(is_active=True)
    return qs


def agent_get_for_user(*, user: Any, slug: str) -> Agent | None:
    """The active agent ``slug`` if ``user`` may use it; None otherwise (the caller answers 404)."""
    if not isinstance(slug, str) or not slug:
        return None
    return agent_list_for_user(user=user).filter(slug=slug).first()


def agent_default_for_user(*, user: Any) -> Agent | None:
    """The agent a new session gets: ``DEFAULT_AGENT_SLUG`` if usable, else the first usable one."""
    return agent_get_for_user(user=user, slug=settings.DEFAULT_AGENT_SLUG) or agent_list_for_user(user=user).first()


def agent_for_job(slug: str, user: Any) -> dict[str, Any]:
    """What a job needs of agent ``slug`` (its model artifact and settings), if ``user`` may use it.

    Used by the pipeline's jobs that name an agent (``pipeline.jobs.services``). An unknown
    slug, or one the user may not use, raises ``LookupError`` with the same message (which agents
    exist is not told); so does an agent with no model artifact (a served model, or none)."""
    if user is None:
        from django.contrib.auth.models import AnonymousUser

        user = AnonymousUser()
    agent = agent_get_for_user(user=user, slug=slug)
    if agent is None:
        raise LookupError(f"no agent {slug!r}")
    if agent.model_id is None:
        raise LookupError(f"agent {slug!r} has no model artifact to run a job with")
    return {
        "source": agent.model_id,
        "name": agent.name,
        "temperature": agent.temperature,
        "top_p": agent.top_p,
        "system_prompt": agent.system_prompt,
        "backend": agent.backend,
        "backend_options": agent.backend_options or {},
    }
