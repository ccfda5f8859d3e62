"""Give a dead child's jobs back at once, and fail a job that has killed its worker twice.

The parent runs this with a synchronous redis-py client that it opens lazily and drops before every fork. All of a
dead child's jobs go back in one script call (arq.scripts_fleet.RELEASE): a job is released only while it is still
queued and its in-progress key holds one of that child's lease tokens, so a release can never undo a newer claim by
another worker, and sending it again after a lost reply counts nothing twice. A job the death makes poison is failed
through the worker's own settle script (one finish path: result stored, keys removed, `Job.result()` woken).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from arq import clients, contract, scripts, scripts_fleet
from arq.connections import RedisSettings
from arq_supervise.settings import WorkerSettings

logger = logging.getLogger('arq_supervise.release')

#: the longest a command of the supervisor's own client waits for its reply (the parent bounds it further)
SOCKET_TIMEOUT_S = 2.0
DEATHS_TTL_MS = 86_400_000
MAX_JOB_DEATHS = 2
#: supervised children index this many recently finished jobs per outcome for the dashboard (arq:recent:...)
RECENT_OUTCOMES = 10_000


#: random per supervisor (children inherit it through the fork): their worker ids are unique across hosts and restarts
WORKER_ID_PREFIX = f'{uuid4().hex[:10]}.'


def child_worker_id(pid: int) -> str:
    """The worker id (in its lease tokens) of this supervisor's child `pid`."""
    return f'{WORKER_ID_PREFIX}{pid}'


def sync_client(redis_settings: RedisSettings | None) -> redis.Redis:
    """arq's synchronous client for the settings (None means arq's default, localhost:6379/0), with the same options
    as the workers' pools (arq.clients) but for two: a command waits at most SOCKET_TIMEOUT_S for its reply, and a
    failed call is not retried (redis-py's retries with backoff would stall the parent's loop for seconds; the
    caller tries again later)."""
    settings = redis_settings if redis_settings is not None else RedisSettings()
    return clients.sync_client(settings, socket_timeout=SOCKET_TIMEOUT_S, retry=Retry(NoBackoff(), 0))


class RedisLink:
    """The parent's lazily opened connection; `drop()` before each fork so no socket is shared with a child."""

    def __init__(self, redis_settings: RedisSettings | None) -> None:
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
    outcome: str  # 'released', 'failed'
    deaths: int = 0


class JobReleaser:
    """Releases or fails the jobs a dead child held (see the module docstring)."""

    def __init__(self, link: RedisLink, settings: WorkerSettings, max_deaths: int = MAX_JOB_DEATHS) -> None:
        self.link = link
        self.settings = settings
        self.max_deaths = max_deaths

    def release(self, job_ids: list[str], *, worker_id: str | None, death: str, count_death: bool) -> list[Released]:
        """Release what the dead worker held; `death` describes the exit ('killed by SIGKILL') for a failure.

        :param count_death: whether the death counts against `job_ids` (only with evidence against them); jobs of the
          dead worker found beyond `job_ids` never count it
        """
        client = self.link.client
        keys, args = contract.release_args(
            self.settings.queue_name, worker_id, sorted(job_ids), count_death=count_death,
            max_deaths=self.max_deaths, deaths_ttl_ms=DEATHS_TTL_MS, now_ms=round(time.time() * 1000),
        )  # fmt: skip
        rows = contract.parse_release(client.register_script(scripts_fleet.RELEASE)(keys=keys, args=args))
        poisoned = [row for row in rows if row.poisoned]
        if poisoned:
            self._fail(client, poisoned, death)
        return [Released(r.job_id, 'failed' if r.poisoned else 'released', r.deaths) for r in rows]

    def _fail(self, client: redis.Redis, rows: list[contract.Released], death: str) -> None:
        settlements, functions = [], {}
        for row in rows:
            message = f'worker {death} while running this job, {_times(row.deaths)}'
            settlement, functions[row.job_id] = self._failure(row, message)
            settlements.append(settlement)
        keys, args = contract.settle_args(
            self.settings.queue_name, settlements, now_ms=round(time.time() * 1000), recent_cap=RECENT_OUTCOMES
        )
        reply = contract.parse_settle(client.register_script(scripts.SETTLE)(keys=keys, args=args))
        lost = {*reply.lost, *reply.gone}
        for row in rows:
            if row.job_id not in lost:
                logger.error('job failed: its worker died while running it job_id=%s function=%s reason="worker %s '
                             'while running this job, %s"', row.job_id, functions[row.job_id], death,
                             _times(row.deaths))  # fmt: skip

    def _failure(self, row: contract.Released, message: str) -> tuple[contract.Settlement, str]:
        from arq.jobs import SerializationError, deserialize_job_for_worker, serialize_result
        from arq.worker import JobExecutionFailed

        function, args, kwargs, enqueue_ms = '<unknown>', (), dict[str, Any](), 0
        if row.payload is not None:
            try:
                function, args, kwargs, _, enqueue_ms = deserialize_job_for_worker(
                    row.payload, deserializer=self.settings.job_deserializer
                )
            except SerializationError as e:
                logger.warning('cannot read job payload job_id=%s error=%s', row.job_id, e)
        settlement = contract.Settlement(row.job_id, contract.FAILURE, row.token)
        keep_ms = self.settings.keep_result_ms(function)
        if keep_ms is not None:
            now_ms = round(time.time() * 1000)
            result = serialize_result(
                function, args, kwargs, row.job_try, enqueue_ms or 0, False, JobExecutionFailed(message),
                now_ms, now_ms, f'{row.job_id}:{function}', self.settings.queue_name, row.job_id,
                serializer=self.settings.job_serializer,
            )  # fmt: skip
            if result is not None:
                settlement.result, settlement.result_px = result, keep_ms
        return settlement, function


def _times(deaths: int) -> str:
    return {1: 'once', 2: 'twice'}.get(deaths, f'{deaths} times')


@dataclass
class PendingRelease:
    job_ids: list[str]
    worker_id: str | None
    death: str
    count_death: bool
    give_up_at: float


class ReleaseQueue:
    """Releases at once when Redis answers; otherwise keeps trying until the dead child's leases have lapsed.

    Past that point there is nothing left to release: the jobs are claimable again (and the fence would refuse a late
    release of a job another worker has claimed since).
    """

    def __init__(self, releaser: JobReleaser, retry_for_s: float) -> None:
        self.releaser = releaser
        self.retry_for_s = retry_for_s
        self.pending: list[PendingRelease] = []

    def release(
        self, job_ids: list[str], *, death: str, count_death: bool, now: float, worker_id: str | None = None
    ) -> None:
        """`worker_id` (see `child_worker_id`) fences the release to that worker's leases and finds its jobs beyond
        `job_ids`; without it `job_ids` are released whoever holds them."""
        pending = PendingRelease(job_ids, worker_id, death, count_death, now + self.retry_for_s)
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
            results = self.releaser.release(
                pending.job_ids, worker_id=pending.worker_id, death=pending.death, count_death=pending.count_death
            )
        except redis.RedisError as e:
            logger.warning('could not release jobs, will retry job_ids=%s error=%s', pending.job_ids, e)
            self.releaser.link.drop()
            return False
        for r in results:
            logger.info('job %s job_id=%s deaths=%d', r.outcome, r.job_id, r.deaths)
        return True
