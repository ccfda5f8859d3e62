"""Turning an enqueue call into what the enqueue scripts write, for one job (`enqueue_job`) or many (`enqueue_jobs`).

The wire format is arq's: the job key (PSETEX payload), the queue entry (ZADD score), uniqueness per id (no job and
no result with that id), plus our nudge for idle workers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

from .constants import job_key_prefix, result_key_prefix, wake_list_prefix
from .jobs import Serializer, serialize_job
from .utils import timestamp_ms, to_ms, to_unix_ms

#: jobs sent in one script call by enqueue_jobs
BULK_CHUNK = 1000


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ cost more per job than the rest of a bulk enqueue
class JobCall:
    """One job for :meth:`arq.connections.ArqRedis.enqueue_jobs`, with `enqueue_job`'s options.

    ``JobCall.of('resize', 'cat.png', width=640, _job_id='resize-cat')`` reads like the `enqueue_job` call it stands
    for.
    """

    function: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    job_id: str | None = None
    queue_name: str | None = None
    defer_until: datetime | None = None
    defer_by: None | int | float | timedelta = None
    expires: None | int | float | timedelta = None
    job_try: int | None = None

    @classmethod
    def of(
        cls,
        function: str,
        *args: Any,
        _job_id: str | None = None,
        _queue_name: str | None = None,
        _defer_until: datetime | None = None,
        _defer_by: None | int | float | timedelta = None,
        _expires: None | int | float | timedelta = None,
        _job_try: int | None = None,
        **kwargs: Any,
    ) -> JobCall:
        return cls(function, args, kwargs, _job_id, _queue_name, _defer_until, _defer_by, _expires, _job_try)


@dataclass(slots=True)
class Prepared:
    job_id: str
    queue_name: str
    expires_ms: int
    payload: bytes
    score: int
    #: a random id: no job can hold it already, so the uniqueness check is skipped
    fresh_id: bool = False

    def keys(self) -> list[str]:
        return [job_key_prefix + self.job_id, result_key_prefix + self.job_id, self.queue_name]

    def args(self) -> list[Any]:
        return [self.expires_ms, self.payload, self.score, self.job_id, wake_list_prefix + self.queue_name]


def prepare(
    call: JobCall,
    *,
    default_queue_name: str,
    expires_extra_ms: int,
    serializer: Serializer | None,
    now_ms: int | None = None,
    new_id: str | None = None,
) -> Prepared:
    """Validate a call's options and build its payload and score (raises as `enqueue_job` does).

    :param now_ms: the enqueue time (one for all the jobs of a bulk call); now by default
    :param new_id: the id to give a job the call names none for (a random one by default)
    """
    enqueue_time_ms = timestamp_ms() if now_ms is None else now_ms
    if call.defer_until is None and call.defer_by is None and call.expires is None:
        score, expires_ms = enqueue_time_ms, expires_extra_ms  # most calls: the checks below have nothing to check
    else:
        score, expires_ms = _schedule(call, enqueue_time_ms, expires_extra_ms)
    payload = serialize_job(call.function, call.args, call.kwargs, call.job_try, enqueue_time_ms, serializer=serializer)
    job_id = call.job_id or new_id or uuid4().hex
    return Prepared(job_id, call.queue_name or default_queue_name, expires_ms, payload, score, not call.job_id)


def _schedule(call: JobCall, enqueue_time_ms: int, expires_extra_ms: int) -> tuple[int, int]:
    """(score, expires ms) of a call with a deferral or an expiry; raises on a bad one as arq does."""
    if call.defer_until and call.defer_by:
        raise RuntimeError("use either 'defer_until' or 'defer_by' or neither, not both")
    if call.defer_until is not None and not isinstance(call.defer_until, datetime):
        raise TypeError(f'_defer_until must be a datetime, not {type(call.defer_until).__name__!r}')
    defer_by_ms = to_ms(call.defer_by, '_defer_by')
    expires_ms = to_ms(call.expires, '_expires')
    if expires_ms is not None and expires_ms <= 0:
        raise ValueError(f'_expires must be positive, got {call.expires!r}')
    if call.defer_until is not None:
        score = to_unix_ms(call.defer_until)
    elif defer_by_ms:
        score = enqueue_time_ms + defer_by_ms
    else:
        score = enqueue_time_ms
    # arq computed this from the score alone, so a start far in the past made a negative TTL (#447)
    return score, expires_ms or max(score - enqueue_time_ms, 0) + expires_extra_ms


def bulk_args(chunk: Sequence[Prepared]) -> list[Any]:
    """scripts.ENQUEUE_MANY's arguments: the key prefixes, then runs of jobs that share their options (a run's
    header, then each job's id and payload)."""
    args: list[Any] = [job_key_prefix, result_key_prefix, wake_list_prefix]
    run: tuple[bool, int, int, str] | None = None
    count_at = 0
    for p in chunk:
        options = (p.fresh_id, p.expires_ms, p.score, p.queue_name)
        if options != run:
            run = options
            args += (int(p.fresh_id), p.expires_ms, p.score, p.queue_name, 0)
            count_at = len(args) - 1
        args[count_at] += 1
        args += (p.job_id, p.payload)
    return args


def random_ids(n: int) -> list[str]:
    """`n` random job ids like uuid4().hex (32 hex digits), from one read of the system's random source."""
    raw = os.urandom(16 * n).hex()
    return [raw[i : i + 32] for i in range(0, 32 * n, 32)]
