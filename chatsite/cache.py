"""Django's Redis cache with one client, and so one connection pool, per process.

Django keeps a cache object per thread, and daphne runs each request's synchronous code in a
thread of its own: with the stock backend every API request opened a new Redis connection (the
rate limit's counter), about 0.6 ms of its time to first token and a connection for Redis to set
up and tear down (issue 25, measured with py-spy on daphne). redis-py's pool is thread-safe, so
the threads share it here.
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.cache.backends.redis import RedisCache
from django.utils.functional import cached_property

_clients: dict[tuple[str, ...], Any] = {}
_lock = threading.Lock()


class SharedRedisCache(RedisCache):
    # Set by RedisCache.__init__ (not in django-stubs).
    _servers: list[str]
    _options: dict[str, Any]
    _class: type[Any]

    @cached_property
    def _cache(self) -> Any:
        key = (*self._servers, repr(sorted(self._options.items())))
        with _lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = self._class(self._servers, **self._options)
            return client
