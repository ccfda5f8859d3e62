"""Enqueueing: the returned Job, job-id uniqueness, deferral, expiry and the payload written to Redis."""

from __future__ import annotations

import pickle
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus
from tests.worker.helpers import WorkerFactory

DAY_MS = 86_400_000


async def add(ctx: dict[str, Any], a: int, b: int) -> int:
    return a + b


async def seen_try(ctx: dict[str, Any]) -> int:
    return int(ctx['job_try'])


async def test_enqueue_returns_job_bound_to_queue_with_uuid_hex_id(arq_redis: ArqRedis, queue_name: str) -> None:
    job = await arq_redis.enqueue_job('add', 1, 2)
    assert isinstance(job, Job)
    assert re.fullmatch(r'[0-9a-f]{32}', job.job_id)
    assert repr(job) == f'<arq job {job.job_id}>'
    assert await job.status() == JobStatus.queued
    assert await arq_redis.zscore(queue_name, job.job_id) is not None


async def test_enqueue_uses_given_job_id(arq_redis: ArqRedis, sync_redis: redis.Redis) -> None:
    job = await arq_redis.enqueue_job('add', 1, 2, _job_id='my-id')
    assert job is not None
    assert job.job_id == 'my-id'
    assert sync_redis.exists('arq:job:my-id') == 1


async def test_enqueue_to_other_queue_with_queue_name(arq_redis: ArqRedis, queue_name: str) -> None:
    other = queue_name + ':other'
    job = await arq_redis.enqueue_job('add', 1, 2, _queue_name=other)
    assert job is not None
    assert await arq_redis.zscore(other, job.job_id) is not None
    assert await arq_redis.zscore(queue_name, job.job_id) is None
    assert await job.status() == JobStatus.queued


async def test_job_payload_is_pickled_dict_with_t_f_a_k_et(arq_redis: ArqRedis, sync_redis: redis.Redis) -> None:
    before = int(time.time() * 1000)
    job = await arq_redis.enqueue_job('add', 1, 2, c=3)
    after = int(time.time() * 1000)
    assert job is not None
    payload = pickle.loads(sync_redis.get(f'arq:job:{job.job_id}'))
    assert set(payload) == {'t', 'f', 'a', 'k', 'et'}
    assert payload['t'] is None
    assert payload['f'] == 'add'
    assert payload['a'] == (1, 2)
    assert isinstance(payload['a'], tuple)
    assert payload['k'] == {'c': 3}
    assert before - 1 <= payload['et'] <= after + 1


async def test_score_is_enqueue_time_in_ms_without_defer(
    arq_redis: ArqRedis, sync_redis: redis.Redis, queue_name: str
) -> None:
    job = await arq_redis.enqueue_job('add', 1, 2)
    assert job is not None
    payload = pickle.loads(sync_redis.get(f'arq:job:{job.job_id}'))
    assert sync_redis.zscore(queue_name, job.job_id) == payload['et']


async def test_job_key_ttl_defaults_to_one_day(arq_redis: ArqRedis, sync_redis: redis.Redis) -> None:
    job = await arq_redis.enqueue_job('add', 1, 2)
    assert job is not None
    pttl = sync_redis.pttl(f'arq:job:{job.job_id}')
    assert DAY_MS - 5_000 < pttl <= DAY_MS


async def test_defer_by_sets_later_score_and_extends_job_ttl(
    arq_redis: ArqRedis, sync_redis: redis.Redis, queue_name: str
) -> None:
    job = await arq_redis.enqueue_job('add', 1, 2, _defer_by=timedelta(seconds=60))
    assert job is not None
    payload = pickle.loads(sync_redis.get(f'arq:job:{job.job_id}'))
    assert sync_redis.zscore(queue_name, job.job_id) == payload['et'] + 60_000
    pttl = sync_redis.pttl(f'arq:job:{job.job_id}')
    assert DAY_MS + 60_000 - 5_000 < pttl <= DAY_MS + 60_000
    assert await job.status() == JobStatus.deferred


