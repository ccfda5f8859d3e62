"""Fault 9: Redis with an ACL user and a password, over TLS (redis-server's own TLS, a CA made by the test).

The user may touch only arq's keys, the test's queue and the ledger (`~arq:* ~test:* ~ledger:*`), publish and
subscribe only on arq's channels (`&arq:*`), and run no dangerous command but INFO: what a worker and a supervisor
need, and no more. The default user is off, so nothing gets in without the password.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from arq.connections import RedisSettings
from arq.worker import Worker
from tests.faults.harness import FleetFactory, Kill, Ledger, Load, report
from tests.support.redis_server import RedisServer, free_port

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not shutil.which('openssl'), reason='needs the openssl CLI')]

USER, PASSWORD = 'arq-worker', 'correct-horse-battery-staple'
ACL = ('--user', 'default', 'off', '--user', USER, 'on', f'>{PASSWORD}', '~arq:*', '~test:*', '~ledger:*', '&arq:*',
       '+@all', '-@dangerous', '+info')  # fmt: skip


@dataclass
class Certificates:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path  # a CA that signed nothing of ours


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(['openssl', *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope='module')
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    d = tmp_path_factory.mktemp('tls')
    ec = ('-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes')
    for name in ('ca', 'other-ca'):
        _openssl('req', '-x509', *ec, '-keyout', f'{name}.key', '-out', f'{name}.crt', '-days', '2',
                 '-subj', f'/CN=arq fault suite {name}', cwd=d)  # fmt: skip
    _openssl('req', *ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1', cwd=d)
    (d / 'san.cnf').write_text('subjectAltName=IP:127.0.0.1,DNS:localhost\n')
    _openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial',
             '-out', 'server.crt', '-days', '2', '-extfile', 'san.cnf', cwd=d)  # fmt: skip
    return Certificates(d / 'ca.crt', d / 'server.crt', d / 'server.key', d / 'other-ca.crt')


@dataclass
class TLSRedisServer(RedisServer):
    """redis-server with TLS only (`--port 0`): `port` is its TLS port."""

    ca: Path | None = None

    def wait_until_up(self, timeout_s: float) -> None:
        context = ssl.create_default_context(cafile=str(self.ca))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f'redis-server exited with code {self.process.returncode}')
            try:
                with (
                    socket.create_connection(('127.0.0.1', self.port), timeout=0.5) as raw,
                    context.wrap_socket(raw, server_hostname='127.0.0.1') as s,
                ):
                    s.sendall(b'PING\r\n')
                    if s.recv(64).startswith((b'+PONG', b'-NOAUTH')):
                        return
            except OSError:
                pass
            time.sleep(0.05)  # poll interval of a condition wait
        raise RuntimeError(f'redis-server (TLS) did not answer on port {self.port} within {timeout_s}s')


@pytest.fixture
def tls_redis(tmp_path: Path, certificates: Certificates) -> Iterator[TLSRedisServer]:
    port = free_port()
    tls = ('--port', '0', '--tls-port', str(port), '--tls-cert-file', str(certificates.cert),
           '--tls-key-file', str(certificates.key), '--tls-ca-cert-file', str(certificates.ca),
           '--tls-auth-clients', 'no')  # fmt: skip
    server = TLSRedisServer(directory=tmp_path / 'tls-redis', port=port, extra_args=(*tls, *ACL), ca=certificates.ca)
    try:
        server.start()
    except RuntimeError as e:
        pytest.skip(f'this redis-server does not do TLS: {e}')
    yield server
    server.stop()


def _settings(server: RedisServer, certificates: Certificates, **changes: object) -> RedisSettings:
    settings = RedisSettings(
        host='127.0.0.1', port=server.port, username=USER, password=PASSWORD, ssl=True,
        ssl_ca_certs=str(certificates.ca), ssl_check_hostname=True, conn_retries=0,
    )  # fmt: skip
    return dataclasses.replace(settings, **changes)  # type: ignore[arg-type]


def _client(server: RedisServer, certificates: Certificates) -> redis.Redis:
    return redis.Redis(host='127.0.0.1', port=server.port, username=USER, password=PASSWORD, ssl=True,
                       ssl_ca_certs=str(certificates.ca))  # fmt: skip


def _source(settings: RedisSettings) -> str:
    fields = ('host', 'port', 'username', 'password', 'ssl', 'ssl_ca_certs', 'ssl_check_hostname', 'conn_retries')
    return 'RedisSettings(' + ', '.join(f'{f}={getattr(settings, f)!r}' for f in fields) + ')'


async def add(ctx: dict[str, object], a: int, b: int) -> int:
    return a + b


def test_acl_user_over_tls_runs_jobs_in_process(tls_redis: TLSRedisServer, certificates: Certificates) -> None:
    """A Worker (in-process, burst) and a pool, through RedisSettings(ssl=True, ssl_ca_certs=..., username=...)."""
    from arq import create_pool

    async def go() -> list[object]:
        settings = _settings(tls_redis, certificates)
        pool = await create_pool(settings, default_queue_name='test:tls-in-process')
        try:
            jobs = [await pool.enqueue_job('add', i, 1) for i in range(20)]
            worker = Worker([add], redis_settings=settings, queue_name='test:tls-in-process', burst=True,
                            poll_delay=0, handle_signals=False)  # fmt: skip
            try:
                assert await worker.run_check() == 20
            finally:
                await worker.close()
            return [await job.result(timeout=5) for job in jobs if job is not None]
        finally:
            await pool.aclose()

    assert asyncio.run(go()) == [i + 1 for i in range(20)]


@pytest.mark.timeout(90)
def test_acl_user_over_tls_under_the_supervisor_loses_nothing_through_a_child_kill(
    fleets: FleetFactory, tls_redis: TLSRedisServer, certificates: Certificates
) -> None:
    """The children (arq's async client) and the parent (its sync client: health keys, releases of a dead child's
    jobs) both go through TLS and the ACL user. 200 jobs/s for 3 s, one child SIGKILLed on the way."""
    settings = _settings(tls_redis, certificates)
    client = _client(tls_redis, certificates)
    fleet = fleets(tls_redis.port, client=client)
    fleet.start('--procs', '2', '--health-interval', '1', settings=fleet.write_jobs(redis_settings=_source(settings)))
    pids = fleet.wait_ready(2)
    ledger = Ledger(client, fleet.queue)
    load = Load(settings, fleet.queue, rate=200, args=(0.05,)).start()
    load.wait_count(300)
    killed_at = time.time()
    os.kill(pids[0], signal.SIGKILL)
    fleet.wait_log('job released', timeout=10)  # the parent ran its release script as the ACL user, over TLS
    load.wait_count(600)
    ids = load.stop()
    ledger.wait_all_done(ids, timeout=30, context=fleet)
    fleet.wait_for(lambda: client.exists(f'{fleet.queue}:health-check'), timeout=10, message='the health line')
    fleet.signal(signal.SIGTERM)
    assert fleet.wait(timeout=15) == 0
    result = ledger.check(ids, [Kill(frozenset({pids[0]}), killed_at)])
    report('tls_acl', transport='TLS 1.2+ (redis-server tls-port)', user=USER, **result.figures())
    result.assert_clean()
    assert 'NOPERM' not in fleet.log() and 'no permissions' not in fleet.log()


@pytest.mark.timeout(60)
def test_rediss_url_with_credentials_runs_jobs(
    fleets: FleetFactory, tls_redis: TLSRedisServer, certificates: Certificates
) -> None:
    """`--redis-url rediss://user:password@host:port/0` replaces the settings' Redis; the CA comes from
    SSL_CERT_FILE, which OpenSSL's default verify paths honour (a rediss:// URL carries no CA)."""
    client = _client(tls_redis, certificates)
    fleet = fleets(tls_redis.port, client=client)
    url = f'rediss://{USER}:{PASSWORD}@127.0.0.1:{tls_redis.port}/0'
    nowhere = 'RedisSettings(host="127.0.0.1", port=1, conn_retries=0)'
    env = fleet.env(SSL_CERT_FILE=str(certificates.ca), ARQ_SUPERVISE_REDIS_URL=url)
    fleet.start('--procs', '1', settings=fleet.write_jobs(redis_settings=nowhere), env=env)
    fleet.wait_ready(1)
    producer = dataclasses.replace(RedisSettings.from_dsn(url), ssl_ca_certs=str(certificates.ca))
    load = Load(producer, fleet.queue, rate=100, args=(0.01,), limit=100).start()
    load.wait_count(100)
    ids = load.stop()
    ledger = Ledger(client, fleet.queue)
    ledger.wait_all_done(ids, timeout=20, context=fleet)
    assert PASSWORD not in fleet.log()
    fleet.signal(signal.SIGTERM)
    assert fleet.wait(timeout=15) == 0
    ledger.check(ids).assert_clean()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ('case', 'expected'),
    [
        ('certificate-from-another-ca', 'certificate verify failed'),
        ('plain-redis-to-the-tls-port', 'Connection'),
        ('no-password', 'AuthenticationError'),
    ],
)
def test_tls_or_acl_mismatch_fails_the_boot_with_the_reason(
    fleets: FleetFactory, tls_redis: TLSRedisServer, certificates: Certificates, case: str, expected: str
) -> None:
    if case == 'certificate-from-another-ca':
        settings = _settings(tls_redis, certificates, ssl_ca_certs=str(certificates.other_ca))
    elif case == 'plain-redis-to-the-tls-port':
        settings = _settings(tls_redis, certificates, ssl=False)
    else:
        settings = _settings(tls_redis, certificates, username=None, password=None)
    fleet = fleets(tls_redis.port, client=_client(tls_redis, certificates))
    fleet.start('--procs', '1', settings=fleet.write_jobs(redis_settings=_source(settings)))
    assert fleet.wait(timeout=40) == 3
    halt = [line for line in fleet.log().splitlines() if 'children failed to boot' in line][-1]  # the last line
    print(f'{case}: {halt.split("last error: ")[-1]}')
    assert expected in halt
    assert PASSWORD not in fleet.log()
