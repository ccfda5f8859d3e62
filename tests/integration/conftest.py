"""Fixtures for the supervisor's integration tests: see harness.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Supervisor
from tests.support.redis_server import RedisServer


@pytest.fixture
def supervisor(tmp_path: Path, queue_name: str, redis_server: RedisServer, redis_db: int) -> Iterator[Supervisor]:
    sup = Supervisor(tmp_path, queue_name, redis_server.port, redis_db)
    yield sup
    leftovers = sup.cleanup()
    assert not leftovers, f'processes outlived the test: {leftovers}'