async def test_defer_by_accepts_seconds_as_number(
    arq_redis: ArqRedis, sync_redis: redis.Redis, queue_name: str
) -> None:
    job = await arq_redis.enqueue_job('add', 1, 2, _defer_by=30)
    assert job is not None
    payload = pickle.loads(sync_redis.get(f'arq:job:{job.job_id}'))
    assert sync_redis.zscore(queue_name, job.job_id) == payload['et'] + 30_000


async def test_defer_until_sets_score_to_that_time(
    arq_redis: ArqRedis, sync_redis: redis.Redis, queue_name: str
) -> None:
    when = datetime.now(tz=UTC).replace(microsecond=0) + timedelta(minutes=5)
    job = await arq_redis.enqueue_job('add', 1, 2, _defer_until=when)
    assert job is not None
    assert sync_redis.zscore(queue_name, job.job_id) == int(when.timestamp() * 1000)
    assert await job.status() == JobStatus.deferred


async def test_defer_until_and_defer_by_together_raise(arq_redis: ArqRedis, queue_name: str) -> None:
    with pytest.raises(RuntimeError, match='defer'):
        await arq_redis.enqueue_job('add', 1, 2, _defer_until=datetime.now(tz=UTC) + timedelta(seconds=5), _defer_by=5)
    assert await arq_redis.zcard(queue_name) == 0


async def test_expires_sets_job_key_ttl(arq_redis: ArqRedis, sync_redis: redis.Redis) -> None:
    job = await arq_redis.enqueue_job('add', 1, 2, _expires=10)
    assert job is not None
    assert 9_000 < sync_redis.pttl(f'arq:job:{job.job_id}') <= 10_000


async def test_expires_extra_ms_of_pool_sets_default_ttl(arq_redis: ArqRedis, sync_redis: redis.Redis) -> None:
    arq_redis.expires_extra_ms = 20_000
    job = await arq_redis.enqueue_job('add', 1, 2)
    assert job is not None
    assert 15_000 < sync_redis.pttl(f'arq:job:{job.job_id}') <= 20_000


async def test_duplicate_job_id_returns_none_while_job_is_queued(
    arq_redis: ArqRedis, sync_redis: redis.Redis, queue_name: str
) -> None:
    assert await arq_redis.enqueue_job('add', 1, 2, _job_id='dup') is not None
    assert await arq_redis.enqueue_job('add', 3, 4, _job_id='dup') is None
    assert sync_redis.zcard(queue_name) == 1
    assert pickle.loads(sync_redis.get('arq:job:dup'))['a'] == (1, 2)


async def test_duplicate_job_id_returns_none_while_result_exists(arq_redis: ArqRedis, worker: WorkerFactory) -> None:
    job = await arq_redis.enqueue_job('add', 1, 2, _job_id='dup')
    assert job is not None
    await worker(functions=[add]).main()
    assert await job.result(timeout=5) == 3
    assert await arq_redis.enqueue_job('add', 1, 2, _job_id='dup') is None


async def test_job_id_is_reusable_at_once_when_no_result_is_kept(arq_redis: ArqRedis, worker: WorkerFactory) -> None:
    assert await arq_redis.enqueue_job('add', 1, 2, _job_id='again') is not None
    await worker(functions=[add], keep_result=0).main()
    job = await arq_redis.enqueue_job('add', 1, 2, _job_id='again')
    assert job is not None
    assert await job.status() == JobStatus.queued


async def test_job_try_is_stored_in_payload_and_seen_by_the_job(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory
) -> None:
    job = await arq_redis.enqueue_job('seen_try', _job_try=3)
    assert job is not None
    assert pickle.loads(sync_redis.get(f'arq:job:{job.job_id}'))['t'] == 3
    await worker(functions=[seen_try]).main()
    assert await job.result(timeout=5) == 3
