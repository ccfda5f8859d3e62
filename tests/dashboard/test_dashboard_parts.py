"""The dashboard's parts on a real Redis, without a browser: history, series, the restricted unpickler, mounting."""

from __future__ import annotations

import asyncio
import os
import pickle
from pathlib import Path
from typing import Any

import httpx
import redis
from starlette.applications import Starlette
from starlette.routing import Mount

from arq.connections import RedisSettings
from arq_supervise.dashboard import create_app
from arq_supervise.dashboard.charts import build_series
from arq_supervise.dashboard.safe_load import Opaque, restricted_loads, safe_repr
from arq_supervise.health import Counters
from arq_supervise.history import KEEP_S, HistoryRecorder, history_key, oldest_waiting
from arq_supervise.reporting import Snapshot
from tests.support.redis_server import RedisServer


def snapshot(queue: str, complete: int, failed: int = 0) -> Snapshot:
    return Snapshot(pid=4242, host='host-a', queue_name=queue, state='running', procs=2,
                    totals=Counters(complete, failed, 0, 1), children=[])  # fmt: skip


def test_history_keeps_one_hour_at_most_one_sample_a_second(sync_redis: redis.Redis, queue_name: str) -> None:
    recorder = HistoryRecorder()
    start = 1_800_000_000.0
    for i in range(800):  # two hours and more at one sample per 10 s
        assert recorder.record(sync_redis, snapshot(queue_name, i * 10), queued=0, now_wall=start + i * 10)
    assert not recorder.record(sync_redis, snapshot(queue_name, 9999), queued=0, now_wall=start + 7990.5)
    key = history_key(queue_name, 'host-a', 4242)
    scores = [score for _, score in sync_redis.zrange(key, 0, -1, withscores=True)]
    assert len(scores) == 360 and scores[0] == (start + 7990 - KEEP_S + 10) * 1000
    assert 0 < sync_redis.pttl(key) <= KEEP_S * 1000


def test_pickup_lag_is_the_oldest_due_job_no_worker_holds(sync_redis: redis.Redis, queue_name: str) -> None:
    now = 1_800_000_000_000
    sync_redis.zadd(queue_name, {'running': now - 9000, 'waiting': now - 4000, 'later': now + 60_000})
    sync_redis.set('arq:in-progress:running', 'token')
    assert oldest_waiting(sync_redis, queue_name, now) == (2, 4000)
    sync_redis.delete('arq:in-progress:running')
    assert oldest_waiting(sync_redis, queue_name, now) == (2, 9000)


def test_series_sum_rates_across_supervisors_and_show_gaps() -> None:
    now = 1_800_000_000_000
    a = [{'t': now - 600_000 + i * 10_000, 'c': i * 100, 'f': i, 'd': 5, 'lag': 250} for i in range(61)]
    b = [{'t': now - 300_000 + i * 10_000, 'c': 1000 + i * 50, 'f': 0, 'd': 7, 'lag': 100} for i in range(31)]
    series = build_series([a, b], now)
    known = [v for v in series.jobs_per_s if v is not None]
    assert abs(known[0] - 10.1) < 0.01  # only the first supervisor early on: (100 + 1) jobs per 10 s
    assert abs(known[-1] - 15.1) < 0.01  # both at the end: 10.1 + 5
    assert max(v for v in series.depth if v is not None) == 7
    assert max(v for v in series.lag_s if v is not None) == 0.25


class Boom:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f'touch {self.marker}',)


class Plain:
    def __init__(self) -> None:
        self.secret = 'kept as state, never as an object'


def test_restricted_unpickler_builds_plain_data_and_placeholders_only(tmp_path: Path) -> None:
    from arq.worker import JobExecutionFailed

    marker = tmp_path / 'pwned'
    value = {'boom': Boom(marker), 'eval': eval, 'plain': Plain(), 'cancel': asyncio.CancelledError(),
             'error': JobExecutionFailed('max 3 retries exceeded'),
             'data': [1, 2.5, 'x', b'y', (None,), {3}]}  # fmt: skip
    loaded = restricted_loads(pickle.dumps(value))
    assert not marker.exists()
    assert isinstance(loaded['boom'], Opaque) and loaded['boom'].name == 'posix.system'
    assert isinstance(loaded['eval'], type) and issubclass(loaded['eval'], Opaque)
    assert isinstance(loaded['plain'], Opaque) and loaded['plain'].state == {
        'secret': 'kept as state, never as an object'
    }
    assert safe_repr(loaded['error']) == "JobExecutionFailed('max 3 retries exceeded')"
    assert safe_repr(loaded['cancel']) == 'CancelledError()'
    assert loaded['data'] == value['data']
    assert safe_repr(loaded['plain']).endswith('test_dashboard_parts.Plain>')


async def test_mounted_app_serves_every_page_under_its_prefix(
    redis_server: RedisServer, redis_db: int, queue_name: str
) -> None:
    settings = RedisSettings(port=redis_server.port, database=redis_db)
    dashboard = create_app(settings, [queue_name])
    outer = Starlette(routes=[Mount('/arq', dashboard)])
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url='http://testserver') as client:
        page = await client.get('/arq/')
        assert page.status_code == 200
        assert 'href="/arq/jobs?queue=' in page.text and 'src="/arq/static/dashboard.js"' in page.text
        assert (await client.get('/arq/static/dashboard.css')).status_code == 200
        for path in ('/arq/fleet', f'/arq/jobs?queue={queue_name}&state=failed', '/arq/job?id=nope'):
            assert (await client.get(path)).status_code == 200, path
        assert "default-src 'self'" in page.headers['content-security-policy']
        assert (await client.get('/arq/job/abort?id=nope')).status_code == 403  # read-only unless asked
    await dashboard.state.dashboard.redis.close()
