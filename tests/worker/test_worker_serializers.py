"""Custom job serializers: the msgpack example from arq's documentation."""

from __future__ import annotations

import functools
from typing import Any

import msgpack
import pytest
import redis

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.jobs import JobStatus
from tests.worker.helpers import WorkerFactory

job_serializer = msgpack.packb
job_deserializer = functools.partial(msgpack.unpackb, raw=False)


async def add(ctx: dict[str, Any], a: int, b: int = 0) -> int:
    return a + b


async def spawn(ctx: dict[str, Any], queue_name: str) -> None:
    await ctx['redis'].enqueue_job('add', 20, b=1, _queue_name=queue_name, _job_id='child')


@pytest.fixture
async def msgpack_redis(redis_settings: RedisSettings, queue_name: str) -> Any:
    pool = await create_pool(
        redis_settings, job_serializer=job_serializer, job_deserializer=job_deserializer, default_queue_name=queue_name
    )
    yield pool
    await pool.aclose()


async def test_msgpack_job_payload_and_result(
    msgpack_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory
) -> None:
    job = await msgpack_redis.enqueue_job('add', 1, b=2)
    assert job is not None
    payload = msgpack.unpackb(sync_redis.get(f'arq:job:{job.job_id}'), raw=False)
    assert payload == {'t': None, 'f': 'add', 'a': [1], 'k': {'b': 2}, 'et': payload['et']}

    await worker(functions=[add], job_serializer=job_serializer, job_deserializer=job_deserializer).main()

    assert await job.result(timeout=5) == 3
    result = msgpack.unpackb(sync_redis.get(f'arq:result:{job.job_id}'), raw=False)
    assert result['s'] is True
    assert result['r'] == 3
    assert result['a'] == [1]
    info = await job.info()
    assert info is not None
    assert info.args == [1]
    assert await job.status() == JobStatus.complete


async def test_msgpack_serializer_reaches_ctx_redis(
    msgpack_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, queue_name: str
) -> None:
    await msgpack_redis.enqueue_job('spawn', queue_name)
    w = worker(functions=[add, spawn], job_serializer=job_serializer, job_deserializer=job_deserializer)
    assert await w.run_check() == 2
    assert msgpack.unpackb(sync_redis.get('arq:result:child'), raw=False)['r'] == 21


async def test_msgpack_queued_jobs_and_all_job_results(msgpack_redis: ArqRedis, worker: WorkerFactory) -> None:
    job = await msgpack_redis.enqueue_job('add', 4, b=5)
    assert job is not None
    [queued] = await msgpack_redis.queued_jobs()
    assert (queued.function, queued.args, queued.kwargs) == ('add', [4], {'b': 5})
    await worker(functions=[add], job_serializer=job_serializer, job_deserializer=job_deserializer).main()
    [result] = await msgpack_redis.all_job_results()
    assert result.result == 9
    assert result.job_id == job.job_id
