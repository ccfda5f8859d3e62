"""Give a dead child's jobs back at once, and fail a job that has killed its worker twice.

The parent runs this with a synchronous redis-py client that it opens lazily and drops before every fork.
A job is released only while it is still queued and its in-progress key still exists: that key is then the dead
child's (its lease has not lapsed), so deleting it lets any worker claim the job on its next poll. Once a lease has
lapsed, the key may belong to another worker, so releases that could not run in time are dropped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import redis
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_deaths_key_prefix,
    job_key_prefix,
    nudge_channel_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq_supervise.settings import WorkerSettings

logger = logging.getLogger('arq_supervise.release')

SOCKET_TIMEOUT_S = 2.0
DEATHS_TTL_MS = 86_400_000
MAX_JOB_DEATHS = 2

# KEYS: queue, in-progress, deaths, job, retry; ARGV: job id, count this death (1/0), max deaths, deaths ttl ms,
# nudge channel; returns {0} nothing held, {1, deaths} released, {2, deaths, payload, try} to be failed by the caller.
# A release publishes on the queue's nudge channel, so idle workers claim the job now rather than at their next poll.
RELEASE_LUA = """
if not redis.call('zscore', KEYS[1], ARGV[1]) then return {0} end
if redis.call('exists', KEYS[2]) == 0 then return {0} end
local deaths = tonumber(redis.call('get', KEYS[3]) or '0')
if ARGV[2] == '1' then
  deaths = redis.call('incr', KEYS[3])
  redis.call('pexpire', KEYS[3], ARGV[4])
end
if deaths >= tonumber(ARGV[3]) then
  return {2, deaths, redis.call('get', KEYS[4]), redis.call('get', KEYS[5])}
end
redis.call('del', KEYS[2])
redis.call('publish', ARGV[5], '')
return {1, deaths}
"""

# KEYS: queue, in-progress, job, retry, deaths, abort set, result; ARGV: job id, result payload, keep ms (-1 forever)
FAIL_LUA = """
redis.call('zrem', KEYS[1], ARGV[1])
redis.call('zrem', KEYS[6], ARGV[1])
redis.call('del', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
local keep = tonumber(ARGV[3])
if keep < 0 then
  redis.call('set', KEYS[7], ARGV[2])
elseif keep > 0 then
  redis.call('set', KEYS[7], ARGV[2], 'PX', keep)
end
return 1
"""


def sync_client(redis_settings: Any) -> redis.Redis:
    """A redis-py sync client for arq's RedisSettings (None means arq's default, localhost:6379/0)."""

    def get(name: str, default: Any = None) -> Any:
        return getattr(redis_settings, name, default) if redis_settings is not None else default

    common: dict[str, Any] = {
        'db': get('database', 0),
        'username': get('username'),
        'password': get('password'),
        'socket_timeout': SOCKET_TIMEOUT_S,
        'socket_connect_timeout': SOCKET_TIMEOUT_S,
        # redis-py retries 3 times with backoff by default: that would stall the parent's loop for seconds
        'retry': Retry(NoBackoff(), 0),
    }
    ssl: dict[str, Any] = {}
    if get('ssl'):
        ssl = {'ssl': True, 'ssl_keyfile': get('ssl_keyfile'), 'ssl_certfile': get('ssl_certfile'),
               'ssl_cert_reqs': get('ssl_cert_reqs', 'required'), 'ssl_ca_certs': get('ssl_ca_certs'),
               'ssl_ca_data': get('ssl_ca_data'), 'ssl_check_hostname': get('ssl_check_hostname', False)}  # fmt: skip
    if get('sentinel'):
        sentinel = redis.sentinel.Sentinel(get('host'), socket_timeout=SOCKET_TIMEOUT_S, **ssl)  # type: ignore[no-untyped-call]
        master = get('sentinel_master', 'mymaster')
        client: redis.Redis = sentinel.master_for(master, **common, **ssl)  # type: ignore[no-untyped-call]
        return client
    if get('unix_socket_path'):
        return redis.Redis(unix_socket_path=get('unix_socket_path'), **common)
    return redis.Redis(host=get('host', 'localhost'), port=get('port', 6379), **common, **ssl)


class RedisLink:
    """The parent's lazily opened connection; `drop()` before each fork so no socket is shared with a child."""

    def __init__(self, redis_settings: Any) -> None:
        self._redis_settings = redis_settings
        self._client: redis.Redis | None = None

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = sync_client(self._redis_settings)
        return self._client

    def drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client.connection_pool.disconnect()
            self._client = None


@dataclass(frozen=True, slots=True)
class Released:
    job_id: str
    outcome: str  # 'not-held', 'released', 'failed'
    deaths: int = 0


