"""Cron jobs: run_at_startup, their job ids, uniqueness across workers, and next_cron."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from arq import cron
from arq.connections import ArqRedis
from arq.cron import CronJob, next_cron
from tests.support.waiting import async_wait_until
from tests.worker.helpers import WorkerFactory

T = r' *\d+\.\d\ds'


async def record_cron(ctx: dict[str, Any]) -> str:
    await ctx['redis'].rpush('cron-runs', ctx['job_id'])
    return 'ran'


def runs(sync_redis: redis.Redis) -> list[str]:
    return [x.decode() for x in sync_redis.lrange('cron-runs', 0, -1)]


def test_cron_job_defaults() -> None:
    job = cron(record_cron)
    assert isinstance(job, CronJob)
    assert job.name == 'cron:record_cron'
    assert job.unique is True
    assert job.run_at_startup is False
    assert job.job_id is None
    assert job.keep_result_s == 0
    assert job.max_tries == 1


def test_cron_of_non_coroutine_is_an_error() -> None:
    def not_async(ctx: dict[str, Any]) -> None:
        return None

    with pytest.raises(RuntimeError, match='not a coroutine function'):
        cron(not_async)  # type: ignore[arg-type]


async def test_cron_run_at_startup_runs_once_with_unique_id_and_no_result(
    arq_redis: ArqRedis,
    sync_redis: redis.Redis,
    worker: WorkerFactory,
    queue_name: str,
    arq_logs: pytest.LogCaptureFixture,
) -> None:
    before = int(datetime.now(tz=UTC).timestamp() * 1000)
    w = worker(cron_jobs=[cron(record_cron, run_at_startup=True)])
    await w.main()
    after = int(datetime.now(tz=UTC).timestamp() * 1000)
    [job_id] = runs(sync_redis)
    match = re.fullmatch(r'cron:record_cron:(\d{13})', job_id)
    assert match, job_id
    assert before - 1 <= int(match.group(1)) <= after + 1
    assert sync_redis.exists(f'arq:result:{job_id}') == 0, 'crons keep no result by default'
    assert sync_redis.zcard(queue_name) == 0
    messages = [r.getMessage() for r in arq_logs.records if r.name.startswith('arq')]
    assert any(re.fullmatch(rf'{T} → cron:record_cron\(\)', m) for m in messages), messages
    assert any(re.fullmatch(rf'{T} ← cron:record_cron ● \'ran\'', m) for m in messages), messages


async def test_cron_in_progress_key_is_kept_as_60s_tombstone(sync_redis: redis.Redis, worker: WorkerFactory) -> None:
    await worker(cron_jobs=[cron(record_cron, run_at_startup=True)]).main()
    [job_id] = runs(sync_redis)
    assert 50_000 < sync_redis.pttl(f'arq:in-progress:{job_id}') <= 60_000


async def test_cron_with_job_id_uses_it(sync_redis: redis.Redis, worker: WorkerFactory) -> None:
    await worker(cron_jobs=[cron(record_cron, run_at_startup=True, job_id='fixed-cron-id')]).main()
    assert runs(sync_redis) == ['fixed-cron-id']


async def test_cron_not_unique_uses_random_id(sync_redis: redis.Redis, worker: WorkerFactory) -> None:
    await worker(cron_jobs=[cron(record_cron, run_at_startup=True, unique=False)]).main()
    [job_id] = runs(sync_redis)
    assert re.fullmatch(r'[0-9a-f]{32}', job_id)


async def test_cron_with_name_uses_it(sync_redis: redis.Redis, worker: WorkerFactory) -> None:
    await worker(cron_jobs=[cron(record_cron, name='nightly', run_at_startup=True)]).main()
    [job_id] = runs(sync_redis)
    assert re.fullmatch(r'nightly:\d{13}', job_id)


async def test_cron_keep_result_stores_result(sync_redis: redis.Redis, worker: WorkerFactory) -> None:
    await worker(cron_jobs=[cron(record_cron, run_at_startup=True, keep_result=60)]).main()
    [job_id] = runs(sync_redis)
    assert 55_000 < sync_redis.pttl(f'arq:result:{job_id}') <= 60_000


async def test_two_workers_enqueue_a_scheduled_cron_once(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, queue_name: str
) -> None:
    target = datetime.now(tz=UTC) + timedelta(seconds=2)
    job = cron(record_cron, second=target.second, microsecond=0)
    for _ in range(2):
        worker.start(worker(cron_jobs=[job], burst=False, poll_delay=0.05))

    async def ran_and_drained() -> bool:
        return bool(runs(sync_redis)) and await arq_redis.zcard(queue_name) == 0

    await async_wait_until(ran_and_drained, timeout=10, message='the scheduled cron to run')
    [job_id] = runs(sync_redis)
    match = re.fullmatch(r'cron:record_cron:(\d{13})', job_id)
    assert match, job_id
    scheduled = datetime.fromtimestamp(int(match.group(1)) / 1000, tz=UTC)
    assert scheduled.second == target.second
    assert scheduled.microsecond == 0


def test_next_cron_steps_field_by_field() -> None:
    start = datetime(2032, 1, 1, 12, 0, 0)
    assert next_cron(start) == datetime(2032, 1, 1, 12, 1, 0, 123_456)
    assert next_cron(start, hour=13) == datetime(2032, 1, 1, 13, 0, 0, 123_456)
    assert next_cron(start, minute={15, 45}, microsecond=0) == datetime(2032, 1, 1, 12, 15)
    assert next_cron(start, second=None, microsecond=0) == datetime(2032, 1, 1, 12, 0, 1)
    assert next_cron(start, day=3, hour=4, minute=5) == datetime(2032, 1, 3, 4, 5, 0, 123_456)
    assert next_cron(start, month=2, day=1, hour=0, minute=0) == datetime(2032, 2, 1, 0, 0, 0, 123_456)


def test_next_cron_weekday_names() -> None:
    thursday = datetime(2032, 1, 1, 12, 0, 0)
    assert thursday.weekday() == 3
    assert next_cron(thursday, weekday='mon', hour=9, minute=0) == datetime(2032, 1, 5, 9, 0, 0, 123_456)
    assert next_cron(thursday, weekday=0, hour=9, minute=0) == datetime(2032, 1, 5, 9, 0, 0, 123_456)
    assert next_cron(thursday, weekday='sun', hour=9, minute=0) == datetime(2032, 1, 4, 9, 0, 0, 123_456)


def test_next_cron_keeps_timezone() -> None:
    start = datetime(2032, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert next_cron(start, hour=13, minute=0).tzinfo is not None
