"""Data-level bugs of arq 0.26.3 that we fix without changing the wire format.

These fail on the published arq by design (see the wire-protocol reference, section 2); the reference run skips
files named test_improvements_*.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.worker import FailedJobs, JobExecutionFailed, func
from tests.support.redis_server import RedisServer
from tests.support.waiting import async_wait_until
from tests.worker.helpers import WorkerFactory


async def add(ctx: dict[str, Any], a: int, b: int = 0) -> int:
    return a + b


async def always_fail(ctx: dict[str, Any]) -> None:
    raise ValueError('never works')


async def test_keep_result_forever_on_early_failure_stores_result_without_ttl(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, queue_name: str
) -> None:
    """arq sends `SET … PX 0` here: Redis rejects it, the result is lost and the worker crashes (#314, #531)."""
    job = await arq_redis.enqueue_job('missing')
    good = await arq_redis.enqueue_job('add', 1)
    assert job is not None and good is not None
    with pytest.raises(FailedJobs):
        await worker(functions=[add], keep_result_forever=True).run_check()
    assert sync_redis.pttl(f'arq:result:{job.job_id}') == -1
    with pytest.raises(JobExecutionFailed, match="function 'missing' not found"):
        await job.result(timeout=5)
    assert await good.result(timeout=5) == 1
    assert sync_redis.zscore(queue_name, job.job_id) is None


async def test_keep_result_forever_on_max_tries_failure(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory
) -> None:
    job = await arq_redis.enqueue_job('add', 1, _job_try=3)
    assert job is not None
    with pytest.raises(FailedJobs):
        await worker(functions=[add], keep_result_forever=True, max_tries=2).run_check()
    assert sync_redis.pttl(f'arq:result:{job.job_id}') == -1
    with pytest.raises(JobExecutionFailed, match='max 2 retries exceeded'):
        await job.result(timeout=5)


async def test_function_keep_result_applies_to_max_tries_failure(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory
) -> None:
    """arq uses the worker's keep_result on this early-failure path (#417)."""
    job = await arq_redis.enqueue_job('add', 1, _job_try=5)
    assert job is not None
    with pytest.raises(FailedJobs):
        await worker(functions=[func(add, keep_result=20, max_tries=2)], keep_result=3600).run_check()
    assert 15_000 < sync_redis.pttl(f'arq:result:{job.job_id}') <= 20_000


async def test_function_keep_result_zero_applies_to_max_tries_failure(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, queue_name: str
) -> None:
    job = await arq_redis.enqueue_job('add', 1, _job_try=5)
    assert job is not None
    with pytest.raises(FailedJobs):
        await worker(functions=[func(add, keep_result=0, max_tries=2)]).run_check()
    assert sync_redis.exists(f'arq:result:{job.job_id}') == 0
    assert sync_redis.zscore(queue_name, job.job_id) is None


async def test_function_keep_result_forever_applies_to_max_tries_failure(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory
) -> None:
    job = await arq_redis.enqueue_job('add', 1, _job_try=5)
    assert job is not None
    with pytest.raises(FailedJobs):
        await worker(functions=[func(add, keep_result_forever=True, max_tries=2)], keep_result=10).run_check()
    assert sync_redis.pttl(f'arq:result:{job.job_id}') == -1


async def test_stale_abort_entry_is_pruned_and_does_not_abort_a_future_job(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory
) -> None:
    """arq never prunes `arq:abort` (#485): an abort requested two minutes ago for an id that never ran would abort
    any later job with that id."""
    sync_redis.zadd('arq:abort', {'reused-id': int(time.time() * 1000) - 120_000})
    worker.start(worker(functions=[add], allow_abort_jobs=True, burst=False, poll_delay=0.05))

    async def pruned() -> bool:
        return await arq_redis.zscore('arq:abort', 'reused-id') is None

    await async_wait_until(pruned, timeout=10, message='the stale arq:abort entry to be pruned')

    job = await arq_redis.enqueue_job('add', 2, b=3, _job_id='reused-id')
    assert job is not None
    assert await job.result(timeout=10, poll_delay=0.05) == 5


async def test_defer_until_far_in_the_past_is_enqueued_and_runs(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory
) -> None:
    """arq computes a negative PSETEX TTL here and Redis rejects the whole enqueue (#447)."""
    job = await arq_redis.enqueue_job('add', 1, b=1, _defer_until=datetime.now(tz=UTC) - timedelta(days=2))
    assert job is not None
    assert sync_redis.pttl(f'arq:job:{job.job_id}') > 0
    await worker(functions=[add]).main()
    assert await job.result(timeout=5) == 2


async def test_negative_defer_by_beyond_a_day_is_enqueued(arq_redis: ArqRedis, sync_redis: redis.Redis) -> None:
    job = await arq_redis.enqueue_job('add', 1, _defer_by=timedelta(days=-2))
    assert job is not None
    assert sync_redis.pttl(f'arq:job:{job.job_id}') > 0


async def test_queued_jobs_skips_job_whose_key_vanished(
    arq_redis: ArqRedis, sync_redis: redis.Redis, queue_name: str
) -> None:
    """arq raises for the whole listing when one job key expired or was deleted meanwhile (#466)."""
    gone = await arq_redis.enqueue_job('add', 1)
    kept = await arq_redis.enqueue_job('add', 2)
    assert gone is not None and kept is not None
    sync_redis.delete(f'arq:job:{gone.job_id}')
    jobs = await arq_redis.queued_jobs()
    assert [(j.job_id, j.args) for j in jobs] == [(kept.job_id, (2,))]


@pytest.fixture
def redis_without_keys(tmp_path: Path) -> Any:
    """A redis-server on which KEYS is disabled, so only a SCAN-based listing works."""
    server = RedisServer(directory=tmp_path / 'no-keys', extra_args=('--rename-command', 'KEYS', ''))
    server.start()
    yield server
    server.stop()


async def test_all_job_results_uses_scan_not_keys(
    redis_without_keys: RedisServer, worker: WorkerFactory, queue_name: str
) -> None:
    settings = RedisSettings(host='127.0.0.1', port=redis_without_keys.port)
    pool = await create_pool(settings, default_queue_name=queue_name)
    try:
        for i in range(30):
            await pool.enqueue_job('add', i)
        await worker(functions=[add], redis_settings=settings).main()
        results = await pool.all_job_results()
        assert sorted(r.result for r in results) == list(range(30))
    finally:
        await pool.aclose()
