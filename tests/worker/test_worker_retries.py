"""Retries (Retry, RetryJob, max_tries, retry_jobs=False), failures and timeouts."""

from __future__ import annotations

import asyncio
import pickle
import re
import time
from typing import Any

import pytest
import redis

from arq import Retry
from arq.connections import ArqRedis
from arq.jobs import JobStatus
from arq.worker import FailedJobs, JobExecutionFailed, RetryJob, func
from tests.worker.helpers import WorkerFactory


class JobFailure(ValueError):
    pass


async def record_try(ctx: dict[str, Any]) -> None:
    await ctx['redis'].rpush(f'tries:{ctx["job_id"]}', ctx['job_try'])


async def retry_in_a_minute(ctx: dict[str, Any]) -> None:
    await record_try(ctx)
    raise Retry(defer=60)


async def retry_once(ctx: dict[str, Any]) -> str:
    await record_try(ctx)
    if ctx['job_try'] == 1:
        raise Retry(defer=0.05)
    return 'done'


async def always_retry(ctx: dict[str, Any]) -> None:
    await record_try(ctx)
    raise Retry()


async def retry_job_once(ctx: dict[str, Any]) -> str:
    await record_try(ctx)
    if ctx['job_try'] == 1:
        raise RetryJob()
    return 'second time lucky'


async def fail(ctx: dict[str, Any]) -> None:
    await record_try(ctx)
    raise JobFailure('it went wrong')


async def slow(ctx: dict[str, Any]) -> None:
    await record_try(ctx)
    await asyncio.sleep(30)  # simulated work, cut short by the timeout


def tries(sync_redis: redis.Redis, job_id: str) -> list[int]:
    return [int(t) for t in sync_redis.lrange(f'tries:{job_id}', 0, -1)]


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith('arq')]


async def test_retry_with_defer_requeues_job_with_later_score(
    arq_redis: ArqRedis,
    sync_redis: redis.Redis,
    worker: WorkerFactory,
    queue_name: str,
    arq_logs: pytest.LogCaptureFixture,
) -> None:
    job = await arq_redis.enqueue_job('retry_in_a_minute')
    assert job is not None
    first_score = sync_redis.zscore(queue_name, job.job_id)
    assert first_score is not None
    started = time.time() * 1000
    await worker(functions=[retry_in_a_minute], max_burst_jobs=1).main()

    score = sync_redis.zscore(queue_name, job.job_id)
    assert score is not None
    assert started + 59_000 <= score <= time.time() * 1000 + 60_001
    assert await job.status() == JobStatus.deferred
    jid = job.job_id
    assert sync_redis.exists(f'arq:job:{jid}') == 1, 'the job payload is kept for the retry'
    assert sync_redis.exists(f'arq:result:{jid}', f'arq:in-progress:{jid}') == 0
    assert sync_redis.get(f'arq:retry:{jid}') == b'1'
    assert 88_000 < sync_redis.ttl(f'arq:retry:{jid}') <= 88_400
    assert any(
        re.fullmatch(rf' *\d+\.\d\ds ↻ {jid}:retry_in_a_minute retrying job in 60\.00s', m) for m in messages(arq_logs)
    )


async def test_retry_runs_job_again_with_job_try_two(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, arq_logs: pytest.LogCaptureFixture
) -> None:
    job = await arq_redis.enqueue_job('retry_once')
    assert job is not None
    w = worker(functions=[retry_once])
    await w.main()
    assert await job.result(timeout=5) == 'done'
    assert tries(sync_redis, job.job_id) == [1, 2]
    info = await job.result_info()
    assert info is not None and info.job_try == 2
    assert (w.jobs_complete, w.jobs_retried, w.jobs_failed) == (1, 1, 0)
    assert any(re.fullmatch(rf' *\d+\.\d\ds → {job.job_id}:retry_once\(\) try=2', m) for m in messages(arq_logs))


