"""No thundering herd: one enqueue wakes one idle worker, not every idle worker on the queue."""

from __future__ import annotations

import asyncio
from typing import Any

import redis

from arq.connections import ArqRedis
from arq.worker import Worker
from tests.support.waiting import async_wait_until
from tests.worker.helpers import WorkerFactory

IDLE_WORKERS = 8


async def add(ctx: dict[str, Any], a: int, b: int = 0) -> int:
    return a + b


def script_calls(r: redis.Redis) -> int:
    """Script runs: EVAL and EVALSHA calls, less the EVALSHAs refused for a script not loaded yet (redis-py then
    loads it and sends the EVALSHA again)."""
    stats = r.info('commandstats')

    def calls(name: str) -> int:
        return int(stats.get(f'cmdstat_{name}', {}).get('calls', 0))

    return calls('eval') + calls('evalsha') - calls('script|load')


async def test_one_enqueue_wakes_one_of_eight_idle_workers(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory
) -> None:
    # a long poll_delay: only a wake-up, not a timed poll, makes a worker claim during the measurement
    workers: list[Worker] = [worker(functions=[add], burst=False, poll_delay=5) for _ in range(IDLE_WORKERS)]
    for w in workers:
        worker.start(w)

    async def all_idle() -> bool:
        return all(w._intake is not None and w._intake.queued is not None for w in workers)

    await async_wait_until(all_idle, timeout=10, message='every worker to have polled once')
    await asyncio.sleep(0)
    before = script_calls(sync_redis)
    job = await arq_redis.enqueue_job('add', 1, 2)
    assert job is not None and await job.result(timeout=5, poll_delay=0.05) == 3
    # less the enqueue and the job's settle; the worker that ran the job claims once more when it ends (nothing left)
    claims = script_calls(sync_redis) - before - 2
    assert claims <= 2, f'{claims} claims for one job with {IDLE_WORKERS} idle workers'
