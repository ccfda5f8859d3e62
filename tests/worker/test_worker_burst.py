"""Burst mode, max_burst_jobs, max_jobs and worker construction."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from arq.connections import ArqRedis
from arq.worker import Worker
from tests.worker.helpers import WorkerFactory


async def add(ctx: dict[str, Any], a: int, b: int = 0) -> int:
    return a + b


async def concurrent(ctx: dict[str, Any]) -> None:
    r = ctx['redis']
    now_running = await r.incr('running')
    await r.rpush('running-seen', now_running)
    await asyncio.sleep(0.2)  # simulated work, so that jobs overlap
    await r.decr('running')


async def test_burst_worker_drains_queue_and_returns_completed_count(
    arq_redis: ArqRedis, worker: WorkerFactory, queue_name: str
) -> None:
    jobs = [await arq_redis.enqueue_job('add', i) for i in range(5)]
    assert await worker(functions=[add]).run_check() == 5
    assert [await j.result(timeout=5) for j in jobs if j is not None] == [0, 1, 2, 3, 4]
    assert await arq_redis.zcard(queue_name) == 0


async def test_burst_worker_with_empty_queue_returns_at_once(worker: WorkerFactory) -> None:
    assert await asyncio.wait_for(worker(functions=[add]).run_check(), 5) == 0


async def test_max_burst_jobs_limits_jobs_run(arq_redis: ArqRedis, worker: WorkerFactory, queue_name: str) -> None:
    for i in range(5):
        await arq_redis.enqueue_job('add', i)
    assert await worker(functions=[add], max_burst_jobs=2).run_check() == 2
    assert await arq_redis.zcard(queue_name) == 3


async def test_run_check_max_burst_jobs_argument(arq_redis: ArqRedis, worker: WorkerFactory, queue_name: str) -> None:
    for i in range(4):
        await arq_redis.enqueue_job('add', i)
    assert await worker(functions=[add]).run_check(max_burst_jobs=3) == 3
    assert await arq_redis.zcard(queue_name) == 1


async def test_burst_waits_for_deferred_jobs(arq_redis: ArqRedis, worker: WorkerFactory) -> None:
    job = await arq_redis.enqueue_job('add', 7, _defer_by=0.3)
    assert job is not None
    assert await worker(functions=[add]).run_check() == 1
    assert await job.result(timeout=1) == 7


async def test_max_jobs_limits_concurrency(arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory) -> None:
    for _ in range(6):
        await arq_redis.enqueue_job('concurrent')
    assert await worker(functions=[concurrent], max_jobs=2).run_check() == 6
    seen = [int(x) for x in sync_redis.lrange('running-seen', 0, -1)]
    assert len(seen) == 6
    assert max(seen) == 2


async def test_worker_without_queue_name_uses_pool_default(arq_redis: ArqRedis, worker: WorkerFactory) -> None:
    job = await arq_redis.enqueue_job('add', 3)
    assert job is not None
    w = worker(functions=[add], queue_name=None, redis_pool=arq_redis)
    assert w.queue_name == arq_redis.default_queue_name
    assert await w.run_check() == 1
    assert await job.result(timeout=5) == 3


async def test_worker_without_queue_name_or_pool_is_an_error() -> None:
    with pytest.raises(ValueError, match='queue_name'):
        Worker(functions=[add], queue_name=None)


async def test_worker_without_functions_is_an_error() -> None:
    with pytest.raises(RuntimeError, match='at least one function or cron_job must be registered'):
        Worker(functions=[])


async def test_worker_repr_shows_counters(arq_redis: ArqRedis, worker: WorkerFactory) -> None:
    await arq_redis.enqueue_job('add', 1)
    w = worker(functions=[add])
    await w.main()
    assert repr(w) == '<Worker j_complete=1 j_failed=0 j_retried=0 j_ongoing=0>'
