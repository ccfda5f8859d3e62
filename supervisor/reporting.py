"""What the parent tells the world about its children: the status file, the health keys, systemd."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Mapping
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
from arq_supervise.release import WORKER_ID_PREFIX

logger = logging.getLogger('arq_supervise.arbiter')

#: jobs/s is published over this window of the supervisor's own samples (one per status write)
RATE_WINDOW_S = 10.0
#: a change of the children's states is published at once, but no more often than this
STATE_CHANGE_SPACING_S = 0.25


class RateWindow:
    """Jobs per second over the last `window_s`, from (monotonic time, cumulative jobs done) samples of one process.

    Both ends of the interval are this process's own clock and counters, so a reader gets a rate that does not
    depend on when it reads (two reads of a key rewritten every 5 s gave 0.0, 1496.1, 674.5 at a real 100/s).
    """

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self.samples: deque[tuple[float, int]] = deque()

    def observe(self, now: float, jobs_done: int) -> None:
        self.samples.append((now, jobs_done))
        while len(self.samples) > 2 and self.samples[1][0] <= now - self.window_s:
            self.samples.popleft()

    def per_s(self) -> float | None:
        """None until a second of samples exists."""
        if len(self.samples) < 2:
            return None
        (t0, done0), (t1, done1) = self.samples[0], self.samples[-1]
        if t1 - t0 < 1.0:
            return None
        return round(max(done1 - done0, 0) / (t1 - t0), 1)

    @property
    def span_s(self) -> float:
        return self.samples[-1][0] - self.samples[0][0] if self.samples else 0.0


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
    #: children that exited since the supervisor started, by cause (Fleet.restarts_by_cause); None: not reported
    restarts_by_cause: Mapping[str, int] | None = None

    @property
    def ready(self) -> int:
        return sum(1 for c in self.children if c.state == 'ready')

    def document(self) -> dict[str, object]:
        document = health.status_document(
            pid=self.pid, host=self.host, queue_name=self.queue_name, state=self.state, procs=self.procs,
            totals=self.totals, children=self.children, now_wall=time.time(), loop=self.loop,
        )  # fmt: skip
        if self.restarts_by_cause is not None:  # added to the record's fields: older readers ignore it
            document['restarts_by_cause'] = {cause: n for cause, n in sorted(self.restarts_by_cause.items()) if n}
        return document


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
        self.rate = RateWindow()
        self.pid_namespace = health.pid_namespace()
        #: the children's (pid, state) as last published, and when a publish was last tried
        self.published_states: tuple[tuple[int, str], ...] = ()
        self.last_health_try = float('-inf')

    def status_due(self, now: float) -> bool:
        if now < self.next_status_at:
            return False
        self.next_status_at = now + self.config.status_interval_s
        return True

    def health_due(self, now: float, states: tuple[tuple[int, str], ...] = ()) -> bool:
        """Every health interval, and soon after a child changed state (a reader must not see `booting` for 5 s)."""
        changed = states != self.published_states and self.publisher.failing_since is None
        if now < self.next_health_at and not (changed and now - self.last_health_try >= STATE_CHANGE_SPACING_S):
            return False
        self.next_health_at = now + self.config.health_interval_s
        self.last_health_try = now
        self.published_states = states
        return True

    def document(self, snapshot: Snapshot) -> dict[str, object]:
        """The snapshot's document with what only the reporter knows: its rate, its interval, its last Redis error,
        and what names this process's children in lease tokens (a reader tells whose child holds a job by it)."""
        return {
            **snapshot.document(),
            'jobs_per_s': self.rate.per_s(),
            'rate_window_s': round(self.rate.span_s, 1),
            'health_interval_s': self.config.health_interval_s,
            'publish_error': self.publisher.error,
            'pid_namespace': self.pid_namespace,
            'worker_id_prefix': WORKER_ID_PREFIX,  # a child's worker id is this and its pid (release.child_worker_id)
        }

    def write_status(self, snapshot: Snapshot) -> None:
        try:
            health.write_status_file(self.status_file, self.document(snapshot))
        except OSError as e:
            logger.warning('cannot write status file path=%s error=%s', self.status_file, e)
        self.notify_systemd(snapshot)

    def publish_health(self, now: float, snapshot: Snapshot) -> None:
        try:
            self.publisher.publish(self.link.client, snapshot.totals, self.document(snapshot), datetime.now())
            self.history.record(self.link.client, snapshot, self.publisher.last_queued)  # for the dashboard's plots
        except redis.RedisError as e:
            self.publisher.error = str(e)[:300]
            if self.publisher.failing_since is None:
                self.publisher.failing_since = now
                logger.warning('cannot write health keys to redis error=%s', e)
            self.link.drop()
            self.next_health_at = min(self.next_health_at, now + REST_S)  # TTL is 3 intervals: try again soon
            return
        if self.publisher.failing_since is not None:
            logger.info('health keys written again after %.0fs', now - self.publisher.failing_since)
            self.publisher.failing_since = self.publisher.error = None

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
