"""The worker's parts on their own, without a Worker or a process: the stop state, the pacer, the running-job
record, the observer guard and the job runner (against a real Redis, handed its dependencies explicitly)."""

from __future__ import annotations

import asyncio
import logging
import pickle
from collections.abc import AsyncIterator
from typing import Any

import pytest

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.contract import FAILURE, SUCCESS, Claim, Settlement
from arq.deadlines import Deadlines
from arq.functions import func
from arq.jobs import serialize_job
from arq.observer import ABORTED, COMPLETE, FAILED, WorkerObserver, guarded
from arq.pacing import BUSY_WAIT_S, IDLE_POLL_S, Pacer
from arq.runner import JobCounters, JobRunner, JobSettings
from arq.running import RunningJobs
from arq.stopping import Phase, StopState
from tests.support.redis_server import RedisServer


@pytest.fixture
async def arq_redis(redis_server: RedisServer, redis_db: int) -> AsyncIterator[ArqRedis]:
    pool = await create_pool(RedisSettings(host='127.0.0.1', port=redis_server.port, database=redis_db))
    yield pool
    await pool.aclose()


# --- the stop state ---


def test_drain_with_a_wait_then_its_deadline() -> None:
    stop = StopState()
    assert stop.drain(now=100.0, wait_s=5) is True
    assert stop.phase is Phase.DRAINING and stop.seconds_left(101.0) == 4.0
    assert stop.drain(now=101.0, wait_s=5) is False  # a second request changes nothing
    assert not stop.drain_over(now=104.0, jobs_running=1)
    assert stop.drain_over(now=104.0, jobs_running=0)  # nothing left to wait for
    assert stop.drain_over(now=105.0, jobs_running=3)
    assert stop.cancel() is True and stop.phase is Phase.CANCELLING
    assert stop.cancel() is False and stop.seconds_left(106.0) is None


def test_drain_without_a_wait_cancels_at_once() -> None:
    stop = StopState()
    assert stop.drain(now=0.0, wait_s=0) is True
    assert stop.cancelling and not stop.draining and not stop.running


# --- the pacer ---


async def test_an_idle_worker_on_an_empty_queue_polls_less_until_a_job_comes_unannounced() -> None:
    pacer = Pacer(poll_delay_s=0.5)

    def idle_wait() -> float:
        return pacer.wait_s(free_slots=10, claiming=True, next_score_in_s=None, drain_left_s=None)

    assert idle_wait() == 0.5  # nothing known about the queue yet
    pacer.claimed(queued=0, got_jobs=False)
    assert idle_wait() == IDLE_POLL_S
    assert pacer.wait_s(free_slots=10, claiming=True, next_score_in_s=0.3, drain_left_s=None) == 0.3
    await pacer.sleep(0)  # a turn that was not woken...
    pacer.claimed(queued=1, got_jobs=True)  # ...found a job no wake token announced (the published arq's enqueue)
    pacer.claimed(queued=0, got_jobs=False)
    assert idle_wait() == 0.5  # so the queue is polled as arq would, though it is empty again


async def test_a_job_announced_by_a_wake_token_keeps_the_idle_polling_slow() -> None:
    pacer = Pacer(poll_delay_s=0.5)
    pacer.claimed(queued=0, got_jobs=False)
    pacer.wake()
    await pacer.sleep(10)  # returns at once: woken
    pacer.claimed(queued=1, got_jobs=True)
    pacer.claimed(queued=0, got_jobs=False)
    assert pacer.wait_s(free_slots=1, claiming=True, next_score_in_s=None, drain_left_s=None) == IDLE_POLL_S


def test_busy_and_draining_waits() -> None:
    pacer = Pacer(poll_delay_s=0.01)
    assert pacer.wait_s(free_slots=0, claiming=True, next_score_in_s=None, drain_left_s=None) == BUSY_WAIT_S
    pacer.claimed(queued=0, got_jobs=False)
    assert pacer.wait_s(free_slots=0, claiming=False, next_score_in_s=None, drain_left_s=0.004) == 0.004
    assert pacer.wait_s(free_slots=5, claiming=False, next_score_in_s=None, drain_left_s=9) == 0.01


# --- running jobs ---


async def test_one_record_per_running_job() -> None:
    running = RunningJobs()
    first = running.add(Claim('a', b'', 1, 0, False, 'w:1'))
    assert 'a' in running and len(running) == 1 and running.cancel_all() == 0  # no function running yet
    first.task, first.in_function = asyncio.create_task(asyncio.sleep(60)), True
    assert running.functions_running() == 1 and running.cancel_all() == 1 and first.cancelled_at is not None
    second = running.add(Claim('a', b'', 2, 0, False, 'w:2'))  # claimed again (its lease lapsed) before it ended
    running.remove(first)
    assert running.get('a') is second  # the later record stays
    running.remove(second)
    assert len(running) == 0
    await asyncio.gather(first.task, return_exceptions=True)


