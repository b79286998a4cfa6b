"""A burst of websockets: 200 opened at once, 64 of them streaming a reply, against daphne, Redis
and a real worker (the bundled model, replies capped at a few tokens so that 64 fit in a minute).

No handshake may fail (before the channel layer's pool waited for a free connection, 8 to 48 of
200 got HTTP 500 from ``MaxConnectionsError``), every stream must end complete and exact. The
numbers (connect time, daphne memory, slowest stream, 500 idle sockets held a minute) come from
``python -m tools.bench_burst`` and are in docs/reliability.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.services import PrivateRedis, private_platform, scratch_database
from tools.bench_burst import burst, burst_summary, sessions_create

pytestmark = pytest.mark.slow


def test_two_hundred_websockets_at_once_with_sixty_four_streaming(tmp_path: Path) -> None:
    redis_server = PrivateRedis(tmp_path)
    redis_server.start()
    try:
        with (
            scratch_database() as database_url,
            private_platform(
                tmp_path,
                database_url=database_url,
                redis_url=redis_server.url,
                code="from agents.models import Agent\n"
                "Agent.objects.filter(slug='assistant').update(max_tokens=12, temperature=0.0)\n",
            ) as platform,  # fmt: skip
        ):
            token = platform.tokens["alice"]
            sessions = sessions_create(platform.http, token, 200)
            summary = burst_summary(burst(platform.ws, token, sessions, streaming=64))
            assert summary["handshakes"] == {"ok": 200}, summary
            assert summary["errors"] == 0 and summary["closed_by_server"] == 0, summary
            assert summary["streams_complete"] == 64 and summary["streams_exact"] == 64, summary
            log = (platform.log_dir / "daphne.log").read_text(errors="replace")
            assert "Traceback" not in log, log[-3000:]
    finally:
        redis_server.stop()
