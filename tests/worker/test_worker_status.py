"""Job.status() through a job's life, and the JobStatus values."""

from __future__ import annotations

import asyncio
from typing import Any

from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus
from tests.support.waiting import async_wait_until
from tests.worker.helpers import WorkerFactory, wait_for_key


async def gated(ctx: dict[str, Any]) -> str:
    r = ctx['redis']
    await r.set(f'started:{ctx["job_id"]}', 1)
    while not await r.exists(f'release:{ctx["job_id"]}'):
        await asyncio.sleep(0.01)  # simulated work that lasts until the test releases it
    return 'released'


def test_job_status_values() -> None:
    assert [s.value for s in JobStatus] == ['deferred', 'queued', 'in_progress', 'complete', 'not_found']
    assert JobStatus.in_progress == 'in_progress'
    assert isinstance(JobStatus.complete, str)


async def test_status_goes_queued_in_progress_complete(
    arq_redis: ArqRedis, worker: WorkerFactory, queue_name: str
) -> None:
    job = await arq_redis.enqueue_job('gated')
    assert job is not None
    assert await job.status() == JobStatus.queued
    worker.start(worker(functions=[gated], burst=False, poll_delay=0.05))
    await wait_for_key(arq_redis, f'started:{job.job_id}')
    assert await job.status() == JobStatus.in_progress
    assert await arq_redis.zscore(queue_name, job.job_id) is not None, 'a running job stays in the queue'
    # the lease holds the claim's token (`<worker id>:<claim number>`); arq only ever checks that the key exists
    holder = await arq_redis.get(f'arq:in-progress:{job.job_id}')
    assert holder is not None and b':' in holder
    await arq_redis.set(f'release:{job.job_id}', 1)
    assert await job.result(timeout=10, poll_delay=0.05) == 'released'
    assert await job.status() == JobStatus.complete


async def test_deferred_job_becomes_queued_when_due(arq_redis: ArqRedis) -> None:
    job = await arq_redis.enqueue_job('gated', _defer_by=0.3)
    assert job is not None
    assert await job.status() == JobStatus.deferred

    async def is_queued() -> bool:
        return await job.status() == JobStatus.queued

    await async_wait_until(is_queued, timeout=5, message='deferred job to become queued')


async def test_unknown_job_is_not_found(arq_redis: ArqRedis, queue_name: str) -> None:
    assert await Job('never-enqueued', arq_redis, _queue_name=queue_name).status() == JobStatus.not_found


async def test_status_is_relative_to_the_jobs_queue(arq_redis: ArqRedis, queue_name: str) -> None:
    job = await arq_redis.enqueue_job('gated')
    assert job is not None
    assert await Job(job.job_id, arq_redis, _queue_name=queue_name).status() == JobStatus.queued
    assert await Job(job.job_id, arq_redis, _queue_name=queue_name + ':other').status() == JobStatus.not_found


async def test_finished_job_without_kept_result_is_not_found(arq_redis: ArqRedis, worker: WorkerFactory) -> None:
    job = await arq_redis.enqueue_job('gated')
    assert job is not None
    await arq_redis.set(f'release:{job.job_id}', 1)
    await worker(functions=[gated], keep_result=0).main()
    assert await job.status() == JobStatus.not_found
