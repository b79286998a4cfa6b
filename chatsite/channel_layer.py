"""The Redis channel layer as the platform runs it.

channels_redis builds a plain redis-py ``ConnectionPool`` from each host entry. Two things go
wrong with it under load and across Redis restarts (both measured, docs/reliability.md):

- that pool raises ``MaxConnectionsError`` the moment a burst needs more connections than it
  holds, so a burst of websocket handshakes got HTTP 500s from ``group_add``. Here the pool is a
  ``BlockingConnectionPool``: a command waits (up to ``timeout`` seconds) for a free connection;
- its connections are used once more after Redis restarted, and the first command on each fails
  with "Connection closed by server" (redis-py retries nothing by default). Here each command is
  retried on a fresh connection (``retries``, with a short exponential backoff), and connections
  idle for ``health_check_interval`` seconds are checked before use.
"""

from __future__ import annotations

from typing import Any

from channels_redis.core import RedisChannelLayer as _RedisChannelLayer
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError


class RedisChannelLayer(_RedisChannelLayer):
    def create_pool(self, index: int) -> BlockingConnectionPool:
        host: dict[str, Any] = dict(self.hosts[index])
        address = host.pop("address")
        retries = int(host.pop("retries", 3))
        return BlockingConnectionPool.from_url(
            address,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries),
            retry_on_error=[ConnectionError, TimeoutError],
            **host,
        )
