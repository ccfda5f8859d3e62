"""The parent never waits long on Redis: with Redis asleep, signals and heartbeats are still answered at once."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from arq import create_pool
from arq.connections import RedisSettings
from tests.integration.harness import Supervisor
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

JOBS_HELD = 500


@pytest.fixture
def debug_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(directory=tmp_path / 'redis', extra_args=('--enable-debug-command', 'local'))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def slow_supervisor(tmp_path: Path, queue_name: str, debug_redis: RedisServer) -> Iterator[Supervisor]:
    sup = Supervisor(tmp_path, queue_name, debug_redis.port, 0)
    yield sup
    leftovers = sup.cleanup()
    assert not leftovers, f'processes outlived the test: {leftovers}'


def _enqueue_sleepers(port: int, queue: str, n: int) -> None:
    async def go() -> None:
        pool = await create_pool(RedisSettings(port=port))
        try:
            for i in range(n):
                await pool.enqueue_job('sleeper', f's{i}', 60, _queue_name=queue)
        finally:
            await pool.aclose()

    asyncio.run(go())


def _asleep(port: int) -> bool:
    probe = redis.Redis(port=port, socket_timeout=0.05, socket_connect_timeout=0.05, retry=Retry(NoBackoff(), 0))
    try:
        probe.ping()
        return False
    except redis.TimeoutError:
        return True
    finally:
        probe.close()


def _logged_at(log: str, text: str) -> float:
    [line] = [line for line in log.splitlines() if text in line]
    return datetime.strptime(line[:23], '%Y-%m-%d %H:%M:%S,%f').timestamp()


@pytest.mark.timeout(90)
def test_sigterm_is_answered_within_100ms_while_redis_sleeps_after_a_child_holding_500_jobs_died(
    slow_supervisor: Supervisor, debug_redis: RedisServer
) -> None:
    sup = slow_supervisor
    sup.start('--procs', '1', settings=sup.write_settings(max_jobs=JOBS_HELD + 100))
    [holder] = sup.wait_ready(1)
    _enqueue_sleepers(debug_redis.port, sup.queue, JOBS_HELD)
    wait_until(lambda: sum(c['held'] for c in sup.status().get('children', [])) == JOBS_HELD, timeout=30,
               message=f'{JOBS_HELD} jobs held\n{sup.log()[-2000:]}')  # fmt: skip
    sup.signal(signal.SIGTTIN)
    wait_until(lambda: len(sup.ready_children()) == 2, timeout=15, message='a second, healthy child')
    [healthy] = [pid for pid in sup.ready_children() if pid != holder]

    admin = redis.Redis(port=debug_redis.port, socket_timeout=10)
    sleeper = threading.Thread(target=admin.execute_command, args=('DEBUG', 'SLEEP', '1.5'))
    sleeper.start()
    wait_until(lambda: _asleep(debug_redis.port), timeout=5, message='redis asleep')
    os.kill(holder, signal.SIGKILL)
    wait_until(lambda: 'child exited slot=1' in sup.log(), timeout=5, message='the holder reaped')
    sent_at = time.time()
    sup.signal(signal.SIGTERM)
    sleeper.join(timeout=10)

    assert sup.wait(timeout=30) == 0
    log = sup.log()
    answered_s = _logged_at(log, 'SIGTERM received: draining') - sent_at
    assert answered_s < 0.1, f'SIGTERM answered after {answered_s * 1000:.0f} ms\n{log[-3000:]}'
    assert 'child unresponsive' not in log
    assert f'child exited slot=2 pid={healthy} status="exited cleanly"' in log
    loop = sup.status()['loop']
    print(f'parent loop under a sleeping Redis: SIGTERM answered in {answered_s * 1000:.0f} ms, '
          f'busy p99 {loop["p99_ms"]} ms, longest turn {loop["max_ms"]} ms over {loop["turns"]} turns')  # fmt: skip
    assert loop['max_ms'] < 100
    assert not sup.redis.exists(*(f'arq:in-progress:{job_id}' for job_id in sup.redis.zrange(sup.queue, 0, -1)))
    admin.close()
