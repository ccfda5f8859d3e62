"""Prometheus metrics aggregated across children, and the tiny HTTP server that serves them from the parent's loop.

Children keep cumulative per-function statistics (`JobStats`) and send them with every heartbeat. The parent keeps
each live child's latest copy plus the sum of its exited children's last copies, so every counter only goes up
(a restart never makes a rate negative). The HTTP server is non-blocking and is polled by the arbiter's own loop:
no threads in a process that forks.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

logger = logging.getLogger('arq_supervise.metrics')

#: job duration buckets, seconds
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: queue lag buckets (start time minus the job's score), seconds
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0)
OUTCOMES = ('complete', 'failed', 'retried', 'aborted')


@dataclass
class Histogram:
    """Cumulative-style histogram kept as per-bucket counts (the last one is +Inf), a sum and a count."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def add(self, other: Histogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total

    def cumulative_buckets(self) -> list[tuple[str, float]]:
        running, out = 0, []
        for bound, count in zip((*self.bounds, float('inf')), self.counts, strict=True):
            running += count
            out.append(('+Inf' if bound == float('inf') else repr(bound), float(running)))
        return out

    def to_wire(self) -> list[float]:
        return [*self.counts, self.total]

    @classmethod
    def from_wire(cls, bounds: tuple[float, ...], data: Any) -> Histogram:
        h = cls(bounds)
        if isinstance(data, list) and len(data) == len(bounds) + 2:
            h.counts = [int(x) for x in data[:-1]]
            h.total = float(data[-1])
        return h


@dataclass
class JobStats:
    """One process's (or a fleet's) cumulative job statistics."""

    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)  # function -> outcome -> count
    durations: dict[str, Histogram] = field(default_factory=dict)  # function -> seconds
    lag: Histogram = field(default_factory=lambda: Histogram(LAG_BUCKETS))

    def record(self, function: str, outcome: str, duration_s: float, lag_ms: int) -> None:
        self.record_many([(function, outcome, duration_s, lag_ms)])

    def record_many(self, finished: list[tuple[str, str, float, int]]) -> None:
        """`record` for each (function, outcome, duration s, lag ms), in one loop: a supervised child keeps its
        jobs' ends in a list and folds them in here when its statistics are read (a call per job cost more)."""
        duration_bounds, lag_counts, lag_total = DURATION_BUCKETS, self.lag.counts, 0.0
        for function, outcome, duration_s, lag_ms in finished:
            by_outcome = self.outcomes.get(function)
            if by_outcome is None:
                by_outcome = self.outcomes[function] = {}
            by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
            durations = self.durations.get(function)
            if durations is None:
                durations = self.durations[function] = Histogram(duration_bounds)
            duration_s = duration_s if duration_s > 0 else 0.0
            durations.counts[bisect.bisect_left(duration_bounds, duration_s)] += 1
            durations.total += duration_s
            lag_s = lag_ms / 1000 if lag_ms > 0 else 0.0
            lag_counts[bisect.bisect_left(LAG_BUCKETS, lag_s)] += 1
            lag_total += lag_s
        self.lag.total += lag_total

    def count(self, function: str, outcome: str) -> None:
        """A job that finished without running (unknown function, expired, unreadable, out of tries): no duration."""
        by_outcome = self.outcomes.setdefault(function, {})
        by_outcome[outcome] = by_outcome.get(outcome, 0) + 1

    def add(self, other: JobStats) -> None:
        for function, by_outcome in other.outcomes.items():
            mine = self.outcomes.setdefault(function, {})
            for outcome, n in by_outcome.items():
                mine[outcome] = mine.get(outcome, 0) + n
        for function, hist in other.durations.items():
            self.durations.setdefault(function, Histogram(DURATION_BUCKETS)).add(hist)
        self.lag.add(other.lag)

    def to_wire(self) -> dict[str, Any]:
        return {
            'outcomes': self.outcomes,
            'durations': {f: h.to_wire() for f, h in self.durations.items()},
            'lag': self.lag.to_wire(),
        }

    @classmethod
    def from_wire(cls, data: Any) -> JobStats:
        """Parse what a child sent; anything malformed is dropped rather than trusted."""
        stats = cls()
        if not isinstance(data, dict):
            return stats
        outcomes = data.get('outcomes')
        if isinstance(outcomes, dict):
            for function, by_outcome in outcomes.items():
                if isinstance(by_outcome, dict):
                    stats.outcomes[str(function)] = {str(k): int(v) for k, v in by_outcome.items()}
        durations = data.get('durations')
        if isinstance(durations, dict):
            for function, hist in durations.items():
                stats.durations[str(function)] = Histogram.from_wire(DURATION_BUCKETS, hist)
        stats.lag = Histogram.from_wire(LAG_BUCKETS, data.get('lag'))
        return stats


@dataclass(frozen=True)
class FleetView:
    """What the arbiter knows at the moment of a scrape."""

    stats: JobStats
    queue_depth: int | None
    children_by_state: Mapping[str, int]
    restarts_by_cause: Mapping[str, int]
    rss_by_slot: Mapping[int, float]  # MiB
    #: the parent's loop: p99 of its busy time per turn (last 1024 turns) and the longest turn since it started
    loop_p99_s: float | None = None
    loop_max_s: float | None = None


