"""The channel layer and a worker's sends on a real (private) Redis: a worker's deltas reach a
follower in order and fill the live buffer in the same round trip; a follower learns that Redis
went away, and hears again once it is back, without joining anew; a door's channel is released.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import redis

from sessions_app import broadcast, live
from sessions_app.channel_layer import RedisChannelLayer, channel_close
from sessions_app.live import LiveText, RedisStreamBuffer
from tools.launch import PrivateRedis


@pytest.fixture
def layer(private_redis: PrivateRedis, settings: Any, monkeypatch: pytest.MonkeyPatch) -> RedisChannelLayer:
    """The deployed shape's layer, and this process's sends made as a worker process makes them."""
    layer = RedisChannelLayer(hosts=[{"address": private_redis.url, "socket_timeout": 5, "retries": 1}])
    settings.EMBEDDED = False
    monkeypatch.setattr(broadcast, "get_channel_layer", lambda: layer)
    monkeypatch.setattr(broadcast, "_loop", None)
    monkeypatch.setattr(broadcast, "_paused_until", 0.0)
    monkeypatch.setattr(live, "_client", live._client_for(private_redis.url))
    monkeypatch.setattr(live, "_sends", live.UnansweredSends(private_redis.url))
    monkeypatch.setattr(live, "_buffer", RedisStreamBuffer())
    return layer


def in_a_worker_thread(work: Any) -> None:
    """Run ``work`` in a thread without an event loop, as a reply's decode loop is."""
    thread = threading.Thread(target=work)
    thread.start()
    thread.join(30)


def test_a_workers_deltas_reach_a_follower_in_order_and_fill_the_live_buffer(layer: RedisChannelLayer) -> None:
    words = [f" w{n}" for n in range(200)]

    async def run() -> list[dict[str, Any]]:
        channel = await layer.new_channel()
        await layer.group_add(broadcast.session_group(5), channel)

        def send_all() -> None:
            for seq, word in enumerate(words, start=1):
                broadcast.delta_buffered_send(5, 9, seq, word)
            broadcast.done_send(5, {"id": 9, "status": "complete"})

        await asyncio.to_thread(in_a_worker_thread, send_all)
        got = [await asyncio.wait_for(layer.receive(channel), 10) for _ in range(len(words) + 1)]
        await channel_close(layer, channel)
        return got

    got = asyncio.run(run())
    assert [event["seq"] for event in got[:-1]] == list(range(1, len(words) + 1))
    assert "".join(event["text"] for event in got[:-1]) == "".join(words)
    assert got[-1] == {"type": "chat.done", "message": {"id": 9, "status": "complete"}}
    assert live.stream_buffer().snapshot(9) == LiveText("".join(words), len(words))


def test_a_follower_hears_that_redis_went_away_and_hears_again_once_it_is_back(
    layer: RedisChannelLayer, private_redis: PrivateRedis
) -> None:
    async def run() -> tuple[BaseException, dict[str, Any]]:
        channel = await layer.new_channel()
        await layer.group_add("session.6", channel)
        await asyncio.to_thread(in_a_worker_thread, lambda: broadcast.message_send(6, {"id": 1}))
        assert (await asyncio.wait_for(layer.receive(channel), 10))["message"] == {"id": 1}
        private_redis.kill()
        with pytest.raises(redis.ConnectionError) as lost:
            await asyncio.wait_for(layer.receive(channel), 10)
        private_redis.start()  # the same port, empty: the subscription must be made again, by the layer
        # A worker's send once Redis is back; the follower did not join again.
        # (One receive waits throughout, as a follower's does: a cancelled one releases the channel.)
        receiving = asyncio.ensure_future(layer.receive(channel))
        deadline = asyncio.get_running_loop().time() + 20
        while (
            layer.group_channel("session.6").encode() not in redis.Redis.from_url(private_redis.url).pubsub_channels()
        ):
            assert asyncio.get_running_loop().time() < deadline, "the layer did not subscribe again"
            await asyncio.sleep(0.1)
        # The worker's first send after the restart arrives: its connection saw Redis go.
        await asyncio.to_thread(in_a_worker_thread, lambda: broadcast.message_send(6, {"id": 2}))
        event = await asyncio.wait_for(receiving, 10)
        await channel_close(layer, channel)
        return lost.value, event

    lost, event = asyncio.run(run())
    assert "lost Redis" in str(lost)
    assert event == {"type": "chat.message", "message": {"id": 2}}


