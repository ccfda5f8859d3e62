"""The fleet as its supervisors publish it: their health documents and their throughput histories.

Every `arq-supervise` writes `arq:supervisor:<queue>:<host>:<pid>` (kept an hour after its last write, deleted on a
clean stop) and `arq:history:<queue>:<host>:<pid>` (kept an hour). A supervisor with history but no record has
stopped or its record expired; one whose record missed two of its own health intervals is stale, judged as
`arq-supervise status` judges it (health.record_is_stale).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from arq.constants import supervisor_key_prefix
from arq_supervise.health import record_is_stale
from arq_supervise.history import history_key_prefix, parse_sample

from .model import RedisClient

HOUR_MS = 3_600_000


@dataclass
class SupervisorView:
    host: str
    pid: int
    document: dict[str, Any] | None  # None: it has history but no live key (stopped, or lost)
    samples: list[dict[str, Any]] = field(default_factory=list)
    jobs_per_s: float | None = None
    age_s: float | None = None

    @property
    def stale(self) -> bool:
        return self.document is None or (self.age_s is not None and record_is_stale(self.document, self.age_s))

    @property
    def children(self) -> list[dict[str, Any]]:
        return list((self.document or {}).get('children') or [])

    @property
    def last_seen_ms(self) -> int | None:
        return int(self.samples[-1]['t']) if self.samples else None


def _text(value: bytes | str) -> str:
    return value.decode(errors='replace') if isinstance(value, bytes) else value


def _host_pid(key: str, prefix: str) -> tuple[str, int] | None:
    host, _, pid = key[len(prefix) :].rpartition(':')
    return (host, int(pid)) if pid.isdigit() and host else None


async def _scan(redis: RedisClient, pattern: str, cap: int = 2000) -> list[str]:
    keys: list[str] = []
    async for key in redis.scan_iter(match=pattern, count=1000):
        keys.append(_text(key))
        if len(keys) >= cap:
            break
    return sorted(keys)


def _glob(queue: str) -> str:
    """The queue name escaped for MATCH (a queue name may hold glob characters)."""
    return ''.join('\\' + ch if ch in '*?[]\\' else ch for ch in queue)


async def read_records(redis: RedisClient, queue: str, now_ms: int) -> list[SupervisorView]:
    """The record of every supervisor that published on `queue` (no history): one SCAN and one MGET."""
    prefix = f'{supervisor_key_prefix}{queue}:'
    keys = await _scan(redis, f'{supervisor_key_prefix}{_glob(queue)}:*')
    views = []
    for key, raw in zip(keys, await redis.mget(keys) if keys else [], strict=True):
        ident = _host_pid(key, prefix)
        document = _json(raw)
        if ident is not None and document is not None:
            views.append(_derive(SupervisorView(ident[0], ident[1], document), now_ms))
    return views


async def read_fleet(redis: RedisClient, queue: str, now_ms: int, since_ms: int | None = None) -> list[SupervisorView]:
    """Every supervisor on `queue` that is alive or left history in the last hour, live ones first."""
    views = {(v.host, v.pid): v for v in await read_records(redis, queue, now_ms)}
    hist_prefix = f'{history_key_prefix}{queue}:'
    hist_keys = await _scan(redis, f'{history_key_prefix}{_glob(queue)}:*')
    since = since_ms if since_ms is not None else now_ms - HOUR_MS
    pipe = redis.pipeline(transaction=False)
    for key in hist_keys:
        pipe.zrangebyscore(key, since, '+inf')
    for key, raws in zip(hist_keys, await pipe.execute() if hist_keys else [], strict=True):
        ident = _host_pid(key, hist_prefix)
        if ident is None:
            continue
        view = views.setdefault(ident, SupervisorView(ident[0], ident[1], None))
        view.samples = [s for s in map(parse_sample, raws) if s is not None]
        _derive(view, now_ms)
    return sorted(views.values(), key=lambda v: (v.document is None, v.host, v.pid))


def _json(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _derive(view: SupervisorView, now_ms: int) -> SupervisorView:
    if view.document is not None and isinstance(view.document.get('updated_at'), int | float):
        view.age_s = max(now_ms / 1000 - float(view.document['updated_at']), 0.0)
    if len(view.samples) >= 2:
        a, b = view.samples[-2], view.samples[-1]
        view.jobs_per_s = rate(a, b, ('c', 'f', 'r'))
    return view


def rate(a: dict[str, Any], b: dict[str, Any], fields: tuple[str, ...]) -> float | None:
    """Per-second increase of the summed counters between two samples (a counter never goes down in one life)."""
    elapsed_s = (int(b['t']) - int(a['t'])) / 1000
    if elapsed_s <= 0:
        return None
    done = sum(int(b.get(f, 0)) - int(a.get(f, 0)) for f in fields)
    return round(max(done, 0) / elapsed_s, 2)