class FleetCollector(Collector):
    def __init__(self, view: Callable[[], FleetView]) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        v = self.view()
        jobs = CounterMetricFamily('arq_jobs', 'Jobs finished, by function and outcome', labels=['function', 'outcome'])
        for function, by_outcome in sorted(v.stats.outcomes.items()):
            for outcome in OUTCOMES:
                jobs.add_metric([function, outcome], by_outcome.get(outcome, 0))
        yield jobs
        duration = HistogramMetricFamily('arq_job_duration_seconds', 'Job run time', labels=['function'])
        for function, hist in sorted(v.stats.durations.items()):
            duration.add_metric([function], hist.cumulative_buckets(), hist.total)
        yield duration
        lag = HistogramMetricFamily('arq_queue_lag_seconds', 'Job start time minus its scheduled time')
        lag.add_metric([], v.stats.lag.cumulative_buckets(), v.stats.lag.total)
        yield lag
        if v.queue_depth is not None:
            yield GaugeMetricFamily('arq_queue_depth', 'Jobs in the queue (deferred, due and running)', v.queue_depth)
        children = GaugeMetricFamily('arq_supervisor_children', 'Children by state', labels=['state'])
        for state, n in sorted(v.children_by_state.items()):
            children.add_metric([state], n)
        yield children
        restarts = CounterMetricFamily('arq_supervisor_restarts', 'Children replaced, by cause', labels=['cause'])
        for cause, n in sorted(v.restarts_by_cause.items()):
            restarts.add_metric([cause], n)
        yield restarts
        rss = GaugeMetricFamily('arq_supervisor_child_memory_bytes', 'Unique memory (USS) per child', labels=['slot'])
        for slot, mib in sorted(v.rss_by_slot.items()):
            rss.add_metric([str(slot)], mib * 1024 * 1024)
        yield rss
        if v.loop_p99_s is not None:
            yield GaugeMetricFamily('arq_supervisor_loop_busy_p99_seconds',
                                    "p99 of the parent loop's busy time per turn (how long a signal may wait)",
                                    v.loop_p99_s)  # fmt: skip
        if v.loop_max_s is not None:
            yield GaugeMetricFamily('arq_supervisor_loop_stall_max_seconds',
                                    "Longest turn of the parent's loop since it started", v.loop_max_s)  # fmt: skip


def render(view: Callable[[], FleetView]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(view))
    return generate_latest(registry)


@dataclass
class _Connection:
    sock: socket.socket
    request: bytes = b''


class MetricsServer:
    """
    A minimal, non-blocking HTTP/1.0 server for /metrics, /livez and /readyz.

    The arbiter adds `filenos()` to what its loop polls and calls `handle(readable)`; every request is answered
    from the loop in one go (the answers are a few KB, well within a socket's send buffer).
    """

    MAX_REQUEST = 8192

    def __init__(
        self,
        port: int,
        metrics: Callable[[], bytes],
        live: Callable[[], bool],
        ready: Callable[[], bool],
        host: str = '127.0.0.1',
    ) -> None:
        self.metrics, self.live, self.ready = metrics, live, ready
        self.listener = socket.create_server((host, port), reuse_port=False)
        self.listener.setblocking(False)
        self.connections: dict[int, _Connection] = {}

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def filenos(self) -> list[int]:
        return [self.listener.fileno(), *self.connections]

    def handle(self, readable: Iterable[int]) -> None:
        for fd in readable:
            if fd == self.listener.fileno():
                self._accept()
            elif fd in self.connections:
                self._read(self.connections[fd])

    def close(self) -> None:
        for conn in list(self.connections.values()):
            self._close(conn)
        self.listener.close()

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.setblocking(False)
        self.connections[sock.fileno()] = _Connection(sock)

    def _read(self, conn: _Connection) -> None:
        try:
            chunk = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        conn.request += chunk
        if not chunk or len(conn.request) > self.MAX_REQUEST:
            self._close(conn)
        elif b'\r\n\r\n' in conn.request or b'\n\n' in conn.request:
            self._respond(conn)

    def _respond(self, conn: _Connection) -> None:
        parts = conn.request.split(b' ', 2)
        path = parts[1].decode(errors='replace').split('?')[0] if len(parts) > 1 else ''
        try:
            status, content_type, body = self._route(path)
        except Exception:
            logger.exception('metrics request failed path=%s', path)
            status, content_type, body = '500 Internal Server Error', 'text/plain', b'error\n'
        head = f'HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n'
        with contextlib.suppress(OSError):
            conn.sock.sendall(head.encode() + body)
        self._close(conn)

    def _route(self, path: str) -> tuple[str, str, bytes]:
        if path == '/metrics':
            return '200 OK', 'text/plain; version=0.0.4; charset=utf-8', self.metrics()
        if path in ('/livez', '/readyz'):
            ok = self.live() if path == '/livez' else self.ready()
            return ('200 OK' if ok else '503 Service Unavailable'), 'text/plain', b'ok\n' if ok else b'not ok\n'
        return '404 Not Found', 'text/plain', b'not found\n'

    def _close(self, conn: _Connection) -> None:
        self.connections.pop(conn.sock.fileno(), None)
        conn.sock.close()