async def test_max_tries_exceeded_fails_with_job_execution_failed(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, arq_logs: pytest.LogCaptureFixture
) -> None:
    job = await arq_redis.enqueue_job('always_retry')
    assert job is not None
    with pytest.raises(FailedJobs) as exc_info:
        await worker(functions=[always_retry], max_tries=3).run_check()
    assert exc_info.value.count == 1
    assert tries(sync_redis, job.job_id) == [1, 2, 3]
    with pytest.raises(JobExecutionFailed, match=r'^max 3 retries exceeded$'):
        await job.result(timeout=5)
    assert any(
        re.fullmatch(rf' *\d+\.\d\ds ! {job.job_id}:always_retry max retries 3 exceeded', m) for m in messages(arq_logs)
    )
    jid = job.job_id
    assert sync_redis.exists(f'arq:job:{jid}', f'arq:retry:{jid}', f'arq:in-progress:{jid}') == 0


async def test_function_max_tries_overrides_worker(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory
) -> None:
    job = await arq_redis.enqueue_job('always_retry')
    assert job is not None
    with pytest.raises(FailedJobs):
        await worker(functions=[func(always_retry, max_tries=2)], max_tries=10).run_check()
    assert tries(sync_redis, job.job_id) == [1, 2]
    with pytest.raises(JobExecutionFailed, match='max 2 retries exceeded'):
        await job.result(timeout=5)


async def test_job_try_above_max_tries_fails_without_running(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory
) -> None:
    job = await arq_redis.enqueue_job('retry_once', _job_try=6)
    assert job is not None
    with pytest.raises(FailedJobs):
        await worker(functions=[retry_once], max_tries=5).run_check()
    assert tries(sync_redis, job.job_id) == []
    with pytest.raises(JobExecutionFailed, match='max 5 retries exceeded'):
        await job.result(timeout=5)


async def test_retry_jobs_false_stores_retry_as_failure(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory
) -> None:
    job = await arq_redis.enqueue_job('retry_once')
    assert job is not None
    w = worker(functions=[retry_once], retry_jobs=False)
    await w.main()
    assert tries(sync_redis, job.job_id) == [1]
    assert (w.jobs_complete, w.jobs_retried, w.jobs_failed) == (0, 0, 1)
    with pytest.raises(Retry):
        await job.result(timeout=5)


async def test_run_check_retry_jobs_argument_overrides_worker(arq_redis: ArqRedis, worker: WorkerFactory) -> None:
    job = await arq_redis.enqueue_job('retry_once')
    assert job is not None
    with pytest.raises(FailedJobs) as exc_info:
        await worker(functions=[retry_once]).run_check(retry_jobs=False)
    assert isinstance(exc_info.value.job_results[0].result, Retry)


async def test_retry_job_exception_requeues_job(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, arq_logs: pytest.LogCaptureFixture
) -> None:
    job = await arq_redis.enqueue_job('retry_job_once')
    assert job is not None
    await worker(functions=[retry_job_once]).main()
    assert await job.result(timeout=5) == 'second time lucky'
    assert tries(sync_redis, job.job_id) == [1, 2]
    assert any(
        re.fullmatch(rf' *\d+\.\d\ds ↻ {job.job_id}:retry_job_once cancelled, will be run again', m)
        for m in messages(arq_logs)
    )


async def test_exception_fails_job_once_without_retry(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, arq_logs: pytest.LogCaptureFixture
) -> None:
    job = await arq_redis.enqueue_job('fail')
    assert job is not None
    w = worker(functions=[fail])
    await w.main()
    assert tries(sync_redis, job.job_id) == [1]
    assert (w.jobs_complete, w.jobs_retried, w.jobs_failed) == (0, 0, 1)
    with pytest.raises(JobFailure):
        await job.result(timeout=5)
    [record] = [r for r in arq_logs.records if '!' in r.getMessage()]
    assert re.fullmatch(rf' *\d+\.\d\ds ! {job.job_id}:fail failed, JobFailure: it went wrong', record.getMessage())
    assert record.levelname == 'ERROR'
    assert record.exc_info is not None


