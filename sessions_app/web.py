"""The browser pages: the chat app, session creation, the sidebar's search and the exports.

The chat page is a shell; its script (``static/chat/``) talks to the websocket and the REST API.
Every session is looked up through ``session_get_for_user``, so another user's session is a 404.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_POST

from agents.models import Agent
from agents.selectors import agent_list_for_user
from sessions_app import services
from sessions_app.leaderboard import leaderboard
from sessions_app.models import Message, Session
from sessions_app.selectors import session_export, session_get_for_user, session_list_for_user, session_payload

# Model output is rendered in this page: even if the sanitizer missed something, no script but
# ours runs and nothing is framed. Remote images stay allowed because a user may click to load one.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' http: https:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

SIDEBAR_LIMIT = 200


def with_csp(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """Send the page's Content-Security-Policy with the view's response."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = view(request, *args, **kwargs)
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return response

    return wrapped


STATUS_WORDS = {
    Message.Status.QUEUED: "queued",
    Message.Status.STREAMING: "generating",
    Message.Status.COMPLETE: "done",
    Message.Status.CANCELLED: "stopped",
    Message.Status.FAILED: "failed",
    Message.Status.INTERRUPTED: "interrupted",
}


def _session_or_404(request: HttpRequest, session_id: int) -> Session:
    session = session_get_for_user(user=request.user, session_id=session_id)
    if session is None:
        raise Http404("No such session.")
    return session


def _agent_card(agent: Agent) -> dict[str, Any]:
    return {
        "slug": agent.slug,
        "name": agent.name,
        "description": agent.description,
        "emoji": agent.avatar_emoji,
        "image": agent.avatar_image.url if agent.avatar_image else None,
        "backend": agent.backend,
        "backend_label": agent.backend_label,
        "node": agent.node,
        "model": agent.model.name if agent.model is not None else None,
        "tools": list(agent.tools or []) if agent.tool_choice != "none" else [],
    }


def _session_row(session: Session, *, participants: bool = False) -> dict[str, Any]:
    return {**session_payload(session, participants=participants), "updated_at": session.updated_at.isoformat()}


@with_csp
@login_required
@require_GET
def chat(request: HttpRequest, session_id: int | None = None) -> HttpResponse:
    """The chat app: with a session, its conversation; without, the agent picker."""
    session = _session_or_404(request, session_id) if session_id is not None else None
    agents = list(agent_list_for_user(user=request.user))
    sessions = session_list_for_user(user=request.user, archived=False)[:SIDEBAR_LIMIT]
    config = {
        "session": _session_row(session, participants=True) if session else None,
        "agents": [_agent_card(agent) for agent in agents],
        "sessions": [_session_row(s) for s in sessions],
        "maxChars": settings.MESSAGE_MAX_CHARS,
    }
    current_agent = next((a for a in agents if session and a.pk == session.agent_id), None)
    return render(
        request,
        "chat/chat.html",
        {"config": config, "session": session, "agents": agents, "current_agent": current_agent},
    )


@login_required
@require_POST
def session_new(request: HttpRequest) -> HttpResponse:
    """Start a session with the agent picked on the page, then open it."""
    slug = request.POST.get("agent", "")
    agent = None
    if slug:
        try:
            agent = services.agent_check_usable(user=request.user, slug=slug)
        except services.ChatError as exc:
            return HttpResponseBadRequest(exc.message)
    session = services.session_create(owner=request.user, agent=agent)
    return redirect("chat-session", session_id=session.pk)


@login_required
@require_GET
def session_list(request: HttpRequest) -> JsonResponse:
    """The sidebar: the user's sessions, newest first, filtered by ``q`` (title or content)."""
    archived = request.GET.get("archived", "").lower() in ("1", "true", "yes")
    query = request.GET.get("q", "")[:200]
    sessions = session_list_for_user(user=request.user, search=query, archived=archived)[:SIDEBAR_LIMIT]
    return JsonResponse({"sessions": [_session_row(s) for s in sessions]})


def _filename(session: Session, extension: str) -> str:
    name = slugify(session.title)[:50] or "session"
    return f"{name}-{session.pk}.{extension}"


def _attachment(body: str, content_type: str, filename: str) -> HttpResponse:
    response = HttpResponse(body, content_type=content_type)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@login_required
@require_GET
def session_export_json(request: HttpRequest, session_id: int) -> HttpResponse:
    session = _session_or_404(request, session_id)
    data = {"exported_at": timezone.now().isoformat(), **session_export(session=session)}
    body = json.dumps(data, indent=2, ensure_ascii=False)
    return _attachment(body, "application/json", _filename(session, "json"))


