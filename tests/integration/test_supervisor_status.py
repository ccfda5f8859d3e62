"""`arq-supervise status`: the supervisor's own jobs/s, each record's age, and records kept when writes stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from tests.integration.harness import Supervisor
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until


def status_json(supervisor: Supervisor, settings: str) -> dict[str, Any]:
    command = [sys.executable, '-m', 'arq_supervise', 'status', '--json', settings]
    out = subprocess.run(command, cwd=supervisor.tmp_path, env=supervisor.env(), capture_output=True, text=True,
                         timeout=30)  # fmt: skip
    assert out.returncode in (0, 1), out.stderr
    return dict(json.loads(out.stdout))


def enqueue_paced(supervisor: Supervisor, count: int, per_s: float, start_in_s: float) -> None:
    """`count` quick jobs deferred to run at exactly `per_s` from `start_in_s` on: the workers keep the pace."""
    from arq import create_pool
    from arq.connections import RedisSettings

    async def go() -> None:
        pool = await create_pool(RedisSettings(port=supervisor.redis_port, database=supervisor.db))
        start = datetime.now() + timedelta(seconds=start_in_s)
        try:
            for i in range(count):
                await pool.enqueue_job('quick', f'r{i}', _queue_name=supervisor.queue,
                                       _defer_until=start + timedelta(seconds=i / per_s))  # fmt: skip
        finally:
            await pool.aclose()

    asyncio.run(go())


def test_status_shows_the_rate_the_supervisor_measured_at_a_known_rate(supervisor: Supervisor) -> None:
    settings = supervisor.write_settings()
    supervisor.start('--procs', '2', '--health-interval', '1', settings=settings)
    supervisor.wait_ready(2)
    load_start = time.time() + 1
    enqueue_paced(supervisor, 700, per_s=50, start_in_s=1)  # 14 s of load

    def rows_of_load() -> list[dict[str, Any]]:
        """Records written once the supervisor's 10 s window holds load only."""
        rows = status_json(supervisor, settings)['supervisors']
        return [r for r in rows if load_start + 10.5 <= r['updated_at'] <= load_start + 13.5]

    rates = [wait_until(rows_of_load, timeout=30, message='a record written 10.5 s into the load')[0]['jobs_per_s']]
    rates.append(status_json(supervisor, settings)['supervisors'][0]['jobs_per_s'])  # when read: no matter
    assert all(45 <= r <= 55 for r in rates), rates


def test_status_marks_a_killed_supervisor_with_its_age(supervisor: Supervisor) -> None:
    settings = supervisor.write_settings()
    supervisor.start('--procs', '1', settings=settings)
    supervisor.wait_ready(1)
    wait_until(lambda: (d := status_json(supervisor, settings))['supervisors'] and d, message='a record')
    supervisor.signal(signal.SIGKILL)
    supervisor.wait(timeout=10)
    [row] = status_json(supervisor, settings)['supervisors']  # the record outlives its writer...
    assert row['pid'] == supervisor.pid
    assert row['verdict'] == 'gone'  # ...but this host sees that its process is gone
    assert row['age_s'] >= 0
    table = subprocess.run([sys.executable, '-m', 'arq_supervise', 'status', settings], cwd=supervisor.tmp_path,
                           env=supervisor.env(), capture_output=True, text=True, timeout=30)  # fmt: skip
    assert table.returncode == 1  # no live supervisor
    assert '0 supervisor(s) running, 1 not refreshed' in table.stdout
    assert 'its process is gone' in table.stdout


def test_a_child_state_change_is_published_at_once(supervisor: Supervisor) -> None:
    supervisor.start('--procs', '2', settings=supervisor.write_settings())  # health keys every 5 s
    supervisor.wait_ready(2)
    noticed = time.monotonic()

    def published_ready() -> bool:
        raw = supervisor.redis.get(f'arq:supervisor:{supervisor.queue}:{os.uname().nodename}:{supervisor.pid}')
        return raw is not None and [c['state'] for c in json.loads(raw)['children']] == ['ready', 'ready']

    wait_until(published_ready, timeout=10, message='both children ready in the Redis record')
    assert time.monotonic() - noticed < 2.5, 'published with the change, not at the next 5 s interval'


def test_status_keeps_the_last_record_while_redis_refuses_writes(tmp_path: Path, queue_name: str) -> None:
    server = RedisServer(directory=tmp_path / 'redis')
    server.start()
    supervisor = Supervisor(tmp_path / 'sup', queue_name, server.port, 0)
    (tmp_path / 'sup').mkdir()
    admin = redis.Redis(port=server.port)
    try:
        settings = supervisor.write_settings()
        supervisor.start('--procs', '1', '--health-interval', '0.5', settings=settings)
        supervisor.wait_ready(1)
        wait_until(lambda: status_json(supervisor, settings)['supervisors'], message='a record')
        admin.config_set('min-replicas-to-write', 1)  # no replica: every write is refused with NOREPLICAS
        wait_until(lambda: 'NOREPLICAS' in (supervisor.status().get('publish_error') or ''),
                   message='the supervisor failing to write')  # fmt: skip
        # past three health intervals: arq's line has expired, our record is still there, judged by its age
        wait_until(lambda: admin.exists(f'{queue_name}:health-check') == 0, message='the health line expired')
        [row] = wait_until(lambda: [r for r in status_json(supervisor, settings)['supervisors']
                                    if r['verdict'] == 'stale'], message='the record marked stale')  # fmt: skip
        assert row['pid'] == supervisor.pid and row['age_s'] >= 3  # stale from 2 intervals + 2 s (ages are rounded)
        admin.config_set('min-replicas-to-write', 0)
        wait_until(lambda: [r['verdict'] for r in status_json(supervisor, settings)['supervisors']] == ['live'],
                   message='the record refreshed once Redis takes writes')  # fmt: skip
    finally:
        leftovers = supervisor.cleanup()
        admin.close()
        server.stop()
    assert not leftovers
