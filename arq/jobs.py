"""The client's view of one job: its status, info and result, and the (de)serialisation of payloads.

Payload shapes are arq 0.26.3's: a job is the dict ``t f a k et``, a result adds ``s r st ft q id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from .constants import (
    default_queue_name,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
)
from .utils import ms_to_datetime, timestamp_ms

if TYPE_CHECKING:
    from .connections import ArqRedis

logger = logging.getLogger('arq.jobs')

Serializer = Callable[[dict[str, Any]], bytes]
Deserializer = Callable[[bytes], dict[str, Any]]


class ResultNotFound(RuntimeError):
    pass


class SerializationError(RuntimeError):
    pass


class DeserializationError(SerializationError):
    pass


class JobStatus(str, Enum):  # noqa: UP042 - StrEnum would change str(), which arq users may rely on
    """The status of a job, as seen from Redis."""

    #: job is in the queue, time it should be run not yet reached
    deferred = 'deferred'
    #: job is in the queue, time it should run has been reached
    queued = 'queued'
    #: job is in progress
    in_progress = 'in_progress'
    #: job is complete, result is available
    complete = 'complete'
    #: job not found in any way
    not_found = 'not_found'


@dataclass
class JobDef:
    function: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    job_try: int
    enqueue_time: datetime
    score: int | None
    job_id: str | None

    def __post_init__(self) -> None:
        if isinstance(self.score, float):
            self.score = int(self.score)


@dataclass
class JobResult(JobDef):
    success: bool
    result: Any
    start_time: datetime
    finish_time: datetime
    queue_name: str


class Job:
    """A handle on a job in Redis: query its status, info and result, or ask for it to be aborted."""

    __slots__ = 'job_id', '_redis', '_queue_name', '_deserializer'

    def __init__(
        self,
        job_id: str,
        redis: ArqRedis,
        _queue_name: str = default_queue_name,
        _deserializer: Deserializer | None = None,
    ):
        self.job_id = job_id
        self._redis = redis
        self._queue_name = _queue_name
        self._deserializer = _deserializer

    async def result(
        self, timeout: float | None = None, *, poll_delay: float = 0.5, pole_delay: float | None = None
    ) -> Any:
        """
        Wait for the job to finish and return its result; re-raise the exception if it failed.

        Unlike arq, the wait wakes as soon as the worker publishes that the job finished; `poll_delay` is only the
        fallback for workers that do not publish (the published arq).

        :param timeout: maximum seconds to wait, raising `asyncio.TimeoutError` past it
        :param poll_delay: how often to poll Redis when no notification arrives
        :param pole_delay: deprecated, use poll_delay instead
        """
        if pole_delay is not None:
            message = '"pole_delay" is deprecated, use the correct spelling "poll_delay" instead'
            warnings.warn(message, DeprecationWarning, stacklevel=2)
            poll_delay = pole_delay
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        from .results import result_watch  # loaded by the first wait: a worker never waits for results

        watch = result_watch(self._redis)  # shared by every waiter of this client: a few connections for thousands
        done = await watch.watch(self.job_id)
        try:
            while True:
                s, v = await watch.read(self.job_id, self._queue_name)
                if v:
                    return _unpack_result(deserialize_result(v, deserializer=self._deserializer))
                if s is None:
                    raise ResultNotFound(
                        'Not waiting for job result because the job is not in queue. '
                        'Is the worker function configured to keep result?'
                    )
                await _wait_for_done(done, poll_delay, deadline)
        finally:
            await watch.unwatch(self.job_id, done)

    async def info(self) -> JobDef | None:
        """All information on a job, including its result if it's available; does not wait for the result."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zscore(self._queue_name, self.job_id)
            pipe.get(job_key_prefix + self.job_id)
            pipe.get(result_key_prefix + self.job_id)
            score, job_v, result_v = await pipe.execute()
        info: JobDef | None = None
        if result_v:
            info = deserialize_result(result_v, deserializer=self._deserializer)
        elif job_v:
            info = deserialize_job(job_v, deserializer=self._deserializer)
        if info:
            info.score = None if score is None else int(score)
        return info

    async def result_info(self) -> JobResult | None:
        """Information about the job's result if it's available; does not wait for it."""
        v: bytes | None = await self._redis.get(result_key_prefix + self.job_id)  # type: ignore[assignment]
        if v:
            return deserialize_result(v, deserializer=self._deserializer)
        return None

    async def status(self) -> JobStatus:
        """Status of the job."""
        # No MULTI in these reads (arq used one): while Redis is over maxmemory it refuses every command queued in a
        # MULTI, reads included, so clients could not see their jobs exactly when they most need to. The reads go in
        # the order a job moves through (queue score, in-progress, result): a job that moves on between them is seen
        # in its later state, never as missing.
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zscore(self._queue_name, self.job_id)
            pipe.exists(in_progress_key_prefix + self.job_id)
            pipe.exists(result_key_prefix + self.job_id)
            score, is_in_progress, is_complete = await pipe.execute()
        if is_complete:
            return JobStatus.complete
        if is_in_progress:
            return JobStatus.in_progress
        if score:
            return JobStatus.deferred if score > timestamp_ms() else JobStatus.queued
        return JobStatus.not_found

    async def abort(self, *, timeout: float | None = None, poll_delay: float = 0.5) -> bool:
        """
        Abort the job (the worker needs `allow_abort_jobs=True`).

        :param timeout: maximum seconds to wait for the job's result after asking for the abort
        :param poll_delay: how often to poll Redis for the job's result
        :return: True if the job was aborted, False otherwise
        """
        await self._redis.request_abort(self.job_id, self._queue_name)
        try:
            await self.result(timeout=timeout, poll_delay=poll_delay)
        except asyncio.CancelledError:
            return True
        except ResultNotFound:
            return False
        return False

    def __repr__(self) -> str:
        return f'<arq job {self.job_id}>'


