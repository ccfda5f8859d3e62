"""The three things the dashboard can change, each logged: abort a job, retry a failed one, delete a result.

Abort is arq's own request (`arq:abort`, a deferred job made due at once): a worker with `allow_abort_jobs` cancels
the job if it is running and fails it as aborted if it has not started. Retry enqueues the failed job's function
again with the same arguments, under a new id or (after its result is deleted) the same one; it refuses when the
arguments are not plain data, since the dashboard never builds user objects. Delete removes a result and its
entries in the recent-outcomes index.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis
from arq.constants import result_key_prefix

from .detail import job_detail, load_call
from .model import QueueSource, RedisClient
from .reading import recent_key

logger = logging.getLogger('arq_supervise.dashboard')

_ENQUEUE_OPTIONS = frozenset(
    {'function', '_job_id', '_queue_name', '_defer_until', '_defer_by', '_expires', '_job_try'}
)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str
    job_id: str  # the job to show next (a retry under a new id shows the new job)


def _log(action: str, job_id: str, outcome: Outcome, who: str) -> None:
    logger.info('dashboard action=%s job_id=%s ok=%s by=%s result=%r', action, job_id, outcome.ok, who, outcome.message)


async def abort(redis: RedisClient, sources: list[QueueSource], job_id: str, who: str) -> Outcome:
    detail = await job_detail(redis, sources, job_id)
    if detail.queue is None or detail.status not in ('queued', 'deferred', 'in progress'):
        outcome = Outcome(False, f'not aborted: the job is {detail.status}', job_id)
    else:
        await ArqRedis(connection_pool=redis.connection_pool).request_abort(job_id, detail.queue)
        outcome = Outcome(True, f'abort requested for a job that was {detail.status}', job_id)
    _log('abort', job_id, outcome, who)
    return outcome


async def retry(redis: RedisClient, sources: list[QueueSource], job_id: str, same_id: bool, who: str) -> Outcome:
    detail = await job_detail(redis, sources, job_id)
    source = next((s for s in sources if s.name == detail.queue), None)
    call = load_call(await redis.get(result_key_prefix + job_id), source) if source else None
    if detail.status != 'failed' or source is None:
        outcome = Outcome(False, f'not retried: the job is {detail.status}, not failed on a queue shown here', job_id)
    elif call is None or _ENQUEUE_OPTIONS & call[2].keys():
        outcome = Outcome(False, 'not retried: its arguments are not plain data; enqueue it again from code', job_id)
    else:
        outcome = await _enqueue_again(redis, source, job_id, call, same_id)
    _log('retry', job_id, outcome, who)
    return outcome


async def _enqueue_again(
    redis: RedisClient, source: QueueSource, job_id: str, call: tuple[str, tuple[Any, ...], dict[str, Any]],
    same_id: bool,
) -> Outcome:  # fmt: skip
    pool = ArqRedis(
        connection_pool=redis.connection_pool, job_serializer=source.serializer, job_deserializer=source.deserializer
    )
    function, args, kwargs = call
    if same_id:  # arq refuses an id whose result still exists
        await _delete_result(redis, [source], job_id)
    job = await pool.enqueue_job(function, *args, _job_id=job_id if same_id else None, _queue_name=source.name,
                                 **kwargs)  # fmt: skip
    if job is None:
        return Outcome(False, 'not retried: a job with this id exists again', job_id)
    return Outcome(True, f'enqueued again as {job.job_id}', job.job_id)


async def delete_result(redis: RedisClient, sources: list[QueueSource], job_id: str, who: str) -> Outcome:
    detail = await job_detail(redis, sources, job_id)
    if detail.status not in ('complete', 'failed'):
        outcome = Outcome(False, f'nothing deleted: the job is {detail.status}', job_id)
    else:
        await _delete_result(redis, sources, job_id)
        outcome = Outcome(True, 'result deleted', job_id)
    _log('delete', job_id, outcome, who)
    return outcome


async def _delete_result(redis: RedisClient, sources: list[QueueSource], job_id: str) -> None:
    pipe = redis.pipeline(transaction=True)
    pipe.delete(result_key_prefix + job_id)
    for source in sources:
        pipe.zrem(recent_key(source.name, 'complete'), job_id)
        pipe.zrem(recent_key(source.name, 'failed'), job_id)
    await pipe.execute()
