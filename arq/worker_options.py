"""The Worker's settings: checked once, kept as the attributes arq's Worker has (users read and set them).

Our parameters beyond arq 0.26.3's:

:param lease_s: TTL of the in-progress key while a job runs, refreshed every third of it; a crashed worker's job
  is claimable again after at most this long (arq: the longest job timeout + 10 s)
:param write_health_key: write (and on close, delete) the ``<queue>:health-check`` key; a supervisor that
  aggregates health for several processes turns this off
:param worker_id: this worker's name in its lease tokens (default: random); a supervisor names its children so it
  can recognise and release a dead child's leases
:param recent_outcomes: also index the ids of this many recently finished jobs per queue and outcome
  (``arq:recent:<queue>:complete|failed``, kept an hour), for a dashboard; 0, the default, writes no such key
:param stop_unleased_jobs: cancel a running job whose lease could not be renewed for most of its length (a
  partition): no job ever runs on two workers at once, but one that a Redis outage longer than that interrupts
  runs again (see arq.leases)
"""

from __future__ import annotations

import inspect
from datetime import tzinfo
from typing import TYPE_CHECKING, Any, cast
from uuid import uuid4

from .connections import ArqRedis, RedisSettings
from .constants import health_check_key_suffix
from .cron import local_timezone
from .functions import _positive_seconds
from .jobs import Deserializer, Serializer
from .typing import StartupShutdown
from .utils import to_seconds

if TYPE_CHECKING:
    from .worker import Worker


def _queue_name(queue_name: str | None, redis_pool: ArqRedis | None) -> str:
    if queue_name is not None:
        return queue_name
    if redis_pool is None:
        raise ValueError('If queue_name is absent, redis_pool must be present.')
    return redis_pool.default_queue_name


def _seconds(value: Any, name: str) -> float:
    return cast(float, to_seconds(value, name))


class WorkerOptions:
    queue_name: str
    redis_settings: RedisSettings
    burst: bool
    on_startup: StartupShutdown | None
    on_shutdown: StartupShutdown | None
    on_job_start: StartupShutdown | None
    on_job_end: StartupShutdown | None
    after_job_end: StartupShutdown | None
    handle_signals: bool
    job_completion_wait: int
    max_jobs: int
    job_timeout_s: float | None
    keep_result_s: float
    keep_result_forever: bool
    poll_delay_s: float
    queue_read_limit: int
    max_tries: int
    health_check_interval: float
    health_check_key: str
    write_health_key: bool
    ctx: dict[Any, Any]
    retry_jobs: bool
    allow_abort_jobs: bool
    max_burst_jobs: int
    job_serializer: Serializer | None
    job_deserializer: Deserializer | None
    expires_extra_ms: int
    log_results: bool
    lease_ms: int
    recent_outcomes: int
    worker_id: str
    _timezone: tzinfo | None

    #: taken as they are
    _PLAIN = (
        'burst', 'on_startup', 'on_shutdown', 'on_job_start', 'on_job_end', 'after_job_end', 'handle_signals',
        'job_completion_wait', 'max_jobs', 'keep_result_forever', 'max_tries', 'write_health_key', 'retry_jobs',
        'allow_abort_jobs', 'max_burst_jobs', 'job_serializer', 'job_deserializer', 'expires_extra_ms', 'log_results',
    )  # fmt: skip

    @property
    def timezone(self) -> tzinfo:
        """The cron jobs' zone: the one given, else the system's (looked up on first use: a worker without cron jobs
        never loads the zone database)."""
        if self._timezone is None:
            self._timezone = local_timezone()
        return self._timezone

    @timezone.setter
    def timezone(self, zone: tzinfo) -> None:
        self._timezone = zone

    def _set_options(self, options: dict[str, Any]) -> None:
        """Check and keep the Worker's keyword arguments (`options`: the Worker.__init__ parameters by name)."""
        if options['max_jobs'] < 1:
            raise ValueError(f'max_jobs must be at least 1, got {options["max_jobs"]}')
        if options['lease_s'] < 1:
            raise ValueError(f'lease_s must be at least 1 second, got {options["lease_s"]}')
        for name in self._PLAIN:
            setattr(self, name, options[name])
        self.queue_name = _queue_name(options['queue_name'], options['redis_pool'])
        self.redis_settings = options['redis_settings'] or RedisSettings()
        self.job_timeout_s = _positive_seconds(options['job_timeout'], 'job_timeout')
        self.keep_result_s = _seconds(options['keep_result'], 'keep_result')
        self.poll_delay_s = _seconds(options['poll_delay'], 'poll_delay')
        self.queue_read_limit = options['queue_read_limit'] or max(self.max_jobs * 5, 100)
        self.health_check_interval = _seconds(options['health_check_interval'], 'health_check_interval')
        self.health_check_key = options['health_check_key'] or self.queue_name + health_check_key_suffix
        self.ctx = options['ctx'] or {}
        self.lease_ms = int(options['lease_s'] * 1000)
        self.recent_outcomes = max(options['recent_outcomes'], 0)
        self._timezone = options['timezone']
        self.worker_id = options['worker_id'] or uuid4().hex[:16]
        pool = options['redis_pool']
        if pool is not None:  # the pool enqueues (cron jobs) and reads results as this worker's settings say
            pool.job_serializer, pool.job_deserializer = self.job_serializer, self.job_deserializer
            pool.expires_extra_ms = self.expires_extra_ms


def get_kwargs(settings_cls: Any) -> dict[str, Any]:
    """Worker keyword arguments from a settings class (inherited attributes included) or a dict."""
    from .worker import Worker

    worker_args = set(inspect.signature(Worker).parameters)
    if isinstance(settings_cls, dict):
        return {k: v for k, v in settings_cls.items() if k in worker_args}
    return {name: getattr(settings_cls, name) for name in worker_args if hasattr(settings_cls, name)}


def create_worker(settings_cls: Any, **kwargs: Any) -> Worker:
    from .worker import Worker

    return Worker(**{**get_kwargs(settings_cls), **kwargs})


def run_worker(settings_cls: Any, **kwargs: Any) -> Worker:
    worker = create_worker(settings_cls, **kwargs)
    worker.run()
    return worker