def _unpack_result(info: JobResult) -> Any:
    if info.success:
        return info.result
    if isinstance(info.result, Exception | asyncio.CancelledError):
        raise info.result
    raise SerializationError(info.result)


async def _wait_for_done(done: asyncio.Event, poll_delay: float, deadline: float | None) -> None:
    """Wait for the job-done notification, at most `poll_delay`, raising TimeoutError past `deadline`."""
    wait_s = poll_delay
    if deadline is not None:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise TimeoutError()
        wait_s = min(wait_s, remaining)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait_s):
            await done.wait()
    done.clear()


def serialize_job(
    function_name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    job_try: int | None,
    enqueue_time_ms: int,
    *,
    serializer: Serializer | None = None,
) -> bytes:
    data = {'t': job_try, 'f': function_name, 'a': args, 'k': kwargs, 'et': enqueue_time_ms}
    if serializer is None:
        serializer = pickle.dumps
    try:
        return serializer(data)
    except Exception as e:
        raise SerializationError(f'unable to serialize job "{function_name}"') from e


def serialize_result(
    function: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    job_try: int,
    enqueue_time_ms: int,
    success: bool,
    result: Any,
    start_ms: int,
    finished_ms: int,
    ref: str,
    queue_name: str,
    job_id: str,
    *,
    serializer: Serializer | None = None,
) -> bytes | None:
    """The result payload; when the result itself cannot be serialized, a failure saying so instead."""
    data = {
        't': job_try,
        'f': function,
        'a': args,
        'k': kwargs,
        'et': enqueue_time_ms,
        's': success,
        'r': result,
        'st': start_ms,
        'ft': finished_ms,
        'q': queue_name,
        'id': job_id,
    }
    if serializer is None:
        serializer = pickle.dumps
    try:
        return serializer(data)
    except Exception:
        logger.warning('error serializing result of %s', ref, exc_info=True)
    # a plain string can always be stored, so the caller still learns that the job ran
    data.update(r='unable to serialize result', s=False)
    try:
        return serializer(data)
    except Exception:
        logger.critical('error serializing result of %s even after replacing result', ref, exc_info=True)
    return None


def _load(r: bytes, deserializer: Deserializer | None) -> Any:
    if deserializer is None:
        deserializer = pickle.loads
    return deserializer(r)


def deserialize_job_raw(
    r: bytes, *, deserializer: Deserializer | None = None
) -> tuple[str, tuple[Any, ...], dict[str, Any], int | None, int]:
    """
    (function, args, kwargs, job_try, enqueue_time_ms) of a job payload, as stored: like arq, any payload with the five
    keys is returned unchecked (the worker checks the types, see `deserialize_job_for_worker`).

    Raises DeserializationError('unable to deserialize job') with the reason as its ``__cause__``.
    """
    try:
        d = _load(r, deserializer)
        return d['f'], d['a'], d['k'], d['t'], d['et']
    except Exception as e:
        raise DeserializationError('unable to deserialize job') from e


def deserialize_job_for_worker(
    r: bytes, *, deserializer: Deserializer | None = None
) -> tuple[str, tuple[Any, ...], dict[str, Any], int | None, int]:
    """`deserialize_job_raw`, plus the type checks a worker needs before it runs the job (arq crashed without them)."""
    function, args, kwargs, job_try, enqueue_time_ms = deserialize_job_raw(r, deserializer=deserializer)
    if not isinstance(function, str):
        problem = f'function name is a {type(function).__name__}, not a str'
    elif not isinstance(args, tuple | list) or not isinstance(kwargs, dict):
        problem = f'args must be a sequence and kwargs a dict, got {type(args).__name__} and {type(kwargs).__name__}'
    elif not isinstance(enqueue_time_ms, int | float) or (job_try is not None and not isinstance(job_try, int)):
        problem = f'malformed enqueue time {enqueue_time_ms!r} or job try {job_try!r}'
    else:
        # args stay as the serializer returned them (msgpack gives a list), as arq leaves them
        return function, args, kwargs, job_try, int(enqueue_time_ms)
    raise DeserializationError('unable to deserialize job') from TypeError(problem)


def describe_with_cause(e: BaseException) -> str:
    """`e` with its cause, for a log line: ``unable to deserialize job: ValueError: bad pickle``."""
    cause = e.__cause__
    return f'{e}: {type(cause).__name__}: {cause}' if cause is not None else str(e)


def deserialize_job(r: bytes, *, deserializer: Deserializer | None = None) -> JobDef:
    function, args, kwargs, job_try, enqueue_time_ms = deserialize_job_raw(r, deserializer=deserializer)
    try:
        enqueue_time = ms_to_datetime(enqueue_time_ms)
    except Exception as e:
        raise DeserializationError('unable to deserialize job') from e
    return JobDef(
        function=function,
        args=args,
        kwargs=kwargs,
        job_try=job_try,  # type: ignore[arg-type]
        enqueue_time=enqueue_time,
        score=None,
        job_id=None,
    )


def deserialize_result(r: bytes, *, deserializer: Deserializer | None = None) -> JobResult:
    try:
        d = _load(r, deserializer)
        return JobResult(
            job_try=d['t'],
            function=d['f'],
            args=d['a'],
            kwargs=d['k'],
            enqueue_time=ms_to_datetime(d['et']),
            score=None,
            success=d['s'],
            result=d['r'],
            start_time=ms_to_datetime(d['st']),
            finish_time=ms_to_datetime(d['ft']),
            queue_name=d.get('q', '<unknown>'),
            job_id=d.get('id', '<unknown>'),
        )
    except Exception as e:
        raise DeserializationError('unable to deserialize job result') from e
