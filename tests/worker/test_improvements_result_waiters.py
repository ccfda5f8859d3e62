"""Thousands of concurrent `job.result()` in one client share a few connections (and all return).

The waiting client and the worker are separate processes here, as they are for users: the worker runs `python -m
arq` on the test's queue, and this process only enqueues and waits. Connections are counted by client name.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from arq.connections import RedisSettings, create_pool
from arq.jobs import Job
from tests.support.redis_server import RedisServer
from tests.support.waiting import async_wait_until
from tests.worker.helpers import arq_import_root

WAITERS = int(os.environ.get('ARQ_TEST_WAITERS', 3000))
SETTINGS = """
import asyncio

from arq.connections import RedisSettings


_gate = None


async def _open(redis):
    while not await redis.exists('go'):
        await asyncio.sleep(0.05)  # held until the test has every waiter waiting


async def gated(ctx, n):
    global _gate
    if _gate is None:  # one poll of the gate for all jobs, not a connection each
        _gate = asyncio.ensure_future(_open(ctx['redis']))
    await asyncio.shield(_gate)
    return n * 2


class WorkerSettings:
    functions = [gated]
    redis_settings = RedisSettings(host='127.0.0.1', port={port}, database={db})
    queue_name = {queue!r}
    max_jobs = {waiters}
    poll_delay = 0.05
"""


def connections_named(r: redis.Redis, name: str) -> int:
    return sum(1 for c in r.client_list() if c.get('name') == name)


@pytest.mark.timeout(120)
async def test_thousands_of_waiters_share_a_few_connections_and_return_within_a_second(
    tmp_path: Path, redis_server: RedisServer, redis_db: int, queue_name: str, sync_redis: redis.Redis
) -> None:
    (tmp_path / 'waiters_app.py').write_text(
        SETTINGS.format(port=redis_server.port, db=redis_db, queue=queue_name, waiters=WAITERS)
    )
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(tmp_path), arq_import_root()])}
    worker = subprocess.Popen(
        [sys.executable, '-m', 'arq', 'waiters_app.WorkerSettings'], cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    name = f'waiters-{queue_name.replace(":", "-")}'
    pool = await create_pool(
        RedisSettings(host='127.0.0.1', port=redis_server.port, database=redis_db), default_queue_name=queue_name
    )
    pool.connection_pool.connection_kwargs['client_name'] = name  # every connection from now on says it is ours
    await pool.connection_pool.disconnect()

    async def wait(job: Job) -> tuple[Any, float]:
        return await job.result(timeout=60), time.time()

    try:
        jobs = [job for n in range(WAITERS) if (job := await pool.enqueue_job('gated', n)) is not None]
        waiting = [asyncio.create_task(wait(job)) for job in jobs]
        last = [f'arq:done:{job.job_id}' for job in jobs[-5:]]

        async def subscribed() -> bool:
            return sum(n for _, n in sync_redis.pubsub_numsub(*last)) == len(last)

        await async_wait_until(subscribed, timeout=30, message='the last waiters to subscribe')
        peak = connections_named(sync_redis, name)
        sync_redis.set('go', 1)
        outcomes = await asyncio.gather(*waiting)
        peak = max(peak, connections_named(sync_redis, name))
    finally:
        await pool.aclose()
        worker.terminate()
        worker.wait(timeout=20)
    results = [value for value, _ in outcomes]
    stored = sync_redis.mget([f'arq:result:{job.job_id}' for job in jobs])
    lags = [returned - pickle.loads(raw)['ft'] / 1000 for (_, returned), raw in zip(outcomes, stored, strict=True)]
    print(f'{WAITERS} waiters: {peak} connections, result returned after the job finished: max {max(lags):.3f}s')
    assert results == [n * 2 for n in range(WAITERS)]
    assert peak <= 4, f'{peak} connections for {WAITERS} waiters'
    assert max(lags) < 30  # every waiter was woken (by its notification or its poll); the delay is a benchmark's
