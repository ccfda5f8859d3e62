"""Job.abort(): running jobs, deferred jobs, and workers that do not allow aborts."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
import redis

from arq.connections import ArqRedis
from arq.jobs import JobStatus
from tests.worker.helpers import WorkerFactory, wait_for_key

T = r' *\d+\.\d\ds'


async def long_job(ctx: dict[str, Any]) -> str:
    await ctx['redis'].set(f'started:{ctx["job_id"]}', 1)
    await asyncio.sleep(15)  # simulated long work, meant to be aborted
    return 'finished'


async def short_job(ctx: dict[str, Any]) -> str:
    await ctx['redis'].set(f'started:{ctx["job_id"]}', 1)
    await asyncio.sleep(0.2)  # simulated work
    return 'finished'


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith('arq')]


async def test_abort_running_job_cancels_it_and_returns_true(
    arq_redis: ArqRedis,
    sync_redis: redis.Redis,
    worker: WorkerFactory,
    queue_name: str,
    arq_logs: pytest.LogCaptureFixture,
) -> None:
    job = await arq_redis.enqueue_job('long_job')
    assert job is not None
    w = worker(functions=[long_job], allow_abort_jobs=True, burst=False, poll_delay=0.05)
    worker.start(w)
    await wait_for_key(arq_redis, f'started:{job.job_id}')

    assert await job.abort(timeout=10, poll_delay=0.05) is True

    with pytest.raises(asyncio.CancelledError):
        await job.result(timeout=5)
    info = await job.result_info()
    assert info is not None
    assert info.success is False
    assert isinstance(info.result, asyncio.CancelledError)
    assert await job.status() == JobStatus.complete
    jid = job.job_id
    assert sync_redis.exists(f'arq:job:{jid}', f'arq:in-progress:{jid}', f'arq:retry:{jid}') == 0
    assert sync_redis.zscore(queue_name, jid) is None
    assert sync_redis.zscore('arq:abort', jid) is None
    assert any(re.fullmatch(rf'{T} ⊘ {jid}:long_job aborted', m) for m in messages(arq_logs)), messages(arq_logs)
    assert w.jobs_failed == 1


async def test_abort_deferred_job_aborts_it_before_start(
    arq_redis: ArqRedis,
    sync_redis: redis.Redis,
    worker: WorkerFactory,
    queue_name: str,
    arq_logs: pytest.LogCaptureFixture,
) -> None:
    job = await arq_redis.enqueue_job('short_job', _defer_by=300)
    assert job is not None
    worker.start(worker(functions=[short_job], allow_abort_jobs=True, burst=False, poll_delay=0.05))

    assert await job.abort(timeout=10, poll_delay=0.05) is True

    assert sync_redis.exists(f'started:{job.job_id}') == 0
    with pytest.raises(asyncio.CancelledError):
        await job.result(timeout=5)
    assert sync_redis.zscore(queue_name, job.job_id) is None
    assert any(re.fullmatch(rf'{T} ⊘ {job.job_id}:short_job aborted before start', m) for m in messages(arq_logs)), (
        messages(arq_logs)
    )


async def test_abort_without_allow_abort_jobs_lets_job_finish_and_returns_false(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory
) -> None:
    job = await arq_redis.enqueue_job('short_job')
    assert job is not None
    worker.start(worker(functions=[short_job], burst=False, poll_delay=0.05))
    await wait_for_key(arq_redis, f'started:{job.job_id}')

    assert await job.abort(timeout=10, poll_delay=0.05) is False

    assert await job.result(timeout=5) == 'finished'


async def test_abort_of_finished_job_returns_false(arq_redis: ArqRedis, worker: WorkerFactory) -> None:
    job = await arq_redis.enqueue_job('short_job')
    assert job is not None
    await worker(functions=[short_job], allow_abort_jobs=True).main()
    assert await job.abort(timeout=1, poll_delay=0.05) is False


async def test_abort_waiting_for_unstarted_job_times_out(arq_redis: ArqRedis) -> None:
    job = await arq_redis.enqueue_job('short_job')
    assert job is not None
    with pytest.raises(TimeoutError):
        await job.abort(timeout=0.1, poll_delay=0.02)
