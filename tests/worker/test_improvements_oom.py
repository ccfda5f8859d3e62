"""Clients can still see their jobs while Redis is out of memory (issue 10), and the worker checks a job's fields.

arq reads a job's status, info and result inside MULTI/EXEC, and Redis refuses every command queued in a MULTI while
it is over maxmemory with nothing to evict, reads included; ours reads without MULTI. The published arq fails these
by design; the reference run skips files named test_improvements_*.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.enqueue import JobCall
from arq.jobs import DeserializationError, JobStatus
from tests.support.redis_server import RedisServer
from tests.worker.helpers import WorkerFactory


async def add(ctx: dict[str, Any], a: int, b: int = 0) -> int:
    return a + b


class OutOfMemory:
    """Puts a redis-server over its maxmemory with noeviction, and restores its limits afterwards."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.saved = {k: client.config_get(k)[k] for k in ('maxmemory', 'maxmemory-policy')}

    def start(self) -> None:
        used = int(self.client.info('memory')['used_memory'])
        self.client.config_set('maxmemory-policy', 'noeviction')
        self.client.config_set('maxmemory', used // 2)
        # the precondition the tests rely on: Redis now refuses a read queued in a MULTI
        with pytest.raises(redis.exceptions.ResponseError):
            self.client.pipeline(transaction=True).get('anything').execute()

    def stop(self) -> None:
        for key, value in self.saved.items():
            self.client.config_set(key, value)


@pytest.fixture
def oom(private_redis: RedisServer) -> Iterator[OutOfMemory]:
    client = redis.Redis(host='127.0.0.1', port=private_redis.port)
    state = OutOfMemory(client)
    yield state
    state.stop()
    client.close()


@pytest.fixture
async def oom_pool(private_redis: RedisServer) -> Any:
    pool = await create_pool(RedisSettings(host='127.0.0.1', port=private_redis.port))
    yield pool
    await pool.aclose()


async def test_status_info_and_result_readable_while_redis_is_out_of_memory(
    oom: OutOfMemory, oom_pool: ArqRedis, private_redis: RedisServer, worker: WorkerFactory
) -> None:
    done = await oom_pool.enqueue_job('add', 1, 2)
    assert done is not None
    settings = RedisSettings(host='127.0.0.1', port=private_redis.port)
    await worker(functions=[add], redis_settings=settings, queue_name='arq:queue').main()
    waiting = await oom_pool.enqueue_job('add', 3, _defer_by=3600)  # after the burst, which would wait for it
    assert waiting is not None
    oom.start()

    assert await done.status() == JobStatus.complete
    assert await done.result(timeout=5) == 3
    info = await done.info()
    assert info is not None and info.function == 'add'
    assert await waiting.status() == JobStatus.deferred
    waiting_info = await waiting.info()
    assert waiting_info is not None and waiting_info.score is not None


async def test_enqueue_while_redis_is_out_of_memory_fails_with_one_clear_line(
    oom: OutOfMemory, oom_pool: ArqRedis
) -> None:
    oom.start()
    with pytest.raises(redis.exceptions.OutOfMemoryError) as info:
        await oom_pool.enqueue_job('add', 1)
    message = str(info.value)
    assert '\n' not in message
    assert message.startswith("cannot enqueue job 'add': Redis is out of memory"), message
    oom.stop()
    assert await oom_pool.enqueue_job('add', 1) is not None


async def test_bulk_enqueue_while_redis_is_out_of_memory_says_how_many_went_in(
    oom: OutOfMemory, oom_pool: ArqRedis
) -> None:
    oom.start()
    with pytest.raises(redis.exceptions.OutOfMemoryError) as info:
        await oom_pool.enqueue_jobs(JobCall.of('add', i) for i in range(1500))
    assert str(info.value).startswith('cannot enqueue 1500 jobs: Redis is out of memory'), str(info.value)
    oom.stop()
    assert all(job is not None for job in await oom_pool.enqueue_jobs(JobCall.of('add', i) for i in range(1500)))


async def test_worker_fails_job_whose_function_name_is_not_a_string(
    sync_redis: redis.Redis, worker: WorkerFactory, queue_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """arq looked a non-string name up as is (an unhashable one crashed the worker); ours fails the job, with why."""
    payload = pickle.dumps({'t': None, 'f': ['add'], 'a': (1,), 'k': {}, 'et': 1})
    sync_redis.psetex('arq:job:listname', 60_000, payload)
    sync_redis.zadd(queue_name, {'listname': 1})
    await worker(functions=[add]).main()
    result = pickle.loads(sync_redis.get('arq:result:listname'))  # type: ignore[arg-type]
    assert result['s'] is False and isinstance(result['r'], DeserializationError)
    assert str(result['r']) == 'unable to deserialize job'
    expected = 'deserializing job listname failed: unable to deserialize job: TypeError: function name is a list'
    assert any(r.getMessage().startswith(expected) for r in caplog.records), [r.getMessage() for r in caplog.records]
