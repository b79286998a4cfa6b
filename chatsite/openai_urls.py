"""The OpenAI-compatible API, mounted under ``/v1/`` (the path OpenAI's clients expect)."""

from __future__ import annotations

from django.urls import URLPattern, path

from sessions_app.openai import views

urlpatterns: list[URLPattern] = [
    path("models", views.models_list, name="openai-models"),
    path("models/<str:model>", views.model_detail, name="openai-model"),
    path("chat/completions", views.chat_completions, name="openai-chat-completions"),
]
