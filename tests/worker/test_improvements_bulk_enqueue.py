"""`enqueue_jobs`: many jobs in a few round trips, each as `enqueue_job` would have written it."""

from __future__ import annotations

import pickle
from datetime import timedelta
from typing import Any

import pytest
import redis

from arq.connections import ArqRedis
from arq.enqueue import JobCall
from arq.jobs import JobStatus, SerializationError
from tests.worker.helpers import WorkerFactory


async def add(ctx: dict[str, Any], a: int, b: int = 0) -> int:
    return a + b


def script_calls(r: redis.Redis) -> int:
    stats = r.info('commandstats')
    return sum(int(stats.get(f'cmdstat_{name}', {}).get('calls', 0)) for name in ('eval', 'evalsha'))


async def test_ten_thousand_jobs_go_in_a_few_round_trips_and_all_run(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, queue_name: str
) -> None:
    before = script_calls(sync_redis)
    jobs = await arq_redis.enqueue_jobs(JobCall.of('add', i, b=1) for i in range(10_000))
    calls = script_calls(sync_redis) - before
    assert calls <= 11, calls  # ten script calls of a thousand jobs (and redis-py's first EVALSHA miss, if any)
    assert all(job is not None for job in jobs)
    assert sync_redis.zcard(queue_name) == 10_000
    await worker(functions=[add], max_jobs=100).main()
    results = [await job.result(timeout=10) for job in jobs[:5] if job is not None]
    assert results == [1, 2, 3, 4, 5]


async def test_the_wire_format_and_options_are_enqueue_jobs(
    arq_redis: ArqRedis, sync_redis: redis.Redis, queue_name: str
) -> None:
    single = await arq_redis.enqueue_job('add', 1, b=2, _job_id='single', _defer_by=timedelta(seconds=30))
    [bulk] = await arq_redis.enqueue_jobs([JobCall.of('add', 1, b=2, _job_id='bulk', _defer_by=timedelta(seconds=30))])
    assert single is not None and bulk is not None
    one, other = (pickle.loads(sync_redis.get(f'arq:job:{i}')) for i in ('single', 'bulk'))  # type: ignore[arg-type]
    assert {k: v for k, v in one.items() if k != 'et'} == {k: v for k, v in other.items() if k != 'et'}
    scores = [sync_redis.zscore(queue_name, i) for i in ('single', 'bulk')]
    assert abs(scores[0] - scores[1]) < 5_000  # type: ignore[operator]
    assert abs(sync_redis.pttl('arq:job:single') - sync_redis.pttl('arq:job:bulk')) < 5_000
    assert await bulk.status() == JobStatus.deferred
    [elsewhere, tried] = await arq_redis.enqueue_jobs(
        [JobCall.of('add', 3, _queue_name=f'{queue_name}:other'), JobCall.of('add', 4, _job_try=3, _expires=60)]
    )
    assert elsewhere is not None and sync_redis.zscore(f'{queue_name}:other', elsewhere.job_id) is not None
    assert tried is not None and pickle.loads(sync_redis.get(f'arq:job:{tried.job_id}'))['t'] == 3  # type: ignore[arg-type]
    assert sync_redis.pttl(f'arq:job:{tried.job_id}') <= 60_000


async def test_ids_already_taken_come_back_as_none(arq_redis: ArqRedis, sync_redis: redis.Redis) -> None:
    await arq_redis.enqueue_job('add', 1, _job_id='queued')
    sync_redis.set('arq:result:finished', b'x')
    calls = [JobCall.of('add', 1, _job_id=i) for i in ('queued', 'finished', 'new', 'new')]
    jobs = await arq_redis.enqueue_jobs(calls)
    assert [job.job_id if job else None for job in jobs] == [None, None, 'new', None]


async def test_options_are_checked_as_enqueue_job_checks_them(arq_redis: ArqRedis) -> None:

    with pytest.raises(RuntimeError, match='defer_until'):
        await arq_redis.enqueue_jobs(
            [JobCall.of('add', _defer_by=1, _defer_until=__import__('datetime').datetime.now())]
        )
    with pytest.raises(ValueError, match='_expires'):
        await arq_redis.enqueue_jobs([JobCall.of('add', _expires=-1)])


async def test_jobs_whose_options_change_from_one_to_the_next_each_keep_their_own(
    arq_redis: ArqRedis, sync_redis: redis.Redis, queue_name: str
) -> None:
    """Jobs that share their options travel as one run; a call that alternates them makes many runs."""
    other = f'{queue_name}:other'
    calls = [
        JobCall.of('add', i, _queue_name=other if i % 3 == 0 else None, _expires=600 if i % 2 else None)
        for i in range(2_500)
    ]
    jobs = await arq_redis.enqueue_jobs(calls)
    assert all(job is not None for job in jobs)
    for i, job in enumerate(jobs):
        assert job is not None
        queue = other if i % 3 == 0 else queue_name
        assert sync_redis.zscore(queue, job.job_id) is not None, i
        ttl = sync_redis.pttl(f'arq:job:{job.job_id}')
        assert (ttl <= 600_000) if i % 2 else (ttl > 600_000), (i, ttl)
    assert sync_redis.zcard(queue_name) + sync_redis.zcard(other) == 2_500


async def test_the_first_job_with_an_id_wins_across_chunks(arq_redis: ArqRedis) -> None:
    """Chunks go to Redis one after the other, in order: as if enqueued one by one."""
    ids = [f'job-{i % 1_200}' for i in range(2_400)]  # each id once in the first chunks, again in the later ones
    jobs = await arq_redis.enqueue_jobs(JobCall.of('add', i, _job_id=job_id) for i, job_id in enumerate(ids))
    assert [job is not None for job in jobs] == [True] * 1_200 + [False] * 1_200
    first = jobs[1_199]
    assert first is not None and (await first.info()).args == (1_199,)  # type: ignore[union-attr]


async def test_a_call_that_cannot_be_serialized_enqueues_none(arq_redis: ArqRedis, sync_redis: redis.Redis) -> None:
    calls = [JobCall.of('add', i) for i in range(2_500)]
    calls[2_400] = JobCall.of('add', lambda: None)  # pickle cannot take a lambda
    with pytest.raises(SerializationError):
        await arq_redis.enqueue_jobs(calls)
    assert not list(sync_redis.scan_iter('arq:job:*'))
