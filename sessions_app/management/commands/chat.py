"""Chat with an agent in the terminal: ``manage.py chat --agent assistant``.

The conversation itself is ``sessions_app.terminal.TerminalChat``; this is its door.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from sessions_app.terminal import LOCAL_USERNAME, TerminalChat
from sessions_app.terminal_style import Palette, colours_wanted


class Command(BaseCommand):
    help = (
        "Chat with an agent in the terminal, through the same services as the web chat. "
        "Ctrl+C stops a reply; `clear` starts a new session; `exit`, `quit` or Ctrl+D quits."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--agent", help="The agent's slug (default: DEFAULT_AGENT_SLUG, or the session's).")
        parser.add_argument(
            "--user",
            help=f"Chat as this user (default: the first superuser, else {LOCAL_USERNAME!r}).",
        )
        parser.add_argument("--session", help="Go on with this session of the user instead of starting one.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["verbosity"] < 2:
            # The reply threads log model loads to stderr, in the middle of the conversation.
            logging.getLogger().setLevel(logging.WARNING)
        # A terminal on both ends: read with input() and readline; otherwise read plain lines.
        tty = sys.stdin.isatty() and self.stdout.isatty()
        if tty:
            try:
                import readline  # noqa: F401 - gives input() line editing and history
            except ImportError:
                pass
        palette = Palette(
            enabled=colours_wanted(
                no_color=options["no_color"], force_color=options["force_color"], stream=self.stdout
            ),
            readline_prompt=tty,
        )
        chat = TerminalChat(
            out=self.stdout,
            palette=palette,
            tty=tty,
            agent_slug=options["agent"],
            username=options["user"],
            session_id=options["session"],
        )
        asyncio.run(chat.run())
