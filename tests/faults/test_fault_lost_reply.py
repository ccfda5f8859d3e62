"""A reply lost on the way back from Redis: the command ran, the client never heard.

Redis stopping (its output buffers are not flushed), a connection cut by CLIENT KILL, a proxy or a NAT dropping a
socket: each can lose the reply of a command that Redis has executed. The worker then sends it again (the settle
loop) or moves on (the claim); a proxy here loses exactly one reply on purpose. Two commands are not safe to lose:

* the claim: the jobs it claimed are leased and their try counted, but no worker runs them until the lease lapses.
  test_fault_redis_restart.py meets this about once in fifteen runs (3 jobs first run at try 2, 19 s late);
* a re-queue settlement (Retry, a shutdown cancel): sent again, it deletes the in-progress key of whichever worker
  claimed the job in between, and a third claim runs the job again while that worker still runs it.

A finishing settlement is safe to send twice (its job and queue entry are gone, no one can claim it in between).
The worker makes the other two safe: a claim records its ids under a token for one lease and is sent again with
that token; a re-queue carries a nonce and is applied once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from typing import Any

import pytest
import redis

from arq import create_pool
from arq.connections import RedisSettings
from arq.scripts import CLAIM, SETTLE, SETTLE_AND_CLAIM
from arq.worker import Retry, Worker
from tests.faults.harness import report
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow

LEASE_S = 4.0


class ReplyDroppingProxy:
    """A TCP proxy to Redis that, once armed, forwards the next command containing `trigger`, swallows Redis's
    reply and cuts the client's connection: the command ran, its reply is lost."""

    def __init__(self, upstream_port: int, trigger: bytes) -> None:
        self.upstream_port = upstream_port
        self.trigger = trigger
        self.armed = False
        self.dropped = 0
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> ReplyDroppingProxy:
        self.server = await asyncio.start_server(self._connection, '127.0.0.1', 0)
        return self

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _connection(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        upstream_r, upstream_w = await asyncio.open_connection('127.0.0.1', self.upstream_port)
        swallow = asyncio.Event()

        async def to_redis() -> None:
            while data := await client_r.read(65536):
                if self.armed and self.trigger in data:
                    self.armed = False
                    swallow.set()  # before Redis can answer
                    upstream_w.write(data)
                    await upstream_w.drain()
                    await asyncio.sleep(0.3)  # Redis executes it and answers into the void
                    self.dropped += 1
                    client_w.transport.abort()
                    upstream_w.close()
                    return
                upstream_w.write(data)
                await upstream_w.drain()

        async def to_client() -> None:
            while data := await upstream_r.read(65536):
                if swallow.is_set():
                    continue
                client_w.write(data)
                await client_w.drain()

        tasks = [asyncio.create_task(to_redis()), asyncio.create_task(to_client())]
        self.tasks.update(tasks)
        with contextlib.suppress(Exception):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.tasks.difference_update(tasks)
        for writer in (client_w, upstream_w):
            writer.close()


async def _tear_down(
    task: asyncio.Task[None] | None, worker: Worker, pool: Any, proxy: ReplyDroppingProxy, direct: redis.Redis
) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
    await worker.close()
    await pool.aclose()
    await proxy.close()
    direct.close()


async def job(ctx: dict[str, Any]) -> int:
    return int(ctx['job_try'])


RUNS: list[tuple[int, float, float]] = []  # (try, started, finished) of flaky_job


async def flaky_job(ctx: dict[str, Any]) -> int:
    """Asks to be retried at once on its first try; later tries take a second."""
    started = time.monotonic()
    if ctx['job_try'] == 1:
        RUNS.append((1, started, started))
        raise Retry(defer=0)
    await asyncio.sleep(1.0)
    RUNS.append((int(ctx['job_try']), started, time.monotonic()))
    return int(ctx['job_try'])


async def test_claim_whose_reply_is_lost_is_run_soon_at_try_1(redis_server: RedisServer, redis_db: int) -> None:
    """The claim is sent again with its token and gets its job back: it runs within half a lease, at try 1."""
    sha = hashlib.sha1(CLAIM.encode()).hexdigest().encode()
    direct = redis.Redis(port=redis_server.port, db=redis_db)
    direct.script_load(CLAIM)  # so the worker's first EVALSHA runs the script (no NOSCRIPT round first)
    queue = f'test:lost-reply:{time.monotonic_ns()}'
    proxy = await ReplyDroppingProxy(redis_server.port, sha).start()
    pool = await create_pool(RedisSettings(port=redis_server.port, database=redis_db), default_queue_name=queue)
    worker = Worker(
        [job], redis_settings=RedisSettings(host='127.0.0.1', port=proxy.port, database=redis_db), queue_name=queue,
        poll_delay=0.2, lease_s=LEASE_S, handle_signals=False,
    )  # fmt: skip
    task = None
    try:
        enqueued = await pool.enqueue_job('job')
        assert enqueued is not None
        proxy.armed = True
        started = time.monotonic()
        task = asyncio.create_task(worker.async_run())
        job_try = await enqueued.result(timeout=LEASE_S * 3)
        took_s = time.monotonic() - started
        report('lost_claim_reply', lease_s=LEASE_S, replies_dropped=proxy.dropped, ran_after_s=round(took_s, 2),
               job_try=job_try)  # fmt: skip
        assert proxy.dropped == 1
        assert job_try == 1, 'the lost claim used up a try'
        assert took_s < LEASE_S / 2, f'the job waited {took_s:.1f}s: its lease, held by no one'
    finally:
        await _tear_down(task, worker, pool, proxy, direct)


async def _no_hook(ctx: dict[str, Any]) -> None:
    """An after_job_end hook: a worker with one settles without claiming in the same round trip."""


@pytest.mark.parametrize('script', ['SETTLE', 'SETTLE_AND_CLAIM'])
async def test_requeue_whose_reply_is_lost_never_runs_the_job_twice_at_once(
    redis_server: RedisServer, redis_db: int, script: str
) -> None:
    """Try 1 asks for a retry, try 2 runs, nothing else: the re-queue sent again is applied once. With
    SETTLE_AND_CLAIM the lost reply also held the job claimed again: the next claim recovers it."""
    RUNS.clear()
    lua = SETTLE if script == 'SETTLE' else SETTLE_AND_CLAIM
    direct = redis.Redis(port=redis_server.port, db=redis_db)
    for loaded in (SETTLE, CLAIM, SETTLE_AND_CLAIM):
        direct.script_load(loaded)
    queue = f'test:lost-settle:{time.monotonic_ns()}'
    proxy = await ReplyDroppingProxy(redis_server.port, hashlib.sha1(lua.encode()).hexdigest().encode()).start()
    pool = await create_pool(RedisSettings(port=redis_server.port, database=redis_db), default_queue_name=queue)
    # the first worker talks through the proxy, which loses the reply of its first settlement; the second is direct
    workers = [
        Worker([flaky_job], redis_settings=RedisSettings(host='127.0.0.1', port=port, database=redis_db),
               queue_name=queue, poll_delay=0.05, handle_signals=False,
               after_job_end=_no_hook if script == 'SETTLE' else None)
        for port in (proxy.port, redis_server.port)
    ]  # fmt: skip
    tasks = []
    try:
        enqueued = await pool.enqueue_job('flaky_job')
        assert enqueued is not None
        proxy.armed = True
        tasks.append(asyncio.create_task(workers[0].async_run()))
        await asyncio.sleep(0.02)  # the first worker claims it
        tasks.append(asyncio.create_task(workers[1].async_run()))
        await enqueued.result(timeout=10)
        await asyncio.sleep(1.5)  # a duplicate started meanwhile would finish by now
        overlapping = [(a, b) for a in RUNS for b in RUNS if a[0] < b[0] and b[1] < a[2]]
        report('lost_requeue_reply', replies_dropped=proxy.dropped, tries_run=[r[0] for r in RUNS],
               ran_at_once=[(a[0], b[0]) for a, b in overlapping])  # fmt: skip
        assert proxy.dropped == 1
        assert not overlapping, f'tries ran at the same time: {overlapping}'
        assert [r[0] for r in RUNS] == [1, 2]
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        for worker in workers:
            await worker.close()
        await pool.aclose()
        await proxy.close()
        direct.close()


async def _settle_and_claim_bed(
    redis_server: RedisServer, redis_db: int, *, max_jobs: int
) -> tuple[redis.Redis, ReplyDroppingProxy, Any, Worker]:
    """A worker talking through a proxy armed for SETTLE_AND_CLAIM (its scripts loaded already), and a direct pool and
    client for the test."""
    direct = redis.Redis(port=redis_server.port, db=redis_db)
    for loaded in (SETTLE, CLAIM, SETTLE_AND_CLAIM):
        direct.script_load(loaded)
    queue = f'test:lost-settle-claim:{time.monotonic_ns()}'
    sha = hashlib.sha1(SETTLE_AND_CLAIM.encode()).hexdigest().encode()
    proxy = await ReplyDroppingProxy(redis_server.port, sha).start()
    pool = await create_pool(RedisSettings(port=redis_server.port, database=redis_db), default_queue_name=queue)
    worker = Worker(
        [job], redis_settings=RedisSettings(host='127.0.0.1', port=proxy.port, database=redis_db), queue_name=queue,
        poll_delay=0.2, lease_s=LEASE_S, handle_signals=False, max_jobs=max_jobs,
    )  # fmt: skip
    return direct, proxy, pool, worker


async def test_settle_and_claim_whose_reply_is_lost_runs_the_claimed_job_soon_at_try_1(
    redis_server: RedisServer, redis_db: int
) -> None:
    """One slot: job a's settle also claims job b; the reply is lost. a's settle is sent again (alone), and the next
    claim recovers b under the lost reply's token: b runs within half a lease, at try 1."""
    direct, proxy, pool, worker = await _settle_and_claim_bed(redis_server, redis_db, max_jobs=1)
    task = None
    try:
        first, second = await pool.enqueue_job('job'), await pool.enqueue_job('job')
        assert first is not None and second is not None
        proxy.armed = True
        started = time.monotonic()
        task = asyncio.create_task(worker.async_run())
        results = [await first.result(timeout=LEASE_S * 3), await second.result(timeout=LEASE_S * 3)]
        took_s = time.monotonic() - started
        report('lost_settle_and_claim_reply', lease_s=LEASE_S, replies_dropped=proxy.dropped,
               ran_after_s=round(took_s, 2), tries=results)  # fmt: skip
        assert proxy.dropped == 1
        assert results == [1, 1], 'the lost claim used up a try'
        assert took_s < LEASE_S / 2, f'the second job waited {took_s:.1f}s: its lease, held by no one'
    finally:
        await _tear_down(task, worker, pool, proxy, direct)


async def test_both_claim_lanes_lost_at_once_run_their_jobs_soon_at_try_1(
    redis_server: RedisServer, redis_db: int
) -> None:
    """Four slots claim in two lanes of two, each under its own token and claim record. The proxy loses the reply of
    one settle-and-claim and cuts the connection, so the other lane's call in flight fails too: each lane recovers
    its own jobs, and every job runs once, at try 1, within half a lease."""
    direct, proxy, pool, worker = await _settle_and_claim_bed(redis_server, redis_db, max_jobs=4)
    task = None
    try:
        jobs = [await pool.enqueue_job('job') for _ in range(40)]
        proxy.armed = True
        started = time.monotonic()
        task = asyncio.create_task(worker.async_run())
        tries = [await j.result(timeout=LEASE_S * 3) for j in jobs if j is not None]
        took_s = time.monotonic() - started
        report('lost_lane_replies', lease_s=LEASE_S, replies_dropped=proxy.dropped, ran_after_s=round(took_s, 2),
               tries_above_1=sum(1 for t in tries if t != 1))  # fmt: skip
        assert proxy.dropped == 1
        assert len(tries) == 40 and set(tries) == {1}, 'a lost claim used up a try'
        assert took_s < LEASE_S / 2, f'the jobs took {took_s:.1f}s: a lost lane waited for its leases to lapse'
        assert worker.jobs_complete == 40
    finally:
        await _tear_down(task, worker, pool, proxy, direct)
