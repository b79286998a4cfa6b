"""The Redis channel layer as the platform runs it: channels_redis's pub/sub layer, with three
changes.

Why pub/sub (issue 25, docs/benchmarks.md): a streamed reply sends one event per token, and the
core layer (``channels_redis.core``) spends several Redis round trips and a Lua script on each
``group_send``, then a blocking pop and its locks on each ``receive``, in the worker, in Redis and
in daphne, on the cores the engine needs. Here a group send is one ``PUBLISH``, which a worker
writes together with its live-buffer append (``sessions_app.broadcast``), and each daphne process
reads every group it follows from one subscribed connection. Events are not
kept for an absent reader, as with the core layer when a channel was full or Redis restarted:
every door already reads the database when events stop (``sessions_app.follow``).

The changes:

- the connection pool waits for a free connection instead of failing a burst of handshakes
  (``BlockingConnectionPool``), and each command is retried on a fresh connection after a Redis
  restart (both measured, docs/reliability.md);
- when the subscribed connection fails (Redis is away), every channel of the process gets the
  error from its next ``receive``: a websocket closes with 4503 and the page reconnects, an SSE
  or ``/v1`` follower reads the database, as before. The connection subscribes again by itself
  once Redis is back;
- ``channel_close`` releases a channel a door no longer reads (its queue and its subscription),
  which the stock layer does only when a ``receive`` is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels_redis.pubsub import RedisPubSubChannelLayer as _PubSubLayer
from channels_redis.pubsub import RedisPubSubLoopLayer as _LoopLayer
from channels_redis.pubsub import RedisSingleShardConnection as _Shard
from channels_redis.utils import _wrap_close
from redis import asyncio as aioredis
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError

log = logging.getLogger(__name__)

GROUP_INFIX = "__group__"


def blocking_pool(host: dict[str, Any]) -> BlockingConnectionPool:
    """A pool for one host entry of ``CHANNEL_LAYERS``: waits for a free connection (up to the
    entry's ``timeout``), retries a command on a fresh connection (``retries`` times)."""
    host = dict(host)
    address = host.pop("address")
    retries = int(host.pop("retries", 3))
    return BlockingConnectionPool.from_url(
        address,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries),
        retry_on_error=[ConnectionError, TimeoutError],
        **host,
    )


class _Failed:
    """Put in a channel's queue when the subscribed connection failed: ``receive`` raises it."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Connection(_Shard):  # type: ignore[misc]
    _redis: aioredis.Redis | None
    _pubsub: Any

    def _ensure_redis(self) -> None:
        if self._redis is None:
            client = aioredis.Redis(connection_pool=blocking_pool(self.host))
            self._redis, self._pubsub = client, client.pubsub()

    async def _do_receiving(self) -> None:
        failed = False
        while True:
            try:
                if self._pubsub and self._pubsub.subscribed:
                    message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if failed:
                        failed = False
                        log.warning("channel layer: the subscribed connection is back")
                    self._receive_message(message)
                else:
                    await asyncio.sleep(0.1)
            except (asyncio.CancelledError, GeneratorExit):
                raise
            except Exception as exc:
                if not failed:
                    failed = True
                    log.warning("channel layer: the subscribed connection failed: %s: %s", type(exc).__name__, exc)
                    # Every reader learns of it; what was published meanwhile is lost to them.
                    for queue in self.channel_layer.channels.values():
                        queue.put_nowait(_Failed(exc))
                await asyncio.sleep(0.5)


class _PlatformLoopLayer(_LoopLayer):  # type: ignore[misc]
    _shards: list[_Shard]
    channels: dict[str, asyncio.Queue[Any]]
    groups: dict[str, set[str]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shards = [_Connection(shard.host, self) for shard in self._shards]

    async def receive(self, channel: str) -> Any:
        if channel not in self.channels:
            await self._subscribe_to_channel(channel)
        queue = self.channels[channel]
        try:
            data = await queue.get()
        except (asyncio.CancelledError, TimeoutError, GeneratorExit):
            await self.channel_close(channel)
            raise
        if isinstance(data, _Failed):
            raise ConnectionError(f"the channel layer lost Redis: {data.error}")
        return self.channel_layer.deserialize(data)

    async def channel_close(self, channel: str) -> None:
        """Forget ``channel``: its queue, its groups in this process, its subscription."""
        if self.channels.pop(channel, None) is None:
            return
        for group_channel, members in list(self.groups.items()):
            members.discard(channel)
            if not members:
                del self.groups[group_channel]
                await self._unsubscribe(group_channel)
        await self._unsubscribe(channel)

    async def _unsubscribe(self, name: str) -> None:
        try:
            await self._get_shard(name).unsubscribe(name)
        except Exception as exc:  # Redis is away: the subscription ends with the connection
            log.info("channel layer: unsubscribing %s failed: %s", name, exc)


class RedisChannelLayer(_PubSubLayer):  # type: ignore[misc]
    """``CHANNEL_LAYERS``' backend (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prefix = str(kwargs.get("prefix", "asgi"))

    async def channel_close(self, channel: str) -> None:
        await self._get_layer().channel_close(channel)

    def _get_layer(self) -> _PlatformLoopLayer:
        loop = asyncio.get_running_loop()
        layer = self._layers.get(loop)
        if layer is None:
            layer = self._layers[loop] = _PlatformLoopLayer(*self._args, **self._kwargs, channel_layer=self)
            _wrap_close(self, loop)
        return layer

    def group_channel(self, group: str) -> str:
        """The Redis pub/sub channel of ``group``: what a group send publishes to."""
        return f"{self.prefix}{GROUP_INFIX}{group}"


async def channel_close(layer: Any, channel: str) -> None:
    """Release a channel a door stopped reading (a no-op for layers that need none)."""
    if isinstance(layer, RedisChannelLayer):
        await layer.channel_close(channel)
