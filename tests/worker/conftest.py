"""Fixtures for the in-process worker suite, in arq's own factory-fixture style.

Everything here goes through arq's public API only, so the suite also runs unchanged against the published arq 0.26.3
(which is how its expectations about arq's documented behaviour were validated).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from arq.connections import ArqRedis, RedisSettings, create_pool
from tests.support.redis_server import RedisServer
from tests.worker.helpers import WorkerFactory


@pytest.fixture
def redis_settings(redis_server: RedisServer, redis_db: int) -> RedisSettings:
    return RedisSettings(host='127.0.0.1', port=redis_server.port, database=redis_db)


@pytest.fixture
async def arq_redis(redis_settings: RedisSettings, queue_name: str) -> AsyncIterator[ArqRedis]:
    pool = await create_pool(redis_settings, default_queue_name=queue_name)
    yield pool
    await pool.aclose()


@pytest.fixture
async def worker(redis_settings: RedisSettings, queue_name: str) -> AsyncIterator[WorkerFactory]:
    factory = WorkerFactory(redis_settings, queue_name)
    yield factory
    await factory.teardown()


@pytest.fixture
def arq_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """caplog with arq's INFO lines captured."""
    caplog.set_level(logging.INFO, logger='arq')
    return caplog


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that stop it, reconfigure it or read its command stats."""
    server = RedisServer(directory=tmp_path / 'private-redis')
    server.start()
    yield server
    server.stop()
