"""The arq Worker: claim due jobs, run them, settle their outcome.

Compatible with arq 0.26.3 on the wire and in its API. Inside, orchestration over parts with one job each: claims
(arq.worker_scripts), the job runner (arq.runner), settle batches (arq.settle), leases, wake tokens (arq.wake), aborts,
cron (arq.cron_scheduler), health and the stop state (arq.stopping). A Redis error in the loop: back off, never die.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import Any, TypeVar

from .aborts import RECANCEL_AFTER_S, AbortWatcher
from .background import BackgroundTasks
from .claimer import Claimer
from .connections import ArqRedis, RedisSettings, create_pool, log_redis_info
from .constants import default_lease_s, default_queue_name, expires_extra_ms
from .constants import keep_cronjob_progress as keep_cronjob_progress  # arq's worker module had it; users import it
from .contract import Settlement, SettleReply
from .cron import CronJob
from .cron_scheduler import enqueue_due
from .errors import JobExecutionFailed, Retry, RetryJob
from .functions import FailedJobs, Function, func, function_table
from .health import HealthRecorder, async_check_health, check_health
from .intake import Intake
from .jobs import Deserializer, Serializer
from .leases import LeaseKeeper
from .observer import WorkerObserver, guarded
from .outages import LoopBackoff, RedisOutages
from .pacing import Pacer
from .runner import CounterField, JobCounters, JobRunner, JobSettings
from .running import RunningJobs
from .settle import SettleBatcher
from .stopping import Shutdown, signal_handlers
from .typing import SecondsTimedelta, StartupShutdown, WorkerCoroutine
from .utils import reraise_if_cancelling, timestamp_ms
from .wake import WakeListener
from .worker_options import WorkerOptions, create_worker, get_kwargs, run_worker
from .worker_scripts import WorkerScripts

__all__ = ['Function', 'func', 'Retry', 'RetryJob', 'JobExecutionFailed', 'FailedJobs', 'Worker', 'WorkerObserver',
           'get_kwargs', 'create_worker', 'run_worker', 'check_health', 'async_check_health']  # fmt: skip

logger = logging.getLogger('arq.worker')
T = TypeVar('T')


class Worker(WorkerOptions):
    """
    Main class for running jobs.

    Takes every parameter of arq 0.26.3's Worker, with the same meaning (see WorkerOptions for ours), plus
    `observer`: told of readiness, claims, settlements and finished jobs (arq.observer; a supervisor passes one).
    """

    jobs_complete = CounterField()
    jobs_failed = CounterField()
    jobs_retried = CounterField()
    jobs_started = CounterField()

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
        observer: WorkerObserver | None = None,
    ):
        self.functions: dict[str, Function | CronJob] = function_table(functions, cron_jobs or [])
        self.cron_jobs: list[CronJob] = list(cron_jobs or [])
        self._set_options(locals())  # every parameter by name: WorkerOptions checks and keeps them
        self._pool: ArqRedis | None = redis_pool
        self.observer = guarded(observer)
        #: claim no more than this many jobs in the worker's life (a supervisor then recycles the process)
        self.job_limit: int | None = None
        self.counters = JobCounters()
        self.running = RunningJobs()
        self.allow_pick_jobs = True
        self.main_task: asyncio.Task[None] | None = None
        self._pacer = Pacer(self.poll_delay_s)
        self._shutdown = Shutdown(self.running, self.counters, self._pacer.wake)
        self._stop = self._shutdown.state
        self._outages = RedisOutages()
        self._leases = LeaseKeeper(lambda held: self.scripts.refresh(held), self.lease_ms / 1000,
                                   self.running.lease_lost, stop_unleased=stop_unleased_jobs)  # fmt: skip
        self._settler = SettleBatcher(self._write_settlements, self._left,
                                      on_transient=lambda e, s: self._outages.failed('settle', e, s),
                                      on_written=lambda: self._outages.succeeded('settle'))  # fmt: skip
        # only running jobs can be aborted: the abort set is read at most every poll_delay (within 50 ms to 0.5 s)
        abort_poll_s = min(max(self.poll_delay_s, 0.05), 0.5)
        self._aborts = AbortWatcher(self.running, lambda: self.scripts.requested_aborts(), abort_poll_s)
        counts = lambda: (self.jobs_complete, self.jobs_failed, self.jobs_retried, len(self.running))  # noqa: E731
        self._health = HealthRecorder(self.health_check_key, self.queue_name, self.health_check_interval, counts)
        self._closed = False
        self._background = BackgroundTasks()
        self._waker: WakeListener | None = None
        self._scripts: WorkerScripts | None = None  # these two once connected (main())
        self._intake: Intake | None = None

    @property
    def pool(self) -> ArqRedis:
        if self._pool is None:
            raise RuntimeError('the worker has no Redis pool yet: call main() first')
        return self._pool

    @property
    def jobs_ongoing(self) -> int:
        return len(self.running)

    @property
    def tasks(self) -> dict[str, asyncio.Task[None]]:
        """arq's registry of running jobs (job id -> its task), rebuilt from `running` on each read."""
        return {job.job_id: job.task for job in self.running if job.task is not None}

    @property
    def job_tasks(self) -> dict[str, asyncio.Task[Any]]:
        return {job.job_id: job.function_task for job in self.running if job.function_task is not None}

    @property
    def held_job_ids(self) -> frozenset[str]:
        return frozenset(self._leases.held)

    @property
    def redis_error(self) -> str | None:
        """The Redis error this worker is meeting now (in its loop or its settles), or None."""
        return self._outages.error

    @property
    def claim_pending(self) -> bool:
        """A claim's reply is awaited (or was lost, and the next claim recovers its jobs)."""
        return self._intake is not None and self._intake.claimer.pending

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
        """Run `async_run`, then raise FailedJobs if any job failed; returns the number of completed jobs."""
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
        await self._connect()
        logger.info('Starting worker for %d functions: %s', len(self.functions), ', '.join(self.functions))
        await log_redis_info(self.pool, logger.info)
        self.ctx['redis'] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        self.observer.ready()
        self._waker = WakeListener(self.pool, self.queue_name, self._pacer.wake, lambda: self._free_slots() > 0,
                                   lambda: self._pacer.sleeping)  # fmt: skip
        self._pacer.on_sleep = self._waker.recheck
        with signal_handlers(self.handle_signals, self.handle_sig):
            self._background.start(self._leases.run(), self._waker.run())
            try:
                await self._poll_loop()
                await self._wait_for_jobs()
            finally:
                self._waker.stopped = True
                await self._background.stop()
                self.scripts.disconnect()  # a worker nobody closes leaves no socket behind (close() reconnects)

    async def _connect(self) -> None:
        if self._pool is None:
            self._pool = await create_pool(
                self.redis_settings, job_serializer=self.job_serializer, job_deserializer=self.job_deserializer,
                default_queue_name=self.queue_name, expires_extra_ms=self.expires_extra_ms,
            )  # fmt: skip
        self._scripts = scripts = WorkerScripts(self.pool, self.queue_name, self.worker_id, self.lease_ms)
        settings = JobSettings(**{name: getattr(self, name) for name in inspect.signature(JobSettings).parameters})
        runner = JobRunner(settings, self.pool, self._settler.settle, self.counters, self.observer,
                           lambda: self._stop.cancelling)  # fmt: skip
        self._intake = Intake(Claimer(scripts, self.max_jobs), runner, self.running, self._leases, self.counters,
                              self.observer, self._pacer, self._turn_after_job)  # fmt: skip

    async def _poll_loop(self) -> None:
        backoff = LoopBackoff(self._outages, 'worker loop')
        while self._shutdown.advance():
            # main() was cancelled, but redis-py swallowed the CancelledError (it can while a connection is set up)
            reraise_if_cancelling()
            try:
                await self._poll_iteration()
            except Exception as e:
                await self._pacer.sleep(backoff.failed(e))
                continue
            backoff.succeeded()
            if self.burst and self._burst_done():
                return
            await self._pacer.sleep(self._next_wait_s())

    async def _poll_iteration(self) -> None:
        """One turn of the loop: claim, aborts, health, cron (arq's name, kept for subclasses and tests)."""
        self._aborts.recancel_stragglers()
        await self._claim_jobs()
        if self.allow_abort_jobs:
            await self._aborts.poll()
        if self.write_health_key:
            await self._health.record(self.pool, asyncio.get_running_loop().time())
        if self.cron_jobs and await self._run_cron():
            # a cron job was just enqueued: a burst worker must not stop before running it
            self.intake.queued = None

    def _burst_done(self) -> bool:
        return 0 <= self.max_burst_jobs <= self.jobs_started or (self.intake.queued == 0 and not self.running)

    def _next_wait_s(self) -> float:
        next_score = self.intake.next_score
        return self._pacer.wait_s(
            free_slots=self._free_slots(), claiming=self._stop.running,
            next_score_in_s=None if next_score is None else (next_score - timestamp_ms()) / 1000,
            drain_left_s=self._stop.seconds_left(asyncio.get_running_loop().time()),
        )  # fmt: skip

    # --- claiming and settling ---

    def _free_slots(self, leaving: int = 0) -> int:
        """Jobs to claim now; `leaving`: running jobs about to leave (their settle is being written)."""
        if not self.allow_pick_jobs or not self._stop.running:
            return 0
        claimer = self._intake.claimer if self._intake else None
        slots = self.max_jobs - len(self.running) + leaving - (claimer.reserved if claimer else 0)
        started = self.jobs_started + (claimer.asking if claimer else 0)  # a pending claim may start that many
        if self.burst and self.max_burst_jobs >= 0:
            slots = min(slots, self.max_burst_jobs - started)
        if self.job_limit is not None:
            slots = min(slots, self.job_limit - started)
        return max(slots, 0)

    def _turn_after_job(self) -> bool:  # a free slot (a busy worker's settles claim for theirs) or no job left
        return not self.running or (len(self.running) < self.max_jobs and self._free_slots() > 0)

    async def _claim_jobs(self) -> None:
        await self.intake.claim(self._free_slots(), read_limit=self.queue_read_limit, check_abort=self.allow_abort_jobs)

    @property
    def scripts(self) -> WorkerScripts:
        """The worker's Redis scripts, as typed calls (once main() has connected)."""
        return _connected(self._scripts)

    @property
    def intake(self) -> Intake:
        return _connected(self._intake)

    async def _write_settlements(self, batch: list[Settlement]) -> SettleReply:
        """Settle, and claim for the slots the batch frees in the same round trip (none while an after_job_end hook
        holds them: it runs after the settle)."""
        want = 0 if self.after_job_end is not None else self._free_slots(leaving=len(batch))
        if want == 0 or not self.intake.claimer.can_refill:
            return await self.scripts.settle(batch, recent_cap=self.recent_outcomes)
        return await self.intake.settle_and_claim(batch, want, recent_cap=self.recent_outcomes,
                                                  read_limit=self.queue_read_limit,
                                                  check_abort=self.allow_abort_jobs)  # fmt: skip

    def _left(self, settlements: list[Settlement]) -> None:
        """These settlements are committed (or were given up): their leases are no longer ours to renew."""
        self.observer.settled([s.job_id for s in settlements if self._leases.drop(s.job_id, s.token)])

    # --- leases, aborts, cron ---

    async def _run_cron(self) -> int:
        """Enqueue the cron jobs that are due; returns how many were enqueued."""
        return await self.run_cron(datetime.now(tz=self.timezone), max(self.poll_delay_s, 0.5))

    async def run_cron(self, n: datetime, delay: float, num_windows: int = 2) -> int:
        """Enqueue the cron jobs due before `n` + `num_windows` × `delay` seconds (arq's signature)."""
        return await enqueue_due(self.pool, self.cron_jobs, self.queue_name, n, delay, num_windows)

    # --- stopping ---

    def start_drain(self, wait_s: float | None = None) -> None:
        """Stop claiming; let running jobs finish within `wait_s` (default: job_completion_wait), then cancel the rest
        (they go back to the queue)."""
        self._shutdown.drain(self.job_completion_wait if wait_s is None else wait_s)

    def stop_now(self) -> None:
        """Cancel running jobs now (they go back to the queue) and return from main()."""
        self._shutdown.stop_now()

    def handle_sig(self, signum: int) -> None:
        """
        SIGINT/SIGTERM: stop claiming and cancel the running jobs (they go back to the queue), or with
        job_completion_wait let them finish first (`handle_sig_wait_for_completion`); a second signal stops at once.
        """
        sig = signal.Signals(signum)
        if not self._stop.running:
            self._stop.reason = sig.name
            logger.info('second %s: stopping now', sig.name)
            self.stop_now()
        elif self.job_completion_wait > 0:
            self.handle_sig_wait_for_completion(signum)
        else:
            self._shutdown.signalled(sig, 'ongoing to cancel')
            self.start_drain()
            # as arq, the main task is cancelled too; but not while a claim's reply is awaited, which would leave its
            # jobs leased and not run until the leases lapse (the loop stops by itself right after the reply)
            if self.main_task is not None and not self.claim_pending:
                self.main_task.cancel()

    def handle_sig_wait_for_completion(self, signum: int) -> None:
        """Stop claiming; let running jobs finish within job_completion_wait, then cancel what is left."""
        self._shutdown.signalled(signal.Signals(signum), 'to be completed')
        self.start_drain()

    async def _wait_for_jobs(self) -> None:
        while tasks := self.running.tasks():
            await asyncio.wait(tasks, timeout=RECANCEL_AFTER_S)
            self._aborts.recancel_stragglers()

    async def close(self) -> None:
        """Wait for running jobs to settle, run on_shutdown, remove our health line and close the pool."""
        closed, self._closed = self._closed, True
        if closed or not self._pool:
            return
        self.stop_now()
        while self.running or self._settler.busy:  # a last settle may bring claimed jobs: they go back at once
            await self._wait_for_jobs()
            await self._settler.close()
        if self._intake is not None:
            with contextlib.suppress(*LoopBackoff.TRANSIENT):
                await self._pool.delete(*self._intake.claimer.record_keys())
        if self.on_shutdown:
            try:
                await self.on_shutdown(self.ctx)
            except Exception:
                logger.exception('on_shutdown hook failed')
        if self.write_health_key:
            await self._health.delete(self._pool)
        if self._scripts is not None:
            self._scripts.disconnect()
        await self._pool.close(close_connection_pool=True)
        self._pool = None

    def __repr__(self) -> str:
        return (
            f'<Worker j_complete={self.jobs_complete} j_failed={self.jobs_failed} j_retried={self.jobs_retried} '
            f'j_ongoing={len(self.running)}>'
        )


def _connected(part: T | None) -> T:
    if part is None:
        raise RuntimeError('the worker is not connected yet: call main() first')
    return part
