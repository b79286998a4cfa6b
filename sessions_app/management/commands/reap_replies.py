from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from sessions_app.reaper import replies_reap


class Command(BaseCommand):
    help = "Mark replies whose worker stopped writing as `interrupted` (keeps their text)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--stale-seconds", type=int, default=None, help="Default: REPLY_STALE_SECONDS.")

    def handle(self, *args: Any, **options: Any) -> None:
        count = replies_reap(stale_seconds=options["stale_seconds"])
        self.stdout.write(f"interrupted: {count}")
