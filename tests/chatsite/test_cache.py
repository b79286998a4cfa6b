"""The rate limit's Redis cache: the request threads share one connection pool, instead of each
request opening a connection of its own (daphne runs each request in a thread of its own)."""

from __future__ import annotations

import threading

import redis

from chatsite.cache import SharedRedisCache
from tools.launch import PrivateRedis


def test_twenty_request_threads_share_one_connection(private_redis: PrivateRedis) -> None:
    seen: list[object] = []

    def request(n: int) -> None:
        cache = SharedRedisCache(private_redis.url, {})  # what Django makes for each thread
        cache.set(f"throttle_user_{n}", [n], 60)
        seen.append(cache.get(f"throttle_user_{n}"))

    for n in range(20):  # one after another, each in a new thread, as daphne serves requests
        thread = threading.Thread(target=request, args=(n,))
        thread.start()
        thread.join()
    assert seen == [[n] for n in range(20)]
    clients = redis.Redis.from_url(private_redis.url).client_list()
    assert len(clients) == 2  # the cache's one connection, and this check's
