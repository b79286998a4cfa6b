"""The browser pages, included at the site root by ``chatsite.urls``."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from pipeline import web as pipeline_views
from sessions_app import web as views
from sessions_app import web_tokens as token_views

urlpatterns = [
    path(
        "login/",
        views.with_csp(
            auth_views.LoginView.as_view(template_name="registration/login.html", redirect_authenticated_user=True)
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.chat, name="chat"),
    path("tokens/", token_views.tokens, name="tokens"),
    path("leaderboard", views.leaderboard_page, name="leaderboard-page"),
    path("jobs/", pipeline_views.jobs_page, name="jobs-page"),
    path("workers/", pipeline_views.workers_page, name="workers-page"),
    path("benchmarks/", pipeline_views.benchmarks_page, name="benchmarks-page"),
    path("tokens/<int:token_id>/revoke/", token_views.token_revoke_view, name="token-revoke"),
    path("s/new/", views.session_new, name="chat-session-new"),
    path("s/list.json", views.session_list, name="chat-session-list"),
    path("s/<int:session_id>/", views.chat, name="chat-session"),
    path("s/<int:session_id>/export.md", views.session_export_markdown, name="chat-export-md"),
    path("s/<int:session_id>/export.json", views.session_export_json, name="chat-export-json"),
]
