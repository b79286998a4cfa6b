"""Celery tasks: thin doors taking ids into the services of the same name."""

from __future__ import annotations

from celery import shared_task

from sessions_app import reaper, replies


@shared_task(name="sessions_app.tasks.reply_generate", acks_late=True)
def reply_generate(*, message_id: int) -> bool:
    return replies.reply_generate(message_id=message_id)


@shared_task(name="sessions_app.tasks.replies_reap")
def replies_reap() -> int:
    return reaper.replies_reap()
