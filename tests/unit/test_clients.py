"""One RedisSettings, two clients: the asyncio pool (workers, producers) and the synchronous client (the supervisor's
parent, `arq-supervise status`) connect with the same options, because both come from arq.clients.

No Redis here: a client made from settings opens no connection until its first command.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import DataError

from arq import clients
from arq.connections import ArqRedis, RedisSettings
from arq_supervise.release import SOCKET_TIMEOUT_S, sync_client
from tests.support.client_options import client_options, connection_options, retry_policy

SENTINELS = [('127.0.0.1', 26379), ('127.0.0.1', 26380)]

CASES: dict[str, RedisSettings] = {
    'default': RedisSettings(),
    'tcp with a database and timeouts': RedisSettings(host='10.0.0.7', port=6380, database=5, conn_timeout=0.3),
    'unix socket': RedisSettings(unix_socket_path='/run/redis/redis.sock', database=2),
    'acl user over tls': RedisSettings(
        username='arq-worker',
        password='secret',
        ssl=True,
        ssl_ca_certs='/etc/ca.crt',
        ssl_certfile='/etc/c.crt',
        ssl_keyfile='/etc/c.key',
        ssl_cert_reqs='optional',
        ssl_check_hostname=True,
        max_connections=20,
    ),  # fmt: skip
    'retry policy': RedisSettings(
        retry=Retry(ExponentialBackoff(cap=2, base=0.1), 4),
        retry_on_error=[redis.BusyLoadingError],
        retry_on_timeout=True,
    ),  # fmt: skip
    'sentinels': RedisSettings(host=SENTINELS, sentinel=True, sentinel_master='queue-master', password='p'),
    'sentinels with a password, over tls': RedisSettings(
        host=SENTINELS,
        sentinel=True,
        password='p',
        username='u',
        ssl=True,
        ssl_ca_certs='/etc/ca.crt',
        sentinel_kwargs={'password': 'sentinel-secret', 'socket_timeout': 0.5},
    ),  # fmt: skip
}

Clients = Callable[..., tuple[redis.asyncio.Redis, redis.Redis]]


@pytest.fixture
async def both() -> AsyncIterator[Clients]:
    """`both(settings, **overrides)`: the asyncio and the synchronous client of the same settings; closed after."""
    made: list[tuple[redis.asyncio.Redis, redis.Redis]] = []

    def make(settings: RedisSettings, **overrides: Any) -> tuple[redis.asyncio.Redis, redis.Redis]:
        pair = (clients.async_client(settings, ArqRedis, **overrides), clients.sync_client(settings, **overrides))
        made.append(pair)
        return pair

    yield make
    for async_client, sync in made:
        await async_client.aclose()
        sync.close()


@pytest.mark.parametrize('settings', CASES.values(), ids=CASES.keys())
async def test_sync_and_async_clients_get_the_same_options(both: Clients, settings: RedisSettings) -> None:
    async_client, sync = both(settings)
    assert client_options(sync) == client_options(async_client)
    async_connection = async_client.connection_pool.make_connection()
    sync_connection = sync.connection_pool.make_connection()
    assert connection_options(sync_connection) == connection_options(async_connection)


async def test_the_options_are_the_settings(both: Clients) -> None:
    async_client, _ = both(CASES['acl user over tls'])
    master = client_options(async_client)['master']
    assert master['transport'] == 'tls'
    assert (master['username'], master['password'], master['ssl_ca_certs']) == ('arq-worker', 'secret', '/etc/ca.crt')
    assert (master['ssl_cert_reqs'], master['ssl_check_hostname'], master['max_connections']) == ('optional', True, 20)
    assert master['socket_connect_timeout'] == 1  # conn_timeout
    assert client_options(both(RedisSettings())[0])['master']['max_connections'] == clients.UNCAPPED_CONNECTIONS


async def test_a_retry_policy_reaches_the_sync_client_as_its_own_retry(both: Clients) -> None:
    """RedisSettings.retry is redis.asyncio's Retry (arq's type): the sync client gets redis-py's with its policy."""
    _, sync = both(CASES['retry policy'])
    retry = sync.connection_pool.make_connection().retry
    assert isinstance(retry, redis.retry.Retry)
    assert (type(retry._backoff), retry.get_retries()) == (ExponentialBackoff, 4)
    assert {redis.BusyLoadingError, redis.TimeoutError, TimeoutError} <= set(retry._supported_errors)


