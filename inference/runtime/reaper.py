"""Rows whose worker died: found by their lapsed heartbeat and ended ``interrupted``.

A live worker renews the heartbeat of every row it holds every few seconds (``leases``), so a
row still running whose heartbeat is older than the stale limit has lost its process. ``reap``
ends each such row with the kind's values, conditional on the heartbeat it read (a worker that
renewed it meanwhile is alive), then runs the kind's aftermath (a broadcast, a note).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from django.db import models, transaction

from inference.runtime.leases import Leased

log = logging.getLogger(__name__)


def reap(
    table: Leased,
    *,
    before: datetime,
    values: Callable[[Any], dict[str, Any]],
    aftermath: Callable[[Any], None] | None = None,
    rows: models.QuerySet[Any] | None = None,
    lookup: Literal["lt", "lte"] = "lte",
) -> int:
    """End the running rows of ``table`` whose heartbeat came at or before ``before`` (strictly
    before with ``lookup="lt"``). ``values(row)`` gives the fields the row ends with (its status
    among them); ``aftermath(row)``, given the row as ended, runs in the same transaction as the
    update: what it writes commits with the end of the row, and an error in it undoes that end.
    ``rows`` is the queryset to read the candidates from (with its ``select_related``). Returns
    how many rows were ended."""
    base = rows if rows is not None else table.model._default_manager.all()
    candidates = base.filter(**{table.status_field: table.running, f"{table.heartbeat_field}__{lookup}": before})
    reaped = 0
    for row in candidates:
        with transaction.atomic():
            # Conditional on the heartbeat read above: a worker that renewed it meanwhile is alive.
            updated = table.model._default_manager.filter(
                pk=row.pk, **{table.status_field: table.running,
                              table.heartbeat_field: getattr(row, table.heartbeat_field)}
            ).update(**values(row))  # fmt: skip
            if not updated:
                continue
            reaped += 1
            log.warning(
                "%s %s interrupted: its worker %s stopped renewing it",
                table.name, row.pk, getattr(row, table.worker_field) or "(unknown)",
            )  # fmt: skip
            if aftermath is not None:
                row.refresh_from_db()
                aftermath(row)
    return reaped
