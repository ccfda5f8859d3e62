"""Redis settings, the ArqRedis client (enqueue and queue inspection), and pool creation with retries.

The settings become redis-py options in one place, :mod:`arq.clients`, shared with synchronous clients.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlparse

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.exceptions import OutOfMemoryError, RedisError

from . import scripts
from .clients import async_client
from .constants import (
    abort_jobs_ss,
    default_queue_name,
    expires_extra_ms,
    job_key_prefix,
    result_key_prefix,
)
from .enqueue import BULK_CHUNK, JobCall, Prepared, bulk_args, prepare, random_ids
from .jobs import Deserializer, Job, JobDef, JobResult, Serializer, deserialize_job, deserialize_result
from .utils import timestamp_ms

logger = logging.getLogger('arq.connections')

# results are fetched in chunks of this many keys, so neither SCAN nor MGET blocks Redis for long
_SCAN_COUNT = 1000


@dataclass
class RedisSettings:
    """
    No-Op class used to hold redis connection redis_settings.

    Used by :func:`arq.connections.create_pool` and :class:`arq.worker.Worker`.
    """

    host: str | list[tuple[str, int]] = 'localhost'
    port: int = 6379
    unix_socket_path: str | None = None
    database: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    ssl_keyfile: str | None = None
    ssl_certfile: str | None = None
    ssl_cert_reqs: str = 'required'
    ssl_ca_certs: str | None = None
    ssl_ca_data: str | None = None
    ssl_check_hostname: bool = False
    conn_timeout: float = 1
    conn_retries: float = 5
    conn_retry_delay: float = 1
    max_connections: int | None = None

    sentinel: bool = False
    sentinel_master: str = 'mymaster'
    #: how to reach the sentinels themselves (password, TLS, timeouts); by default the socket options and the retry
    #: policy used for Redis (arq.clients.sentinel_kwargs)
    sentinel_kwargs: dict[str, Any] | None = None

    retry_on_timeout: bool = False
    retry_on_error: list[type[Exception]] | None = None
    retry: Retry | None = None

    @classmethod
    def from_dsn(cls, dsn: str) -> RedisSettings:
        """Settings from a `redis://`, `rediss://` or `unix://` URL; the database from the path or `?db=`."""
        conf = urlparse(dsn)
        if conf.scheme not in {'redis', 'rediss', 'unix'}:
            raise RuntimeError(f'invalid DSN scheme {conf.scheme!r}: expected redis://, rediss:// or unix://')
        query_db = parse_qs(conf.query).get('db')
        if query_db:
            database = int(query_db[0])
        elif conf.scheme == 'unix' or not conf.path.strip('/'):
            database = 0
        else:
            database = int(conf.path.lstrip('/'))
        return cls(
            host=conf.hostname or 'localhost',
            port=conf.port or 6379,
            ssl=conf.scheme == 'rediss',
            username=unquote(conf.username) if conf.username else None,
            password=unquote(conf.password) if conf.password else None,
            database=database,
            unix_socket_path=conf.path if conf.scheme == 'unix' else None,
        )

    def __repr__(self) -> str:
        hidden = ('password', 'sentinel_kwargs')
        fields = ', '.join(f'{k}={"***" if k in hidden and v else v!r}' for k, v in self.__dict__.items())
        return f'RedisSettings({fields})'

    def describe(self) -> str:
        """Where this points, for log lines (never the password)."""
        if self.unix_socket_path:
            return f'unix:{self.unix_socket_path} db={self.database}'
        if self.sentinel:
            return f'sentinel {self.host} master={self.sentinel_master} db={self.database}'
        return f'{self.host}:{self.port} db={self.database}'


class ArqRedis(Redis):
    """
    Thin subclass of ``redis.asyncio.Redis`` which adds :func:`arq.connections.ArqRedis.enqueue_job`.

    :param pool_or_conn: a redis connection pool
    :param job_serializer: a function that serializes Python objects to bytes, defaults to pickle.dumps
    :param job_deserializer: a function that deserializes bytes into Python objects, defaults to pickle.loads
    :param default_queue_name: the default queue name to use, defaults to ``arq.queue``
    :param expires_extra_ms: the default length of time from when a job is expected to start
     after which the job expires, defaults to 1 day in ms.
    :param kwargs: keyword arguments directly passed to ``redis.asyncio.Redis``.
    """

    def __init__(
        self,
        pool_or_conn: ConnectionPool | None = None,
        job_serializer: Serializer | None = None,
        job_deserializer: Deserializer | None = None,
        default_queue_name: str = default_queue_name,
        expires_extra_ms: int = expires_extra_ms,
        **kwargs: Any,
    ) -> None:
        self.job_serializer = job_serializer
        self.job_deserializer = job_deserializer
        self.default_queue_name = default_queue_name
        self.expires_extra_ms = expires_extra_ms
        if pool_or_conn:
            kwargs['connection_pool'] = pool_or_conn
        super().__init__(**kwargs)
        self._enqueue_script = self.register_script(scripts.ENQUEUE)
        self._abort_script = self.register_script(scripts.REQUEST_ABORT)
        self._enqueue_many_script = self.register_script(scripts.ENQUEUE_MANY)

    async def enqueue_job(
        self,
        function: str,
        *args: Any,
        _job_id: str | None = None,
        _queue_name: str | None = None,
        _defer_until: datetime | None = None,
        _defer_by: None | int | float | timedelta = None,
        _expires: None | int | float | timedelta = None,
        _job_try: int | None = None,
        **kwargs: Any,
    ) -> Job | None:
        """
        Enqueue a job.

        :param function: Name of the function to call
        :param args: args to pass to the function
        :param _job_id: ID of the job, can be used to enforce job uniqueness
        :param _queue_name: queue of the job, can be used to create job in different queue
        :param _defer_until: datetime at which to run the job
        :param _defer_by: duration to wait before running the job
        :param _expires: do not start or retry a job after this duration;
            defaults to 24 hours plus deferring time, if any
        :param _job_try: useful when re-enqueueing jobs within a job
        :param kwargs: any keyword arguments to pass to the function
        :return: :class:`arq.jobs.Job` instance or ``None`` if a job with this ID already exists
        """
        call = JobCall(function, args, kwargs, _job_id, _queue_name, _defer_until, _defer_by, _expires, _job_try)
        job = self._prepare(call)
        try:
            enqueued = await self._enqueue_script(keys=job.keys(), args=job.args())
        except OutOfMemoryError as e:
            raise _out_of_memory(f'job {function!r}') from e
        if not enqueued:
            return None
        return Job(job.job_id, redis=self, _queue_name=job.queue_name, _deserializer=self.job_deserializer)

    async def enqueue_jobs(self, calls: Iterable[JobCall]) -> list[Job | None]:
        """
        Enqueue many jobs in a few round trips (a thousand jobs each), beyond arq: the same options, wire format and
        uniqueness per id as :meth:`enqueue_job`.

        :param calls: one :class:`arq.enqueue.JobCall` per job, e.g. ``JobCall.of('resize', 'cat.png', width=640)``
        :return: per call, in order, its :class:`arq.jobs.Job`, or ``None`` where the id was taken already
        """
        calls = list(calls)
        now_ms, ids = timestamp_ms(), iter(random_ids(sum(1 for call in calls if not call.job_id)))
        # every job is checked and serialized before the first is sent: a bad call enqueues none of them
        prepared = [self._prepare(call, now_ms, None if call.job_id else next(ids)) for call in calls]
        out: list[Job | None] = []
        sent: _SentChunk | None = None
        try:
            for start in range(0, len(prepared), BULK_CHUNK):
                chunk = prepared[start : start + BULK_CHUNK]
                args = bulk_args(chunk)  # packed while Redis runs the chunk before
                # one chunk in flight at a time, in order: the first job with an id wins, as in sequential enqueues
                flags = await sent.reply(len(prepared)) if sent is not None else []
                last, sent = sent, _SentChunk(start, chunk, asyncio.ensure_future(self._enqueue_many(args)))
                await asyncio.sleep(0)  # let it send before the Jobs of the last chunk are made
                if last is not None:
                    out += self._bulk_jobs(last.chunk, flags)
            if sent is not None:
                out += self._bulk_jobs(sent.chunk, await sent.reply(len(prepared)))
        finally:
            if sent is not None:
                sent.task.cancel()  # only if still running: the caller was cancelled
        return out

    async def _enqueue_many(self, args: list[Any]) -> list[int]:
        return cast(list[int], await self._enqueue_many_script(keys=[], args=args))

    def _bulk_jobs(self, chunk: list[Prepared], flags: list[int]) -> list[Job | None]:
        return [
            Job(p.job_id, redis=self, _queue_name=p.queue_name, _deserializer=self.job_deserializer) if f else None
            for p, f in zip(chunk, flags, strict=True)
        ]

    def _prepare(self, call: JobCall, now_ms: int | None = None, new_id: str | None = None) -> Prepared:
        return prepare(
            call,
            default_queue_name=self.default_queue_name,
            expires_extra_ms=self.expires_extra_ms,
            serializer=self.job_serializer,
            now_ms=now_ms,
            new_id=new_id,
        )

    async def request_abort(self, job_id: str, queue_name: str) -> None:
        """Record an abort request for `job_id` (what `Job.abort` does before waiting)."""
        await self._abort_script(keys=[queue_name, abort_jobs_ss], args=[job_id, timestamp_ms()])

    async def all_job_results(self) -> list[JobResult]:
        """All results of jobs in Redis (every queue), oldest enqueue first. Uses SCAN, never KEYS."""
        results: list[JobResult] = []
        batch: list[bytes] = []
        async for key in self.scan_iter(match=result_key_prefix + '*', count=_SCAN_COUNT):
            batch.append(key)
            if len(batch) >= _SCAN_COUNT:
                results.extend(await self._results_for(batch))
                batch = []
        if batch:
            results.extend(await self._results_for(batch))
        return sorted(results, key=lambda r: r.enqueue_time)

    async def _get_job_result(self, key: bytes) -> JobResult:
        """One result by its key (arq's helper, kept for subclasses and tests); KeyError if there is none."""
        job_id = key[len(result_key_prefix) :].decode()
        r = await Job(job_id, self, _deserializer=self.job_deserializer).result_info()
        if r is None:
            raise KeyError(f'job "{key.decode()}" not found')
        r.job_id = job_id
        return r

    async def _results_for(self, keys: list[bytes]) -> list[JobResult]:
        results = []
        values: list[bytes | None] = await self.mget(keys)  # type: ignore[assignment]
        for key, value in zip(keys, values, strict=True):
            if value is None:  # expired between SCAN and MGET
                continue
            r = deserialize_result(value, deserializer=self.job_deserializer)
            r.job_id = key.decode()[len(result_key_prefix) :]
            results.append(r)
        return results

    async def queued_jobs(self, *, queue_name: str | None = None) -> list[JobDef]:
        """Jobs in the queue (deferred, due and running). A job that vanished meanwhile is skipped, not an error."""
        if queue_name is None:
            queue_name = self.default_queue_name
        jobs: list[tuple[bytes, float]] = await self.zrange(queue_name, 0, -1, withscores=True)  # type: ignore[assignment]
        if not jobs:
            return []
        ids = [job_id.decode() for job_id, _ in jobs]
        payloads: list[bytes | None] = await self.mget([job_key_prefix + job_id for job_id in ids])  # type: ignore[assignment]
        out = []
        for job_id, (_, score), payload in zip(ids, jobs, payloads, strict=True):
            if payload is None:
                continue
            jd = deserialize_job(payload, deserializer=self.job_deserializer)
            jd.score = int(score)
            jd.job_id = job_id
            out.append(jd)
        return out

    async def close(self, close_connection_pool: bool | None = None) -> None:
        """Close the client; kept for arq's API (redis-py deprecates `close` in favour of `aclose`)."""
        await self.aclose(close_connection_pool=close_connection_pool)


@dataclass
class _SentChunk:
    """A chunk of enqueue_jobs sent to Redis: its first job's index, its jobs, and the script call's task."""

    start: int
    chunk: list[Prepared]
    task: asyncio.Future[list[int]]

    async def reply(self, total: int) -> list[int]:
        try:
            return await self.task
        except OutOfMemoryError as e:
            left = (
                f'{total} jobs'
                if self.start == 0
                else f'the last {total - self.start} of {total} jobs (the first {self.start} were enqueued)'
            )
            raise _out_of_memory(left) from e


def _out_of_memory(what: str) -> OutOfMemoryError:
    # Redis's own message names our script's sha and line, which tells the user nothing
    return OutOfMemoryError(
        f'cannot enqueue {what}: Redis is out of memory (used memory > maxmemory and nothing could be evicted, '
        f'e.g. maxmemory-policy noeviction); free memory or raise maxmemory'
    )


async def create_pool(
    settings_: RedisSettings | None = None,
    *,
    retry: int = 0,
    job_serializer: Serializer | None = None,
    job_deserializer: Deserializer | None = None,
    default_queue_name: str = default_queue_name,
    expires_extra_ms: int = expires_extra_ms,
) -> ArqRedis:
    """
    Create a new redis pool, retrying up to ``conn_retries`` times if the connection fails.

    Returns a :class:`arq.connections.ArqRedis` instance, thus allowing job enqueuing.
    """
    settings: RedisSettings = RedisSettings() if settings_ is None else settings_
    while True:
        pool = async_client(settings, ArqRedis)
        pool.job_serializer = job_serializer
        pool.job_deserializer = job_deserializer
        pool.default_queue_name = default_queue_name
        pool.expires_extra_ms = expires_extra_ms
        try:
            await pool.ping()
        except (TimeoutError, ConnectionError, OSError, RedisError) as e:
            await pool.aclose()
            if retry >= settings.conn_retries:
                raise
            logger.warning(
                'redis connection error %s %s %s, %s retries remaining...',
                settings.describe(),
                e.__class__.__name__,
                e,
                settings.conn_retries - retry,
            )
            await asyncio.sleep(settings.conn_retry_delay)
            retry += 1
        else:
            if retry > 0:
                logger.info('redis connection successful')
            return pool


async def log_redis_info(redis: Redis, log_func: Callable[[str], Any]) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.info(section='Server')
        pipe.info(section='Memory')
        pipe.info(section='Clients')
        pipe.dbsize()
        info_server, info_memory, info_clients, key_count = await pipe.execute()
    log_func(
        f'redis_version={info_server.get("redis_version", "?")} '
        f'mem_usage={info_memory.get("used_memory_human", "?")} '
        f'clients_connected={info_clients.get("connected_clients", "?")} '
        f'db_keys={key_count}'
    )
