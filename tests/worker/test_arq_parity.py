"""arq 0.26.3's own behaviour, where ours once differed (issue 11): health log lines, deserialisation failures, unit and
timezone helpers, the deprecated `pole_delay`, `retry_on_timeout`, and the names users' subclasses and tests reach for.

Everything here also holds for the published arq (the timezone test needs pytz installed beside it).
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import re
import signal
import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis

import arq.utils
from arq import cron
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.jobs import DeserializationError, deserialize_job_raw
from arq.worker import Worker
from tests.support.waiting import async_wait_until
from tests.worker.helpers import WorkerFactory, wait_for_key, wait_worker_ready


async def add(ctx: dict[str, Any], a: int, b: int = 0) -> int:
    return a + b


async def slow_add(ctx: dict[str, Any], a: int) -> int:
    await ctx['redis'].set(f'started:{ctx["job_id"]}', 1)
    await asyncio.sleep(0.3)  # simulated work, so that the loop turns while the job runs
    return a


async def tick(ctx: dict[str, Any]) -> None:
    pass


def arq_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith('arq')]


async def finished(task: asyncio.Task[None], timeout: float = 10) -> None:
    done, _ = await asyncio.wait({task}, timeout=timeout)
    assert task in done, 'worker did not stop'


# --- 1. the `recording health:` line ---


async def test_default_health_interval_logs_no_health_line_around_jobs(
    arq_redis: ArqRedis, worker: WorkerFactory, arq_logs: pytest.LogCaptureFixture
) -> None:
    """The first record is never logged, and with the default hour there is no second one: only → and ← lines."""
    for i in range(3):
        await arq_redis.enqueue_job('slow_add', i)
    await worker(functions=[slow_add], poll_delay=0.01).main()
    messages = arq_messages(arq_logs)
    assert sum('←' in m for m in messages) == 3, messages
    assert not [m for m in messages if m.startswith('recording health')], messages


async def test_health_key_is_written_once_per_interval(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, queue_name: str
) -> None:
    w = worker(functions=[add], burst=False, poll_delay=0.01, health_check_interval=3600)
    worker.start(w)
    await wait_worker_ready(arq_redis, queue_name)
    first = sync_redis.get(f'{queue_name}:health-check')
    job = await arq_redis.enqueue_job('add', 1)
    assert job is not None
    assert await job.result(timeout=10) == 1
    assert sync_redis.get(f'{queue_name}:health-check') == first


async def test_health_lines_logged_only_when_counters_change(
    arq_redis: ArqRedis, worker: WorkerFactory, arq_logs: pytest.LogCaptureFixture
) -> None:
    await arq_redis.enqueue_job('slow_add', 1)
    await worker(functions=[slow_add], poll_delay=0.01, health_check_interval=0).main()
    counters = [m.split(' ', 4)[-1] for m in arq_messages(arq_logs) if m.startswith('recording health: ')]
    assert counters, arq_messages(arq_logs)
    assert all(a != b for a, b in zip(counters, counters[1:], strict=False)), counters


# --- 3 and 4. payloads that do not deserialize ---


async def test_undeserializable_job_fails_with_arqs_exact_message(
    arq_redis: ArqRedis,
    sync_redis: redis.Redis,
    worker: WorkerFactory,
    queue_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sync_redis.psetex('arq:job:garbled', 60_000, b'\x80\x04 not a pickle')
    sync_redis.zadd(queue_name, {'garbled': 1})
    await worker(functions=[add]).main()
    result = pickle.loads(sync_redis.get('arq:result:garbled'))  # type: ignore[arg-type]
    assert result['s'] is False
    assert isinstance(result['r'], DeserializationError)
    assert str(result['r']) == 'unable to deserialize job'
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith('deserializing job garbled failed')]
    assert lines, arq_messages(caplog)


def test_deserialize_job_raw_keeps_the_cause() -> None:
    with pytest.raises(DeserializationError) as info:
        deserialize_job_raw(b'\x80\x04 not a pickle')
    assert str(info.value) == 'unable to deserialize job'
    assert info.value.__cause__ is not None


def test_deserialize_job_raw_returns_any_payload_with_the_five_keys() -> None:
    payload = pickle.dumps({'f': 42, 'a': 'x', 'k': None, 't': 'first', 'et': 'yesterday'})
    assert deserialize_job_raw(payload) == (42, 'x', None, 'first', 'yesterday')
    with pytest.raises(DeserializationError, match='^unable to deserialize job$') as info:
        deserialize_job_raw(pickle.dumps({'f': 'add'}))
    assert isinstance(info.value.__cause__, KeyError)


# --- 5. units and timezones ---


@pytest.mark.parametrize(
    'value,ms', [(timedelta(days=1), 86_400_000), (42, 42_000), (42.123, 42_123), (42.123_987, 42_124), (None, None)]
)
def test_to_ms_rounds_as_arq(value: Any, ms: int | None) -> None:
    assert arq.utils.to_ms(value) == ms


@pytest.fixture
def fresh_tz(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """get_tz caches its answer: clear it around the test, with no timezone variable set."""
    for var in ('ARQ_TIMEZONE', 'arq_timezone', 'TIMEZONE', 'timezone'):
        monkeypatch.delenv(var, raising=False)
    arq.utils.get_tz.cache_clear()
    yield monkeypatch
    arq.utils.get_tz.cache_clear()


def test_ms_to_datetime_in_the_zone_from_the_environment(fresh_tz: pytest.MonkeyPatch) -> None:
    fresh_tz.setenv('ARQ_TIMEZONE', 'Asia/Shanghai')
    fresh_tz.setenv('TIMEZONE', 'Europe/Berlin')  # lower priority
    dt = arq.utils.ms_to_datetime(1_647_345_420_000)
    assert dt.isoformat() == '2022-03-15T19:57:00+08:00'
    assert str(dt.tzinfo) == 'Asia/Shanghai'
    fresh_tz.setenv('ARQ_TIMEZONE', 'Europe/Berlin')  # cached: no effect
    assert arq.utils.ms_to_datetime(1_647_345_420_000).isoformat() == '2022-03-15T19:57:00+08:00'


def test_ms_to_datetime_without_a_zone_is_utc(fresh_tz: pytest.MonkeyPatch) -> None:
    assert arq.utils.ms_to_datetime(1_647_345_420_000).isoformat() == '2022-03-15T11:57:00+00:00'
    fresh_tz.setenv('ARQ_TIMEZONE', 'Europe/Berlin')  # cached: no effect
    assert arq.utils.ms_to_datetime(1_647_345_420_000).isoformat() == '2022-03-15T11:57:00+00:00'


def test_ms_to_datetime_with_an_unknown_zone_warns_and_uses_utc(
    fresh_tz: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fresh_tz.setenv('ARQ_TIMEZONE', 'foobar')
    caplog.set_level(logging.WARNING)
    assert arq.utils.ms_to_datetime(1_647_345_420_000).isoformat() == '2022-03-15T11:57:00+00:00'
    assert "unknown timezone: 'foobar'\n" in caplog.text


# --- 6 and 7. pole_delay, retry_on_timeout ---


async def test_result_accepts_pole_delay_with_a_deprecation_warning(arq_redis: ArqRedis, worker: WorkerFactory) -> None:
    job = await arq_redis.enqueue_job('add', 2, 3)
    assert job is not None
    await worker(functions=[add]).main()
    with pytest.warns(DeprecationWarning, match='pole_delay'):
        assert await job.result(pole_delay=0.05) == 5


async def test_retry_on_timeout_retries_redis_timeouts_without_deprecation_warning(
    redis_settings: RedisSettings,
) -> None:
    settings = RedisSettings(host=redis_settings.host, port=redis_settings.port, retry_on_timeout=True)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        pool = await create_pool(settings)
        try:
            assert await pool.ping()
            connection = pool.connection_pool.make_connection()
            assert connection.retry._retries >= 1
            assert redis.exceptions.TimeoutError in connection.retry._supported_errors
        finally:
            await pool.aclose()


# --- 8. names kept for users' subclasses and tests ---


def test_keep_cronjob_progress_importable_from_worker() -> None:
    from arq.worker import keep_cronjob_progress

    assert keep_cronjob_progress == 60


async def test_run_cron_enqueues_due_cron_job(arq_redis: ArqRedis, worker: WorkerFactory, queue_name: str) -> None:
    w = worker(cron_jobs=[cron(tick, run_at_startup=True)], redis_pool=arq_redis)
    await w.run_cron(datetime.now(tz=w.timezone), 0.5)
    assert await arq_redis.zcard(queue_name) == 1


async def test_poll_iteration_starts_due_jobs(arq_redis: ArqRedis, worker: WorkerFactory) -> None:
    w = worker(functions=[add])
    await w.main()  # burst with an empty queue: sets the worker up and returns
    job = await arq_redis.enqueue_job('add', 20, 22)
    assert job is not None
    await w._poll_iteration()
    assert await job.result(timeout=10) == 42


async def test_handle_sig_without_completion_wait_cancels_main_task(
    arq_redis: ArqRedis, worker: WorkerFactory, queue_name: str, arq_logs: pytest.LogCaptureFixture
) -> None:
    w = worker(functions=[add], burst=False, poll_delay=5, handle_signals=False)
    task = worker.start(w)
    await wait_worker_ready(arq_redis, queue_name)
    # ours holds off while a claim's reply is awaited (the loop then stops by itself); arq has no such state
    await async_wait_until(lambda: _no_claim_in_flight(w), timeout=10, message='the loop between claims')
    w.handle_sig(signal.SIGINT)
    await finished(task)
    assert w.main_task is not None and w.main_task.cancelled()
    assert 'shutdown on SIGINT ◆ 0 jobs complete ◆ 0 failed ◆ 0 retries ◆ 0 ongoing to cancel' in arq_messages(arq_logs)


async def _no_claim_in_flight(w: Worker) -> bool:
    return not getattr(w, 'claim_pending', False)  # ours only; the published arq has no such state


async def test_handle_sig_wait_for_completion_lets_the_running_job_finish(
    arq_redis: ArqRedis, worker: WorkerFactory, arq_logs: pytest.LogCaptureFixture
) -> None:
    job = await arq_redis.enqueue_job('slow_add', 7)
    assert job is not None
    w = worker(functions=[slow_add], burst=False, poll_delay=0.05, handle_signals=False, job_completion_wait=10)
    task = worker.start(w)
    await wait_for_key(arq_redis, f'started:{job.job_id}')
    w.handle_sig_wait_for_completion(signal.SIGTERM)
    await finished(task)
    assert await job.result(timeout=5) == 7
    expected = 'shutdown on SIGTERM ◆ 0 jobs complete ◆ 0 failed ◆ 0 retries ◆ 1 to be completed'
    assert expected in arq_messages(arq_logs)


async def test_get_job_result_reads_one_result_by_key(arq_redis: ArqRedis, worker: WorkerFactory) -> None:
    job = await arq_redis.enqueue_job('add', 1, 2)
    assert job is not None
    await worker(functions=[add]).main()
    r = await arq_redis._get_job_result(f'arq:result:{job.job_id}'.encode())
    assert (r.job_id, r.result, r.success) == (job.job_id, 3, True)
    with pytest.raises(KeyError, match=re.escape('job "arq:result:nope" not found')):
        await arq_redis._get_job_result(b'arq:result:nope')
