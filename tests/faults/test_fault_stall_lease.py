"""A child whose event loop stalls longer than the lease (but less than --heartbeat-timeout) keeps its jobs.

The lease under arq-supervise is short (6 s) so that a lost host's jobs come back soon; a child that blocks its loop
cannot renew it, so the parent renews it for the child while the child lives. Another supervisor on the same queue
must never get the stalled child's jobs: no job runs twice at once.
"""

from __future__ import annotations

import signal
import time

import pytest

from arq.jobs import serialize_job
from tests.faults.harness import Fleet, FleetFactory, Ledger, report
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

STALL_S = 8.0  # past the 6 s lease, short of the 10 s heartbeat timeout
LONG_JOB_S = 12.0


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_stalled_childs_jobs_stay_leased_while_it_lives(
    fleets: FleetFactory, redis_server: RedisServer, redis_db: int
) -> None:
    first = fleets(redis_server.port, redis_db, name='first')
    first.start('--procs', '1', settings=first.write_jobs(max_jobs=5, poll_delay=0.1))
    first.wait_ready(1)
    ledger = Ledger(first.redis, first.queue)
    enqueue(first, 'work', 'long', LONG_JOB_S)
    wait_until(lambda: ledger.runs('long'), timeout=10, message='the long job to start')
    enqueue(first, 'blocker', 'stall', STALL_S)
    wait_until(lambda: ledger.runs('stall'), timeout=10, message='the stall to start')
    stalled_at = time.time()

    second = fleets(redis_server.port, redis_db, name='second')  # hungry for work while the first child stalls
    second.start('--procs', '1', settings=second.write_jobs(max_jobs=5, poll_delay=0.1))
    second.wait_ready(1)
    wait_until(lambda: first.result('long') and first.result('stall'), timeout=40, message='both results')

    runs = {job_id: ledger.runs(job_id) for job_id in ('long', 'stall')}
    figures = report(
        'stall_lease', stall_s=STALL_S, long_job_s=LONG_JOB_S, runs={k: len(v) for k, v in runs.items()},
        stalled_for_s=round(time.time() - stalled_at, 1), child_exits=first.log().count('child exited'),
    )  # fmt: skip
    assert len(runs['long']) == 1 and len(runs['stall']) == 1, figures  # nobody else got them: ran once each
    assert figures['child_exits'] == 0, figures  # the stall was within the heartbeat timeout: no kill
    assert first.result('long')['s'] and first.result('stall')['s']  # type: ignore[index]
    for fleet in (first, second):
        fleet.signal(signal.SIGTERM)
        assert fleet.wait(timeout=20) == 0


def enqueue(fleet: Fleet, function: str, job_id: str, seconds: float) -> None:
    now_ms = round(time.time() * 1000)
    fleet.redis.psetex(f'arq:job:{job_id}', 120_000, serialize_job(function, (seconds,), {}, None, now_ms))
    fleet.redis.zadd(fleet.queue, {job_id: now_ms})
