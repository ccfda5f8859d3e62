"""The worker survives what kills arq 0.26.3: Redis going away mid-loop (#435, #498) and exceptions in job hooks.

These fail on the published arq by design; the reference run skips files named test_improvements_*.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import redis

from arq.connections import ArqRedis, RedisSettings, create_pool
from tests.support.redis_server import RedisServer
from tests.support.waiting import async_wait_until
from tests.worker.helpers import WorkerFactory, wait_for_key, wait_worker_ready


async def add(ctx: dict[str, Any], a: int, b: int = 0) -> int:
    return a + b


async def long_first_run(ctx: dict[str, Any]) -> int:
    runs = await ctx['redis'].incr(f'started:{ctx["job_id"]}')
    if runs == 1:
        await asyncio.sleep(30)  # simulated long work, interrupted by the shutdown
    return int(ctx['job_try'])


async def test_worker_carries_on_after_its_connections_are_killed(
    arq_redis: ArqRedis,
    redis_settings: RedisSettings,
    sync_redis: redis.Redis,
    worker: WorkerFactory,
    queue_name: str,
) -> None:
    task = worker.start(worker(functions=[add], burst=False, poll_delay=0.05))
    await wait_worker_ready(arq_redis, queue_name)
    first = await arq_redis.enqueue_job('add', 1)
    assert first is not None
    assert await first.result(timeout=10, poll_delay=0.05) == 1

    killed = sync_redis.client_kill_filter(_type='normal', skipme=True)
    assert killed >= 1

    pool = await create_pool(redis_settings, default_queue_name=queue_name)  # ours were killed too
    try:
        second = await pool.enqueue_job('add', 2)
        assert second is not None
        assert await second.result(timeout=15, poll_delay=0.05) == 2
    finally:
        await pool.aclose()
    assert not task.done()


async def test_worker_reconnects_after_redis_restart(
    private_redis: RedisServer, worker: WorkerFactory, queue_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger='arq')
    settings = RedisSettings(host='127.0.0.1', port=private_redis.port, conn_timeout=1)
    task = worker.start(worker(functions=[add], redis_settings=settings, burst=False, poll_delay=0.05))
    pool = await create_pool(settings, default_queue_name=queue_name)
    try:
        await wait_worker_ready(pool, queue_name)
    finally:
        await pool.aclose()

    private_redis.stop()

    async def redis_trouble_logged() -> bool:
        return any(r.levelno >= logging.WARNING for r in caplog.records if r.name.startswith('arq'))

    await async_wait_until(redis_trouble_logged, timeout=10, message='the worker to log the lost connection')
    assert not task.done(), task
    private_redis.start()

    pool = await create_pool(settings, default_queue_name=queue_name)
    try:
        job = await pool.enqueue_job('add', 20, b=22)
        assert job is not None
        assert await job.result(timeout=30, poll_delay=0.1) == 42
    finally:
        await pool.aclose()
    assert not task.done()


@pytest.mark.parametrize('hook', ['on_job_start', 'on_job_end', 'after_job_end'])
async def test_hook_exception_is_logged_with_job_id_and_job_finishes(
    arq_redis: ArqRedis,
    sync_redis: redis.Redis,
    worker: WorkerFactory,
    queue_name: str,
    arq_logs: pytest.LogCaptureFixture,
    hook: str,
) -> None:
    async def broken_hook(ctx: dict[str, Any]) -> None:
        raise RuntimeError(f'{hook} is broken')

    job = await arq_redis.enqueue_job('add', 1, _job_id=f'hooked-{hook}')
    assert job is not None
    w = worker(functions=[add], **{hook: broken_hook})
    await asyncio.wait_for(w.main(), 10)

    jid = job.job_id
    assert sync_redis.exists(f'arq:result:{jid}') == 1, 'the job finished with a result'
    assert sync_redis.exists(f'arq:in-progress:{jid}', f'arq:job:{jid}') == 0
    assert sync_redis.zscore(queue_name, jid) is None
    logged = [r for r in arq_logs.records if r.levelno >= logging.WARNING and jid in r.getMessage()]
    assert logged, [r.getMessage() for r in arq_logs.records]

    later = await arq_redis.enqueue_job('add', 2)
    assert later is not None
    await asyncio.wait_for(worker(functions=[add], **{hook: broken_hook}).main(), 10)
    assert sync_redis.exists(f'arq:result:{later.job_id}') == 1


@pytest.mark.parametrize('hook', ['on_job_end', 'after_job_end'])
async def test_hook_exception_after_the_job_keeps_its_success(
    arq_redis: ArqRedis, worker: WorkerFactory, hook: str
) -> None:
    async def broken_hook(ctx: dict[str, Any]) -> None:
        raise RuntimeError(f'{hook} is broken')

    job = await arq_redis.enqueue_job('add', 3, b=4)
    assert job is not None
    await asyncio.wait_for(worker(functions=[add], **{hook: broken_hook}).main(), 10)
    assert await job.result(timeout=5) == 7


async def test_worker_keeps_running_after_hook_exception(
    arq_redis: ArqRedis, worker: WorkerFactory, queue_name: str
) -> None:
    async def broken_hook(ctx: dict[str, Any]) -> None:
        raise RuntimeError('broken')

    task = worker.start(worker(functions=[add], burst=False, poll_delay=0.05, on_job_start=broken_hook))
    await wait_worker_ready(arq_redis, queue_name)
    first = await arq_redis.enqueue_job('add', 1)
    second = await arq_redis.enqueue_job('add', 2)
    assert first is not None and second is not None

    async def both_finished() -> bool:
        return await arq_redis.exists(f'arq:result:{first.job_id}', f'arq:result:{second.job_id}') == 2

    await async_wait_until(both_finished, timeout=10, message='both jobs to finish')
    assert not task.done()


async def test_shutdown_cancellation_does_not_use_up_a_try(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory
) -> None:
    """arq counts a start cancelled by a shutdown as a try (#267): enough deploys fail a job with max retries."""
    job = await arq_redis.enqueue_job('long_first_run')
    assert job is not None
    w = worker(functions=[long_first_run], burst=False, poll_delay=0.05, handle_signals=False)
    worker.start(w)
    await wait_for_key(arq_redis, f'started:{job.job_id}')
    await asyncio.wait_for(w.close(), 10)
    assert await arq_redis.zscore(w.queue_name, job.job_id) is not None, 're-queued'

    await asyncio.wait_for(worker(functions=[long_first_run]).main(), 10)
    assert await job.result(timeout=5) == 1


async def shrugs_off_one_cancel(ctx: dict[str, Any]) -> None:
    """Swallows the first cancellation, as redis-py can while it sets up a connection, then carries on working."""
    await ctx['redis'].set(f'started:{ctx["job_id"]}', 1)
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        assert task is not None
        task.uncancel()
    await asyncio.sleep(30)


async def test_abort_of_a_job_that_swallowed_the_cancellation_is_sent_again(
    arq_redis: ArqRedis, worker: WorkerFactory, arq_logs: pytest.LogCaptureFixture
) -> None:
    job = await arq_redis.enqueue_job('shrugs_off_one_cancel')
    assert job is not None
    worker.start(worker(functions=[shrugs_off_one_cancel], allow_abort_jobs=True, burst=False, poll_delay=0.05))
    await wait_for_key(arq_redis, f'started:{job.job_id}')
    assert await job.abort(timeout=10, poll_delay=0.05) is True
    assert any('still running' in r.getMessage() and job.job_id in r.getMessage() for r in arq_logs.records)
