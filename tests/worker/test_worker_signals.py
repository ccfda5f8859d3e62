"""SIGINT/SIGTERM through the real signal handlers: cancellation re-queues, job_completion_wait lets jobs finish."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from typing import Any

import pytest
import redis

from arq.connections import ArqRedis
from arq.jobs import JobStatus
from tests.support.waiting import async_wait_until
from tests.worker.helpers import WorkerFactory, wait_for_key

T = r' *\d+\.\d\ds'


async def long_first_run(ctx: dict[str, Any]) -> str:
    runs = await ctx['redis'].incr(f'started:{ctx["job_id"]}')
    if runs == 1:
        await asyncio.sleep(30)  # simulated long work, interrupted by the shutdown
    return f'done on run {runs}'


async def short_work(ctx: dict[str, Any]) -> str:
    await ctx['redis'].incr(f'started:{ctx["job_id"]}')
    await asyncio.sleep(0.5)  # simulated work that outlives the signal
    return 'done'


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith('arq')]


def raise_signal_through_worker_handler(sig: signal.Signals) -> None:
    """Deliver `sig` to ourselves, but only if the worker installed a handler (else it would kill pytest)."""
    assert signal.getsignal(sig) not in (signal.SIG_DFL, signal.default_int_handler), f'no handler for {sig.name}'
    signal.raise_signal(sig)


async def wait_for_log(caplog: pytest.LogCaptureFixture, pattern: str) -> None:
    async def seen() -> bool:
        return any(re.fullmatch(pattern, m) for m in messages(caplog))

    await async_wait_until(seen, timeout=10, message=f'a log line matching {pattern!r}')


async def finished(task: asyncio.Task[None], timeout: float = 10) -> None:
    done, _ = await asyncio.wait({task}, timeout=timeout)
    assert task in done, 'worker did not stop'
    with contextlib.suppress(asyncio.CancelledError):
        task.result()


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
async def test_signal_cancels_running_job_and_requeues_it(
    arq_redis: ArqRedis,
    sync_redis: redis.Redis,
    worker: WorkerFactory,
    queue_name: str,
    arq_logs: pytest.LogCaptureFixture,
    sig: signal.Signals,
) -> None:
    job = await arq_redis.enqueue_job('long_first_run')
    assert job is not None
    score = sync_redis.zscore(queue_name, job.job_id)
    w = worker(functions=[long_first_run], burst=False, poll_delay=0.05)
    task = worker.start(w)
    await wait_for_key(arq_redis, f'started:{job.job_id}')

    raise_signal_through_worker_handler(sig)
    await finished(task)
    await w.close()

    assert any(
        re.fullmatch(rf'shutdown on {sig.name} ◆ 0 jobs complete ◆ 0 failed ◆ 0 retries ◆ 1 ongoing to cancel', m)
        for m in messages(arq_logs)
    ), messages(arq_logs)
    assert any(
        re.fullmatch(rf'{T} ↻ {job.job_id}:long_first_run cancelled, will be run again', m) for m in messages(arq_logs)
    ), messages(arq_logs)
    jid = job.job_id
    assert sync_redis.zscore(queue_name, jid) == score
    assert sync_redis.exists(f'arq:in-progress:{jid}', f'arq:result:{jid}') == 0
    assert sync_redis.exists(f'arq:job:{jid}') == 1
    assert await job.status() == JobStatus.queued

    await worker(functions=[long_first_run]).main()
    assert await job.result(timeout=5) == 'done on run 2'


async def test_job_completion_wait_lets_running_job_finish_and_picks_nothing_new(
    arq_redis: ArqRedis,
    sync_redis: redis.Redis,
    worker: WorkerFactory,
    queue_name: str,
    arq_logs: pytest.LogCaptureFixture,
) -> None:
    job = await arq_redis.enqueue_job('short_work')
    assert job is not None
    w = worker(functions=[short_work], burst=False, poll_delay=0.05, job_completion_wait=10)
    task = worker.start(w)
    await wait_for_key(arq_redis, f'started:{job.job_id}')

    raise_signal_through_worker_handler(signal.SIGTERM)
    await wait_for_log(arq_logs, r'shutdown on SIGTERM ◆ 0 jobs complete ◆ 0 failed ◆ 0 retries ◆ 1 to be completed')
    late = await arq_redis.enqueue_job('short_work')
    assert late is not None
    await finished(task)
    await w.close()

    assert await job.result(timeout=5) == 'done'
    assert await late.status() == JobStatus.queued
    assert sync_redis.exists(f'started:{late.job_id}') == 0


async def test_job_completion_wait_logs_wait_complete_line(
    arq_redis: ArqRedis, worker: WorkerFactory, arq_logs: pytest.LogCaptureFixture
) -> None:
    job = await arq_redis.enqueue_job('short_work')
    assert job is not None
    w = worker(functions=[short_work], burst=False, poll_delay=0.05, job_completion_wait=10)
    task = worker.start(w)
    await wait_for_key(arq_redis, f'started:{job.job_id}')

    raise_signal_through_worker_handler(signal.SIGTERM)
    await finished(task)
    await w.close()

    wait_complete = 'shutdown on SIGTERM, wait complete ◆ 1 jobs complete ◆ 0 failed ◆ 0 retries ◆ 0 ongoing to cancel'
    assert wait_complete in messages(arq_logs), messages(arq_logs)


async def test_job_completion_wait_cancels_and_requeues_job_that_outlasts_it(
    arq_redis: ArqRedis,
    sync_redis: redis.Redis,
    worker: WorkerFactory,
    queue_name: str,
    arq_logs: pytest.LogCaptureFixture,
) -> None:
    job = await arq_redis.enqueue_job('long_first_run')
    assert job is not None
    w = worker(functions=[long_first_run], burst=False, poll_delay=0.05, job_completion_wait=1)
    task = worker.start(w)
    await wait_for_key(arq_redis, f'started:{job.job_id}')

    raise_signal_through_worker_handler(signal.SIGINT)
    await finished(task)
    await w.close()

    assert any(
        re.fullmatch(rf'{T} ↻ {job.job_id}:long_first_run cancelled, will be run again', m) for m in messages(arq_logs)
    ), messages(arq_logs)
    assert sync_redis.zscore(queue_name, job.job_id) is not None
    assert sync_redis.exists(f'arq:in-progress:{job.job_id}') == 0
    assert await job.status() == JobStatus.queued


async def test_close_without_signal_handling_cancels_and_requeues(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, queue_name: str
) -> None:
    job = await arq_redis.enqueue_job('long_first_run')
    assert job is not None
    w = worker(functions=[long_first_run], burst=False, poll_delay=0.05, handle_signals=False)
    task = worker.start(w)
    await wait_for_key(arq_redis, f'started:{job.job_id}')

    await asyncio.wait_for(w.close(), 10)
    await finished(task)

    assert sync_redis.zscore(queue_name, job.job_id) is not None
    assert sync_redis.exists(f'arq:in-progress:{job.job_id}') == 0
    assert await job.status() == JobStatus.queued