async def test_sentinels_are_reached_with_the_socket_options_and_retry_policy_by_default(both: Clients) -> None:
    settings = replace(CASES['sentinels'], retry=Retry(ExponentialBackoff(cap=2, base=0.1), 4))
    async_client, sync = both(settings, socket_timeout=0.05)
    for options in (client_options(async_client), client_options(sync)):
        assert [(s['host'], s['port']) for s in options['sentinels']] == SENTINELS
        assert {(s['password'], s['socket_connect_timeout'], s['socket_timeout']) for s in options['sentinels']} == {
            (None, 1, 0.05)
        }
        assert {s['retry'] for s in options['sentinels']} == {options['master']['retry']}
        assert options['master']['retry'] == retry_policy(settings.retry)
        assert (options['master']['password'], options['master']['socket_timeout']) == ('p', 0.05)


async def test_sentinels_are_reached_with_sentinel_kwargs_when_given(both: Clients) -> None:
    async_client, sync = both(CASES['sentinels with a password, over tls'], socket_timeout=0.05)
    for options in (client_options(async_client), client_options(sync)):
        assert {(s['password'], s['socket_timeout'], s['transport']) for s in options['sentinels']} == {
            ('sentinel-secret', 0.5, 'tcp')
        }
        assert (options['master']['password'], options['master']['transport']) == ('p', 'tls')
        assert options['master']['socket_timeout'] == 0.05


async def test_overrides_replace_the_named_options_only(both: Clients) -> None:
    settings = CASES['acl user over tls']
    async_client, sync = both(settings, socket_timeout=0.05, retry=None)
    plain_async, _ = both(settings)
    expected = client_options(plain_async)
    expected['master'].update(socket_timeout=0.05, retry=None)
    assert client_options(sync) == client_options(async_client) == expected


def test_the_supervisors_client_bounds_commands_and_does_not_retry() -> None:
    settings = CASES['acl user over tls']
    sync, reference = sync_client(settings), clients.sync_client(settings)
    try:
        expected = client_options(reference)
        expected['master']['socket_timeout'] = SOCKET_TIMEOUT_S
        expected['master']['retry'] = retry_policy(redis.retry.Retry(NoBackoff(), 0))
        assert client_options(sync) == expected
    finally:
        sync.close()
        reference.close()


def test_the_supervisors_client_defaults_to_arqs_default_settings() -> None:
    sync, reference = sync_client(None), clients.sync_client(RedisSettings())
    try:
        assert client_options(sync)['master']['host'] == client_options(reference)['master']['host'] == 'localhost'
    finally:
        sync.close()
        reference.close()


async def test_sentinel_with_a_single_host_is_refused_by_both() -> None:
    settings = RedisSettings(host='localhost', sentinel=True)
    with pytest.raises(RuntimeError, match='list of sentinels expected'):
        clients.async_client(settings, ArqRedis)
    with pytest.raises(RuntimeError, match='list of sentinels expected'):
        clients.sync_client(settings)


COMMANDS = [
    ('EVALSHA', 'a' * 40, 1, 'arq:queue', 12000, 1.5, b'\x00blob' * 1000, 'é'),
    ('CONFIG GET', 'maxmemory'),
    ('SET', 'k', memoryview(b'v'), 'PX', 10**20),
    (b'CLIENT LIST',),
]


@pytest.mark.parametrize('settings', CASES.values(), ids=CASES.keys())
async def test_asyncio_connections_pack_with_hiredis_the_bytes_redis_py_would(
    both: Clients, settings: RedisSettings
) -> None:
    async_client, _ = both(settings)
    fast = async_client.connection_pool.make_connection()
    python_packer = redis.asyncio.Connection()  # redis-py's own asyncio packer, in Python
    assert type(fast).__module__ == 'arq.packing'
    for command in COMMANDS:
        assert b''.join(fast.pack_command(*command)) == b''.join(python_packer.pack_command(*command))
    with pytest.raises(DataError):
        fast.pack_command('SET', 'k', True)