async def test_failed_job_result_is_pickled_exception(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory
) -> None:
    job = await arq_redis.enqueue_job('fail')
    assert job is not None
    await worker(functions=[fail]).main()
    data = pickle.loads(sync_redis.get(f'arq:result:{job.job_id}'))
    assert data['s'] is False
    assert isinstance(data['r'], JobFailure)
    assert data['r'].args == ('it went wrong',)


async def test_run_check_raises_failed_jobs_with_results(arq_redis: ArqRedis, worker: WorkerFactory) -> None:
    await arq_redis.enqueue_job('fail')
    with pytest.raises(FailedJobs) as exc_info:
        await worker(functions=[fail]).run_check()
    assert exc_info.value.count == 1
    assert str(exc_info.value) == "1 job failed JobFailure('it went wrong')"
    [result] = exc_info.value.job_results
    assert result.success is False


async def test_run_check_counts_several_failures(arq_redis: ArqRedis, worker: WorkerFactory) -> None:
    await arq_redis.enqueue_job('fail')
    await arq_redis.enqueue_job('fail')
    with pytest.raises(FailedJobs) as exc_info:
        await worker(functions=[fail]).run_check()
    assert exc_info.value.count == 2
    assert str(exc_info.value).startswith('2 jobs failed:\n')


async def test_function_timeout_fails_job_with_timeout_error_and_no_retry(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, arq_logs: pytest.LogCaptureFixture
) -> None:
    job = await arq_redis.enqueue_job('slow')
    assert job is not None
    w = worker(functions=[func(slow, timeout=0.1)])
    await w.main()
    assert tries(sync_redis, job.job_id) == [1]
    assert (w.jobs_complete, w.jobs_retried, w.jobs_failed) == (0, 0, 1)
    with pytest.raises(TimeoutError):
        await job.result(timeout=5)
    assert any(re.fullmatch(rf' *\d+\.\d\ds ! {job.job_id}:slow failed, TimeoutError: ', m) for m in messages(arq_logs))


async def test_worker_job_timeout_applies_to_functions_without_their_own(
    arq_redis: ArqRedis, worker: WorkerFactory
) -> None:
    job = await arq_redis.enqueue_job('slow')
    assert job is not None
    await worker(functions=[slow], job_timeout=0.1).main()
    with pytest.raises(TimeoutError):
        await job.result(timeout=5)


async def sleep_then(ctx: dict[str, Any], seconds: float, value: str) -> str:
    await asyncio.sleep(seconds)
    return value


async def swallow_cancel(ctx: dict[str, Any]) -> str:
    try:
        await asyncio.sleep(5)
    except asyncio.CancelledError:
        return 'kept going'
    return 'slept'


async def test_a_shorter_timeout_started_later_fires_first_and_a_swallowed_timeout_keeps_the_result(
    arq_redis: ArqRedis, worker: WorkerFactory
) -> None:
    long = await arq_redis.enqueue_job('sleep_then', 0.5, 'long done')
    short = await arq_redis.enqueue_job('short_sleep', 5, 'never')
    swallowing = await arq_redis.enqueue_job('swallow_cancel')
    assert long is not None and short is not None and swallowing is not None
    functions = [
        func(sleep_then, timeout=30),
        func(sleep_then, name='short_sleep', timeout=0.1),
        func(swallow_cancel, timeout=0.1),
    ]
    await worker(functions=functions).main()
    assert await long.result(timeout=5) == 'long done'
    with pytest.raises(TimeoutError):
        await short.result(timeout=5)
    short_info, long_info = await short.result_info(), await long.result_info()
    assert short_info is not None and long_info is not None
    assert short_info.finish_time < long_info.finish_time  # at its own deadline, not at the long job's
    assert await swallowing.result(timeout=5) == 'kept going'  # as asyncio.timeout: no TimeoutError then
