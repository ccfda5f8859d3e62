"""Shared fixtures: one real redis-server per test session, a fresh database per test.

Each test gets its own Redis database (there are 64) that is flushed before use, and its own queue name, so tests
never see each other's keys even though arq's job/result keys are global to a database.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.redis_server import RedisServer

_databases = itertools.cycle(range(1, 64))


@pytest.fixture(scope='session')
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(directory=tmp_path_factory.mktemp('redis'))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_db(redis_server: RedisServer) -> int:
    db = next(_databases)
    client = redis.Redis(port=redis_server.port, db=db)
    client.flushdb()
    client.close()
    return db


@pytest.fixture
def redis_url(redis_server: RedisServer, redis_db: int) -> str:
    return f'{redis_server.url}/{redis_db}'


@pytest.fixture
def queue_name() -> str:
    return f'test:{uuid.uuid4().hex[:12]}'


@pytest.fixture
def sync_redis(redis_server: RedisServer, redis_db: int) -> Iterator[redis.Redis]:
    client = redis.Redis(port=redis_server.port, db=redis_db)
    yield client
    client.close()


@pytest.fixture
def tmp_dir(tmp_path: Path) -> Path:
    return tmp_path
