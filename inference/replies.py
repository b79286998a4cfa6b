"""Generate one reply: claim it, build the prompt, stream from the backend, record the result.

This runs wherever replies run: in a Celery worker (``inference.tasks.reply_generate``) or in
the embedded thread pool. It is safe to run twice for one message: only the first run claims it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from inference.backends.base import Backend, BackendError, ChatMessage, GenerationParams, backend_class
from inference.backends.options import options_validate
from inference.cache import model_cache
from inference.prompt import PromptTooLong, prompt_build
from inference.streambuf import stream_buffer
from sessions_app import broadcast
from sessions_app.models import Message
from sessions_app.selectors import history_for_reply, message_payload

log = logging.getLogger(__name__)

WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class _Stream:
    message: Message
    text: str = ""
    pending: str = ""
    seq: int = 0
    saved_seq: int = 0
    started: float = 0.0
    first_token: float | None = None
    last_flush: float = 0.0
    last_save: float = 0.0
    last_poll: float = 0.0
    stop_seen: bool = False


def backend_for_agent(agent: Any) -> tuple[type[Backend], dict[str, Any]]:
    """The backend class and the keyword arguments that build (and identify) its loaded model."""
    cls = backend_class(agent.backend)
    options = options_validate(agent.backend, agent.backend_options)
    model_path = ""
    if agent.model is not None:
        model_path = agent.model.path or agent.model.url
    kwargs: dict[str, Any] = {"model_path": model_path, "options": options, "api_key": agent.api_key}
    if agent.backend == "llama_cpp":
        kwargs["n_ctx"] = agent.context_window
    return cls, kwargs


def reply_generate(*, message_id: int) -> None:
    """Generate the reply ``message_id`` if it is still queued; otherwise do nothing."""
    close_old_connections()
    now = timezone.now()
    claimed = Message.objects.filter(pk=message_id, status=Message.Status.QUEUED).update(
        status=Message.Status.STREAMING, started_at=now, heartbeat_at=now, worker=WORKER_NAME
    )
    if not claimed:
        log.info("reply %s already claimed or finished; nothing to do", message_id)
        return
    message = Message.objects.select_related("session", "agent", "agent__model").get(pk=message_id)
    _live(broadcast.message_send, message.session_id, message_payload(message))
    stream = _Stream(message=message, started=time.monotonic())
    try:
        _generate(stream)
    except BackendError as exc:
        hint = " Trying again may help." if exc.retryable else ""
        _finish(stream, Message.Status.FAILED, error=f"{exc}{hint}")
    except PromptTooLong as exc:
        _finish(stream, Message.Status.FAILED, error=str(exc))
    except SoftTimeLimitExceeded:
        _finish(
            stream,
            Message.Status.FAILED,
            error=f"The reply ran past the worker's time limit ({settings.CELERY_TASK_SOFT_TIME_LIMIT} s); "
            "its text so far is kept. Ask for a shorter answer or raise CELERY_TASK_SOFT_TIME_LIMIT.",
        )
    except Exception as exc:  # the reply must end, whatever broke
        log.exception("reply %s failed", message_id)
        _finish(stream, Message.Status.FAILED, error=f"Internal error in the worker: {type(exc).__name__}: {exc}")
    finally:
        broadcast.flush()
        close_old_connections()


def _generate(stream: _Stream) -> None:
    message = stream.message
    agent = message.agent
    if agent is None:
        raise BackendError("The agent of this reply was deleted.")
    if message.cancel_requested:
        _finish(stream, Message.Status.CANCELLED)
        return
    cls, kwargs = backend_for_agent(agent)
    with model_cache().use(cls.cache_key(**kwargs), lambda: cls(**kwargs)) as backend:
        context = min(agent.context_window, backend.context_length() or agent.context_window)
        if not backend.counts_tokens:
            # Token counts are estimates here: keep a tenth of the window spare.
            context = int(context * 0.9)
        overrides = message.params or {}
        prompt = prompt_build(
            system_prompt=overrides.get("system_prompt", agent.system_prompt),
            history=history_for_reply(message),
            count_tokens=backend.count_tokens,
            context_window=context,
            max_tokens=min(overrides.get("max_tokens", agent.max_tokens), agent.max_tokens),
        )
        params = GenerationParams(
            max_tokens=prompt.max_tokens,
            temperature=overrides.get("temperature", agent.temperature),
            top_p=overrides.get("top_p", agent.top_p),
            repetition_penalty=overrides.get("repetition_penalty", agent.repetition_penalty),
            stop=tuple(overrides.get("stop", agent.stop) or ()),
            seed=overrides.get("seed"),
        )
        _stream_into(stream, backend, prompt.messages, params)


def _stop_requested(stream: _Stream) -> bool:
    now = time.monotonic()
    if stream.stop_seen:
        return True
    if now - stream.last_poll >= settings.REPLY_STOP_POLL_MS / 1000:
        stream.last_poll = now
        flag = Message.objects.filter(pk=stream.message.pk).values_list("cancel_requested", flat=True).first()
        stream.stop_seen = flag is not False  # stop asked for, or the reply was deleted (an edit)
    return stream.stop_seen


def _stream_into(stream: _Stream, backend: Backend, messages: list[ChatMessage], params: GenerationParams) -> None:
    flush_every = settings.REPLY_BROADCAST_INTERVAL_MS / 1000
    save_every = settings.REPLY_SAVE_INTERVAL_MS / 1000
    finish = "stop"
    usage = None
    for chunk in backend.stream_chat(
        messages,
        params,
        should_stop=lambda: _stop_requested(stream),
        session_key=f"session-{stream.message.session_id}",
    ):
        now = time.monotonic()
        if chunk.text:
            if stream.first_token is None:
                stream.first_token = now
            stream.pending += chunk.text
            if now - stream.last_flush >= flush_every:
                _flush(stream)
                stream.last_flush = now
            if now - stream.last_save >= save_every:
                _save_partial(stream)
                stream.last_save = now
        if chunk.finish_reason:
            finish = chunk.finish_reason
            usage = chunk.usage
    _flush(stream)
    status = Message.Status.CANCELLED if finish == "cancelled" or stream.stop_seen else Message.Status.COMPLETE
    _finish(stream, status, usage=usage, finish_reason="cancelled" if status == Message.Status.CANCELLED else finish)


def _live(send: Any, *args: Any) -> None:
    """Send a live update; if Redis is down the reply goes on and the database keeps the text."""
    try:
        send(*args)
    except Exception as exc:
        log.warning("live update failed (%s: %s); the reply continues", type(exc).__name__, exc)


def _flush(stream: _Stream) -> None:
    if not stream.pending:
        return
    text, stream.pending = stream.pending, ""
    stream.seq += 1
    stream.text += text
    # Buffer first, then broadcast: a client joining in between finds the text in the buffer.
    _live(stream_buffer().append, stream.message.pk, stream.seq, text)
    _live(broadcast.delta_send, stream.message.session_id, stream.message.pk, stream.seq, text)


def _save_partial(stream: _Stream) -> None:
    _flush(stream)
    Message.objects.filter(pk=stream.message.pk, status=Message.Status.STREAMING).update(
        content=stream.text, seq=stream.seq, heartbeat_at=timezone.now()
    )
    stream.saved_seq = stream.seq


def _finish(stream: _Stream, status: str, *, error: str = "", usage: Any = None, finish_reason: str = "") -> None:
    _flush(stream)
    message = stream.message
    end = time.monotonic()
    fields: dict[str, Any] = {
        "status": status,
        "content": stream.text,
        "seq": stream.seq,
        "error": error,
        "finished_at": timezone.now(),
        "heartbeat_at": timezone.now(),
    }
    if stream.first_token is not None:
        fields["ttft_ms"] = round((stream.first_token - stream.started) * 1000, 1)
    if finish_reason:
        fields["finish_reason"] = finish_reason
    if usage is not None:
        fields["prompt_tokens"] = usage.prompt_tokens
        fields["completion_tokens"] = usage.completion_tokens
        decode_time = end - (stream.first_token or end)
        if usage.completion_tokens > 1 and decode_time > 0:
            fields["decode_tps"] = round((usage.completion_tokens - 1) / decode_time, 2)
    # Only a reply still ours is finished: the reaper may have declared this worker dead.
    updated = Message.objects.filter(pk=message.pk, status=Message.Status.STREAMING).update(**fields)
    _live(stream_buffer().discard, message.pk)
    if not updated:
        return
    message.refresh_from_db()
    _live(broadcast.done_send, message.session_id, message_payload(message))


def replies_reap(*, stale_seconds: int | None = None, started_before: Any = None) -> int:
    """Mark replies whose worker stopped writing as ``interrupted``, keeping their latest text.

    ``started_before`` limits it to replies claimed before that time (a restarted process's).
    """
    stale = stale_seconds if stale_seconds is not None else settings.REPLY_STALE_SECONDS
    cutoff = timezone.now() - timedelta(seconds=stale)
    reaped = 0
    candidates = Message.objects.filter(status=Message.Status.STREAMING, heartbeat_at__lte=cutoff)
    if started_before is not None:
        candidates = candidates.filter(started_at__lt=started_before)
    for message in candidates:
        snapshot = None
        try:
            snapshot = stream_buffer().snapshot(message.pk)
        except Exception:  # Redis may be the thing that died; the database keeps its copy
            log.warning("stream buffer unavailable while reaping %s", message.pk)
        content, seq = message.content, message.seq
        if snapshot is not None and snapshot[1] >= seq:
            content, seq = snapshot
        updated = Message.objects.filter(pk=message.pk, status=Message.Status.STREAMING).update(
            status=Message.Status.INTERRUPTED,
            content=content,
            seq=seq,
            error="The worker generating this reply stopped before it finished.",
            finished_at=timezone.now(),
        )
        if updated:
            reaped += 1
            message.refresh_from_db()
            _live(broadcast.done_send, message.session_id, message_payload(message))
    broadcast.flush()
    return reaped
