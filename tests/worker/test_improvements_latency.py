"""Pickup without waiting out poll_delay, a claim without WATCH, and in-progress keys as short, refreshed leases.

These fail on the published arq by design; the reference run skips files named test_improvements_*.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from arq.connections import ArqRedis, RedisSettings, create_pool
from tests.support.redis_server import RedisServer
from tests.support.waiting import async_wait_until
from tests.worker.helpers import WorkerFactory, arq_import_root, wait_for_key, wait_worker_ready, write_settings_module

ARQ_IN_PROGRESS_TTL_MS = 310_000  # arq: job_timeout (300 s) + 10 s, never refreshed


async def add(ctx: dict[str, Any], a: int, b: int = 0) -> int:
    return a + b


async def gated(ctx: dict[str, Any]) -> str:
    r = ctx['redis']
    await r.set(f'started:{ctx["job_id"]}', 1)
    while not await r.exists(f'release:{ctx["job_id"]}'):
        await asyncio.sleep(0.05)  # simulated work that lasts until the test releases it
    return 'released'


async def test_enqueue_is_picked_up_without_waiting_out_poll_delay(
    arq_redis: ArqRedis, worker: WorkerFactory, queue_name: str
) -> None:
    worker.start(worker(functions=[add], burst=False, poll_delay=5))
    await wait_worker_ready(arq_redis, queue_name)
    job = await arq_redis.enqueue_job('add', 1, b=1)
    assert job is not None
    assert await job.result(timeout=2, poll_delay=0.02) == 2


async def test_idle_worker_wakes_for_next_deferred_job(
    arq_redis: ArqRedis, worker: WorkerFactory, queue_name: str
) -> None:
    worker.start(worker(functions=[add], burst=False, poll_delay=5))
    await wait_worker_ready(arq_redis, queue_name)
    job = await arq_redis.enqueue_job('add', 2, b=2, _defer_by=0.5)
    assert job is not None
    assert await job.result(timeout=2.5, poll_delay=0.02) == 4


async def test_several_enqueues_are_all_picked_up_promptly(
    arq_redis: ArqRedis, worker: WorkerFactory, queue_name: str
) -> None:
    worker.start(worker(functions=[add], burst=False, poll_delay=5))
    await wait_worker_ready(arq_redis, queue_name)
    for i in range(3):
        job = await arq_redis.enqueue_job('add', i)
        assert job is not None
        assert await job.result(timeout=2, poll_delay=0.02) == i


async def test_worker_claims_jobs_without_watch(
    private_redis: RedisServer, worker: WorkerFactory, queue_name: str
) -> None:
    settings = RedisSettings(host='127.0.0.1', port=private_redis.port)
    pool = await create_pool(settings, default_queue_name=queue_name)
    try:
        for i in range(20):
            await pool.enqueue_job('add', i)
        await pool.config_resetstat()
        w = worker(functions=[add], redis_settings=settings)
        assert await w.run_check() == 20
        stats = await pool.info('commandstats')
    finally:
        await pool.aclose()
    assert 'cmdstat_watch' not in stats, stats.get('cmdstat_watch')


async def test_in_progress_key_is_a_short_lease_refreshed_while_the_job_runs(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory
) -> None:
    job = await arq_redis.enqueue_job('gated')
    assert job is not None
    worker.start(worker(functions=[gated], burst=False, poll_delay=0.05))
    await wait_for_key(arq_redis, f'started:{job.job_id}')
    key = f'arq:in-progress:{job.job_id}'
    first = sync_redis.pttl(key)
    assert 0 < first < 60_000 < ARQ_IN_PROGRESS_TTL_MS

    async def refreshed() -> int:
        ttl = await arq_redis.pttl(key)
        return ttl if ttl > first else 0

    await async_wait_until(refreshed, timeout=30, message=f'the lease on {key} to be refreshed')
    await arq_redis.set(f'release:{job.job_id}', 1)
    assert await job.result(timeout=10, poll_delay=0.05) == 'released'
    assert sync_redis.exists(key) == 0


@pytest.mark.slow
async def test_job_of_a_killed_worker_runs_elsewhere_within_seconds(
    tmp_path: Path,
    redis_server: RedisServer,
    redis_db: int,
    arq_redis: ArqRedis,
    redis_settings: RedisSettings,
    worker: WorkerFactory,
    queue_name: str,
) -> None:
    module = write_settings_module(
        tmp_path,
        'doomed_settings',
        f"""
import asyncio

from arq.connections import RedisSettings


async def gated(ctx):
    await ctx['redis'].set(f'started:{{ctx["job_id"]}}', 1)
    await asyncio.sleep(120)


class WorkerSettings:
    functions = [gated]
    redis_settings = RedisSettings(host='127.0.0.1', port={redis_server.port}, database={redis_db})
    queue_name = {queue_name!r}
    poll_delay = 0.05
""",
    )
    proc = subprocess.Popen(
        [sys.executable, '-m', 'arq', f'{module}.WorkerSettings'],
        cwd=tmp_path,
        env={**os.environ, 'PYTHONPATH': arq_import_root()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        job = await arq_redis.enqueue_job('gated')
        assert job is not None
        await wait_for_key(arq_redis, f'started:{job.job_id}', timeout=20)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        await arq_redis.delete(f'started:{job.job_id}')
        await arq_redis.set(f'release:{job.job_id}', 1)

        survivor = worker(functions=[gated], burst=False, poll_delay=0.2)
        worker.start(survivor)
        assert await job.result(timeout=40, poll_delay=0.1) == 'released'
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
