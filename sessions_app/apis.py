"""REST: sessions of the caller, and their messages. Another user's session answers 404.

A service's refusal (``ChatError``, ``PolicyError``: ``inference.errors.PlatformError``) is not
caught here: ``chatsite.api_errors`` answers it as a 400 naming its field.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from django.http import Http404, HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.selectors import agent_list_for_user
from sessions_app import services
from sessions_app.leaderboard import leaderboard, preferences_for_user
from sessions_app.live import CADENCE_TOKEN
from sessions_app.models import Message, Session
from sessions_app.params import reply_params_validate
from sessions_app.selectors import message_list, session_get_for_user, session_list_for_user
from sessions_app.serializers import (
    LeaderboardRowSerializer,
    MessageCreateSerializer,
    MessageEditSerializer,
    MessageOutputSerializer,
    PickOutputSerializer,
    SessionCreateSerializer,
    SessionOutputSerializer,
    SessionUpdateSerializer,
)


def _session_or_404(request: Request, session_id: Any) -> Session:
    session = session_get_for_user(user=request.user, session_id=session_id)
    if session is None:
        raise Http404("No such session.")
    return session


class SessionListApi(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("archived", bool, description="Only archived (true) or active (false) sessions."),
            OpenApiParameter("search", str, description="Match the title or any message's text."),
            OpenApiParameter("page", int),
        ],
        responses=SessionOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        archived = request.query_params.get("archived")
        qs = session_list_for_user(
            user=request.user,
            archived=None if archived is None else archived.lower() in ("1", "true", "yes"),
            search=request.query_params.get("search", ""),
        )
        paginator = generics.GenericAPIView.pagination_class()
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(SessionOutputSerializer(page, many=True).data)

    @extend_schema(request=SessionCreateSerializer, responses={201: SessionOutputSerializer})
    def post(self, request: Request) -> Response:
        data = SessionCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        agent = _agents(request, [values["agent"]], "agent")[0] if values.get("agent") else None
        agents = _agents(request, values["agents"], "agents") if values.get("agents") else None
        session = services.session_create(
            owner=request.user, agent=agent, title=values["title"], agents=agents, turn_policy=values.get("turn_policy")
        )
        return Response(SessionOutputSerializer(session).data, status=status.HTTP_201_CREATED)


def _agents(request: Request, slugs: list[str], field: str) -> list[Any]:
    """The agents these slugs name, each one the user may use; duplicates are refused. A refusal
    names ``field``, the request's name for the list."""
    if len(set(slugs)) != len(slugs):
        raise services.ChatError("duplicate_agent", "Name each agent once.", field=field)
    agents = []
    for slug in slugs:
        try:
            agents.append(services.agent_check_usable(user=request.user, slug=slug))
        except services.ChatError as exc:
            exc.field = field  # the service's own name for it is ``agent``
            raise
    return agents


