"""RedisSettings, from_dsn and create_pool: connecting by TCP and unix socket, and retrying a failed connect."""

from __future__ import annotations

import logging

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from arq.connections import ArqRedis, RedisSettings, create_pool
from tests.support.redis_server import RedisServer, free_port


def test_redis_settings_defaults() -> None:
    s = RedisSettings()
    assert (s.host, s.port, s.database, s.unix_socket_path) == ('localhost', 6379, 0, None)
    assert (s.conn_timeout, s.conn_retries, s.conn_retry_delay) == (1, 5, 1)
    assert (s.ssl, s.sentinel, s.sentinel_master) == (False, False, 'mymaster')


@pytest.mark.parametrize(
    ('dsn', 'expected'),
    [
        ('redis://localhost:6379', {'host': 'localhost', 'port': 6379, 'database': 0, 'ssl': False}),
        ('redis://example.org:1234/7', {'host': 'example.org', 'port': 1234, 'database': 7}),
        ('redis://example.org?db=3', {'host': 'example.org', 'port': 6379, 'database': 3}),
        ('rediss://user:secret@example.org:6380/2', {'ssl': True, 'username': 'user', 'password': 'secret'}),
        ('unix:///run/redis.sock', {'unix_socket_path': '/run/redis.sock', 'database': 0}),
        ('unix:///run/redis.sock?db=5', {'unix_socket_path': '/run/redis.sock', 'database': 5}),
    ],
)
def test_from_dsn(dsn: str, expected: dict[str, object]) -> None:
    settings = RedisSettings.from_dsn(dsn)
    assert {k: getattr(settings, k) for k in expected} == expected


def test_from_dsn_rejects_other_schemes() -> None:
    with pytest.raises(RuntimeError, match='invalid DSN scheme'):
        RedisSettings.from_dsn('http://localhost:6379')


async def test_create_pool_returns_arq_redis_bound_to_database(redis_server: RedisServer, redis_db: int) -> None:
    pool = await create_pool(RedisSettings.from_dsn(f'{redis_server.url}/{redis_db}'), default_queue_name='q:x')
    try:
        assert isinstance(pool, ArqRedis)
        assert pool.default_queue_name == 'q:x'
        await pool.set('where', 'here')
        assert (await pool.client_info())['db'] == redis_db
    finally:
        await pool.aclose()


async def test_create_pool_over_unix_socket(redis_server: RedisServer, redis_db: int, queue_name: str) -> None:
    pool = await create_pool(
        RedisSettings(unix_socket_path=redis_server.unix_socket, database=redis_db), default_queue_name=queue_name
    )
    try:
        job = await pool.enqueue_job('anything')
        assert job is not None
        assert await pool.zscore(queue_name, job.job_id) is not None
    finally:
        await pool.aclose()


async def test_create_pool_retries_then_raises_when_redis_is_unreachable(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger='arq')
    port = free_port()
    settings = RedisSettings(host='127.0.0.1', port=port, conn_retries=2, conn_retry_delay=0)
    with pytest.raises((RedisConnectionError, OSError)):
        await create_pool(settings)
    retries = [r for r in caplog.records if r.name.startswith('arq') and str(port) in r.getMessage()]
    assert len(retries) == 2, [r.getMessage() for r in caplog.records]
