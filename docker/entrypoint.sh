#!/bin/sh
# Entry point of both images: wait until the database answers, then run the command.
#
# docker compose already starts Django services after PostgreSQL is healthy; this wait is for the
# same image run elsewhere (an edge worker started with `docker run`, a database that restarts).
# Migrations are not run here: the web service's command runs them, once, before daphne starts.
set -e

if [ -n "${DATABASE_URL:-}" ]; then
    python - <<'PY'
import os
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
import django  # noqa: E402

django.setup()  # a bad setting stops here, with the variable's name
from django.db import connection  # noqa: E402

deadline = time.monotonic() + 120
while True:
    try:
        connection.ensure_connection()
        break
    except Exception as exc:  # the driver raises several types while the server starts
        if time.monotonic() > deadline:
            sys.exit(f"entrypoint: the database named by DATABASE_URL did not answer in 120 s: {exc}")
        print(f"entrypoint: waiting for the database ({type(exc).__name__})", file=sys.stderr, flush=True)
        time.sleep(2)
connection.close()
PY
fi

exec "$@"