def export_markdown(data: dict[str, Any]) -> str:
    """A session export (``session_export``) as a Markdown document a person can read."""
    session = data["session"]
    lines = [
        f"# {session['title'] or 'Untitled session'}",
        "",
        f"Session {session['id']} · started {session['created_at'][:16].replace('T', ' ')} · "
        f"agents: {', '.join(session['agents']) or 'none'}",
        "",
    ]
    for message in data["messages"]:
        when = (message["created_at"] or "")[:16].replace("T", " ")
        if message["role"] == "user":
            heading = f"## You · {when}"
        elif message["role"] == "assistant":
            who = message["agent_name"] or message["agent"] or "Assistant"
            heading = " · ".join(part for part in (f"## {who}", message["backend"], when) if part)
        else:
            heading = f"## System · {when}"
        lines += ["---", "", heading, ""]
        if message["reasoning"]:
            lines += [*_thinking_quote(message), ""]
        for call in message.get("tool_calls") or []:
            lines += [*_tool_call_block(call), ""]
        lines += [message["content"].rstrip() or "*(no text)*", ""]
        if message["role"] == "assistant":
            lines += [f"*{_stats_line(message)}*", ""]
            if message["error"]:
                lines += [f"> Error: {message['error']}", ""]
    return "\n".join(lines)


def _thinking_quote(message: dict[str, Any]) -> list[str]:
    """A reasoning model's thinking as a quote under "Thought for N s", as the chat page folds it."""
    ms = message["reasoning_ms"]
    title = f"Thought for {max(1, round(ms / 1000))} s" if ms is not None else "Thought"
    return [f"> *{title}*", ">", *(f"> {line}".rstrip() for line in message["reasoning"].strip().splitlines())]


def _tool_call_block(call: dict[str, Any]) -> list[str]:
    """One tool call as the chat page shows its card: the tool, its arguments, then its result or error."""
    outcome = {"ok": "", "error": " · error", "cancelled": " · stopped", "running": " · did not finish"}
    title = f"> *Tool {call['name']}{outcome.get(call['status'], '')} · {call['duration_ms']} ms*"
    body = call["result"] if call["status"] == "ok" else call["error"]
    fence = "````" if "```" in f"{call['arguments']}{body}" else "```"
    quoted = [f"> {line}".rstrip() for line in [fence + "json", *call["arguments"].splitlines(), fence]]
    if body:
        quoted += [">", *(f"> {line}".rstrip() for line in [fence, *body.splitlines(), fence])]
    return [title, ">", *quoted]


def _stats_line(message: dict[str, Any]) -> str:
    stats = message["stats"]
    parts = [STATUS_WORDS.get(message["status"], message["status"])]
    if stats["completion_tokens"] is not None:
        parts.append(f"{stats['completion_tokens']} tokens")
    if stats["ttft_ms"] is not None:
        parts.append(f"TTFT {stats['ttft_ms']:.0f} ms")
    if stats["decode_tps"] is not None:
        parts.append(f"{stats['decode_tps']:.1f} tokens/s")
    if message["model"]:
        parts.append(message["model"])
    return " · ".join(parts)


@login_required
@require_GET
def session_export_markdown(request: HttpRequest, session_id: int) -> HttpResponse:
    session = _session_or_404(request, session_id)
    body = export_markdown(session_export(session=session))
    return _attachment(body, "text/markdown; charset=utf-8", _filename(session, "md"))


@with_csp
@login_required
@require_GET
def leaderboard_page(request: HttpRequest) -> HttpResponse:
    """Agents rated from compare picks (``sessions_app.leaderboard``)."""
    rows = leaderboard(agents=list(agent_list_for_user(user=request.user)))
    return render(request, "leaderboard.html", {"rows": rows})


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for a load balancer or compose: 200 when the database (and Redis, when the
    platform runs distributed) answer, else 503 naming the one that does not."""
    checks = {"database": _check(_database_ping)}
    if not settings.EMBEDDED:
        checks["redis"] = _check(_redis_ping)
    ok = all(state == "ok" for state in checks.values())
    body = {"ok": ok, "mode": "embedded" if settings.EMBEDDED else "distributed", **checks}
    return JsonResponse(body, status=200 if ok else 503)


def _check(ping: Callable[[], object]) -> str:
    try:
        ping()
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}: {exc}"[:200]
    return "ok"


def _database_ping() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _redis_ping() -> None:
    import redis

    with redis.Redis.from_url(settings.REDIS_URL or "", socket_timeout=2, socket_connect_timeout=2) as client:
        client.ping()
