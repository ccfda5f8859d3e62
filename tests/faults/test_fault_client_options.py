"""One RedisSettings, the same connection from both clients: the asyncio pool of workers and producers
(`create_pool`) and the supervisor parent's synchronous client (its releases, leases and health keys, and
`arq-supervise status`) reach the same Redis as the same ACL user over the same TLS, or through the same password-
protected sentinels to the same master; and a mismatch fails both alike. tests/unit/test_clients.py compares their
options without a Redis.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

import pytest
import redis

from arq import clients
from arq.connections import RedisSettings, create_pool
from arq_supervise.release import sync_client
from tests.faults import test_fault_sentinel, test_fault_tls_acl
from tests.faults.sentinel_bed import SentinelBed
from tests.faults.test_fault_tls_acl import PASSWORD, USER, Certificates, TLSRedisServer
from tests.support.client_options import client_options

pytestmark = pytest.mark.slow

# the fixtures of the TLS/ACL and Sentinel suites, shared rather than copied
certificates = test_fault_tls_acl.certificates
tls_redis = test_fault_tls_acl.tls_redis
sentinel_beds = test_fault_sentinel.sentinel_beds

needs_openssl = pytest.mark.skipif(not shutil.which('openssl'), reason='needs the openssl CLI')


def _tls_settings(server: TLSRedisServer, certificates: Certificates, **changes: object) -> RedisSettings:
    return test_fault_tls_acl._settings(server, certificates, **changes)


def _text(reply: object) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


@needs_openssl
async def test_both_clients_are_the_same_acl_user_over_the_same_tls(
    tls_redis: TLSRedisServer, certificates: Certificates
) -> None:
    settings = _tls_settings(tls_redis, certificates, database=3)
    pool = await create_pool(settings)
    parent, plain = sync_client(settings), clients.sync_client(settings)
    try:
        await pool.set('arq:client-options', 'from the async pool')
        for sync in (parent, plain):
            assert _text(sync.execute_command('ACL WHOAMI')) == USER
            assert sync.get('arq:client-options') == b'from the async pool'
        assert _text(await pool.execute_command('ACL WHOAMI')) == USER
        assert client_options(plain) == client_options(pool)
        assert client_options(pool)['master']['transport'] == 'tls'
    finally:
        await pool.aclose()
        parent.close()
        plain.close()


@needs_openssl
@pytest.mark.parametrize(
    ('case', 'error', 'message'),
    [
        ('certificate-from-another-ca', redis.ConnectionError, 'certificate verify failed'),
        ('no-password', redis.AuthenticationError, None),
        ('wrong-user', redis.AuthenticationError, None),
    ],
)
async def test_a_mismatch_fails_both_clients_alike(
    tls_redis: TLSRedisServer, certificates: Certificates, case: str, error: type[Exception], message: str | None
) -> None:
    changes: dict[str, object] = {
        'certificate-from-another-ca': {'ssl_ca_certs': str(certificates.other_ca)},
        'no-password': {'username': None, 'password': None},
        'wrong-user': {'username': 'nobody', 'password': PASSWORD},
    }[case]  # type: ignore[assignment]
    settings = _tls_settings(tls_redis, certificates, **changes)
    with pytest.raises(error, match=message):
        await create_pool(settings)
    for sync in (sync_client(settings), clients.sync_client(settings)):
        try:
            with pytest.raises(error, match=message):
                sync.ping()
        finally:
            sync.close()


@pytest.mark.timeout(60)
async def test_both_clients_reach_the_same_master_through_password_protected_sentinels(
    sentinel_beds: Callable[..., SentinelBed],
) -> None:
    bed = sentinel_beds(sentinel_password='sentinel-secret')
    settings = bed.settings(database=2)
    pool = await create_pool(settings)
    parent, plain = sync_client(settings), clients.sync_client(settings)
    try:
        master = bed.master_port()
        assert int((await pool.info('server'))['tcp_port']) == master
        for sync in (parent, plain):
            assert int(sync.info('server')['tcp_port']) == master
        assert client_options(plain) == client_options(pool)
        assert {s['password'] for s in client_options(parent)['sentinels']} == {'sentinel-secret'}
    finally:
        await pool.aclose()
        parent.close()
        plain.close()
    # the sentinels' password forgotten: they are reached with the master's options, which have none for them
    refused = bed.settings(sentinel_kwargs=None, conn_retries=0)
    with pytest.raises(redis.RedisError):
        await create_pool(refused)
    for sync in (sync_client(refused), clients.sync_client(refused)):
        try:
            with pytest.raises(redis.RedisError):
                sync.ping()
        finally:
            sync.close()
