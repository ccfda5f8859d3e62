"""`arq-supervise status`: a table of every supervisor on a queue, read from their keys in Redis.

Each supervisor publishes `arq:supervisor:<queue>:<host>:<pid>` (see health.py) with its own jobs/s, measured over
its own window, and the time it wrote the record. The key outlives its writer by an hour, so a reader judges each
record by its age: a supervisor that stopped writing (killed, cut off, or refused by Redis) is shown as stale, with
how long ago it last wrote, rather than vanishing. A clean stop deletes the key.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis

from arq.constants import supervisor_key_prefix
from arq_supervise import health


def read_supervisors(client: redis.Redis, queue_name: str) -> dict[str, dict[str, Any]]:
    """Every supervisor record on this queue, by key."""
    glob = ''.join('\\' + ch if ch in '*?[]\\' else ch for ch in queue_name)
    keys = sorted(client.scan_iter(match=f'{supervisor_key_prefix}{glob}:*', count=1000))
    if not keys:
        return {}
    out = {}
    for key, raw in zip(keys, client.mget(keys), strict=True):
        if raw is None:  # deleted between SCAN and MGET
            continue
        try:
            document = json.loads(raw)
        except ValueError:
            continue
        if isinstance(document, dict):
            out[key.decode() if isinstance(key, bytes) else key] = document
    return out


def judge(
    document: Mapping[str, Any], *, now_wall: float, pid_namespace: str | None, pid_alive: Callable[[int], bool]
) -> dict[str, Any]:
    """The record with its `age_s`, `verdict` (`live`; `stale`: missed two writes; `gone`: its pid is dead) and
    `stale` (not live).

    Ages compare the writer's clock with ours: between hosts, clock skew adds to them.
    """
    age_s = max(now_wall - float(document.get('updated_at') or 0), 0.0)
    verdict = 'stale' if health.record_is_stale(document, age_s) else 'live'
    same_namespace = pid_namespace is not None and document.get('pid_namespace') == pid_namespace
    if same_namespace and not pid_alive(int(document.get('pid') or 0)):
        verdict = 'gone'
    return {**document, 'age_s': round(age_s, 1), 'verdict': verdict, 'stale': verdict != 'live'}


def _age(seconds: float) -> str:
    if seconds < 120:
        return f'{seconds:.0f}s'
    if seconds < 7200:
        return f'{seconds / 60:.0f}m'
    return f'{seconds / 3600:.0f}h'


def _state(row: Mapping[str, Any]) -> str:
    if row['verdict'] == 'live':
        return str(row.get('state', '?'))
    return str(row['verdict'])


def render_table(rows: list[dict[str, Any]], queue_name: str) -> str:
    if not rows:
        return f'no supervisor is running on queue {queue_name!r}'
    live = [r for r in rows if r['verdict'] == 'live']
    queued = min(live or rows, key=lambda r: r['age_s']).get('queued', 0)  # the freshest record's
    lines = [f'queue {queue_name!r}: {len(live)} supervisor(s) running, {len(rows) - len(live)} not refreshed, '
             f'{queued} queued']  # fmt: skip
    header = (f'{"host":<20} {"pid":>7} {"state":<9} {"age":>5} {"ready":>7} {"jobs/s":>8} {"complete":>9} '
              f'{"failed":>7}')  # fmt: skip
    lines += ['', header, '-' * len(header)]
    for r in rows:
        lines += _rows(r)
    return '\n'.join(lines)


def _rows(r: Mapping[str, Any]) -> list[str]:
    totals = r.get('totals') or {}
    rate = '-' if r.get('jobs_per_s') is None else f'{r["jobs_per_s"]:.1f}'
    lines = [
        f'{str(r.get("host"))[:20]:<20} {r.get("pid", 0):>7} {_state(r):<9} {_age(r["age_s"]):>5} '
        f'{r.get("ready", 0):>3}/{r.get("procs", 0):<3} {rate:>8} {totals.get("complete", 0):>9} '
        f'{totals.get("failed", 0):>7}'
    ]
    if r['verdict'] != 'live':
        why = f': {r["publish_error"]}' if r.get('publish_error') else ''
        what = 'its process is gone' if r['verdict'] == 'gone' else f'not refreshed for {_age(r["age_s"])}{why}'
        lines.append(f'  last known record ({what}; it said {r.get("state", "?")}):')
    for c in r.get('children') or []:
        memory = '-' if c.get('memory_mib') is None else f'{c["memory_mib"]:.0f} MiB'
        lines.append(
            f'  worker {c.get("slot")}: pid {c.get("pid")} {c.get("state")} ongoing={c.get("ongoing")} '
            f'complete={c.get("complete")} memory={memory} restarts={c.get("restarts")}'
            + (f' redis_error="{c["redis_error"]}"' if c.get('redis_error') else '')
        )
    return lines


def rows_now(client: redis.Redis, queue_name: str) -> list[dict[str, Any]]:
    """Every record, judged; live ones first."""
    namespace, now = health.pid_namespace(), time.time()
    rows = [judge(d, now_wall=now, pid_namespace=namespace, pid_alive=health.pid_alive)
            for d in read_supervisors(client, queue_name).values()]  # fmt: skip
    return sorted(rows, key=lambda r: (r['verdict'] != 'live', r['age_s']))


def show(
    client: redis.Redis,
    queue_name: str,
    *,
    as_json: bool,
    watch: bool,
    interval_s: float,
    echo: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Print the table (or JSON) once, or every interval with `watch`; 0 when a live supervisor was found, else 1."""
    while True:
        rows = rows_now(client, queue_name)
        if as_json:
            echo(json.dumps({'queue': queue_name, 'supervisors': rows}, sort_keys=True))
        else:
            echo(('\x1b[2J\x1b[H' if watch else '') + render_table(rows, queue_name))
        if not watch:
            return 0 if any(r['verdict'] == 'live' for r in rows) else 1
        sleep(interval_s)