class SessionDetailApi(APIView):
    @extend_schema(responses=SessionOutputSerializer)
    def get(self, request: Request, session_id: int) -> Response:
        return Response(SessionOutputSerializer(_session_or_404(request, session_id)).data)

    @extend_schema(request=SessionUpdateSerializer, responses=SessionOutputSerializer)
    def patch(self, request: Request, session_id: int) -> Response:
        session = _session_or_404(request, session_id)
        data = SessionUpdateSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        if "agents" in values:
            values["agents"] = _agents(request, values["agents"], "agents")
        session = services.session_update(session=session, **values)
        return Response(SessionOutputSerializer(session).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, session_id: int) -> Response:
        services.session_delete(session=_session_or_404(request, session_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class MessageListApi(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("role", str, enum=["user", "assistant", "system"]),
            OpenApiParameter("status", str, enum=[s.value for s in Message.Status]),
            OpenApiParameter("page", int),
        ],
        responses=MessageOutputSerializer(many=True),
    )
    def get(self, request: Request, session_id: int) -> Response:
        session = _session_or_404(request, session_id)
        paginator = generics.GenericAPIView.pagination_class()
        qs = message_list(
            session=session,
            role=request.query_params.get("role", ""),
            status=request.query_params.get("status", ""),
        )
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(MessageOutputSerializer(page, many=True).data)

    @extend_schema(request=MessageCreateSerializer, responses={202: MessageOutputSerializer(many=True)})
    def post(self, request: Request, session_id: int) -> Response:
        """Send a message; the reply is queued. Poll it, or watch it over the websocket."""
        session = _session_or_404(request, session_id)
        data = MessageCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        if values.get("compare"):
            agents = _agents(request, values["compare"], "compare")
            sent, replies = services.message_compare(
                session=session, content=values["content"], agents=agents, client_id=values.get("client_id")
            )
            return Response(MessageOutputSerializer([sent, *replies], many=True).data, status=status.HTTP_202_ACCEPTED)
        agent = services.agent_check_usable(user=request.user, slug=values["agent"]) if values.get("agent") else None
        params = reply_params_validate(values.get("params"), agent=agent)
        sent, reply = services.message_send(
            session=session,
            content=values["content"],
            client_id=values.get("client_id"),
            agent=agent,
            params={**params, "cadence": CADENCE_TOKEN},  # an API client follows it (SSE) token by token
        )
        # Under a supervisor no reply exists yet: it picks the first speaker on its worker.
        created = [sent, reply] if reply is not None else [sent]
        return Response(MessageOutputSerializer(created, many=True).data, status=status.HTTP_202_ACCEPTED)


class MessageDetailApi(APIView):
    @extend_schema(request=MessageEditSerializer, responses={202: MessageOutputSerializer(many=True)})
    def patch(self, request: Request, session_id: int, message_id: int) -> Response:
        """Edit a user message and answer it again; the messages after it are replaced."""
        session = _session_or_404(request, session_id)
        data = MessageEditSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if not message_list(session=session).filter(pk=message_id).exists():
            raise Http404("No such message.")
        edited, reply = services.message_edit(
            session=session, message_id=message_id, content=data.validated_data["content"]
        )
        return Response(MessageOutputSerializer([edited, reply], many=True).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses=MessageOutputSerializer)
    def get(self, request: Request, session_id: int, message_id: int) -> Response:
        session = _session_or_404(request, session_id)
        message = message_list(session=session).filter(pk=message_id).first()
        if message is None:
            raise Http404("No such message.")
        return Response(MessageOutputSerializer(message).data)


class ReplyStopApi(APIView):
    @extend_schema(request=None, responses={200: None})
    def post(self, request: Request, session_id: int) -> Response:
        """Stop the session's unfinished replies; their partial text is kept."""
        session = _session_or_404(request, session_id)
        return Response({"stopping": services.reply_stop(session=session)})


class ReplyRegenerateApi(APIView):
    @extend_schema(request=None, responses={202: MessageOutputSerializer})
    def post(self, request: Request, session_id: int) -> Response:
        """Replace the session's last reply with a new one; returns the queued reply."""
        session = _session_or_404(request, session_id)
        reply = services.reply_regenerate(session=session)
        return Response(MessageOutputSerializer(reply).data, status=status.HTTP_202_ACCEPTED)


class ReplyPickApi(APIView):
    @extend_schema(request=None, responses={200: PickOutputSerializer})
    def post(self, request: Request, session_id: int, message_id: int) -> Response:
        """Pick this reply as the best of those compared for its message (a new pick replaces the
        old one). Picks feed the leaderboard and the preference export."""
        session = _session_or_404(request, session_id)
        pick = services.reply_pick(session=session, message_id=message_id)  # not_found: 404
        winner = pick.winner
        return Response(
            {
                "reply_to": pick.user_message_id,
                "picked": winner.pk,
                "agent": winner.agent.slug if winner.agent else None,
            }
        )


class LeaderboardApi(APIView):
    @extend_schema(responses=LeaderboardRowSerializer(many=True))
    def get(self, request: Request) -> Response:
        """Agents rated from every user's compare picks (Bradley–Terry, 95 % bootstrap interval);
        only agents you may use are listed."""
        rows = leaderboard(agents=list(agent_list_for_user(user=request.user)))
        return Response(LeaderboardRowSerializer([asdict(r) for r in rows], many=True).data)


class PreferencesApi(APIView):
    @extend_schema(responses={200: None})
    def get(self, request: Request) -> HttpResponse:
        """Your picks as preference pairs for fine-tuning, one JSON object a line (``prompt``,
        ``chosen``, ``rejected``, and the agents)."""
        lines = [json.dumps(row, ensure_ascii=False) for row in preferences_for_user(user=request.user)]
        response = HttpResponse("".join(line + "\n" for line in lines), content_type="application/x-ndjson")
        response["Content-Disposition"] = 'attachment; filename="preferences.jsonl"'
        return response
