"""One embedded platform (daphne, SQLite, replies in-process on the bundled model) for the ``/v1``
tests of this package: started once, as each module's would be."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.platform_setup import prepare
from tools.launch import Platform, free_port, platform_env


@pytest.fixture(scope="package")
def v1_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    data = tmp_path_factory.mktemp("v1")
    env = platform_env(data_dir=data, database_url=None, redis_url=None)
    (data / "logs").mkdir()
    running = Platform(env=env, port=free_port(), log_dir=data / "logs")
    running.tokens = prepare(env, ("alice", "bob"))
    running.start_daphne()
    yield running
    running.stop_all()
