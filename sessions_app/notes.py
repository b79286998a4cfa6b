"""Visible notes in a conversation: why a multi-agent round ended when no reply says so.

A note is a ``system`` message answering the user message whose round it ends; no agent reads it.
The turn services, the supervisor's worker and the reaper all write them, so they live here,
below all three.
"""

from __future__ import annotations

import logging

from django.db import transaction

from sessions_app import broadcast
from sessions_app.models import Message
from sessions_app.selectors import message_payload

log = logging.getLogger(__name__)

INTERRUPTED_NOTE = "The worker asking the supervisor who speaks next stopped before it answered; the round ends."


def note_add(user_message: Message, text: str) -> Message:
    """A visible note in the conversation, announced on commit."""
    note = Message.objects.create(
        session_id=user_message.session_id, role=Message.Role.SYSTEM, content=text, reply_to=user_message
    )

    def announce() -> None:
        try:
            broadcast.message_send(note.session_id, message_payload(note))
        except Exception as exc:  # the note is stored: a client reading the session finds it
            log.warning("announcing note %s failed: %s: %s", note.pk, type(exc).__name__, exc)

    transaction.on_commit(announce)
    return note
