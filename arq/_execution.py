"""Running one claimed job: from its payload to a settled outcome (finished with a result, or re-queued).

Split out of worker.py so the poll loop and the job's life read separately. `JobExecution` is a mixin of
`arq.worker.Worker`; the attributes it declares are set by the Worker.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from .constants import keep_cronjob_progress, retry_counter_ttl_s, retry_key_prefix
from .contract import FAILURE, REQUEUE, REQUEUE_GIVE_BACK, SUCCESS, Claim, Settlement
from .functions import keep_result_ms
from .jobs import SerializationError, describe_with_cause, deserialize_job_for_worker, serialize_result
from .typing import SecondsTimedelta
from .utils import args_to_string, ms_to_datetime, timestamp_ms, to_ms, truncate

if TYPE_CHECKING:
    from .connections import ArqRedis
    from .cron import CronJob
    from .jobs import Serializer
    from .worker import Function

logger = logging.getLogger('arq.worker')

# a result this large is still stored, but a warning says it will slow Redis and every client reading it
_LARGE_RESULT_BYTES = 10 * 1024 * 1024


class Retry(RuntimeError):
    """
    Special exception to retry the job (if ``max_retries`` hasn't been reached).

    :param defer: duration to wait before rerunning the job
    """

    def __init__(self, defer: SecondsTimedelta | None = None):
        self.defer_score: int | None = to_ms(defer, 'defer')

    def __repr__(self) -> str:
        return f'<Retry defer {(self.defer_score or 0) / 1000:0.2f}s>'

    def __str__(self) -> str:
        return repr(self)


class JobExecutionFailed(RuntimeError):
    def __eq__(self, other: Any) -> bool:
        if isinstance(other, JobExecutionFailed):
            return self.args == other.args
        return False

    def __hash__(self) -> int:
        return hash(self.args)


class RetryJob(RuntimeError):
    pass


# the published arq pickles these under arq.worker; keep that path so results are readable both ways
for _cls in (Retry, JobExecutionFailed, RetryJob):
    _cls.__module__ = 'arq.worker'


class JobExecution:
    """The job-running half of the Worker."""

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
    job_deserializer: Any
    on_job_start: Any
    on_job_end: Any
    after_job_end: Any
    jobs_complete: int
    jobs_failed: int
    jobs_retried: int
    job_tasks: dict[str, asyncio.Task[Any]]
    aborting_tasks: set[str]
    _shutdown_cancel: bool

    @property
    def pool(self) -> ArqRedis:  # pragma: no cover - provided by Worker
        raise NotImplementedError

    async def _settle(self, settlement: Settlement) -> None:  # pragma: no cover - provided by Worker
        raise NotImplementedError

    def _notify_job_finished(self, function: str, outcome: str, duration_s: float, lag_ms: int) -> None:
        """
        A job ran: outcome is complete, failed, retried or aborted; lag is its start minus its score.

        A no-op here; a supervisor overrides it to export per-function metrics.
        """

    async def run_claimed_job(self, claim: Claim) -> None:
        """Run a job whose lease we hold and settle it; never raises (a bug here must not kill the worker)."""
        try:
            await self._run_claimed_job(claim)
        except Exception:
            logger.exception('unexpected error handling job %s; re-queueing it', claim.job_id, extra=_job(claim.job_id))
            await self._settle(Settlement(claim.job_id, REQUEUE, claim.token, score=claim.score))

    async def _run_claimed_job(self, claim: Claim) -> None:
        job_id, start_ms = claim.job_id, timestamp_ms()
        if claim.payload is None:
            logger.warning('job %s expired', job_id, extra=_job(job_id))
            self.jobs_failed += 1
            await self._fail_early(claim, '<unknown>', (), {}, 0, JobExecutionFailed('job expired'), start_ms)
            return
        try:
            function_name, args, kwargs, enqueue_job_try, enqueue_time_ms = deserialize_job_for_worker(
                claim.payload, deserializer=self.job_deserializer
            )
        except SerializationError as e:
            logger.error('deserializing job %s failed: %s', job_id, describe_with_cause(e), extra=_job(job_id))
            self.jobs_failed += 1
            await self._fail_early(claim, '<unknown>', (), {}, 0, e, start_ms)
            return

        if claim.aborted:
            t = (timestamp_ms() - start_ms) / 1000
            logger.info('%6.2fs ⊘ %s:%s aborted before start', t, job_id, function_name, extra=_job(job_id))
            self.jobs_failed += 1
            await self._fail_early(claim, function_name, args, kwargs, enqueue_time_ms, asyncio.CancelledError())
            return

        function = self.functions.get(function_name)
        if function is None:
            logger.warning('job %s, function %r not found', job_id, function_name, extra=_job(job_id))
            self.jobs_failed += 1
            failure = JobExecutionFailed(f'function {function_name!r} not found')
            await self._fail_early(claim, function_name, args, kwargs, enqueue_time_ms, failure, start_ms)
            return

        is_cron = hasattr(function, 'next_run')
        ref = function_name if is_cron else f'{job_id}:{function_name}'
        if enqueue_job_try and enqueue_job_try > claim.job_try:
            # the job was re-enqueued with an explicit try count: carry it on (arq #353)
            claim.job_try = enqueue_job_try
            await self.pool.setex(retry_key_prefix + job_id, retry_counter_ttl_s, enqueue_job_try)

        max_tries = self.max_tries if function.max_tries is None else function.max_tries
        if claim.job_try > max_tries:
            t = (timestamp_ms() - enqueue_time_ms) / 1000
            logger.warning('%6.2fs ! %s max retries %d exceeded', t, ref, max_tries, extra=_job(job_id))
            self.jobs_failed += 1
            failure = JobExecutionFailed(f'max {max_tries} retries exceeded')
            await self._fail_early(claim, function_name, args, kwargs, enqueue_time_ms, failure, function=function)
            return

        await self._execute(claim, function, ref, args, kwargs, enqueue_time_ms)

    async def _execute(
        self,
        claim: Claim,
        function: Function | CronJob,
        ref: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        enqueue_time_ms: int,
    ) -> None:
        job_id, score = claim.job_id, claim.score
        ctx = {
            **self.ctx,
            'job_id': job_id,
            'job_try': claim.job_try,
            'enqueue_time': ms_to_datetime(enqueue_time_ms),
            'score': score,
        }
        start_ms = timestamp_ms()
        hook_error = await self._call_hook('on_job_start', self.on_job_start, ctx, job_id)

        if logger.isEnabledFor(logging.INFO):
            extra = f' try={claim.job_try}' if claim.job_try > 1 else ''
            if start_ms - score > 1200:
                extra += f' delayed={(start_ms - score) / 1000:0.2f}s'
            delay_s = (start_ms - enqueue_time_ms) / 1000
            logger.info('%6.2fs → %s(%s)%s', delay_s, ref, args_to_string(args, kwargs), extra, extra=_job(job_id))

        timeout_s = self.job_timeout_s if function.timeout_s is None else function.timeout_s
        outcome: BaseException | None = hook_error
        result: Any = None
        if hook_error is None:
            task = asyncio.create_task(_call_with_timeout(function, ctx, args, kwargs, timeout_s))
            self.job_tasks[job_id] = task
            try:
                await asyncio.wait({task})
            finally:
                del self.job_tasks[job_id]
            if task.cancelled():
                outcome = asyncio.CancelledError()
            else:
                outcome = task.exception()
                if outcome is None:
                    result = task.result()
        finished_ms = timestamp_ms()

        settlement, success = self._classify(claim, function, ref, outcome, result, start_ms, finished_ms)
        label = _outcome_label(settlement, success, outcome)
        self._notify_job_finished(function.name, label, (finished_ms - start_ms) / 1000, start_ms - score)
        await self._call_hook('on_job_end', self.on_job_end, ctx, job_id)
        if settlement.finishes:
            keep_ms = self._keep_result_ms(function)
            if keep_ms is not None:
                stored = outcome if not success else result
                settlement.result = self._result_payload(
                    claim, function.name, args, kwargs, enqueue_time_ms, success, stored, start_ms, finished_ms, ref
                )
                settlement.result_px = keep_ms
        if hasattr(function, 'next_run'):
            settlement.tombstone_ms = keep_cronjob_progress * 1000
        await self._settle(settlement)
        self.aborting_tasks.discard(job_id)  # an abort that raced the job's own end
        await self._call_hook('after_job_end', self.after_job_end, ctx, job_id)

    def _classify(
        self,
        claim: Claim,
        function: Function | CronJob,
        ref: str,
        outcome: BaseException | None,
        result: Any,
        start_ms: int,
        finished_ms: int,
    ) -> tuple[Settlement, bool]:
        """What to do with a job after it ran: (settlement, success). Logs arq's line for the outcome."""
        job_id = claim.job_id
        t = (finished_ms - start_ms) / 1000
        if outcome is None:
            if logger.isEnabledFor(logging.INFO):
                result_str = '' if result is None or not self.log_results else truncate(_safe_repr(result))
                logger.info('%6.2fs ← %s ● %s', t, ref, result_str, extra=_job(job_id))
            self.jobs_complete += 1
            return Settlement(job_id, SUCCESS, claim.token, score=claim.score), True
        if self.retry_jobs and isinstance(outcome, Retry):
            logger.info(
                '%6.2fs ↻ %s retrying job in %0.2fs', t, ref, (outcome.defer_score or 0) / 1000, extra=_job(job_id)
            )
            incr = outcome.defer_score + (timestamp_ms() - claim.score) if outcome.defer_score else 0
            self.jobs_retried += 1
            return Settlement(job_id, REQUEUE, claim.token, score_incr=incr, score=claim.score), False
        if isinstance(outcome, asyncio.CancelledError) and job_id in self.aborting_tasks:
            logger.info('%6.2fs ⊘ %s aborted', t, ref, extra=_job(job_id))
            self.aborting_tasks.discard(job_id)
            self.jobs_failed += 1
            return Settlement(job_id, FAILURE, claim.token, score=claim.score), False
        if self.retry_jobs and isinstance(outcome, asyncio.CancelledError | RetryJob):
            logger.info('%6.2fs ↻ %s cancelled, will be run again', t, ref, extra=_job(job_id))
            self.jobs_retried += 1
            # a shutdown cancelled the job through no fault of its own: give back the try it used (arq #267)
            give_back = isinstance(outcome, asyncio.CancelledError) and self._shutdown_cancel
            op = REQUEUE_GIVE_BACK if give_back else REQUEUE
            return Settlement(job_id, op, claim.token, score=claim.score), False
        exc_extra = getattr(outcome, 'extra', None)
        if callable(exc_extra):
            try:
                exc_extra = exc_extra()
            except Exception:
                exc_extra = None
        logger.error(
            '%6.2fs ! %s failed, %s: %s',
            t,
            ref,
            outcome.__class__.__name__,
            outcome,
            extra={'extra': exc_extra, 'job_id': job_id},
            exc_info=outcome,
        )
        self.jobs_failed += 1
        return Settlement(job_id, FAILURE, claim.token, score=claim.score), False

    async def _fail_early(
        self,
        claim: Claim,
        function_name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        enqueue_time_ms: int,
        failure: BaseException,
        start_ms: int | None = None,
        function: Function | CronJob | None = None,
    ) -> None:
        """Fail a job that never ran. Unlike arq, honours the function's keep_result and keep_result_forever."""
        if function is None:
            function = self.functions.get(function_name)
        start_ms = start_ms or timestamp_ms()
        settlement = Settlement(claim.job_id, FAILURE, claim.token, score=claim.score)
        keep_ms = self._keep_result_ms(function)
        if keep_ms is not None:
            ref = f'{claim.job_id}:{function_name}'
            settlement.result = self._result_payload(
                claim, function_name, args, kwargs, enqueue_time_ms, False, failure, start_ms, timestamp_ms(), ref
            )
            settlement.result_px = keep_ms
        await self._settle(settlement)

    def _keep_result_ms(self, function: Function | CronJob | None) -> int | None:
        return keep_result_ms(self.keep_result_s, self.keep_result_forever, function)

    def _result_payload(
        self,
        claim: Claim,
        function_name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        enqueue_time_ms: int,
        success: bool,
        result: Any,
        start_ms: int,
        finished_ms: int,
        ref: str,
    ) -> bytes:
        payload = serialize_result(
            function_name,
            args,
            kwargs,
            claim.job_try,
            enqueue_time_ms,
            success,
            result,
            start_ms,
            finished_ms,
            ref,
            self.queue_name,
            claim.job_id,
            serializer=self.job_serializer,
        )
        if payload is None:
            return b''
        if len(payload) > _LARGE_RESULT_BYTES:
            logger.warning('result of %s is %d bytes: large results slow Redis down', ref, len(payload))
        return payload

    async def _call_hook(self, name: str, hook: Any, ctx: dict[Any, Any], job_id: str) -> BaseException | None:
        """Run a job hook; an exception is logged with the job id and returned, never raised (arq crashed here)."""
        if hook is None:
            return None
        try:
            await hook(ctx)
        except Exception as e:
            logger.exception(
                '%s hook failed for job %s: %s: %s', name, job_id, e.__class__.__name__, e, extra=_job(job_id)
            )
            return e
        return None


async def _call_with_timeout(
    function: Function | CronJob, ctx: dict[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any], timeout_s: Any
) -> Any:
    async with asyncio.timeout(timeout_s):
        return await function.coroutine(ctx, *args, **kwargs)


def _job(job_id: str) -> dict[str, str]:
    """`extra` for a job's log records: structured log formatters (arq-supervise --log-format json) show the id."""
    return {'job_id': job_id}


def _outcome_label(settlement: Settlement, success: bool, outcome: BaseException | None) -> str:
    if success:
        return 'complete'
    if not settlement.finishes:
        return 'retried'
    if isinstance(outcome, asyncio.CancelledError):
        return 'aborted'
    return 'failed'


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as e:
        return f'<repr failed: {e.__class__.__name__}>'
