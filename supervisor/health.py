"""Counters and their aggregation, the health keys in Redis and the local status file.

The messages that carry the counters from the children are in arq_supervise.protocol.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from arq.constants import health_check_key_suffix, supervisor_key_prefix
from arq.health import health_check_line as arq_health_line


@dataclass(frozen=True, slots=True)
class Counters:
    """A worker's job counters, as arq's health line names them."""

    complete: int = 0
    failed: int = 0
    retried: int = 0
    ongoing: int = 0

    def __add__(self, other: Counters) -> Counters:
        return Counters(
            self.complete + other.complete,
            self.failed + other.failed,
            self.retried + other.retried,
            self.ongoing + other.ongoing,
        )

    @property
    def jobs_done(self) -> int:
        """Jobs that went through this worker and left it (what max-jobs-per-child counts)."""
        return self.complete + self.failed + self.retried


def total(counters: Iterable[Counters]) -> Counters:
    result = Counters()
    for c in counters:
        result = result + c
    return result


def retire(totals: Counters, final: Counters) -> Counters:
    """Fold a dead child's last counters into the supervisor's running totals (nothing is ongoing any more)."""
    return totals + Counters(final.complete, final.failed, final.retried, 0)


def health_check_line(counters: Counters, queued: int, now: datetime) -> str:
    """arq's `<queue>:health-check` value, so `arq --check` works against a supervised fleet."""
    return arq_health_line(now, counters.complete, counters.failed, counters.retried, counters.ongoing, queued)


def health_check_key(queue_name: str, override: str | None = None) -> str:
    return override or queue_name + health_check_key_suffix


def supervisor_key(queue_name: str, host: str, pid: int) -> str:
    return f'{supervisor_key_prefix}{queue_name}:{host}:{pid}'


#: the per-supervisor key outlives its last write by this much: readers judge it by its own `updated_at`, so a
#: supervisor that cannot write (Redis refusing writes, NOREPLICAS; a partition; SIGKILL) still shows, with its age
RECORD_TTL_S = 3600.0


def record_is_stale(document: Mapping[str, Any], age_s: float) -> bool:
    """Older than two of its writer's health intervals and a margin: it missed two writes."""
    interval_s = float(document.get('health_interval_s') or 5.0)
    return age_s > 2 * interval_s + 2.0


def pid_namespace() -> str | None:
    """Identifies this machine's boot and PID namespace: a reader sharing it can ask whether a writer's pid lives."""
    try:
        boot_id = Path('/proc/sys/kernel/random/boot_id').read_text().strip()
        return f'{boot_id}:{os.stat("/proc/self/ns/pid").st_ino}'
    except OSError:
        return None


def default_status_file(queue_name: str) -> Path:
    """Where the status file lives when --status-file is not given: derived from the queue so `--check` finds it."""
    safe = ''.join(ch if ch.isalnum() or ch in '-_.' else '_' for ch in queue_name)
    base = os.environ.get('XDG_RUNTIME_DIR') or tempfile.gettempdir()
    return Path(base) / f'arq-supervise.{safe}.json'


@dataclass(frozen=True, slots=True)
class ChildStatus:
    slot: int
    pid: int
    state: str
    complete: int
    failed: int
    retried: int
    ongoing: int
    held: int
    memory_mib: float | None
    heartbeat_age_s: float | None
    redis_error: str | None
    restarts: int
    last_exit: str | None


def status_document(
    *,
    pid: int,
    host: str,
    queue_name: str,
    state: str,
    procs: int,
    totals: Counters,
    children: list[ChildStatus],
    now_wall: float,
    loop: Mapping[str, float | int] | None = None,
) -> dict[str, Any]:
    """The JSON published as the status file and the per-supervisor key."""
    return {
        'pid': pid,
        'host': host,
        'queue': queue_name,
        'state': state,
        'procs': procs,
        'ready': sum(1 for c in children if c.state == 'ready'),
        'updated_at': round(now_wall, 3),
        'totals': asdict(totals),
        'children': [asdict(c) for c in children],
        'loop': dict(loop or {}),
    }


def write_status_file(path: Path, document: Mapping[str, Any]) -> None:
    """Replace the file atomically so a probe never reads half of it."""
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)  # O_EXCL: no symlink games
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(json.dumps(document, indent=1, sort_keys=True) + '\n')
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check_status(
    document: Mapping[str, Any], *, now_wall: float, max_age_s: float, pid_alive: bool, live_only: bool = False
) -> str | None:
    """
    Why the supervisor described by `document` is not healthy, or None when it is alive and fully ready.

    `live_only` asks only whether the supervisor's loop is alive: children restarting (say, while Redis is down)
    are no reason for Kubernetes to restart the pod.
    """
    if not pid_alive:
        return f'supervisor pid {document.get("pid")} is not running'
    age = now_wall - float(document.get('updated_at', 0))
    if age > max_age_s:
        return f'status is {age:.1f}s old (limit {max_age_s:.1f}s): supervisor loop stuck?'
    if live_only:
        return None
    if document.get('state') != 'running':
        return f'supervisor is {document.get("state")}'
    ready, procs = int(document.get('ready', 0)), int(document.get('procs', 0))
    if ready < procs:
        return f'{ready}/{procs} children ready'
    return None


def status_file_owner(path: Path, *, now_wall: float, own_pid: int, max_age_s: float = 5.0) -> dict[str, Any] | None:
    """The document of another supervisor that is still writing `path` (alive, not stopped, fresh), else None.

    Two supervisors writing one status file would make `--check` answer for whichever wrote last, so the second
    one refuses to start. A file left by a stopped or killed supervisor (or by ourselves, PID 1 again in a restarted
    container) is taken over.
    """
    try:
        document = json.loads(path.read_text())
        pid = int(document.get('pid', 0))
        age = now_wall - float(document.get('updated_at', 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    if pid <= 0 or pid == own_pid or document.get('state') == 'stopped' or age > max_age_s or not pid_alive(pid):
        return None
    return dict(document)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class HealthPublisher:
    """Writes the arq-format health line and the per-supervisor key; a Redis outage only delays the next try."""

    def __init__(self, *, queue_name: str, health_key: str, supervisor_key: str, interval_s: float) -> None:
        self.queue_name = queue_name
        self.health_key = health_key
        self.supervisor_key = supervisor_key
        self.interval_s = interval_s
        self.failing_since: float | None = None
        self.error: str | None = None
        self.last_queued: int | None = None

    def publish(self, client: Any, counters: Counters, document: Mapping[str, Any], now: datetime) -> None:
        """One round trip for the queue length, one for both keys.

        arq's line expires after three intervals (so one slow tick is fine and `arq --check` sees a dead fleet); our
        own record lives for RECORD_TTL_S, so readers can show a supervisor that stopped writing, with its age.
        """
        queued = int(client.zcard(self.queue_name))
        self.last_queued = queued
        pipe = client.pipeline(transaction=False)
        pipe.set(self.health_key, health_check_line(counters, queued, now), px=int(self.interval_s * 3 * 1000))
        pipe.set(self.supervisor_key, json.dumps({**document, 'queued': queued}), px=int(RECORD_TTL_S * 1000))
        pipe.execute()

    def remove(self, client: Any) -> None:
        """Remove this supervisor's own key; the shared health line is left to expire (other hosts may write it)."""
        client.delete(self.supervisor_key)
