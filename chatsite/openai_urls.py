"""The OpenAI-compatible API, mounted under ``/v1/`` (the path OpenAI's clients expect)."""

from __future__ import annotations

from django.urls import URLPattern, path

from sessions_app import openai_api

urlpatterns: list[URLPattern] = [
    path("models", openai_api.models_list, name="openai-models"),
    path("models/<str:model>", openai_api.model_detail, name="openai-model"),
    path("chat/completions", openai_api.chat_completions, name="openai-chat-completions"),
]
