"""Our arq and the published arq 0.26.3 share one Redis: jobs, results, failures, aborts and crons cross both ways.

The published arq runs in its own venv (see conftest.py) through published_arq.py; ours runs in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import msgpack
import pytest
import redis

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.cron import cron
from arq.jobs import Job, JobStatus
from arq.worker import JobExecutionFailed, Retry, Worker
from tests.interop import interop_jobs
from tests.interop.conftest import PublishedArq
from tests.interop.interop_jobs import JobFailure
from tests.support.waiting import async_wait_until

TIMEOUT_ERROR = f'{TimeoutError.__module__}.{TimeoutError.__qualname__}'


def our_worker(redis_settings: RedisSettings, queue_name: str, **kwargs: Any) -> Worker:
    kwargs = {'burst': True, 'poll_delay': 0, 'handle_signals': False, **kwargs}
    return Worker(functions=interop_jobs.FUNCTIONS, queue_name=queue_name, redis_settings=redis_settings, **kwargs)


@contextlib.asynccontextmanager
async def running(worker: Worker) -> Any:
    """Run a (non-burst) worker of ours in the background for the duration of the block."""
    task = asyncio.create_task(worker.async_run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await asyncio.wait_for(worker.close(), 10)


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


SPECS = [
    {'function': 'add', 'args': [1, 2], 'job_id': 'x-add'},
    {'function': 'add', 'args': [1], 'kwargs': {'b': 41}, 'job_id': 'x-add-kw'},
    {'function': 'fail', 'job_id': 'x-fail'},
    {'function': 'missing', 'args': [1], 'job_id': 'x-missing'},
    {'function': 'retry_once', 'job_id': 'x-retry'},
    {'function': 'always_retry', 'job_id': 'x-max'},
    {'function': 'slow', 'job_id': 'x-slow'},
    {'function': 'echo_ctx', 'args': [1, 'two'], 'kwargs': {'three': [3]}, 'job_id': 'x-echo'},
    {'function': 'add', 'args': [5], 'job_id': 'x-deferred', 'defer_by': 0.3},
]
IDS = [s['job_id'] for s in SPECS]


async def test_published_client_enqueues_our_worker_runs_published_client_reads(
    published: PublishedArq, redis_settings: RedisSettings, queue_name: str
) -> None:
    assert published.run('enqueue', SPECS) == IDS

    w = our_worker(redis_settings, queue_name)
    await asyncio.wait_for(w.main(), 30)
    await w.close()

    results = published.run('results', {'ids': IDS, 'timeout': 5})
    assert results['x-add']['value'] == 3
    assert results['x-add']['job_try'] == 1
    assert results['x-add']['success'] is True
    assert results['x-add']['function'] == 'add'
    assert results['x-add']['queue_name'] == queue_name
    assert results['x-add']['result_job_id'] == 'x-add'
    assert results['x-add-kw']['value'] == 42
    assert results['x-deferred']['value'] == 5
    assert results['x-fail'] | {'job_try': 1} == {
        **results['x-fail'],
        'ok': False,
        'type': 'tests.interop.interop_jobs.JobFailure',
        'str': 'it went wrong',
        'success': False,
    }
    assert (results['x-missing']['type'], results['x-missing']['str']) == (
        'arq.worker.JobExecutionFailed',
        "function 'missing' not found",
    )
    assert (results['x-retry']['value'], results['x-retry']['job_try']) == ('done on try 2', 2)
    assert (results['x-max']['type'], results['x-max']['str']) == (
        'arq.worker.JobExecutionFailed',
        'max 2 retries exceeded',
    )
    assert results['x-slow']['type'] == TIMEOUT_ERROR
    assert results['x-echo']['value'] == {
        'args': [1, 'two'],
        'kwargs': {'three': [3]},
        'job_id': 'x-echo',
        'job_try': 1,
    }
    assert published.run('status', {'ids': IDS}) == dict.fromkeys(IDS, 'complete')


async def test_our_client_enqueues_published_worker_runs_our_client_reads(
    published: PublishedArq, arq_redis: ArqRedis, queue_name: str
) -> None:
    jobs: dict[str, Job] = {}
    for spec in SPECS:
        defer_by = spec.get('defer_by')
        job = await arq_redis.enqueue_job(
            str(spec['function']),
            *spec.get('args', []),  # type: ignore[arg-type]
            _job_id=str(spec['job_id']),
            _defer_by=timedelta(seconds=defer_by) if defer_by else None,  # type: ignore[arg-type]
            **spec.get('kwargs', {}),  # type: ignore[arg-type]
        )
        assert job is not None
        jobs[job.job_id] = job

    counts = published.run('worker', {'burst': True})
    assert counts == {'complete': 5, 'failed': 4, 'retried': 3}

    assert await jobs['x-add'].result(timeout=5) == 3
    assert await jobs['x-add-kw'].result(timeout=5) == 42
    assert await jobs['x-deferred'].result(timeout=5) == 5
    with pytest.raises(JobFailure, match='^it went wrong$'):
        await jobs['x-fail'].result(timeout=5)
    with pytest.raises(JobExecutionFailed, match="^function 'missing' not found$"):
        await jobs['x-missing'].result(timeout=5)
    assert await jobs['x-retry'].result(timeout=5) == 'done on try 2'
    with pytest.raises(JobExecutionFailed, match='^max 2 retries exceeded$'):
        await jobs['x-max'].result(timeout=5)
    with pytest.raises(TimeoutError):
        await jobs['x-slow'].result(timeout=5)
    assert await jobs['x-echo'].result(timeout=5) == {
        'args': [1, 'two'],
        'kwargs': {'three': [3]},
        'job_id': 'x-echo',
        'job_try': 1,
    }
    info = await jobs['x-retry'].result_info()
    assert info is not None
    assert (info.job_try, info.success, info.queue_name, info.job_id) == (2, True, queue_name, 'x-retry')
    for job in jobs.values():
        assert await job.status() == JobStatus.complete
    assert sorted(r.job_id for r in await arq_redis.all_job_results()) == sorted(IDS)


async def test_both_workers_on_one_queue_run_every_job_exactly_once(
    published: PublishedArq,
    arq_redis: ArqRedis,
    sync_redis: redis.Redis,
    redis_settings: RedisSettings,
    queue_name: str,
) -> None:
    ours = [await arq_redis.enqueue_job('count_run', 0.1) for _ in range(30)]
    theirs = published.run('enqueue', [{'function': 'count_run', 'args': [0.1]} for _ in range(30)])
    ids = [j.job_id for j in ours if j is not None] + theirs
    assert len(set(ids)) == 60

    ready_key = f'interop:published-ready:{queue_name}'
    proc = await published.start('worker', {'burst': True, 'max_jobs': 5, 'health_check_key': ready_key})
    try:

        async def published_started() -> bool:
            return bool(await arq_redis.exists(ready_key)) or proc.returncode is not None

        await async_wait_until(published_started, timeout=30, message='the published worker to start')
        w = our_worker(redis_settings, queue_name, max_jobs=5)
        await asyncio.wait_for(w.main(), 60)
        await w.close()
        _, stderr = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, stderr.decode()
    finally:
        await stop(proc)

    runs = {job_id: sync_redis.get(f'interop:runs:{job_id}') for job_id in ids}
    assert {job_id: n for job_id, n in runs.items() if n != b'1'} == {}, 'every job ran exactly once'
    assert sync_redis.zcard(queue_name) == 0
    for job_id in ids:
        assert await Job(job_id, arq_redis, _queue_name=queue_name).result(timeout=5) == 1
    ran_by = {int(pid) for pid in sync_redis.lrange('interop:ran-by', 0, -1)}
    assert os.getpid() in ran_by, 'our worker ran some of the jobs'
    assert len(ran_by - {os.getpid()}) == 1, 'the published worker ran some of the jobs'


async def test_job_id_uniqueness_spans_both_implementations(published: PublishedArq, arq_redis: ArqRedis) -> None:
    assert await arq_redis.enqueue_job('add', 1, _job_id='ours-first') is not None
    assert published.run('enqueue', [{'function': 'add', 'args': [1], 'job_id': 'ours-first'}]) == [None]
    assert published.run('enqueue', [{'function': 'add', 'args': [1], 'job_id': 'theirs-first'}]) == ['theirs-first']
    assert await arq_redis.enqueue_job('add', 1, _job_id='theirs-first') is None


async def test_published_client_sees_our_running_job_and_aborts_it(
    published: PublishedArq, arq_redis: ArqRedis, redis_settings: RedisSettings, queue_name: str
) -> None:
    [job_id] = published.run('enqueue', [{'function': 'gated'}])
    async with running(our_worker(redis_settings, queue_name, burst=False, poll_delay=0.05, allow_abort_jobs=True)):

        async def started() -> bool:
            return bool(await arq_redis.exists(f'interop:started:{job_id}'))

        await async_wait_until(started, timeout=10, message='the job to start on our worker')
        assert await published.arun('status', {'ids': [job_id]}) == {job_id: 'in_progress'}
        assert await published.arun('abort', {'id': job_id, 'timeout': 10}) is True

    with pytest.raises(asyncio.CancelledError):
        await Job(job_id, arq_redis, _queue_name=queue_name).result(timeout=5)


async def test_our_client_aborts_job_running_on_published_worker(
    published: PublishedArq, arq_redis: ArqRedis, queue_name: str
) -> None:
    job = await arq_redis.enqueue_job('gated')
    assert job is not None
    proc = await published.start('worker', {'burst': True, 'allow_abort_jobs': True})
    try:

        async def started() -> bool:
            return bool(await arq_redis.exists(f'interop:started:{job.job_id}'))

        await async_wait_until(started, timeout=30, message='the job to start on the published worker')
        assert await job.status() == JobStatus.in_progress
        assert await job.abort(timeout=10, poll_delay=0.05) is True
        await asyncio.wait_for(proc.communicate(), 30)
    finally:
        await stop(proc)


async def test_msgpack_jobs_cross_both_ways(
    published: PublishedArq, redis_settings: RedisSettings, queue_name: str
) -> None:
    ser: dict[str, Any] = {
        'job_serializer': msgpack.packb,
        'job_deserializer': functools.partial(msgpack.unpackb, raw=False),
    }
    spec = {'function': 'echo_ctx', 'args': [1, 'two'], 'job_id': 'theirs-msgpack', 'serializer': 'msgpack'}
    assert published.run('enqueue', [spec]) == ['theirs-msgpack']
    w = our_worker(redis_settings, queue_name, **ser)
    await asyncio.wait_for(w.main(), 30)
    await w.close()
    results = published.run('results', {'ids': ['theirs-msgpack'], 'serializer': 'msgpack'})
    assert results['theirs-msgpack']['value'] == {
        'args': [1, 'two'],
        'kwargs': {},
        'job_id': 'theirs-msgpack',
        'job_try': 1,
    }

    pool = await create_pool(redis_settings, default_queue_name=queue_name, **ser)
    try:
        job = await pool.enqueue_job('add', 2, b=3, _job_id='ours-msgpack')
        assert job is not None
        assert published.run('worker', {'burst': True, 'serializer': 'msgpack'})['complete'] == 1
        assert await job.result(timeout=5) == 5
    finally:
        await pool.aclose()


async def test_cron_on_both_workers_runs_once(
    published: PublishedArq,
    arq_redis: ArqRedis,
    sync_redis: redis.Redis,
    redis_settings: RedisSettings,
    queue_name: str,
) -> None:
    # both workers must be up before the cron's second comes: the published one's interpreter takes a few seconds
    # to start on a loaded machine (CI missed 4 s once), and a worker up too late waits for the next minute
    target = datetime.now(tz=UTC) + timedelta(seconds=8)
    ready_key = f'interop:published-ready:{queue_name}'
    proc = await published.start(
        'worker', {'burst': False, 'cron_second': target.second, 'health_check_key': ready_key, 'poll_delay': 0.1}
    )
    ours = Worker(
        functions=interop_jobs.FUNCTIONS,
        cron_jobs=[cron(interop_jobs.cron_tick, second=target.second, microsecond=0)],
        queue_name=queue_name,
        redis_settings=redis_settings,
        poll_delay=0.1,
        handle_signals=False,
    )
    try:
        async with running(ours):

            async def published_started() -> bool:
                return bool(await arq_redis.exists(ready_key))

            await async_wait_until(published_started, timeout=30, message='the published worker to start')

            async def ran_and_drained() -> bool:
                return bool(sync_redis.llen('interop:cron-runs')) and await arq_redis.zcard(queue_name) == 0

            await async_wait_until(ran_and_drained, timeout=15, message='the cron to run')
    finally:
        await stop(proc)
    [run] = [r.decode() for r in sync_redis.lrange('interop:cron-runs', 0, -1)]
    job_id, _pid = run.split()
    scheduled_ms = int(target.replace(microsecond=0).timestamp() * 1000)
    assert job_id == f'cron:cron_tick:{scheduled_ms}'


async def test_retry_stored_as_failure_crosses_both_ways(
    published: PublishedArq, arq_redis: ArqRedis, redis_settings: RedisSettings, queue_name: str
) -> None:
    """With retry_jobs=False a Retry is the stored failure: arq.worker.Retry must unpickle on the other side."""
    assert published.run('enqueue', [{'function': 'retry_later', 'job_id': 'theirs-retry'}]) == ['theirs-retry']
    w = our_worker(redis_settings, queue_name, retry_jobs=False)
    await asyncio.wait_for(w.main(), 30)
    await w.close()
    theirs = published.run('results', {'ids': ['theirs-retry']})['theirs-retry']
    assert (theirs['type'], theirs['defer_score'], theirs['str']) == ('arq.worker.Retry', 1500, '<Retry defer 1.50s>')

    job = await arq_redis.enqueue_job('retry_later', _job_id='ours-retry')
    assert job is not None
    published.run('worker', {'burst': True, 'retry_jobs': False})
    with pytest.raises(Retry) as exc_info:
        await job.result(timeout=5)
    assert exc_info.value.defer_score == 1500
    assert str(exc_info.value) == '<Retry defer 1.50s>'
