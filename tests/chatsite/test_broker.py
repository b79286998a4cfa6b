"""The broker transport's close path (chatsite/broker.py), on a private redis-server.

Celery's reaction to a lost broker connection is ``connection.collect()`` (which detaches the
transport: ``transport.client = None``) and then ``connection.close()``, which closes a channel
that still holds an unacknowledged message. These tests put a channel in that state and close it,
as the worker does; tests/integration/test_broker_outage.py runs the same fault through a real
worker process with a reply in flight.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu import Connection, Exchange, Queue
from kombu.transport import redis as stock_redis
from redis.exceptions import ConnectionError as RedisConnectionError

from chatsite import broker
from tools.launch import PrivateRedis


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server.url
    server.stop()


def _channel_with_an_unacked_message(url: str, transport: type) -> tuple[Connection, object, object]:
    """A connection whose default channel received one message and has not acked it."""
    connection = Connection(url, transport=transport)
    channel = connection.default_channel
    queue = Queue("replies", Exchange("replies"), "replies")
    producer = connection.Producer(channel)
    producer.publish({"reply": 1}, exchange=queue.exchange, routing_key="replies", declare=[queue])
    received = []
    consumer = connection.Consumer(queue, callbacks=[lambda body, message: received.append(message)], no_ack=False)
    consumer.consume()
    connection.drain_events(timeout=5)
    assert len(received) == 1 and channel.qos._delivered  # type: ignore[attr-defined]
    return connection, channel, received[0]


def _collected(connection: Connection) -> None:
    """What Connection.collect() leaves when the channels could not be closed through the dead
    socket: the transport detached from the connection."""
    connection.transport.client = None


def test_the_stock_transport_fails_on_this_close_path(redis_url: str) -> None:
    """The fault itself: the reason for chatsite.broker. If kombu fixes it, this test says so."""
    connection, channel, _ = _channel_with_an_unacked_message(redis_url, stock_redis.Transport)
    _collected(connection)
    with pytest.raises(AttributeError, match="hostname"):
        channel.close()  # type: ignore[attr-defined]


def test_closing_after_the_connection_was_collected_completes_and_says_what_stays(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    connection, channel, _ = _channel_with_an_unacked_message(redis_url, broker.Transport)
    _collected(connection)
    with caplog.at_level(logging.WARNING, logger="chatsite.broker"):
        channel.close()  # type: ignore[attr-defined]
    assert channel.closed  # type: ignore[attr-defined]
    assert "1 unacknowledged task(s) stay in Redis" in caplog.text
    # kombu's own next step, the connection's close, goes through without an error.
    connection.close()


def test_an_ack_on_a_channel_whose_connection_is_gone_is_a_connection_error(redis_url: str) -> None:
    """The task in flight ends after the restart and acks on its old channel: a connection error,
    which kombu logs ("Couldn't ack"), not an AttributeError that ends the worker."""
    connection, channel, message = _channel_with_an_unacked_message(redis_url, broker.Transport)
    _collected(connection)
    channel.close()  # type: ignore[attr-defined]
    with pytest.raises(RedisConnectionError, match="closed with its connection"):
        message.ack()  # type: ignore[attr-defined]
    assert RedisConnectionError in connection.connection_errors


def test_a_healthy_connection_still_restores_unacked_messages(redis_url: str) -> None:
    """The repair changes nothing while the connection is there: a closed channel puts its
    unacknowledged message back on the queue, as kombu does."""
    connection, channel, _ = _channel_with_an_unacked_message(redis_url, broker.Transport)
    channel.close()  # type: ignore[attr-defined]
    connection.close()
    with Connection(redis_url, transport=broker.Transport) as again:
        queue = Queue("replies", Exchange("replies"), "replies")
        message = queue(again.default_channel).get()
        assert message is not None and message.payload == {"reply": 1}


def test_the_workers_use_it_when_redis_is_the_broker(tmp_path: Path, redis_url: str) -> None:
    import os
    import subprocess
    import sys

    probe = (
        "import django; django.setup()\n"
        "from chatsite.celery import app\n"
        "with app.connection_for_read() as c: print(type(c.transport).__module__, c.connection is not None)\n"
    )
    env = {**os.environ, "REDIS_URL": redis_url, "CHATSITE_DATA_DIR": str(tmp_path)}
    env.pop("DATABASE_URL", None)
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["chatsite.broker", "True"]