def test_a_door_that_closes_its_channel_leaves_no_subscription(
    layer: RedisChannelLayer, private_redis: PrivateRedis
) -> None:
    client = redis.Redis.from_url(private_redis.url)
    group_channel = layer.group_channel("session.7")

    async def run() -> tuple[int, int, int]:
        channel = await layer.new_channel()
        await layer.group_add("session.7", channel)
        joined = dict(client.pubsub_numsub(group_channel))[group_channel.encode()]
        await channel_close(layer, channel)
        left = dict(client.pubsub_numsub(group_channel))[group_channel.encode()]
        return joined, left, len(layer._get_layer().channels)

    assert asyncio.run(run()) == (1, 0, 0)


def test_a_worker_does_not_wait_on_redis_for_each_token_while_it_is_away(
    layer: RedisChannelLayer, private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    private_redis.kill()
    tries = []
    real = live.UnansweredSends.send

    def counted(self: live.UnansweredSends, *commands: Any) -> None:
        tries.append(commands)
        real(self, *commands)

    monkeypatch.setattr(live.UnansweredSends, "send", counted)
    in_a_worker_thread(lambda: [broadcast.delta_buffered_send(8, 10, seq, "x") for seq in range(1, 101)])
    # The first send failed; the rest of the pause went by without a try.
    assert len(tries) == 1


def test_a_forked_worker_process_writes_on_a_connection_of_its_own(
    layer: RedisChannelLayer, private_redis: PrivateRedis, settings: Any
) -> None:
    """A prefork pool child inherits the parent's objects: two processes writing commands on one
    socket would interleave them."""
    import os

    settings.REDIS_URL = private_redis.url
    parent = live.unanswered_sends()
    parent.send(("SET", "chatsite:test:parent", 1))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report whether it got another connection, then leave at once
        child = live.unanswered_sends()
        os.write(write, b"own" if child is not parent else b"shared")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 16) == b"own"
    assert live.unanswered_sends() is parent


def test_platforms_on_two_databases_of_one_redis_do_not_hear_each_other(private_redis: PrivateRedis) -> None:
    """Pub/sub channels are one namespace for the whole server: the database number is in the
    prefix (the tests' two groups run platforms on databases 9 and 10 of one Redis)."""
    from chatsite.env import redis_channel_prefix

    def layer_for(db: int) -> RedisChannelLayer:
        url = f"{private_redis.url.rsplit('/', 1)[0]}/{db}"
        return RedisChannelLayer(hosts=[{"address": url}], prefix=redis_channel_prefix(url))

    one, two = layer_for(9), layer_for(10)

    async def run() -> tuple[dict[str, Any], bool]:
        here, there = await one.new_channel(), await two.new_channel()
        await one.group_add("session.1", here)
        await two.group_add("session.1", there)
        await two.group_send("session.1", {"type": "chat.delta", "text": "for database 10"})
        got = await asyncio.wait_for(two.receive(there), 10)
        leaked = asyncio.ensure_future(one.receive(here))
        await asyncio.sleep(0.5)
        heard = leaked.done()
        leaked.cancel()
        return got, heard

    got, heard = asyncio.run(run())
    assert got["text"] == "for database 10"
    assert heard is False
    assert (
        redis_channel_prefix("redis://h:6379/9") == "asgi.db9."
        and redis_channel_prefix("redis://h:6379") == "asgi.db0."
    )
