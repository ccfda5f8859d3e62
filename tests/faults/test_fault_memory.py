"""Fault 6: a job that allocates without bound under --max-memory-per-child."""

from __future__ import annotations

import signal
import time

import pytest

from arq.connections import RedisSettings
from tests.faults.harness import FleetFactory, Ledger, Load, report
from tests.support.redis_server import RedisServer

LIMIT_MIB = 200
STEP_MIB, EVERY_S, CAP_MIB = 20, 0.05, 1024  # 400 MiB/s, never more than 1 GiB per process


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_memory_hog_is_killed_twice_then_failed_as_poison_and_nothing_else_is_lost(
    fleets: FleetFactory, redis_server: RedisServer, redis_db: int
) -> None:
    """100 jobs/s of 50 ms jobs on 2 children with `--max-memory-per-child 200`; one job allocates 20 MiB every
    50 ms (capped at 1 GiB). Its child is replaced or killed; after two deaths the job is failed as a poison job
    with a result that says so; every other job completes."""
    fleet = fleets(redis_server.port, redis_db)
    fleet.start('--procs', '2', '--max-memory-per-child', str(LIMIT_MIB), settings=fleet.write_jobs())
    first_pids = fleet.wait_ready(2)
    ledger = Ledger(fleet.redis, fleet.queue)
    settings = RedisSettings(host='127.0.0.1', port=redis_server.port, database=redis_db)
    load = Load(settings, fleet.queue, rate=100, args=(0.05,)).start()
    load.wait_count(100)

    hog_id = 'hog'
    enqueued_at = time.time()
    fleet.enqueue('hog', STEP_MIB, EVERY_S, CAP_MIB, job_id=hog_id)
    hog_result = fleet.wait_for(lambda: fleet.result(hog_id), timeout=60, message='the hog failed as a poison job')
    failed_after_s = time.time() - enqueued_at
    load.wait_count(len(load.ids) + 100)
    ids = load.stop()

    drain_s = ledger.wait_all_done(ids, timeout=60, context=fleet)
    hog_runs = ledger.runs(hog_id)
    log = fleet.log()
    dead = {r.pid for r in hog_runs}
    kills = fleet.kills(dead)
    peak = max((c.get('memory_mib') or 0) for c in fleet.status().get('children', [{}]))
    fleet.signal(signal.SIGTERM)
    assert fleet.wait(timeout=40) == 0
    result = ledger.check(ids, kills)
    report(
        'memory_hog',
        limit_mib=LIMIT_MIB, hog_mib_per_s=STEP_MIB / EVERY_S, hog_cap_mib=CAP_MIB, hog_runs=len(hog_runs),
        hog_failed_after_s=round(failed_after_s, 2), hog_result=f'{type(hog_result["r"]).__name__}: {hog_result["r"]}',
        memory_lines=[line.split(' ', 3)[-1][:160] for line in log.splitlines() if 'memory' in line][:8],
        children_killed=sorted(dead - set(first_pids)) or sorted(dead), peak_status_mib=peak, drain_s=round(drain_s, 2),
        **result.figures(),
    )  # fmt: skip
    assert hog_result['s'] is False
    assert 'twice' in str(hog_result['r'])
    assert len(hog_runs) == 2
    assert len(kills) == 2 and log.count('over twice the memory limit') == 2
    assert log.count(f'job to blame for the exit of its worker job_id={hog_id}') == 2
    result.assert_clean()
