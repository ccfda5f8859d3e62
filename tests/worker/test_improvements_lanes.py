"""Claim lanes (arq.claimer): a worker claims for at most half its slots at a time and keeps two claims going, so
one half's jobs run while the other half's settle-and-claim is on the wire. The lanes share the worker's slots: never
more jobs run than max_jobs, and a lane's claim record goes when the worker closes (test_improvements_settle).

These fail on the published arq by design; the reference run skips files named test_improvements_*.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
import redis

from arq.claimer import MIN_SPLIT_SLOTS
from arq.connections import ArqRedis
from tests.worker.helpers import WorkerFactory, wait_for

RUNNING: set[str] = set()
MOST_AT_ONCE: list[int] = [0]


async def tracked(ctx: dict[str, Any], work_s: float) -> int:
    RUNNING.add(ctx['job_id'])
    MOST_AT_ONCE[0] = max(MOST_AT_ONCE[0], len(RUNNING))
    try:
        await asyncio.sleep(work_s)  # the job's own simulated work
    finally:
        RUNNING.discard(ctx['job_id'])
    return int(ctx['job_try'])


@pytest.mark.parametrize('max_jobs', [1, 3, MIN_SPLIT_SLOTS, 10, 25])
async def test_the_lanes_never_run_more_than_max_jobs_and_fill_every_slot(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, queue_name: str, max_jobs: int
) -> None:
    """Short and longer jobs mixed: each runs once, at try 1, never more than max_jobs at once, and every slot is
    used (more jobs at once than one lane's share)."""
    RUNNING.clear()
    MOST_AT_ONCE[0] = 0
    rng = random.Random(max_jobs)
    jobs = [await arq_redis.enqueue_job('tracked', rng.choice((0, 0.001, 0.005, 0.02))) for _ in range(max_jobs * 12)]
    w = worker(functions=[tracked], max_jobs=max_jobs, poll_delay=0.05)
    assert await asyncio.wait_for(w.run_check(), 60) == len(jobs)
    assert [await j.result(timeout=1) for j in jobs if j is not None] == [1] * len(jobs)
    assert MOST_AT_ONCE[0] <= max_jobs, f'{MOST_AT_ONCE[0]} jobs ran at once with {max_jobs} slots'
    assert MOST_AT_ONCE[0] == max_jobs, f'only {MOST_AT_ONCE[0]} of {max_jobs} slots were ever used at once'
    assert sync_redis.zcard(queue_name) == 0


async def test_a_worker_with_few_slots_claims_in_one_lane(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory
) -> None:
    """Below MIN_SPLIT_SLOTS one claim asks for every free slot, under the worker's one claim record."""
    for _ in range(3):
        await arq_redis.enqueue_job('tracked', 0)
    w = worker(functions=[tracked], max_jobs=MIN_SPLIT_SLOTS - 1)
    await w.main()
    assert w.intake.claimer.claim_size == MIN_SPLIT_SLOTS - 1
    assert w.intake.claimer.record_keys() == [f'arq:claim:{w.worker_id}']
    await w.close()
    assert not sync_redis.exists(f'arq:claim:{w.worker_id}')


async def test_two_lanes_each_keep_a_claim_record_until_the_worker_closes(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory
) -> None:
    """Each lane's record (its last token and ids, for recovering a lost reply) is its own key; both are gone
    after close()."""
    for _ in range(40):
        await arq_redis.enqueue_job('tracked', 0)
    w = worker(functions=[tracked], max_jobs=8)
    await w.main()
    keys = w.intake.claimer.record_keys()
    assert keys == [f'arq:claim:{w.worker_id}', f'arq:claim:{w.worker_id}:lane1']
    assert all(sync_redis.exists(k) for k in keys), 'each lane claimed under its own record'
    await w.close()
    assert not any(sync_redis.exists(k) for k in keys)


async def test_the_lanes_together_start_no_more_jobs_than_max_burst_jobs(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, queue_name: str
) -> None:
    """max_burst_jobs counts the jobs the other lane's claim in flight may start: two claims of half the slots each
    cannot overshoot it together."""
    for _ in range(200):
        await arq_redis.enqueue_job('tracked', 0)
    for _ in range(4):
        w = worker(functions=[tracked], max_jobs=10, max_burst_jobs=23)
        await w.main()
        assert w.jobs_started == 23
    assert sync_redis.zcard(queue_name) == 200 - 4 * 23


async def test_the_lanes_together_start_no_more_jobs_than_a_supervisors_job_limit(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, queue_name: str
) -> None:
    """The same for job_limit (a supervisor's --max-jobs-per-child): the worker claims no more once it is reached."""
    for _ in range(100):
        await arq_redis.enqueue_job('tracked', 0)
    w = worker(functions=[tracked], max_jobs=10, burst=False, poll_delay=0.01)
    w.job_limit = 23
    task = asyncio.create_task(w.main())
    try:
        await wait_for(lambda: w.jobs_complete == 23, timeout=20, message='23 jobs done')
        assert w.jobs_started == 23 and sync_redis.zcard(queue_name) == 100 - 23
        w.stop_now()
        await asyncio.wait_for(task, 10)
    finally:
        task.cancel()
        await w.close()
    assert w.jobs_started == 23
