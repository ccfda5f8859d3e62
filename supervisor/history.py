"""A short throughput history per supervisor, kept in Redis so that any dashboard shows the last hour at once.

Each supervisor appends one sample at most every `MIN_SPACING_S` (when it publishes its health keys) to the sorted
set `arq:history:<queue>:<host>:<pid>`, scored by wall time in ms. A sample is compact JSON:

  {"t": ms, "c": complete, "f": failed, "r": retried, "o": ongoing, "q": ZCARD of the queue, "d": due jobs,
   "lag": ms the oldest due job not yet running has waited (0 when none waits), "ready": n, "procs": n}

Counters are the supervisor's cumulative totals (they only go up while it lives, restarts of children included), so
a reader turns two samples into a rate. Samples older than `KEEP_S` are trimmed on every write, the set never holds
more than `MAX_SAMPLES`, and the key expires `KEEP_S` after the last write: a stopped supervisor's history fades away
by itself, while a dashboard can still show that it stopped and when.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from arq.constants import in_progress_key_prefix

if TYPE_CHECKING:
    from arq_supervise.reporting import Snapshot

history_key_prefix = 'arq:history:'
KEEP_S = 3600
MIN_SPACING_S = 1.0
MAX_SAMPLES = 3600
# how many of the oldest due jobs are looked at to find the first one no worker holds yet (pickup lag)
LAG_PROBE = 50


def history_key(queue_name: str, host: str, pid: int) -> str:
    return f'{history_key_prefix}{queue_name}:{host}:{pid}'


class HistoryRecorder:
    """Appends a supervisor's samples; call `record` whenever the health keys are published."""

    def __init__(self, min_spacing_s: float = MIN_SPACING_S) -> None:
        self.min_spacing_s = min_spacing_s
        self.last_at: float | None = None

    def record(self, client: Any, snapshot: Snapshot, queued: int | None, now_wall: float | None = None) -> bool:
        """Write one sample unless the last one is too recent; two round trips. Redis errors propagate."""
        now_wall = time.time() if now_wall is None else now_wall
        if self.last_at is not None and now_wall - self.last_at < self.min_spacing_s:
            return False
        now_ms = int(now_wall * 1000)
        due, lag_ms = oldest_waiting(client, snapshot.queue_name, now_ms)
        totals = snapshot.totals
        sample = {
            't': now_ms, 'c': totals.complete, 'f': totals.failed, 'r': totals.retried, 'o': totals.ongoing,
            'q': queued if queued is not None else -1, 'd': due, 'lag': lag_ms, 'ready': snapshot.ready,
            'procs': snapshot.procs,
        }  # fmt: skip
        key = history_key(snapshot.queue_name, snapshot.host, snapshot.pid)
        pipe = client.pipeline(transaction=False)
        pipe.zadd(key, {json.dumps(sample, separators=(',', ':')): now_ms})
        pipe.zremrangebyscore(key, '-inf', now_ms - KEEP_S * 1000)
        pipe.zremrangebyrank(key, 0, -MAX_SAMPLES - 1)
        pipe.pexpire(key, KEEP_S * 1000)
        pipe.execute()
        self.last_at = now_wall
        return True


def oldest_waiting(client: Any, queue_name: str, now_ms: int) -> tuple[int, int]:
    """(due jobs, ms the oldest due job that no worker holds has waited); running jobs stay in arq's queue."""
    pipe = client.pipeline(transaction=False)
    pipe.zcount(queue_name, '-inf', now_ms)
    pipe.zrangebyscore(queue_name, '-inf', now_ms, start=0, num=LAG_PROBE, withscores=True)
    due, head = pipe.execute()
    if not head:
        return int(due), 0
    pipe = client.pipeline(transaction=False)  # which of the oldest due jobs are running: one EXISTS each
    for job_id, _ in head:
        pipe.exists(in_progress_key_prefix + (job_id.decode() if isinstance(job_id, bytes) else job_id))
    for (_, score), running in zip(head, pipe.execute(), strict=True):
        if not running:
            return int(due), max(now_ms - int(score), 0)
    return int(due), 0


def parse_sample(raw: bytes | str) -> dict[str, Any] | None:
    """One sample, or None when it is not ours (a reader must survive what another version wrote)."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get('t'), int):
        return None
    return value
