"""Fault 7: a job that blocks the event loop for longer than the heartbeat timeout."""

from __future__ import annotations

import signal
import time

import pytest

from arq.connections import RedisSettings
from tests.faults.harness import FleetFactory, Ledger, Load, report
from tests.support.redis_server import RedisServer

HEARTBEAT_TIMEOUT_S = 3.0
#: enqueued after the load's jobs, so the next worker claims the jobs released with it first: they start, then
#: the blocking job freezes them there too. Before deaths were blamed on the blocking job alone, such jobs were
#: failed as poison with it ('killed twice').
BLOCKER_ID = 'zz-blocker'
RATE = 100
JOB_S = 0.05


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize('procs', [1, 2])
def test_job_blocking_the_loop_is_dumped_its_child_replaced_and_other_jobs_unaffected(
    fleets: FleetFactory, redis_server: RedisServer, redis_db: int, procs: int
) -> None:
    """100 jobs/s of 50 ms jobs with `--heartbeat-timeout 3`; one job calls time.sleep(60) inside its coroutine.
    Its child's stack is dumped to the log and the child is killed and replaced; the blocking job runs once more
    (its release), blocks that child too, and is then failed as a poison job. Every other job succeeds: the jobs
    caught on a blocked child run again elsewhere, none is failed. With one child, the jobs caught with the blocking
    job are certain to be caught with it again on its replacement."""
    fleet = fleets(redis_server.port, redis_db)
    fleet.start('--procs', str(procs), '--heartbeat-timeout', f'{HEARTBEAT_TIMEOUT_S:g}', settings=fleet.write_jobs())
    fleet.wait_ready(procs)
    ledger = Ledger(fleet.redis, fleet.queue)
    settings = RedisSettings(host='127.0.0.1', port=redis_server.port, database=redis_db)
    load = Load(settings, fleet.queue, rate=RATE, args=(JOB_S,)).start()
    load.wait_count(RATE)

    enqueued_at = time.time()
    fleet.enqueue('blocker', 60, job_id=BLOCKER_ID)
    result = fleet.wait_for(lambda: fleet.result(BLOCKER_ID), timeout=60, message='the blocking job failed as poison')
    failed_after_s = time.time() - enqueued_at
    load.wait_count(len(load.ids) + RATE)
    ids = load.stop()
    drain_s = ledger.wait_all_done(ids, timeout=60, context=fleet)
    fleet.wait_ready(procs, timeout=30)

    log = fleet.log()
    runs = ledger.runs(BLOCKER_ID)
    kills = fleet.kills(r.pid for r in runs)
    fleet.signal(signal.SIGTERM)
    assert fleet.wait(timeout=15) == 0
    checked = ledger.check(ids, kills)
    blocked = {r.pid for r in runs}
    caught_twice = sum(1 for job_runs in ledger.all_runs(ids).values() if blocked <= {r.pid for r in job_runs})
    report(
        'hang',
        procs=procs, heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S, rate=RATE, job_s=JOB_S, blocker_runs=len(runs),
        blocker_failed_after_s=round(failed_after_s, 2), blocker_result=f'{type(result["r"]).__name__}: {result["r"]}',
        stack_dumps=log.count('in blocker'), unresponsive_kills=log.count('child unresponsive'),
        jobs_caught_on_both_blocked_children=caught_twice,
        drain_s=round(drain_s, 2), **checked.figures(),
    )  # fmt: skip
    assert result['s'] is False and 'twice' in str(result['r'])
    assert len(runs) == 2
    assert log.count('child unresponsive') == 2
    assert 'in blocker' in log  # faulthandler's dump names the job function that blocks
    assert len(kills) == 2
    checked.assert_clean()
    # only the blocking job counts the deaths: the jobs caught with it are released without (arq_supervise.blame)
    assert log.count(f'job to blame for the exit of its worker job_id={BLOCKER_ID}') == 2
    if procs == 1:
        assert caught_twice >= 1, 'no job was caught on both blocked children: the test proved nothing about blame'
