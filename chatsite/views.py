from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from agents.models import Agent
from sessions_app.selectors import session_list_for_user


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """A plain landing page until the chat UI lands: the user's agents and sessions."""
    return render(
        request,
        "home.html",
        {
            "agents": Agent.objects.visible_to(request.user),
            "sessions": session_list_for_user(user=request.user, archived=False)[:50],
            "embedded": settings.EMBEDDED,
        },
    )


def healthz(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"ok": True, "mode": "embedded" if settings.EMBEDDED else "distributed"})
