"""The arq Worker: claim due jobs, run them, settle their outcome; plus func(), settings loading and health checks.

Compatible with arq 0.26.3 on the wire and in its API. Inside it differs: jobs are claimed in batches by one Lua
script, settled in batches by another, the in-progress key is a lease refreshed while the job runs, idle workers
wake on a token enqueue_job pushes (arq/nudges.py), and a Redis error in the loop means back off and carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import signal
from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import Any, cast
from uuid import uuid4

from redis.exceptions import RedisError

from . import contract, scripts
from ._execution import JobExecution, JobExecutionFailed, Retry, RetryJob
from .aborts import RECANCEL_AFTER_S, AbortWatcher
from .connections import ArqRedis, RedisSettings, create_pool, log_redis_info
from .constants import (
    abort_entry_max_age_ms,
    abort_jobs_ss,
    claim_record_prefix,
    default_lease_s,
    default_queue_name,
    expires_extra_ms,
    health_check_key_suffix,
    in_progress_key_prefix,
    job_key_prefix,
)
from .constants import keep_cronjob_progress as keep_cronjob_progress  # arq's worker module had it; users import it
from .contract import Claim, Settlement
from .cron import CronJob, local_timezone
from .cron_scheduler import enqueue_due
from .functions import FailedJobs, Function, _positive_seconds, func
from .health import HealthRecorder
from .jobs import Deserializer, Serializer
from .leases import LeaseKeeper
from .nudges import WakeListener
from .outages import RedisOutages
from .settle import SettleBatcher
from .typing import SecondsTimedelta, StartupShutdown, WorkerCoroutine
from .utils import reraise_if_cancelling, timestamp_ms, to_seconds

__all__ = [
    'Function',
    'func',
    'Retry',
    'RetryJob',
    'JobExecutionFailed',
    'FailedJobs',
    'Worker',
    'get_kwargs',
    'create_worker',
    'run_worker',
    'check_health',
    'async_check_health',
]

logger = logging.getLogger('arq.worker')

# Redis errors that mean "back off and try again", never "die"
_TRANSIENT = (RedisError, OSError, asyncio.TimeoutError)
_BACKOFF_START_S, _BACKOFF_MAX_S = 0.1, 5.0


class Worker(JobExecution):
    """
    Main class for running jobs.

    Takes every parameter of arq 0.26.3's Worker, with the same meaning, plus:

    :param lease_s: TTL of the in-progress key while a job runs, refreshed every third of it; a crashed worker's job
      is claimable again after at most this long (arq: the longest job timeout + 10 s)
    :param write_health_key: write (and on close, delete) the ``<queue>:health-check`` key; a supervisor that
      aggregates health for several processes turns this off
    :param worker_id: this worker's name in its lease tokens (default: random); a supervisor names its children so it
      can recognise and release a dead child's leases
    :param recent_outcomes: also index the ids of this many recently finished jobs per queue and outcome
      (``arq:recent:<queue>:complete|failed``, kept an hour), for a dashboard; 0, the default, writes no such key
    :param stop_unleased_jobs: cancel a running job whose lease could not be renewed for most of its length (a
      partition): no job ever runs on two workers at once, but one that a Redis outage longer than that interrupts
      runs again (see arq.leases)
    """

    def __init__(
        self,
        functions: Sequence[Function | WorkerCoroutine] = (),
        *,
        queue_name: str | None = default_queue_name,
        cron_jobs: Sequence[CronJob] | None = None,
        redis_settings: RedisSettings | None = None,
        redis_pool: ArqRedis | None = None,
        burst: bool = False,
        on_startup: StartupShutdown | None = None,
        on_shutdown: StartupShutdown | None = None,
        on_job_start: StartupShutdown | None = None,
        on_job_end: StartupShutdown | None = None,
        after_job_end: StartupShutdown | None = None,
        handle_signals: bool = True,
        job_completion_wait: int = 0,
        max_jobs: int = 10,
        job_timeout: SecondsTimedelta = 300,
        keep_result: SecondsTimedelta = 3600,
        keep_result_forever: bool = False,
        poll_delay: SecondsTimedelta = 0.5,
        queue_read_limit: int | None = None,
        max_tries: int = 5,
        health_check_interval: SecondsTimedelta = 3600,
        health_check_key: str | None = None,
        ctx: dict[Any, Any] | None = None,
        retry_jobs: bool = True,
        allow_abort_jobs: bool = False,
        max_burst_jobs: int = -1,
        job_serializer: Serializer | None = None,
        job_deserializer: Deserializer | None = None,
        expires_extra_ms: int = expires_extra_ms,
        timezone: tzinfo | None = None,
        log_results: bool = True,
        lease_s: float = default_lease_s,
        write_health_key: bool = True,
        worker_id: str | None = None,
        recent_outcomes: int = 0,
        stop_unleased_jobs: bool = False,
    ):
        self.functions: dict[str, Function | CronJob] = {f.name: f for f in map(func, functions)}
        if queue_name is None:
            if redis_pool is None:
                raise ValueError('If queue_name is absent, redis_pool must be present.')
            queue_name = redis_pool.default_queue_name
        self.queue_name = queue_name
        self.cron_jobs: list[CronJob] = list(cron_jobs or [])
        for cron_job in self.cron_jobs:
            if not isinstance(cron_job, CronJob):
                raise TypeError(f'cron_jobs must be made with arq.cron.cron(), got {cron_job!r}')
            self.functions[cron_job.name] = cron_job
        if not self.functions:
            raise RuntimeError('at least one function or cron_job must be registered')
        if max_jobs < 1:
            raise ValueError(f'max_jobs must be at least 1, got {max_jobs}')
        self.burst = burst
        self.on_startup = on_startup
        self.on_shutdown = on_shutdown
        self.on_job_start = on_job_start
        self.on_job_end = on_job_end
        self.after_job_end = after_job_end
        self.max_jobs = max_jobs
        self.job_timeout_s = _positive_seconds(job_timeout, 'job_timeout')
        self.keep_result_s = cast(float, to_seconds(keep_result, 'keep_result'))
        self.keep_result_forever = keep_result_forever
        self.poll_delay_s = cast(float, to_seconds(poll_delay, 'poll_delay'))
        self.queue_read_limit = queue_read_limit or max(max_jobs * 5, 100)
        self.max_tries = max_tries
        self.health_check_interval = cast(float, to_seconds(health_check_interval, 'health_check_interval'))
        self.health_check_key = health_check_key or self.queue_name + health_check_key_suffix
        self.write_health_key = write_health_key
        self.retry_jobs = retry_jobs
        self.allow_abort_jobs = allow_abort_jobs
        self.max_burst_jobs = max_burst_jobs
        self.job_serializer = job_serializer
        self.job_deserializer = job_deserializer
        self.expires_extra_ms = expires_extra_ms
        self.timezone = timezone if timezone is not None else local_timezone()
        self.log_results = log_results
        self.handle_signals = handle_signals
        self.job_completion_wait = job_completion_wait
        if lease_s < 1:
            raise ValueError(f'lease_s must be at least 1 second, got {lease_s}')
        self.lease_ms = int(lease_s * 1000)
        self.worker_id = worker_id or uuid4().hex[:16]
        self.recent_outcomes = max(recent_outcomes, 0)

        self.redis_settings = redis_settings or RedisSettings()
        self._pool: ArqRedis | None = redis_pool
        if self._pool is not None:
            self._pool.job_serializer, self._pool.job_deserializer = job_serializer, job_deserializer
            self._pool.expires_extra_ms = expires_extra_ms
        self.ctx = ctx or {}

        self.jobs_complete = 0
        self.jobs_retried = 0
        self.jobs_failed = 0
        self.jobs_started = 0
        self.job_tasks: dict[str, asyncio.Task[Any]] = {}  # job id -> the task running the job function
        self.tasks: dict[str, asyncio.Task[None]] = {}  # job id -> the task running the job's whole life
        # only running jobs can be aborted: the abort set is read at most every poll_delay (within 50 ms to 0.5 s)
        self._aborts = AbortWatcher(self.job_tasks, self._requested_aborts, min(max(self.poll_delay_s, 0.05), 0.5))
        self.aborting_tasks = self._aborts.aborting
        self.allow_pick_jobs = True
        self.main_task: asyncio.Task[None] | None = None
        self._outages = RedisOutages()

        self._leases = LeaseKeeper(
            self._refresh_leases, self.lease_ms / 1000, self._lease_lost, stop_unleased=stop_unleased_jobs
        )
        self._claims = 0
        self._claim_token: str | None = None
        self._settler = SettleBatcher(
            self._write_settlements,
            self._left,
            on_transient=lambda e, retry_in_s: self._outages.failed('settle', e, retry_in_s),
            on_written=lambda: self._outages.succeeded('settle'),
        )
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._shutdown_cancel = False
        self._drain_deadline: float | None = None
        self._stop_reason = 'request'
        self._queued: int | None = None
        self._next_score: int | None = None
        self._health = HealthRecorder(
            self.health_check_key,
            self.queue_name,
            self.health_check_interval,
            lambda: (self.jobs_complete, self.jobs_failed, self.jobs_retried, len(self.tasks)),
        )
        self._closed = False
        self._background: list[asyncio.Task[None]] = []
        self._waker: WakeListener | None = None

    # --- public state, for arq's API and for a supervisor's heartbeats ---

    @property
    def pool(self) -> ArqRedis:
        if self._pool is None:
            raise RuntimeError('the worker has no Redis pool yet: call main() first')
        return self._pool

    @property
    def jobs_ongoing(self) -> int:
        return len(self.tasks)

    @property
    def held_job_ids(self) -> frozenset[str]:
        return frozenset(self._leases.held)

    # --- hooks for an embedding supervisor (no-ops here) ---

    def _notify_ready(self) -> None:
        """on_startup ran and Redis answered."""

    def _notify_claimed(self, job_ids: list[str]) -> None:
        """This process now holds the in-progress leases of these jobs."""

    def _notify_settled(self, job_ids: list[str]) -> None:
        """These jobs' finish or re-queue is committed; this process no longer holds them."""

    # --- running ---

    def run(self) -> None:
        """Sync function to run the worker, finally closes the worker connections."""
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            try:
                runner.run(self.async_run())
            finally:
                runner.run(self.close())

    async def async_run(self) -> None:
        """Asynchronously run the worker, does not close connections. Useful when testing."""
        self.main_task = asyncio.create_task(self.main())
        with contextlib.suppress(asyncio.CancelledError):
            await self.main_task

    async def run_check(self, retry_jobs: bool | None = None, max_burst_jobs: int | None = None) -> int:
        """
        Run :func:`arq.worker.Worker.async_run`, check for failed jobs and raise :class:`arq.worker.FailedJobs`
        if any jobs have failed.

        :return: number of completed jobs
        """
        if retry_jobs is not None:
            self.retry_jobs = retry_jobs
        if max_burst_jobs is not None:
            self.max_burst_jobs = max_burst_jobs
        await self.async_run()
        if self.jobs_failed:
            failed_job_results = [r for r in await self.pool.all_job_results() if not r.success]
            raise FailedJobs(self.jobs_failed, failed_job_results)
        return self.jobs_complete

    async def main(self) -> None:
        if self._pool is None:
            self._pool = await create_pool(
                self.redis_settings,
                job_serializer=self.job_serializer,
                job_deserializer=self.job_deserializer,
                default_queue_name=self.queue_name,
                expires_extra_ms=self.expires_extra_ms,
            )
        self._wake = asyncio.Event()
        self._claim_script = self.pool.register_script(scripts.CLAIM)  # redis-py's Script: EVALSHA, EVAL on NOSCRIPT
        self._settle_script = self.pool.register_script(scripts.SETTLE)
        self._refresh_script = self.pool.register_script(scripts.REFRESH_LEASES)
        self._abort_script = self.pool.register_script(scripts.POLL_ABORTS)
        logger.info('Starting worker for %d functions: %s', len(self.functions), ', '.join(self.functions))
        await log_redis_info(self.pool, logger.info)
        self.ctx['redis'] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        self._notify_ready()
        self._waker = WakeListener(self.pool, self.queue_name, self._wake_up, lambda: self._free_slots() > 0)
        with self._signal_handlers():
            self._background = [
                asyncio.create_task(self._leases.run()),
                asyncio.create_task(self._waker.run()),
            ]
            try:
                await self._poll_loop()
                await self._wait_for_jobs()
            finally:
                await self._stop_background()

    async def _stop_background(self) -> None:
        if self._waker is not None:
            self._waker.stopped = True
        for task in self._background:
            task.cancel()
        _, pending = await asyncio.wait(self._background, timeout=0.5)
        # redis-py can swallow a cancellation that lands while a connection is being set up (only after a reconnect
        # here): the wait is bounded either way
        if pending:
            await asyncio.wait(pending, timeout=1.0)

    async def _poll_loop(self) -> None:
        backoff = _BACKOFF_START_S
        while not self._should_exit():
            # main() was cancelled, but redis-py swallowed the CancelledError (it can while a connection is set up)
            reraise_if_cancelling()
            try:
                await self._iteration()
            except _TRANSIENT as e:
                self._redis_failed(e, backoff)
                await self._sleep_unless_woken(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                continue
            except Exception:
                # a bug or bad data (a cron enqueue, a hook of ours) must not kill the worker and its running jobs
                logger.exception('unexpected error in the worker loop; carrying on in %0.1fs', backoff)
                await self._sleep_unless_woken(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                continue
            self._outages.succeeded('worker loop')
            backoff = _BACKOFF_START_S
            if self.burst and self._burst_done():
                return
            await self._sleep_unless_woken(self._next_wait_s())

    async def _iteration(self) -> None:
        if self._aborts.cancelled_at:
            self._aborts.recancel_stragglers()
        await self._claim_jobs()
        if self.allow_abort_jobs:
            await self._aborts.poll()
        await self._record_health()
        if self.cron_jobs and await self._run_cron():
            self._queued = None  # a cron job was just enqueued: a burst worker must not stop before running it

    async def _poll_iteration(self) -> None:
        """arq's name for one turn of the loop (claim, aborts, health, cron), kept for subclasses and tests."""
        await self._iteration()

    def _should_exit(self) -> bool:
        if not self._stopping:
            return False
        if self._drain_deadline is not None and not self._shutdown_cancel:
            timed_out = asyncio.get_running_loop().time() >= self._drain_deadline
            if self.tasks and not timed_out:
                return False
            logger.info(
                'shutdown on %s, wait complete ◆ %d jobs complete ◆ %d failed ◆ %d retries ◆ %d ongoing to cancel',
                self._stop_reason,
                self.jobs_complete,
                self.jobs_failed,
                self.jobs_retried,
                len(self.tasks),
            )
            if not self.tasks:
                return True
            self._cancel_running('wait complete')
            return False
        return True

    def _burst_done(self) -> bool:
        if 0 <= self.max_burst_jobs <= self.jobs_started:
            return True
        return self._queued == 0 and not self.tasks

    def _next_wait_s(self) -> float:
        if self._free_slots() == 0 and not self._stopping:
            # every slot is busy: a finishing job wakes the loop; until then only housekeeping is due
            return max(self.poll_delay_s, 0.5)
        wait_s = self.poll_delay_s
        if self._next_score is not None:
            wait_s = min(wait_s, max((self._next_score - timestamp_ms()) / 1000, 0))
        if self._drain_deadline is not None:
            wait_s = min(wait_s, max(self._drain_deadline - asyncio.get_running_loop().time(), 0))
        return wait_s

    async def _sleep_unless_woken(self, timeout_s: float) -> None:
        wake = cast(asyncio.Event, self._wake)
        if wake.is_set() or timeout_s <= 0:
            await asyncio.sleep(0)  # always yield, so a zero poll_delay cannot starve the jobs
        else:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await wake.wait()
        wake.clear()

    def _redis_failed(self, e: BaseException, retry_in_s: float) -> None:
        self._outages.failed('worker loop', e, retry_in_s)

    @property
    def redis_error(self) -> str | None:
        """The Redis error this worker is meeting now (in its loop or its settles), or None."""
        return self._outages.error

    # --- claiming ---

    def _free_slots(self) -> int:
        if not self.allow_pick_jobs or self._stopping:
            return 0
        slots = self.max_jobs - len(self.tasks)
        if self.burst and self.max_burst_jobs >= 0:
            slots = min(slots, self.max_burst_jobs - self.jobs_started)
        return max(slots, 0)

    async def _claim_jobs(self) -> None:
        slots = self._free_slots()
        recovering = self._claim_token is not None
        if slots == 0 and not recovering:
            return
        if not recovering:
            self._claims += 1
            self._claim_token = contract.lease_token(self.worker_id, self._claims)
        token = cast(str, self._claim_token)
        # kept until the reply arrives: a claim whose reply was lost is sent again with the same token to get its
        # jobs back (see scripts.CLAIM)
        keys, args = contract.claim_args(
            queue=self.queue_name, worker_id=self.worker_id, token=token, now_ms=timestamp_ms(),
            lease_ms=self.lease_ms, want=slots, read_limit=self.queue_read_limit, check_abort=self.allow_abort_jobs,
            recover=recovering,
        )  # fmt: skip
        reply = contract.parse_claim(await self._claim_script(keys=keys, args=args), token)
        self._claim_token = None
        self._queued, self._next_score = reply.queued, reply.next_score
        if reply.jobs:
            self._start(reply.jobs)

    def _start(self, claims: list[Claim]) -> None:
        ids = [c.job_id for c in claims]
        for claim in claims:
            self._leases.hold(claim.job_id, claim.token)
        self.jobs_started += len(claims)
        self._notify_claimed(ids)
        for claim in claims:
            task = asyncio.create_task(self.run_claimed_job(claim))
            self.tasks[claim.job_id] = task
            task.add_done_callback(functools.partial(self._job_done, claim.job_id))

    def _job_done(self, job_id: str, task: asyncio.Task[None]) -> None:
        if self.tasks.get(job_id) is task:
            del self.tasks[job_id]
        if self._wake is not None:
            self._wake.set()
        if self._waker is not None:
            self._waker.slot_freed()

    # --- settling ---

    async def _settle(self, settlement: Settlement) -> None:
        """Queue a job's settlement for the next batch and wait until Redis has it (the lease stays held till then)."""
        await self._settler.settle(settlement)

    async def _write_settlements(self, batch: list[Settlement]) -> contract.SettleReply:
        keys, args = contract.settle_args(
            self.queue_name, batch, now_ms=timestamp_ms(), recent_cap=self.recent_outcomes
        )
        return contract.parse_settle(await self._settle_script(keys=keys, args=args))

    def _left(self, job_ids: list[str]) -> None:
        """These jobs' settlement is committed (or was given up): this worker no longer holds their leases."""
        for job_id in job_ids:
            self._leases.drop(job_id)
        self._notify_settled(job_ids)

    # --- leases, nudges, aborts ---

    async def _requested_aborts(self) -> list[str]:
        args: list[Any] = [timestamp_ms(), abort_entry_max_age_ms, job_key_prefix, in_progress_key_prefix]
        return [raw.decode() for raw in await self._abort_script(keys=[abort_jobs_ss], args=args)]

    async def _refresh_leases(self, held: dict[str, str]) -> tuple[int, list[str]]:
        keys, args = contract.refresh_args(self.queue_name, self.lease_ms, held)
        return contract.parse_refresh(await self._refresh_script(keys=keys, args=args))

    def _lease_lost(self, job_id: str, why: str) -> None:
        """Stop a job whose lease is gone: another worker may run it now, and its outcome here would be dropped."""
        logger.warning('lease lost: job %s is %s; cancelling it here', job_id, why, extra={'job_id': job_id})
        task = self.job_tasks.get(job_id)
        if task is not None:
            self._aborts.cancel(job_id, task)

    # --- health and cron ---

    async def _record_health(self) -> None:
        if self.write_health_key:
            await self._health.record(self.pool, asyncio.get_running_loop().time())

    async def _run_cron(self) -> int:
        """Enqueue the cron jobs that are due; returns how many were enqueued."""
        return await self.run_cron(datetime.now(tz=self.timezone), max(self.poll_delay_s, 0.5))

    async def run_cron(self, n: datetime, delay: float, num_windows: int = 2) -> int:
        """Enqueue the cron jobs due before `n` + `num_windows` × `delay` seconds (arq's signature)."""
        return await enqueue_due(self.pool, self.cron_jobs, self.queue_name, n, delay, num_windows)

    # --- stopping ---

    def start_drain(self, wait_s: float | None = None) -> None:
        """
        Stop claiming; let running jobs finish within `wait_s` (default: job_completion_wait), then cancel the rest,
        which go back to the queue.
        """
        if self._stopping:
            return
        self._stopping = True
        self.allow_pick_jobs = False
        wait_s = self.job_completion_wait if wait_s is None else wait_s
        if wait_s > 0:
            self._drain_deadline = asyncio.get_running_loop().time() + wait_s
        else:
            self._cancel_running('stopping')
        self._wake_up()

    def stop_now(self) -> None:
        """Cancel running jobs now (they go back to the queue) and return from main()."""
        self._stopping = True
        self.allow_pick_jobs = False
        self._cancel_running('stopping now')
        self._wake_up()

    def _cancel_running(self, why: str) -> None:
        if self._shutdown_cancel:
            return
        self._shutdown_cancel = True
        if self.job_tasks:
            logger.info('%s: cancelling %d running jobs, they will be run again', why, len(self.job_tasks))
        for job_id, task in self.job_tasks.items():
            self._aborts.cancel(job_id, task)

    def _wake_up(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def handle_sig(self, signum: int) -> None:
        """
        SIGINT/SIGTERM: stop claiming and cancel the running jobs (they go back to the queue), or with
        job_completion_wait let them finish first (`handle_sig_wait_for_completion`); a second signal stops at once.
        """
        sig = signal.Signals(signum)
        if self._stopping:
            self._stop_reason = sig.name
            logger.info('second %s: stopping now', sig.name)
            self.stop_now()
            return
        if self.job_completion_wait > 0:
            self.handle_sig_wait_for_completion(signum)
            return
        self._log_shutdown(sig, 'ongoing to cancel')
        self.start_drain()
        # as arq, the main task is cancelled too; but not while a claim's reply is awaited, which would leave its
        # jobs leased and not run until the leases lapse (the loop stops by itself right after the reply)
        if self.main_task is not None and self._claim_token is None:
            self.main_task.cancel()

    def handle_sig_wait_for_completion(self, signum: int) -> None:
        """Stop claiming; let running jobs finish within job_completion_wait, then cancel what is left."""
        sig = signal.Signals(signum)
        self._log_shutdown(sig, 'to be completed')
        self.start_drain()

    def _log_shutdown(self, sig: signal.Signals, what: str) -> None:
        self._stop_reason = sig.name
        logger.info(
            'shutdown on %s ◆ %d jobs complete ◆ %d failed ◆ %d retries ◆ %d %s',
            sig.name,
            self.jobs_complete,
            self.jobs_failed,
            self.jobs_retried,
            len(self.tasks),
            what,
        )

    @contextlib.contextmanager
    def _signal_handlers(self) -> Any:
        if not self.handle_signals:
            yield
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_sig, sig)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    async def _wait_for_jobs(self) -> None:
        while self.tasks:
            await asyncio.wait(self.tasks.values(), timeout=RECANCEL_AFTER_S)
            self._aborts.recancel_stragglers()

    async def close(self) -> None:
        """Wait for running jobs to settle, run on_shutdown, remove our health line and close the pool."""
        if self._closed:
            return
        self._closed = True
        if not self._pool:
            return
        self.stop_now()
        await self._wait_for_jobs()
        await self._settler.close()
        with contextlib.suppress(*_TRANSIENT):
            await self._pool.delete(claim_record_prefix + self.worker_id)
        if self.on_shutdown:
            try:
                await self.on_shutdown(self.ctx)
            except Exception:
                logger.exception('on_shutdown hook failed')
        await self._delete_health_line()
        await self._pool.close(close_connection_pool=True)
        self._pool = None

    async def _delete_health_line(self) -> None:
        if self.write_health_key:
            await self._health.delete(self.pool)

    def __repr__(self) -> str:
        return (
            f'<Worker j_complete={self.jobs_complete} j_failed={self.jobs_failed} j_retried={self.jobs_retried} '
            f'j_ongoing={len(self.tasks)}>'
        )


def get_kwargs(settings_cls: Any) -> dict[str, Any]:
    """Worker keyword arguments from a settings class (inherited attributes included) or a dict."""
    worker_args = set(inspect.signature(Worker).parameters)
    if isinstance(settings_cls, dict):
        return {k: v for k, v in settings_cls.items() if k in worker_args}
    return {name: getattr(settings_cls, name) for name in worker_args if hasattr(settings_cls, name)}


def create_worker(settings_cls: Any, **kwargs: Any) -> Worker:
    return Worker(**{**get_kwargs(settings_cls), **kwargs})


def run_worker(settings_cls: Any, **kwargs: Any) -> Worker:
    worker = create_worker(settings_cls, **kwargs)
    worker.run()
    return worker


async def async_check_health(
    redis_settings: RedisSettings | None, health_check_key: str | None = None, queue_name: str | None = None
) -> int:
    redis_settings = redis_settings or RedisSettings()
    redis: ArqRedis = await create_pool(redis_settings)
    queue_name = queue_name or default_queue_name
    health_check_key = health_check_key or (queue_name + health_check_key_suffix)
    try:
        data: bytes | None = await redis.get(health_check_key)  # type: ignore[assignment]
    finally:
        await redis.close()
    if not data:
        logger.warning('Health check failed: no health check sentinel value found')
        return 1
    logger.info('Health check successful: %s', data.decode(errors='replace'))
    return 0


def check_health(settings_cls: Any) -> int:
    """Run a health check on the worker and return the appropriate exit code: 0 if healthy, 1 if not."""
    cls_kwargs = get_kwargs(settings_cls)
    redis_settings = cast(RedisSettings | None, cls_kwargs.get('redis_settings'))
    health_check_key = cast(str | None, cls_kwargs.get('health_check_key'))
    queue_name = cast(str | None, cls_kwargs.get('queue_name'))
    return asyncio.run(async_check_health(redis_settings, health_check_key, queue_name))
