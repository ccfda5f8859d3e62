"""Several workers on one queue, functions registered by dotted path, and expiry of jobs that wait too long."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
import redis

from arq import cron
from arq.connections import ArqRedis
from arq.worker import FailedJobs, JobExecutionFailed, func
from tests.worker.helpers import WorkerFactory


async def count_run(ctx: dict[str, Any]) -> None:
    await ctx['redis'].incr(f'runs:{ctx["job_id"]}')
    await asyncio.sleep(0.01)  # simulated work


async def test_three_workers_on_one_queue_run_each_job_once(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, queue_name: str
) -> None:
    ids = []
    for _ in range(60):
        job = await arq_redis.enqueue_job('count_run')
        assert job is not None
        ids.append(job.job_id)
    workers = [worker(functions=[count_run], max_jobs=4) for _ in range(3)]
    completed = await asyncio.wait_for(asyncio.gather(*(w.run_check() for w in workers)), 30)
    assert sum(completed) == 60
    assert [sync_redis.get(f'runs:{i}') for i in ids] == [b'1'] * 60
    assert sync_redis.zcard(queue_name) == 0


async def test_function_registered_by_dotted_path(arq_redis: ArqRedis, worker: WorkerFactory) -> None:
    name = 'tests.worker.importable_jobs.multiply'
    job = await arq_redis.enqueue_job(name, 6, 7)
    assert job is not None
    await worker(functions=[func(name)]).main()
    assert await job.result(timeout=5) == 42


async def test_cron_registered_by_dotted_path(sync_redis: redis.Redis, worker: WorkerFactory) -> None:
    job = cron('tests.worker.importable_jobs.tick', run_at_startup=True)
    assert job.name == 'cron:tests.worker.importable_jobs.tick'
    await worker(cron_jobs=[job]).main()
    [job_id] = [x.decode() for x in sync_redis.lrange('ticks', 0, -1)]
    assert re.fullmatch(r'cron:tests\.worker\.importable_jobs\.tick:\d{13}', job_id)


async def test_job_whose_key_expires_before_it_starts_fails_as_expired(
    arq_redis: ArqRedis, worker: WorkerFactory, arq_logs: pytest.LogCaptureFixture
) -> None:
    job = await arq_redis.enqueue_job('count_run', _defer_by=0.5, _expires=0.2)
    assert job is not None
    with pytest.raises(FailedJobs):
        await worker(functions=[count_run]).run_check()
    with pytest.raises(JobExecutionFailed, match='^job expired$'):
        await job.result(timeout=5)
    assert f'job {job.job_id} expired' in [r.getMessage() for r in arq_logs.records]
