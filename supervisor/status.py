"""`arq-supervise status`: a table of every supervisor on a queue, read from their keys in Redis.

Each supervisor publishes `arq:supervisor:<queue>:<host>:<pid>` (see health.py); this reads them all with SCAN, twice
an interval apart so it can show jobs/s, and prints a table for a person or JSON for a machine.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis

from arq.constants import supervisor_key_prefix


def read_supervisors(client: redis.Redis, queue_name: str) -> dict[str, dict[str, Any]]:
    """Every live supervisor's document on this queue, by key."""
    keys = sorted(client.scan_iter(match=f'{supervisor_key_prefix}{queue_name}:*', count=1000))
    if not keys:
        return {}
    out = {}
    for key, raw in zip(keys, client.mget(keys), strict=True):
        if raw is None:  # expired between SCAN and MGET
            continue
        try:
            out[key.decode() if isinstance(key, bytes) else key] = json.loads(raw)
        except ValueError:
            continue
    return out


def _done(document: Mapping[str, Any]) -> int:
    totals = document.get('totals') or {}
    return int(totals.get('complete', 0)) + int(totals.get('failed', 0)) + int(totals.get('retried', 0))


def with_rates(
    before: Mapping[str, dict[str, Any]], after: Mapping[str, dict[str, Any]], elapsed_s: float
) -> list[dict[str, Any]]:
    """The later documents, each with `jobs_per_s` over the interval (None for a supervisor seen only once)."""
    rows = []
    for key, document in after.items():
        previous = before.get(key)
        rate = None
        if previous is not None and elapsed_s > 0:
            rate = round(max(_done(document) - _done(previous), 0) / elapsed_s, 1)
        rows.append({**document, 'jobs_per_s': rate})
    return rows


def render_table(rows: list[dict[str, Any]], queue_name: str) -> str:
    if not rows:
        return f'no supervisor is running on queue {queue_name!r}'
    lines = [f'queue {queue_name!r}: {len(rows)} supervisor(s), {sum(r.get("queued", 0) for r in rows[:1])} queued']
    header = f'{"host":<20} {"pid":>7} {"state":<9} {"ready":>7} {"jobs/s":>8} {"complete":>9} {"failed":>7}'
    lines += ['', header, '-' * len(header)]
    for r in rows:
        totals = r.get('totals') or {}
        rate = '-' if r.get('jobs_per_s') is None else f'{r["jobs_per_s"]:.1f}'
        lines.append(
            f'{str(r.get("host"))[:20]:<20} {r.get("pid", 0):>7} {r.get("state", "?"):<9} '
            f'{r.get("ready", 0):>3}/{r.get("procs", 0):<3} {rate:>8} {totals.get("complete", 0):>9} '
            f'{totals.get("failed", 0):>7}'
        )
        for c in r.get('children') or []:
            memory = '-' if c.get('memory_mib') is None else f'{c["memory_mib"]:.0f} MiB'
            lines.append(
                f'  worker {c.get("slot")}: pid {c.get("pid")} {c.get("state")} ongoing={c.get("ongoing")} '
                f'complete={c.get("complete")} memory={memory} restarts={c.get("restarts")}'
                + (f' redis_error="{c["redis_error"]}"' if c.get('redis_error') else '')
            )
    return '\n'.join(lines)


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
    """Print the table (or JSON) once, or every interval with `watch`; 0 when a supervisor was found, else 1."""
    before = read_supervisors(client, queue_name)
    started = time.monotonic()
    while True:
        sleep(interval_s)
        after = read_supervisors(client, queue_name)
        now = time.monotonic()
        rows = with_rates(before, after, now - started)
        if as_json:
            echo(json.dumps({'queue': queue_name, 'supervisors': rows}, sort_keys=True))
        else:
            echo(('\x1b[2J\x1b[H' if watch else '') + render_table(rows, queue_name))
        if not watch:
            return 0 if rows else 1
        before, started = after, now
