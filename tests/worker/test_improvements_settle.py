"""Settling cannot hang, and a worker whose lease passed to another worker cannot undo that worker's run.

These fail on the published arq by design; the reference run skips files named test_improvements_*.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from arq.connections import ArqRedis
from arq.constants import recent_outcomes_ttl_ms
from arq.jobs import JobStatus
from arq.worker import FailedJobs
from tests.support.waiting import async_wait_until
from tests.worker.helpers import WorkerFactory, wait_for, wait_for_key


async def add(ctx: dict[str, Any], a: int, b: int = 0) -> int:
    return a + b


async def fail(ctx: dict[str, Any]) -> None:
    raise ValueError('fails by its own code')


async def gated(ctx: dict[str, Any]) -> str:
    await ctx['redis'].set(f'started:{ctx["job_id"]}', 1)
    while not await ctx['redis'].exists(f'go:{ctx["job_id"]}'):
        await asyncio.sleep(0.01)  # simulated work that lasts until the test lets it finish
    return f'ran by {ctx["job_try"]}'


async def test_a_settle_failing_for_good_releases_the_job_and_the_worker_carries_on(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, queue_name: str, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger='arq.worker')
    sync_redis.set('arq:abort', 'not a sorted set')  # every finish then fails with WRONGTYPE: not transient
    w = worker(functions=[add], burst=False, poll_delay=0.05)
    worker.start(w)
    job = await arq_redis.enqueue_job('add', 1, 2, _job_id='stuck')
    assert job is not None
    await wait_for(lambda: 'could not record the outcome of job stuck' in caplog.text, timeout=10, message='failure')
    await wait_for(lambda: not w.held_job_ids and not w.tasks, timeout=10, message='the job to leave')
    assert 'WRONGTYPE' in caplog.text
    assert not sync_redis.exists('arq:in-progress:stuck'), 'released, not leased until a drain'
    score = sync_redis.zscore(queue_name, 'stuck')
    assert score is not None and score > time.time() * 1000 + 5_000, 'queued again, deferred: no tight loop'

    sync_redis.delete('arq:abort')  # the operator repairs Redis: the worker is alive and works on
    sync_redis.zadd(queue_name, {'stuck': 1})  # as if its deferral had passed
    assert await job.result(timeout=10) == 3
    again = await arq_redis.enqueue_job('add', 5)
    assert again is not None and await again.result(timeout=10) == 5


async def test_a_late_settle_from_a_fenced_out_worker_changes_nothing(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, queue_name: str, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger='arq.worker')
    w = worker(functions=[gated], burst=False, poll_delay=0.05, lease_s=1.5)
    worker.start(w)
    job = await arq_redis.enqueue_job('gated', _job_id='fenced')
    assert job is not None
    await wait_for_key(arq_redis, 'started:fenced')
    # the lease passes to another worker (ours lapsed during a partition, say), which is running the job now
    sync_redis.set('arq:in-progress:fenced', 'other-worker:1', px=60_000)
    await wait_for(lambda: 'lease lost: job fenced' in caplog.text, timeout=5, message='the refresh to notice')
    # the job is stopped here: the other worker runs it, and our outcome would be dropped anyway
    await wait_for(lambda: not w.tasks, timeout=5, message='the job to be cancelled here')
    assert 'cancelling it here' in caplog.text
    await wait_for(lambda: 'lease lost, result dropped' in caplog.text, timeout=10, message='the settle')
    assert sync_redis.get('arq:in-progress:fenced') == b'other-worker:1', "the other worker's lease is intact"
    assert sync_redis.zscore(queue_name, 'fenced') is not None, 'still queued for the worker that holds it'
    assert not sync_redis.exists('arq:result:fenced'), 'no result written over the newer run'
    assert await job.status() == JobStatus.in_progress
    assert not w.held_job_ids


@pytest.mark.parametrize('queue_jobs', [1, 30])
async def test_a_burst_run_leaves_only_arqs_keys(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, queue_name: str, queue_jobs: int
) -> None:
    """No claim record or settle marker of ours is left behind (only arq's results remain)."""
    for i in range(queue_jobs):
        await arq_redis.enqueue_job('add', i)
    w = worker(functions=[add], max_jobs=7)
    await w.main()
    await w.close()
    keys = {k.decode() for k in sync_redis.scan_iter(count=1000)}
    assert keys, 'results are kept'
    assert all(k.startswith('arq:result:') for k in keys), sorted(keys)[:10]


async def test_a_settle_sent_again_is_told_apart_from_a_lease_held_by_another(
    arq_redis: ArqRedis, sync_redis: redis.Redis, queue_name: str
) -> None:
    from arq import contract, scripts

    sync_redis.set('arq:in-progress:j', 'w:1')
    sync_redis.set('arq:job:j', b'payload')
    sync_redis.zadd(queue_name, {'j': 1})
    done = contract.Settlement('j', contract.SUCCESS, 'w:1', result=b'r', result_px=60_000)
    keys, args = contract.settle_args(queue_name, [done], now_ms=2)
    settle = arq_redis.register_script(scripts.SETTLE)
    assert contract.parse_settle(await settle(keys=keys, args=args)) == contract.SettleReply([], [])
    again = contract.parse_settle(await settle(keys=keys, args=args))
    assert again == contract.SettleReply([], ['j']), 'settled already: told apart from a lease held by another'
    assert sync_redis.get('arq:result:j') == b'r'
    sync_redis.set('arq:in-progress:k', 'other:1')
    sync_redis.zadd(queue_name, {'k': 1})
    keys, args = contract.settle_args(queue_name, [contract.Settlement('k', contract.FAILURE, 'w:1')], now_ms=2)
    assert contract.parse_settle(await settle(keys=keys, args=args)) == contract.SettleReply(['k'], [])


async def retried_then_long(ctx: dict[str, Any]) -> int:
    """Try 1 asks to run again at once; try 2 outlives the lease several times over, so it needs its renewals."""
    await ctx['redis'].incr(f'runs:{ctx["job_id"]}')
    if ctx['job_try'] == 1:
        from arq.worker import Retry

        raise Retry(defer=0)
    while not await ctx['redis'].exists(f'go:{ctx["job_id"]}'):
        await asyncio.sleep(0.02)
    return int(ctx['job_try'])


async def test_a_job_claimed_back_by_its_own_settle_keeps_its_new_lease(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory
) -> None:
    """The re-queue of try 1 and the claim of try 2 happen in one script call (SETTLE_AND_CLAIM); the settle's end
    must not drop the new lease, or try 2 loses it after one lease and runs a third time."""
    w = worker(functions=[retried_then_long], burst=False, poll_delay=0.05, lease_s=1)
    worker.start(w)
    job = await arq_redis.enqueue_job('retried_then_long', _job_id='again')
    assert job is not None
    await wait_for(lambda: sync_redis.get('runs:again') == b'2', timeout=10, message='try 2 to start')
    await wait_for(lambda: 'again' in w.held_job_ids, timeout=5, message='try 2 held')
    lapse_deadline = time.monotonic() + 3  # three leases: a lease no longer renewed would have lapsed by now
    await async_wait_until(_after(lapse_deadline), timeout=5, message='three leases to pass')
    assert 'again' in w.held_job_ids, 'the lease of try 2 is renewed'
    assert sync_redis.exists('arq:in-progress:again'), 'and still set in Redis'
    sync_redis.set('go:again', 1)
    assert await job.result(timeout=10) == 2
    assert sync_redis.get('runs:again') == b'2', 'no third run'


def _after(deadline: float) -> Callable[[], Any]:
    async def passed() -> bool:
        return time.monotonic() >= deadline

    return passed


async def test_the_recent_outcomes_index_is_capped_and_expires_and_is_off_for_a_plain_worker(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, queue_name: str
) -> None:
    """The dashboard's index (Worker(recent_outcomes=N), on under arq-supervise) keeps the last N of each outcome."""
    done = [await arq_redis.enqueue_job('add', i) for i in range(6)]
    failed = await arq_redis.enqueue_job('fail')
    assert failed is not None and all(done)
    with pytest.raises(FailedJobs):
        await worker(functions=[add, fail], recent_outcomes=3).run_check()
    complete_key, failed_key = f'arq:recent:{queue_name}:complete', f'arq:recent:{queue_name}:failed'
    assert sync_redis.zcard(complete_key) == 3
    assert sync_redis.zrange(failed_key, 0, -1) == [failed.job_id.encode()]
    for key in (complete_key, failed_key):
        assert 0 < sync_redis.pttl(key) <= recent_outcomes_ttl_ms
    sync_redis.delete(complete_key, failed_key)
    await arq_redis.enqueue_job('add', 1)
    await worker(functions=[add]).run_check()
    assert not sync_redis.exists(complete_key, failed_key)


async def test_a_busy_worker_loop_does_not_turn_for_every_job(
    arq_redis: ArqRedis, sync_redis: redis.Redis, queue_name: str
) -> None:
    """A busy worker's settles claim for the slots they free: a job's end then gives its loop nothing to do, and
    does not wake it (it did, one turn per settle, each a claim that found no free slot)."""
    from arq.worker import Worker

    turns = 0

    class CountingWorker(Worker):
        async def _poll_iteration(self) -> None:
            nonlocal turns
            turns += 1
            await super()._poll_iteration()

    jobs = [await arq_redis.enqueue_job('add', i) for i in range(300)]
    w = CountingWorker(functions=[add], redis_pool=arq_redis, queue_name=queue_name, burst=True, max_jobs=10,
                       poll_delay=0.5)  # fmt: skip
    await w.main()
    assert w.jobs_complete == 300 and sync_redis.zcard(queue_name) == 0
    assert turns < 300 // 10 // 2, f'{turns} turns of the loop for 30 settles of ten jobs'
    assert all(job is not None for job in jobs)
