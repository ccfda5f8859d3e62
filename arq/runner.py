"""Running one claimed job: from its payload to a settled outcome (finished with a result, or re-queued).

The runner is handed what it needs (settings, the pool, the settle function, the counters, the observer) instead of
reaching into the worker, so it can be built and driven on its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from .constants import keep_cronjob_progress, retry_counter_ttl_s, retry_key_prefix
from .contract import FAILURE, REQUEUE, Settlement
from .deadlines import Deadlines
from .errors import JobExecutionFailed
from .functions import keep_result_ms
from .jobs import SerializationError, describe_with_cause, deserialize_job_for_worker
from .logs import log_job_line
from .observer import ABORTED, COMPLETE, FAILED, RETRIED, WorkerObserver
from .outcome import Circumstances, JobPayload, Verdict, classify, job_extra, result_payload
from .utils import args_to_string, ms_to_datetime, timestamp_ms

if TYPE_CHECKING:
    from .connections import ArqRedis
    from .cron import CronJob
    from .functions import Function
    from .jobs import Deserializer, Serializer
    from .running import RunningJob
    from .typing import StartupShutdown

logger = logging.getLogger('arq.worker')

Settle = Callable[[Settlement], Awaitable[None]]
#: how a job function ended: (its exception, or None and its result)
Outcome = tuple[BaseException | None, Any]


@dataclass
class JobSettings:
    """The worker settings a job's run depends on."""

    queue_name: str
    functions: dict[str, Function | CronJob]
    ctx: dict[Any, Any]
    retry_jobs: bool
    keep_result_s: float
    keep_result_forever: bool
    max_tries: int
    job_timeout_s: float | None
    log_results: bool
    job_serializer: Serializer | None
    job_deserializer: Deserializer | None
    on_job_start: StartupShutdown | None
    on_job_end: StartupShutdown | None
    after_job_end: StartupShutdown | None


@dataclass
class JobCounters:
    complete: int = 0
    failed: int = 0
    retried: int = 0
    started: int = 0

    def count(self, label: str) -> None:
        if label == COMPLETE:
            self.complete += 1
        elif label == RETRIED:
            self.retried += 1
        else:
            self.failed += 1


