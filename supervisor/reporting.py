"""What the parent tells the world about its children: the status file, the health keys, systemd."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import redis

from arq_supervise import health
from arq_supervise.config import SupervisorConfig
from arq_supervise.health import ChildStatus, Counters, HealthPublisher
from arq_supervise.history import HistoryRecorder
from arq_supervise.notify import sd_notify, watchdog_interval_s
from arq_supervise.parent_redis import REST_S, BoundedRedisLink

logger = logging.getLogger('arq_supervise.arbiter')


@dataclass(frozen=True)
class Snapshot:
    """The arbiter's state at one instant, as reported."""

    pid: int
    host: str
    queue_name: str
    state: str
    procs: int
    totals: Counters
    children: list[ChildStatus]
    #: the parent's loop latency (arq_supervise.latency)
    loop: dict[str, float | int] | None = None

    @property
    def ready(self) -> int:
        return sum(1 for c in self.children if c.state == 'ready')

    def document(self) -> dict[str, object]:
        return health.status_document(
            pid=self.pid, host=self.host, queue_name=self.queue_name, state=self.state, procs=self.procs,
            totals=self.totals, children=self.children, now_wall=time.time(), loop=self.loop,
        )  # fmt: skip


class Reporter:
    """Writes the status file every `status_interval_s` and the Redis keys every `health_interval_s`.

    Neither may stop the loop: a failed write is logged once and tried again on the next tick.
    """

    def __init__(
        self, config: SupervisorConfig, link: BoundedRedisLink, publisher: HealthPublisher, status_file: Path
    ) -> None:
        self.config = config
        self.link = link
        self.publisher = publisher
        self.status_file = status_file
        self.next_status_at = 0.0
        self.next_health_at = 0.0
        self.watchdog_s = watchdog_interval_s()
        self.next_watchdog_at = 0.0
        self.notified_ready = False
        self.last_sd_status = ''
        self.history = HistoryRecorder()

    def status_due(self, now: float) -> bool:
        if now < self.next_status_at:
            return False
        self.next_status_at = now + self.config.status_interval_s
        return True

    def health_due(self, now: float) -> bool:
        if now < self.next_health_at:
            return False
        self.next_health_at = now + self.config.health_interval_s
        return True

    def write_status(self, snapshot: Snapshot) -> None:
        try:
            health.write_status_file(self.status_file, snapshot.document())
        except OSError as e:
            logger.warning('cannot write status file path=%s error=%s', self.status_file, e)
        self.notify_systemd(snapshot)

    def publish_health(self, now: float, snapshot: Snapshot) -> None:
        try:
            self.publisher.publish(self.link.client, snapshot.totals, snapshot.document(), datetime.now())
            self.history.record(self.link.client, snapshot, self.publisher.last_queued)  # for the dashboard's plots
        except redis.RedisError as e:
            if self.publisher.failing_since is None:
                self.publisher.failing_since = now
                logger.warning('cannot write health keys to redis error=%s', e)
            self.link.drop()
            self.next_health_at = min(self.next_health_at, now + REST_S)  # TTL is 3 intervals: try again soon
            return
        if self.publisher.failing_since is not None:
            logger.info('health keys written again after %.0fs', now - self.publisher.failing_since)
            self.publisher.failing_since = None

    def notify_systemd(self, snapshot: Snapshot) -> None:
        totals = snapshot.totals
        status = (
            f'{snapshot.ready}/{snapshot.procs} children ready, {totals.ongoing} jobs running, {totals.complete} done'
        )
        if snapshot.state == 'running' and not self.notified_ready and snapshot.ready >= snapshot.procs:
            self.notified_ready = True
            logger.info('all children ready procs=%d', snapshot.procs)
            sd_notify('READY=1', f'STATUS={status}', f'MAINPID={snapshot.pid}')
        elif status != self.last_sd_status:
            sd_notify(f'STATUS={status}')
        self.last_sd_status = status

    def keep_watchdog_fed(self, now: float) -> None:
        if self.watchdog_s is not None and now >= self.next_watchdog_at:
            self.next_watchdog_at = now + self.watchdog_s
            sd_notify('WATCHDOG=1')

    def finish(self, snapshot: Snapshot) -> None:
        """The last status says 'stopped'; our own key goes (the shared health line expires by itself)."""
        self.write_status(snapshot)
        with contextlib.suppress(redis.RedisError):
            self.publisher.remove(self.link.client)
