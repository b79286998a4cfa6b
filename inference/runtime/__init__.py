"""The task runtime that replies and jobs share: how a row of work is run exactly once by a
process that is alive, and ended visibly when that process dies.

- ``identity``: this process's one name (``<node> (<host>:<pid>:<nonce>)``), written on the rows
  it holds and shown on the workers page.
- ``leases``: a table of work (``Leased``: the model, its running status, how often it is
  renewed); ``claim`` takes a row ``queued -> running`` once; ``heartbeat()`` is the one thread per
  process that renews every row the process holds and marks lost those taken from it.
- ``reaper``: ``reap`` ends ``interrupted`` the rows whose lease lapsed, with each kind's aftermath.
- ``pool``: ``enqueue`` by task name, to Celery or to a ``Lane`` of the embedded default.

It sits in the lowest layer so that sessions_app and pipeline both use it; it knows none of their
tables (each app describes its own with ``Leased``).
"""