class CounterField:
    """A Worker's `jobs_*` attribute (arq has them), kept in the JobCounters the runner shares."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.field = name.removeprefix('jobs_')

    def __get__(self, worker: Any, owner: type | None = None) -> int:
        return cast(int, getattr(worker.counters, self.field))

    def __set__(self, worker: Any, value: int) -> None:
        setattr(worker.counters, self.field, value)


@dataclass
class Refusal:
    """A job that fails without running, and why."""

    job: JobPayload
    failure: BaseException
    #: when the worker took it up (None: now)
    start_ms: int | None = None


class JobRunner:
    """
    :param cancelling: whether a shutdown has cancelled the running jobs (a job about to start then does not, and
      a cancelled job gives its try back)
    """

    def __init__(
        self,
        settings: JobSettings,
        pool: ArqRedis,
        settle: Settle,
        counters: JobCounters,
        observer: WorkerObserver,
        cancelling: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.pool = pool
        self._settle = settle
        self.counters = counters
        self.observer = observer
        self._cancelling = cancelling
        self._deadlines = Deadlines()

    async def run(self, job: RunningJob) -> None:
        """Run a job whose lease we hold and settle it; never raises (a bug here must not kill the worker)."""
        claim = job.claim
        try:
            await self._run(job)
        except Exception:
            logger.exception('unexpected error handling job %s; re-queueing it', job.job_id,
                             extra=job_extra(job.job_id))  # fmt: skip
            await self._settle(Settlement(claim.job_id, REQUEUE, claim.token, score=claim.score))

    async def _run(self, job: RunningJob) -> None:
        decoded = self._decode(job, timestamp_ms())
        if isinstance(decoded, Refusal):
            await self._refuse(job, decoded)
            return
        await self._carry_try(job, decoded)
        refusal = self._check_tries(job, decoded)
        if refusal is not None:
            await self._refuse(job, refusal)
            return
        await self._execute(job, decoded)

    def _decode(self, job: RunningJob, start_ms: int) -> JobPayload | Refusal:
        """The job's payload and function, or why it cannot run (each case logged as arq logs it)."""
        claim, job_id = job.claim, job.job_id
        if claim.payload is None:
            logger.warning('job %s expired', job_id, extra=job_extra(job_id))
            return Refusal(JobPayload(job_id), JobExecutionFailed('job expired'), start_ms)
        try:
            name, args, kwargs, enqueue_job_try, enqueue_time_ms = deserialize_job_for_worker(
                claim.payload, deserializer=self.settings.job_deserializer
            )
        except SerializationError as e:
            logger.error('deserializing job %s failed: %s', job_id, describe_with_cause(e), extra=job_extra(job_id))
            return Refusal(JobPayload(job_id), e, start_ms)
        payload = JobPayload(job_id, name, args, kwargs, enqueue_time_ms, self.settings.functions.get(name))
        payload.enqueue_job_try = enqueue_job_try
        if claim.aborted:
            t = (timestamp_ms() - start_ms) / 1000
            logger.info('%6.2fs ⊘ %s:%s aborted before start', t, job_id, name, extra=job_extra(job_id))
            return Refusal(payload, asyncio.CancelledError())
        if payload.function is None:
            logger.warning('job %s, function %r not found', job_id, name, extra=job_extra(job_id))
            return Refusal(payload, JobExecutionFailed(f'function {name!r} not found'), start_ms)
        return payload

    async def _carry_try(self, job: RunningJob, payload: JobPayload) -> None:
        """A job re-enqueued with an explicit try count carries it on (arq #353)."""
        if payload.enqueue_job_try and payload.enqueue_job_try > job.claim.job_try:
            job.claim.job_try = payload.enqueue_job_try
            await self.pool.setex(retry_key_prefix + job.job_id, retry_counter_ttl_s, job.claim.job_try)

    def _check_tries(self, job: RunningJob, payload: JobPayload) -> Refusal | None:
        function = payload.function
        assert function is not None
        max_tries = self.settings.max_tries if function.max_tries is None else function.max_tries
        if job.claim.job_try <= max_tries:
            return None
        t = (timestamp_ms() - payload.enqueue_time_ms) / 1000
        logger.warning('%6.2fs ! %s max retries %d exceeded', t, payload.ref, max_tries, extra=job_extra(job.job_id))
        return Refusal(payload, JobExecutionFailed(f'max {max_tries} retries exceeded'))

    async def _refuse(self, job: RunningJob, refusal: Refusal) -> None:
        """Fail a job that never ran. Unlike arq, honours the function's keep_result and keep_result_forever."""
        payload, claim = refusal.job, job.claim
        label = ABORTED if isinstance(refusal.failure, asyncio.CancelledError) else FAILED
        self.counters.failed += 1
        self.observer.job_failed_early(payload.function_name if payload.function else None, label)
        settlement = Settlement(claim.job_id, FAILURE, claim.token, score=claim.score)
        keep_ms = self._keep_result_ms(payload.function)
        if keep_ms is not None:
            times = (refusal.start_ms or timestamp_ms(), timestamp_ms())
            settlement.result = self._result(payload, claim.job_try, False, refusal.failure, times)
            settlement.result_px = keep_ms
        await self._settle(settlement)

    async def _execute(self, job: RunningJob, payload: JobPayload) -> None:
        claim, s = job.claim, self.settings
        ctx = {**s.ctx, 'job_id': claim.job_id, 'job_try': claim.job_try,
               'enqueue_time': ms_to_datetime(payload.enqueue_time_ms), 'score': claim.score}  # fmt: skip
        start_ms = timestamp_ms()
        outcome: BaseException | None = None
        if s.on_job_start is not None:
            outcome = await self._hook('on_job_start', s.on_job_start, ctx, claim.job_id)
        if logger.isEnabledFor(logging.INFO):
            _log_start(job, payload, start_ms)
        result: Any = None
        if outcome is None:
            outcome, result = await self._call(job, payload, ctx)
        finished_ms = timestamp_ms()
        verdict = self._verdict(job, payload, outcome, result, (finished_ms - start_ms) / 1000)
        self.observer.job_finished(payload.function_name, verdict.label, (finished_ms - start_ms) / 1000,
                                   start_ms - claim.score)  # fmt: skip
        if s.on_job_end is not None:
            await self._hook('on_job_end', s.on_job_end, ctx, claim.job_id)
        settlement = verdict.settlement
        keep_ms = self._keep_result_ms(payload.function) if settlement.finishes else None
        if keep_ms is not None:
            stored = result if verdict.success else outcome
            settlement.result = self._result(payload, claim.job_try, verdict.success, stored, (start_ms, finished_ms))
            settlement.result_px = keep_ms
        if payload.is_cron:
            settlement.tombstone_ms = keep_cronjob_progress * 1000
        await self._settle(settlement)
        if s.after_job_end is not None:
            await self._hook('after_job_end', s.after_job_end, ctx, claim.job_id)

    async def _call(self, job: RunningJob, payload: JobPayload, ctx: dict[Any, Any]) -> Outcome:
        """Run the job function in the job's own task: an abort or a shutdown cancels that task while the function
        runs (RunningJob.cancel), and those cancellations are taken back here, so the settle and the hooks still run.
        (A task of its own per function, as before, cost a task and an asyncio.wait per job.)"""
        if self._cancelling():  # a shutdown cancelled the running jobs while this one's on_job_start hook ran
            return asyncio.CancelledError(), None
        function = payload.function
        assert function is not None
        timeout_s = self.settings.job_timeout_s if function.timeout_s is None else function.timeout_s
        task = cast(asyncio.Task[None], asyncio.current_task())
        job.in_function = True
        self._deadlines.watch(job, timeout_s)
        try:
            outcome: Outcome = None, await function.coroutine(ctx, *payload.args, **payload.kwargs)
        except BaseException as e:  # noqa: B036 - whatever the function raised is its outcome, CancelledError too
            outcome = e, None
        finally:
            self._deadlines.forget(job, timeout_s)
            job.in_function = False
        if job.timed_out and job.cancels == 1 and isinstance(outcome[0], asyncio.CancelledError):
            outcome = TimeoutError(), None  # cancelled by its timeout alone, as asyncio.timeout would say
        for _ in range(job.take_cancels()):
            task.uncancel()
        if task.cancelling():  # cancelled by someone else than this worker: let it through
            raise asyncio.CancelledError()
        if isinstance(outcome[0], (KeyboardInterrupt, SystemExit)):
            raise outcome[0]
        return outcome

    def _verdict(
        self, job: RunningJob, payload: JobPayload, outcome: BaseException | None, result: Any, elapsed_s: float
    ) -> Verdict:
        why = Circumstances(self.settings.retry_jobs, self.settings.log_results, job.aborting, self._cancelling())
        verdict = classify(job.claim, payload.ref, outcome, result, elapsed_s, why)
        self.counters.count(verdict.label)
        return verdict

    def _keep_result_ms(self, function: Function | CronJob | None) -> int | None:
        return keep_result_ms(self.settings.keep_result_s, self.settings.keep_result_forever, function)

    def _result(self, payload: JobPayload, job_try: int, success: bool, result: Any, times: tuple[int, int]) -> bytes:
        s = self.settings
        return result_payload(payload, job_try, success, result, times, s.queue_name, s.job_serializer)

    async def _hook(self, name: str, hook: Any, ctx: dict[Any, Any], job_id: str) -> BaseException | None:
        """Run a job hook; an exception is logged with the job id and returned, never raised (arq crashed here).
        The caller skips a hook that is None (no coroutine made per job for nothing)."""
        try:
            await hook(ctx)
        except Exception as e:
            logger.exception('%s hook failed for job %s: %s: %s', name, job_id, e.__class__.__name__, e,
                             extra=job_extra(job_id))  # fmt: skip
            return e
        return None


def _log_start(job: RunningJob, payload: JobPayload, start_ms: int) -> None:
    claim = job.claim
    extra = f' try={claim.job_try}' if claim.job_try > 1 else ''
    if start_ms - claim.score > 1200:
        extra += f' delayed={(start_ms - claim.score) / 1000:0.2f}s'
    delay_s = (start_ms - payload.enqueue_time_ms) / 1000
    args = args_to_string(payload.args, payload.kwargs)
    log_job_line(logger, '%6.2fs → %s(%s)%s', delay_s, payload.ref, args, extra, job_id=claim.job_id)
