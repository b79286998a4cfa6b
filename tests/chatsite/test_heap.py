"""daphne's start-up heap is kept out of the garbage collector's full collections (they paused
daphne for 64–124 ms, a request's first token with it), and what is frozen includes the views."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tools.launch import ROOT, platform_env


def test_importing_the_asgi_application_freezes_the_heap_with_the_views_in_it(tmp_path: Path) -> None:
    probe = (
        "import gc, sys\n"
        "import chatsite.asgi\n"
        "print(gc.get_freeze_count())\n"
        "print('sessions_app.openai.views' in sys.modules)\n"
    )
    env = platform_env(data_dir=tmp_path, database_url=None, redis_url=None)
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    frozen, views = done.stdout.split()
    assert int(frozen) > 50_000
    assert views == "True"