class JobReleaser:
    """Releases or fails the jobs a dead child held (see the module docstring)."""

    def __init__(self, link: RedisLink, settings: WorkerSettings, max_deaths: int = MAX_JOB_DEATHS) -> None:
        self.link = link
        self.settings = settings
        self.max_deaths = max_deaths

    def release(self, job_ids: list[str], *, death: str, count_death: bool) -> list[Released]:
        """Release each job; `death` describes the exit ('killed by SIGKILL') for the failure message.

        :param count_death: False when we killed the child ourselves for reasons not caused by the job (drain deadline)
        """
        client = self.link.client
        script = client.register_script(RELEASE_LUA)
        queue = self.settings.queue_name
        nudge = nudge_channel_prefix + queue
        results = []
        for job_id in sorted(job_ids):
            keys = [queue, in_progress_key_prefix + job_id, job_deaths_key_prefix + job_id,
                    job_key_prefix + job_id, retry_key_prefix + job_id]  # fmt: skip
            reply = script(keys=keys, args=[job_id, int(count_death), self.max_deaths, DEATHS_TTL_MS, nudge])
            code = int(reply[0])
            if code == 0:
                results.append(Released(job_id, 'not-held'))
            elif code == 1:
                results.append(Released(job_id, 'released', int(reply[1])))
            else:
                deaths, payload, job_try = int(reply[1]), reply[2], reply[3]
                self._fail(client, job_id, payload, job_try, f'worker {death} while running this job, {_times(deaths)}')
                results.append(Released(job_id, 'failed', deaths))
        return results

    def _fail(
        self, client: redis.Redis, job_id: str, payload: bytes | None, job_try: bytes | None, message: str
    ) -> None:
        from arq.jobs import SerializationError, deserialize_job_raw, serialize_result
        from arq.worker import JobExecutionFailed

        function, args, kwargs, enqueue_ms = '<unknown>', (), dict[str, Any](), 0
        if payload is not None:
            try:
                function, args, kwargs, _, enqueue_ms = deserialize_job_raw(
                    payload, deserializer=self.settings.job_deserializer
                )
            except SerializationError as e:
                logger.warning('cannot read job payload job_id=%s error=%s', job_id, e)
        now_ms = round(time.time() * 1000)
        keep = self.settings.keep_result_ms(function)
        result = serialize_result(
            function, args, kwargs, int(job_try or 1), enqueue_ms or 0, False, JobExecutionFailed(message),
            now_ms, now_ms, f'{job_id}:{function}', self.settings.queue_name, job_id,
            serializer=self.settings.job_serializer,
        )  # fmt: skip
        keep_ms = -1 if keep == 0 else (keep or 0)  # the script's convention: -1 forever, 0 no result
        if result is None:
            keep_ms = 0
        keys = [
            self.settings.queue_name,
            in_progress_key_prefix + job_id,
            job_key_prefix + job_id,
            retry_key_prefix + job_id,
            job_deaths_key_prefix + job_id,
            abort_jobs_ss,
            result_key_prefix + job_id,
        ]
        client.register_script(FAIL_LUA)(keys=keys, args=[job_id, result or b'', keep_ms])
        logger.error('job failed: its worker died while running it job_id=%s function=%s reason="%s"',
                     job_id, function, message)  # fmt: skip


def _times(deaths: int) -> str:
    return {1: 'once', 2: 'twice'}.get(deaths, f'{deaths} times')


@dataclass
class PendingRelease:
    job_ids: list[str]
    death: str
    count_death: bool
    give_up_at: float


class ReleaseQueue:
    """Releases at once when Redis answers; otherwise keeps trying until the dead child's leases may have lapsed.

    Past that point an in-progress key may belong to a worker that claimed the job since, so it must not be deleted.
    """

    def __init__(self, releaser: JobReleaser, retry_for_s: float) -> None:
        self.releaser = releaser
        self.retry_for_s = retry_for_s
        self.pending: list[PendingRelease] = []

    def release(self, job_ids: list[str], *, death: str, count_death: bool, now: float) -> None:
        pending = PendingRelease(job_ids, death, count_death, now + self.retry_for_s)
        if not self._try(pending):
            self.pending.append(pending)

    def retry(self, now: float) -> None:
        for pending in list(self.pending):
            if now >= pending.give_up_at:
                logger.warning('gave up releasing jobs, their leases expire by themselves job_ids=%s', pending.job_ids)
                self.pending.remove(pending)
            elif self._try(pending):
                self.pending.remove(pending)

    def _try(self, pending: PendingRelease) -> bool:
        try:
            results = self.releaser.release(pending.job_ids, death=pending.death, count_death=pending.count_death)
        except redis.RedisError as e:
            logger.warning('could not release jobs, will retry job_ids=%s error=%s', pending.job_ids, e)
            self.releaser.link.drop()
            return False
        for r in results:
            logger.info('job %s job_id=%s deaths=%d', r.outcome, r.job_id, r.deaths)
        return True
