"""What becomes of a job that ran: its settlement, arq's log line for it, and the result it leaves.

Pure decisions, apart from the log line: the runner (arq.runner) counts, reports and settles.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .contract import FAILURE, REQUEUE, REQUEUE_GIVE_BACK, SUCCESS, Claim, Settlement
from .errors import Retry, RetryJob
from .jobs import serialize_result
from .logs import log_job_line
from .observer import ABORTED, COMPLETE, FAILED, RETRIED
from .utils import timestamp_ms, truncate

if TYPE_CHECKING:
    from .cron import CronJob
    from .functions import Function
    from .jobs import Serializer

logger = logging.getLogger('arq.worker')

# a result this large is still stored, but a warning says it will slow Redis and every client reading it
_LARGE_RESULT_BYTES = 10 * 1024 * 1024


@dataclass(slots=True)
class JobPayload:
    """A job as its payload describes it (placeholders for what a payload that could not be read lacks)."""

    job_id: str
    function_name: str = '<unknown>'
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    enqueue_time_ms: int = 0
    function: Function | CronJob | None = None
    #: the try count the payload carries (a job re-enqueued with one)
    enqueue_job_try: int | None = None

    @property
    def is_cron(self) -> bool:
        return hasattr(self.function, 'next_run')

    @property
    def ref(self) -> str:
        """How arq's log lines name the job: a cron job by its name, others as `<id>:<function>`."""
        return self.function_name if self.is_cron else f'{self.job_id}:{self.function_name}'


@dataclass(slots=True)
class Verdict:
    settlement: Settlement
    #: observer.COMPLETE, FAILED, RETRIED or ABORTED
    label: str

    @property
    def success(self) -> bool:
        return self.label == COMPLETE


@dataclass(slots=True)  # not frozen: one is made per job, and a frozen dataclass's __init__ costs several times more
class Circumstances:
    """What, besides the job's own outcome, decides its fate."""

    retry_jobs: bool
    log_results: bool
    #: an abort of this job was requested (a cancellation is then "aborted")
    aborting: bool
    #: a shutdown cancelled the running jobs (a cancellation then gives its try back)
    shutdown_cancel: bool


def classify(
    claim: Claim, ref: str, outcome: BaseException | None, result: Any, elapsed_s: float, why: Circumstances
) -> Verdict:
    """What to do with a job after it ran. Logs arq's line for the outcome."""
    job_id, t = claim.job_id, elapsed_s
    if outcome is None:
        if logger.isEnabledFor(logging.INFO):
            result_str = '' if result is None or not why.log_results else truncate(_safe_repr(result))
            log_job_line(logger, '%6.2fs ← %s ● %s', t, ref, result_str, job_id=job_id)
        return Verdict(Settlement(job_id, SUCCESS, claim.token, score=claim.score), COMPLETE)
    if why.retry_jobs and isinstance(outcome, Retry):
        defer_s = (outcome.defer_score or 0) / 1000
        logger.info('%6.2fs ↻ %s retrying job in %0.2fs', t, ref, defer_s, extra=job_extra(job_id))
        incr = outcome.defer_score + (timestamp_ms() - claim.score) if outcome.defer_score else 0
        return Verdict(Settlement(job_id, REQUEUE, claim.token, score_incr=incr, score=claim.score), RETRIED)
    if isinstance(outcome, asyncio.CancelledError) and why.aborting:
        logger.info('%6.2fs ⊘ %s aborted', t, ref, extra=job_extra(job_id))
        return Verdict(Settlement(job_id, FAILURE, claim.token, score=claim.score), ABORTED)
    if why.retry_jobs and isinstance(outcome, asyncio.CancelledError | RetryJob):
        logger.info('%6.2fs ↻ %s cancelled, will be run again', t, ref, extra=job_extra(job_id))
        # a shutdown cancelled the job through no fault of its own: give back the try it used (arq #267)
        give_back = isinstance(outcome, asyncio.CancelledError) and why.shutdown_cancel
        op = REQUEUE_GIVE_BACK if give_back else REQUEUE
        return Verdict(Settlement(job_id, op, claim.token, score=claim.score), RETRIED)
    _log_failure(job_id, ref, outcome, t)
    return Verdict(Settlement(job_id, FAILURE, claim.token, score=claim.score), FAILED)


def _log_failure(job_id: str, ref: str, outcome: BaseException, t: float) -> None:
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


def result_payload(
    job: JobPayload,
    job_try: int,
    success: bool,
    result: Any,
    times_ms: tuple[int, int],
    queue_name: str,
    serializer: Serializer | None,
) -> bytes:
    """The stored result, in arq's format (b'' when it cannot be serialized: arq.jobs logs why)."""
    start_ms, finished_ms = times_ms
    payload = serialize_result(
        job.function_name,
        job.args,
        job.kwargs,
        job_try,
        job.enqueue_time_ms,
        success,
        result,
        start_ms,
        finished_ms,
        job.ref,
        queue_name,
        job.job_id,
        serializer=serializer,
    )
    if payload is None:
        return b''
    if len(payload) > _LARGE_RESULT_BYTES:
        logger.warning('result of %s is %d bytes: large results slow Redis down', job.ref, len(payload))
    return payload


def job_extra(job_id: str) -> dict[str, str]:
    """`extra` for a job's log records: structured log formatters (arq-supervise --log-format json) show the id."""
    return {'job_id': job_id}


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as e:
        return f'<repr failed: {e.__class__.__name__}>'
