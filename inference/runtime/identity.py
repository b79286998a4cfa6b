"""One name per worker process: written on the rows it claims (replies, picks, jobs), renewed by
its heartbeat, and read back by the workers page to list a worker's jobs.

The name is ``<node> (<host>:<pid>:<nonce>)``: ``node`` is the Celery worker's hostname
(``jobs@host``), ``embedded`` in the embedded default, else the host name; the nonce tells apart
a restarted process that got the same pid (in a container, every start is pid 1).
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from datetime import UTC, datetime

from django.conf import settings

_LOADED_AT = time.time()
_names: dict[int, str] = {}
_names_lock = threading.Lock()  # two threads asking first must not make two names
_node: str | None = None


def _fresh_lock() -> None:
    """A forked child starts with a free lock (a parent thread may have held it at the fork)."""
    global _names_lock
    _names_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_lock)


def worker_node_set(node: str) -> None:
    """Name the worker this process belongs to (Celery's ``celeryd_after_setup``, before the pool
    forks: its children inherit it)."""
    global _node
    with _names_lock:
        _node = node
        _names.clear()


def worker_name() -> str:
    """This process as ``<node> (<host>:<pid>:<nonce>)``, the same for its whole life."""
    pid = os.getpid()
    name = _names.get(pid)
    if name is None:
        with _names_lock:
            name = _names.get(pid)
            if name is None:
                host = socket.gethostname()
                node = _node or ("embedded" if settings.EMBEDDED else host)
                name = _names[pid] = f"{node} ({host}:{pid}:{secrets.token_hex(3)})"[:200]
    return name


def worker_node(name: str) -> str:
    """The worker (Celery hostname, or ``embedded``) a ``worker_name()`` belongs to."""
    return name.split(" (", 1)[0]


def process_started_at() -> datetime:
    """When this operating-system process started (not when some module was imported)."""
    try:
        with open("/proc/self/stat") as f:
            # Field 22, counted after the parenthesised command name, which may hold spaces.
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        started = boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        started = _LOADED_AT  # no /proc (not Linux): this module loads as the process starts
    return datetime.fromtimestamp(started, tz=UTC)
