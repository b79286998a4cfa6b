"""kombu's Redis transport with one repair: a worker outlives a broker restart while a task runs.

The fault (kombu 5.7.0, celery 5.7.0, redis-py 8.1.0; reproduced here 3 times out of 3 with a
prefork worker of concurrency 2, ``celery -A chatsite worker`` on a 2-core machine): Redis dies
while a task is unacknowledged (our reply tasks ack late). Celery's
``Consumer.on_connection_error_after_connected`` first calls ``connection.collect()``, which closes
the channels it can and then detaches the transport from its connection
(``transport.client = None``), then ``connection.close()``. When the default channel's first close
was cut short by the dead socket, the second close reaches ``QoS.restore_unacked_once`` →
``restore_unacked`` → ``conn_or_acquire`` → ``_connparams``, which reads
``self.connection.client.hostname`` from the detached transport: ``AttributeError``, which is not
a connection error, so celery logs "Unrecoverable error" and the worker process exits. The reply
in flight finished; every later one waited for a worker that was gone.

The same close path (restoring unacked messages through a connection being torn down) broke before
in celery/kombu#970; no upstream issue covers this variant yet.

After the restart the task in flight ends and acks its message on the same dead channel, whose
transport is gone too: the same ``_connparams`` fails the same way, from the event loop this time,
and ends the worker again.

The repair is narrow: when the channel's transport has been detached, there is no connection to
restore or ack through, so the QoS skips the restore and says so, and any other command on that
channel raises a connection error, which kombu and celery already handle (an ack is logged as
"Couldn't ack"). Nothing is lost by it: the messages stay
in Redis' unacked set and kombu's ``restore_visible`` puts them back after ``visibility_timeout``
(a Redis restarted without persistence has forgotten them anyway), and each task claims its row
with a conditional update, so a redelivered reply or job finds nothing to do. Selected with
``CELERY_BROKER_TRANSPORT`` (chatsite/settings.py); tests/chatsite/test_broker.py reproduces the
fault on the stock transport, tests/integration/test_broker_outage.py runs the whole story.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

log = logging.getLogger(__name__)


class QoS(kombu_redis.QoS):
    def restore_unacked(self, client: Any = None) -> None:
        transport = getattr(self.channel, "connection", None)
        if client is None and (transport is None or transport.client is None):
            if self._delivered:
                log.warning(
                    "broker connection already closed: %d unacknowledged task(s) stay in Redis and come back "
                    "after the visibility timeout",
                    len(self._delivered),
                )
            self._delivered.clear()
            return
        super().restore_unacked(client)


class Channel(kombu_redis.Channel):
    QoS = QoS

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        # A message received on this channel and acked after the connection was torn down (the
        # task outlived the outage) would build a client from the detached transport: answer with
        # the connection error it is, which kombu logs ("Couldn't ack") instead of ending the worker.
        transport = self.connection
        if transport is None or transport.client is None:
            raise RedisConnectionError("this broker channel was closed with its connection")
        params: dict[str, Any] = super()._connparams(asynchronous)
        return params


class Transport(kombu_redis.Transport):
    Channel = Channel
