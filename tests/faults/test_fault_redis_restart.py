"""Fault 3: Redis restarted under load, and Redis down for a while."""

from __future__ import annotations

import signal
import time

import pytest
import redis

from arq.connections import RedisSettings
from tests.faults.harness import FleetFactory, Kill, Ledger, Load, RedisFactory, env_seconds, report

RATE = 200
JOB_S = 0.05
RESTART_S = 1.0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_redis_restart_under_load_loses_nothing_and_no_worker_exits(
    fleets: FleetFactory, redis_servers: RedisFactory
) -> None:
    """200 jobs/s; Redis (appendonly, so it keeps its data) is stopped with SIGTERM and started again on the same
    port 1 s later. The workers reconnect and carry on: same pids, nothing lost, nothing run twice."""
    server = redis_servers('--appendonly', 'yes')
    fleet = fleets(server.port, client=redis.Redis(port=server.port))
    fleet.start('--procs', '2', settings=fleet.write_jobs())
    pids = fleet.wait_ready(2)
    ledger = Ledger(fleet.redis, fleet.queue)
    load = Load(RedisSettings(host='127.0.0.1', port=server.port), fleet.queue, rate=RATE, args=(JOB_S,)).start()
    load.wait_count(RATE * 3)

    stopped_at = time.time()
    server.stop()
    time.sleep(RESTART_S)  # the fault's shape: a restart that takes a moment, not synchronisation
    server.start()
    downtime_s = time.time() - stopped_at
    before = len(load.ids)
    load.wait_count(before + RATE * 3)
    load.stop()
    ids = load.enqueued_ids(fleet.redis)

    drain_s = ledger.wait_all_done(ids, timeout=60, context=fleet)
    all_runs = ledger.all_runs(ids)
    resumed = [r.at for runs in all_runs.values() for r in runs if r.at > stopped_at + downtime_s]
    pickup = [runs[0].at - load.enqueued_at[i] for i, runs in all_runs.items() if runs and i in load.enqueued_at]
    assert fleet.children() == pids, 'a worker was replaced'
    assert 'child exited' not in fleet.log()
    fleet.signal(signal.SIGTERM)
    assert fleet.wait(timeout=15) == 0
    result = ledger.check(ids)
    report(
        'redis_restart',
        rate=RATE, job_s=JOB_S, redis_down_s=round(downtime_s, 2),
        first_run_after_restart_s=round(min(resumed) - (stopped_at + downtime_s), 2) if resumed else None,
        producer_failed_tries=load.failed_tries, producer_ids_already_there=load.repeated_ids,
        producer_longest_gap_s=round(load.longest_gap_s, 2), drain_after_load_s=round(drain_s, 2),
        slowest_pickup_s=round(max(pickup), 2), workers_replaced=0, **result.figures(),
    )  # fmt: skip
    result.assert_clean()
    assert result.duplicated == 0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_redis_down_keeps_children_and_the_status_file_says_so(
    fleets: FleetFactory, redis_servers: RedisFactory
) -> None:
    """Redis stopped for 10 s (`ARQ_FAULTS_OUTAGE_S`) under a light load: no child exits or is restarted (no crash
    loop), the status file names the Redis error for every child, and work resumes when Redis is back. The outage
    outlasts the lease, so only a job in flight when Redis went down may run twice (README, --stop-unleased-jobs)."""
    outage_s = env_seconds('ARQ_FAULTS_OUTAGE_S', 10)
    server = redis_servers('--appendonly', 'yes')
    fleet = fleets(server.port, client=redis.Redis(port=server.port))
    fleet.start('--procs', '2', '--health-interval', '1', settings=fleet.write_jobs())
    pids = fleet.wait_ready(2)
    ledger = Ledger(fleet.redis, fleet.queue)
    load = Load(RedisSettings(host='127.0.0.1', port=server.port), fleet.queue, rate=50, args=(JOB_S,)).start()
    load.wait_count(100)

    server.stop()
    down_at, down_at_wall = time.monotonic(), time.time()

    def reported() -> list[str | None] | None:
        children = fleet.status().get('children', [])
        errors = [c.get('redis_error') for c in children]
        return errors if len(errors) == 2 and all(errors) else None

    errors = fleet.wait_for(reported, timeout=outage_s, message='the status file names the Redis error')
    reported_after_s = time.monotonic() - down_at
    checks = 0
    while time.monotonic() < down_at + outage_s:  # the outage lasts this long: watch the fleet through it
        assert fleet.children() == pids, f'children changed during the outage\n{fleet.log()[-3000:]}'
        assert fleet.status().get('state') == 'running'
        checks += 1
        time.sleep(0.2)  # pacing the observation, not synchronising
    assert 'child exited' not in fleet.log()
    assert 'spawned child' not in fleet.log().split('all children ready')[-1]

    server.start()
    up_at = time.monotonic()
    up_at_wall = time.time()
    before = len(load.ids)
    load.wait_count(before + 100, timeout=30)
    fleet.wait_for(lambda: not any(c.get('redis_error') for c in fleet.status().get('children', [])), timeout=15,
                   message='the status file clears the Redis error')  # fmt: skip
    cleared_after_s = time.monotonic() - up_at
    load.stop()
    ids = load.enqueued_ids(fleet.redis)
    drain_s = ledger.wait_all_done(ids, timeout=60, context=fleet)
    resumed = [r.at for runs in ledger.all_runs(ids).values() for r in runs if r.at > up_at_wall]
    assert fleet.children() == pids
    fleet.signal(signal.SIGTERM)
    assert fleet.wait(timeout=15) == 0
    # the outage outlasts the 6 s lease: a job in flight when Redis went down may run again once it is back (its
    # lease lapsed meanwhile, and another child may claim it before its own worker renews or settles it); any other
    # second run is unexplained
    outage = Kill(frozenset(pids), at=down_at_wall)
    result = ledger.check(ids, [outage])
    report(
        'redis_down',
        outage_s=outage_s, status_reported_after_s=round(reported_after_s, 2),
        status_cleared_after_s=round(cleared_after_s, 2),
        first_run_after_redis_back_s=round(min(resumed) - up_at_wall, 2) if resumed else None,
        status_errors=sorted({str(e) for e in errors}), observations=checks, drain_after_load_s=round(drain_s, 2),
        producer_failed_tries=load.failed_tries, **result.figures(),
    )  # fmt: skip
    result.assert_clean()
