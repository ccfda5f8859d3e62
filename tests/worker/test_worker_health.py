"""Health check key: its format, TTL and lifetime; check_health / async_check_health; the `arq` command."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
import redis

from arq.connections import ArqRedis, RedisSettings
from arq.worker import async_check_health
from tests.support.redis_server import RedisServer
from tests.support.waiting import async_wait_until
from tests.worker.helpers import WorkerFactory, run_arq_cli, wait_worker_ready, write_settings_module

HEALTH_LINE = (
    r'[A-Z][a-z]{2}-\d\d \d\d:\d\d:\d\d j_complete=(\d+) j_failed=(\d+) j_retried=(\d+) j_ongoing=(\d+) queued=(\d+)'
)


async def add(ctx: dict[str, Any], a: int, b: int = 0) -> int:
    return a + b


async def fail(ctx: dict[str, Any]) -> None:
    raise ValueError('nope')


async def test_running_worker_writes_health_check_key_with_ttl(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, queue_name: str
) -> None:
    w = worker(functions=[add], burst=False, poll_delay=0.05, health_check_interval=30)
    worker.start(w)
    await wait_worker_ready(arq_redis, queue_name)
    value = sync_redis.get(f'{queue_name}:health-check')
    assert value is not None
    assert re.fullmatch(HEALTH_LINE, value.decode()), value
    assert 30_000 < sync_redis.pttl(f'{queue_name}:health-check') <= 31_000


async def test_health_check_counts_jobs(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, queue_name: str
) -> None:
    await arq_redis.enqueue_job('add', 1)
    await arq_redis.enqueue_job('add', 2)
    await arq_redis.enqueue_job('fail')
    await arq_redis.enqueue_job('add', 3, _defer_by=3600)
    w = worker(functions=[add, fail], burst=False, poll_delay=0.05, health_check_interval=0)

    def counters() -> tuple[int, ...] | None:
        value = sync_redis.get(f'{queue_name}:health-check')
        match = re.fullmatch(HEALTH_LINE, value.decode()) if value else None
        return tuple(int(g) for g in match.groups()) if match else None

    worker.start(w)

    async def settled() -> tuple[int, ...] | None:
        c = counters()
        return c if c == (2, 1, 0, 0, 1) else None

    await async_wait_until(settled, timeout=10, message=f'health counters, last {counters()}')


async def add_slowly(ctx: dict[str, Any], a: int) -> int:
    # the job's own work outlasts the loop's first turn: a job that settled before the turn's health record (whose
    # first line is never logged, as arq's) left a burst worker nothing to log
    await asyncio.sleep(0.05)
    return a


async def test_health_check_logs_recording_health_when_counters_change(
    arq_redis: ArqRedis, worker: WorkerFactory, arq_logs: pytest.LogCaptureFixture
) -> None:
    await arq_redis.enqueue_job('add_slowly', 1)
    await worker(functions=[add_slowly], health_check_interval=0).main()
    lines = [r.getMessage() for r in arq_logs.records if r.getMessage().startswith('recording health: ')]
    assert lines, [r.getMessage() for r in arq_logs.records]
    assert all(re.fullmatch('recording health: ' + HEALTH_LINE, line) for line in lines), lines
    assert any('j_complete=1' in line for line in lines), lines


async def test_health_check_key_deleted_when_worker_closes(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, queue_name: str
) -> None:
    w = worker(functions=[add])
    await w.main()
    assert sync_redis.exists(f'{queue_name}:health-check') == 1
    await w.close()
    assert sync_redis.exists(f'{queue_name}:health-check') == 0


async def test_custom_health_check_key(arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory) -> None:
    w = worker(functions=[add], health_check_key='my:health')
    await w.main()
    value = sync_redis.get('my:health')
    assert value is not None
    assert re.fullmatch(HEALTH_LINE, value.decode())


async def test_async_check_health_reflects_key(
    arq_redis: ArqRedis, redis_settings: RedisSettings, worker: WorkerFactory, queue_name: str
) -> None:
    assert await async_check_health(redis_settings, queue_name=queue_name) == 1
    w = worker(functions=[add])
    await w.main()
    assert await async_check_health(redis_settings, queue_name=queue_name) == 0
    assert await async_check_health(redis_settings, health_check_key=f'{queue_name}:health-check') == 0
    await w.close()
    assert await async_check_health(redis_settings, queue_name=queue_name) == 1


def cli_settings(tmp_path: Path, redis_server: RedisServer, redis_db: int, queue_name: str) -> str:
    return write_settings_module(
        tmp_path,
        'cli_settings',
        f"""
from arq.connections import RedisSettings


async def say(ctx, word):
    await ctx['redis'].set('said', word)
    return word.upper()


class WorkerSettings:
    functions = [say]
    redis_settings = RedisSettings(host='127.0.0.1', port={redis_server.port}, database={redis_db})
    queue_name = {queue_name!r}
""",
    )


def test_check_health_cli_exit_codes(
    tmp_path: Path, redis_server: RedisServer, redis_db: int, queue_name: str, sync_redis: redis.Redis
) -> None:
    module = cli_settings(tmp_path, redis_server, redis_db, queue_name)
    missing = run_arq_cli(['--check', f'{module}.WorkerSettings'], cwd=tmp_path)
    assert missing.returncode == 1, missing.stderr
    assert 'Health check failed' in missing.stderr

    sync_redis.set(
        f'{queue_name}:health-check', 'Nov-28 21:45:26 j_complete=0 j_failed=0 j_retried=0 j_ongoing=0 queued=0'
    )
    present = run_arq_cli(['--check', f'{module}.WorkerSettings'], cwd=tmp_path)
    assert present.returncode == 0, present.stderr
    assert 'Health check successful' in present.stderr


@pytest.mark.parametrize('flag', ['--burst'])
def test_cli_burst_runs_jobs_and_logs_in_arq_format(
    tmp_path: Path, redis_server: RedisServer, redis_db: int, queue_name: str, sync_redis: redis.Redis, flag: str
) -> None:
    import pickle
    import time

    module = cli_settings(tmp_path, redis_server, redis_db, queue_name)
    et = int(time.time() * 1000)
    payload = pickle.dumps({'t': None, 'f': 'say', 'a': ('hello',), 'k': {}, 'et': et})
    sync_redis.psetex('arq:job:cli-job', 60_000, payload)
    sync_redis.zadd(queue_name, {'cli-job': et})

    proc = run_arq_cli([flag, f'{module}.WorkerSettings'], cwd=tmp_path)

    assert proc.returncode == 0, proc.stderr
    assert sync_redis.get('said') == b'hello'
    assert pickle.loads(sync_redis.get('arq:result:cli-job'))['r'] == 'HELLO'
    lines = proc.stderr.splitlines()
    # arq adds ` delayed=1.52s` when the job starts over 1.2 s after its score (a slow boot on a busy machine)
    started = r'\d\d:\d\d:\d\d: +\d+\.\d\ds → cli-job:say\(\'hello\'\)( delayed=\d+\.\d\ds)?'
    assert any(re.fullmatch(started, line) for line in lines), lines
    assert any(re.fullmatch(r"\d\d:\d\d:\d\d: +\d+\.\d\ds ← cli-job:say ● 'HELLO'", line) for line in lines), lines


def test_cli_version(tmp_path: Path) -> None:
    proc = run_arq_cli(['--version'], cwd=tmp_path)
    assert proc.returncode == 0
    assert '0.26.3' in proc.stdout
