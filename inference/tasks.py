"""Celery tasks: thin doors taking ids into the services of the same name."""

from __future__ import annotations

from celery import shared_task

from inference import replies


@shared_task(name="inference.tasks.reply_generate", acks_late=True)
def reply_generate(*, message_id: int) -> None:
    replies.reply_generate(message_id=message_id)


@shared_task(name="inference.tasks.replies_reap")
def replies_reap() -> int:
    return replies.replies_reap()
