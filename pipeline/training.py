"""Training rows from what users did in chat, for the fine-tune job (``pipeline.jobs.datasets``).

- ``sessions``: each picked session (the user's own; another user's answers as not found) as one
  conversation, as its default agent sees it, with that agent's system prompt, cut after the last
  assistant turn;
- ``preferences``: each reply the user picked in compare, after the conversation it answered.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pipeline.jobs.datasets import DatasetError, record_normalize
from sessions_app.leaderboard import preferences_for_user
from sessions_app.selectors import history_as_seen, session_get_for_user


def session_records(user: Any, session_ids: list[int]) -> list[dict[str, Any]]:
    records = []
    for session_id in session_ids:
        session = session_get_for_user(user=user, session_id=session_id) if user is not None else None
        if session is None:
            raise DatasetError(f"no session with id {session_id}")
        messages: list[dict[str, str]] = list(
            history_as_seen(session_id=session.pk, before=None, agent_id=session.agent_id)  # type: ignore[arg-type]
        )
        while messages and messages[-1]["role"] != "assistant":
            messages.pop()
        if not messages:
            raise DatasetError(f"session {session_id} has no reply to learn from")
        system = session.agent.system_prompt if session.agent_id and session.agent else ""
        if system.strip():
            messages.insert(0, {"role": "system", "content": system})
        records.append(record_normalize({"messages": messages, "session": session.pk}))
    return records


def preference_records(user: Any, wanted: bool) -> list[dict[str, Any]]:
    seen, records = set(), []
    for pair in preferences_for_user(user=user) if wanted and user is not None else []:
        messages = [*pair["prompt"], {"role": "assistant", "content": pair["chosen"]}]
        key = json.dumps(messages, sort_keys=True)
        if key not in seen:
            seen.add(key)
            records.append(record_normalize({"messages": messages, "agent": pair["chosen_agent"]}))
    if not records:
        raise DatasetError("you have picked no reply in compare yet")
    return records


SOURCES: dict[str, Callable[[Any, Any], list[dict[str, Any]]]] = {
    "sessions": session_records,
    "preferences": preference_records,
}


def records_from(name: str, user: Any, value: Any) -> list[dict[str, Any]]:
    """Records from source ``name`` (``sessions`` or ``preferences``); DatasetError when it finds none."""
    if name not in SOURCES:
        raise DatasetError(f"no training source {name!r}")
    return SOURCES[name](user, value)