async def test_one_timer_times_out_each_job_at_its_own_deadline() -> None:
    """A job started later with a shorter timeout is timed out first; a job that ended is never timed out."""
    deadlines, running = Deadlines(), RunningJobs()
    jobs = [running.add(Claim(name, b'', 1, 0, False, 'w:1')) for name in ('long', 'short', 'done')]
    for job, timeout_s in zip(jobs, (60.0, 0.05, 0.05), strict=True):
        job.task, job.in_function = asyncio.create_task(asyncio.sleep(60)), True
        deadlines.watch(job, timeout_s)
    long, short, done = jobs
    deadlines.forget(done, 0.05)
    await asyncio.wait([short.task], timeout=10)
    assert short.task.cancelled() and short.timed_out and short.cancels == 1
    assert not long.task.done() and not long.timed_out and not done.timed_out
    for job in (long, done):
        job.task.cancel()
    await asyncio.gather(long.task, done.task, return_exceptions=True)


# --- the observer guard ---


class _Broken(WorkerObserver):
    def claimed(self, job_ids: Any) -> None:
        raise RuntimeError('observer bug')


def test_an_observer_that_raises_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    guarded(_Broken()).claimed(['a'])
    assert 'worker observer _Broken.claimed failed' in caplog.text
    assert type(guarded(None)) is WorkerObserver


# --- the job runner ---


class _Recorder(WorkerObserver):
    def __init__(self) -> None:
        self.finished: list[tuple[str, str]] = []
        self.early: list[tuple[str | None, str]] = []

    def job_finished(self, function: str, outcome: str, duration_s: float, lag_ms: int) -> None:
        self.finished.append((function, outcome))

    def job_failed_early(self, function: str | None, outcome: str) -> None:
        self.early.append((function, outcome))


async def _add(ctx: dict[str, Any], a: int, b: int) -> int:
    return a + b


def _runner(pool: ArqRedis, settled: list[Settlement], observer: WorkerObserver) -> JobRunner:
    settings = JobSettings(
        queue_name='parts', functions={'add': func(_add, name='add')}, ctx={}, retry_jobs=True, keep_result_s=60,
        keep_result_forever=False, max_tries=5, job_timeout_s=10, log_results=True, job_serializer=None,
        job_deserializer=None, on_job_start=None, on_job_end=None, after_job_end=None,
    )  # fmt: skip

    async def settle(settlement: Settlement) -> None:
        settled.append(settlement)

    return JobRunner(settings, pool, settle, JobCounters(), observer, cancelling=lambda: False)


def _claim(job_id: str, function: str, *args: Any, aborted: bool = False) -> Claim:
    payload = serialize_job(function, args, {}, None, 1_000)
    return Claim(job_id, payload, 1, 1_000, aborted, 'w:1')


async def test_the_runner_runs_a_job_and_settles_its_result(
    arq_redis: ArqRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger='arq')
    settled: list[Settlement] = []
    observer = _Recorder()
    runner = _runner(arq_redis, settled, observer)
    await runner.run(RunningJobs().add(_claim('j1', 'add', 20, 22)))
    [settlement] = settled
    assert settlement.op == SUCCESS and settlement.token == 'w:1' and settlement.result_px == 60_000
    assert pickle.loads(settlement.result)['r'] == 42
    assert runner.counters.complete == 1 and observer.finished == [('add', COMPLETE)]
    assert 'j1:add(20, 22)' in caplog.text and '← j1:add ● 42' in caplog.text


async def test_the_runner_refuses_what_cannot_run(arq_redis: ArqRedis) -> None:
    settled: list[Settlement] = []
    observer = _Recorder()
    runner = _runner(arq_redis, settled, observer)
    running = RunningJobs()
    await runner.run(running.add(_claim('j2', 'missing')))
    await runner.run(running.add(_claim('j3', 'add', 1, 2, aborted=True)))
    await runner.run(running.add(Claim('j4', None, 1, 1_000, False, 'w:1')))  # expired: no payload
    assert [s.op for s in settled] == [FAILURE] * 3
    assert str(pickle.loads(settled[0].result)['r']) == "function 'missing' not found"
    assert observer.early == [(None, FAILED), ('add', ABORTED), (None, FAILED)] and runner.counters.failed == 3
