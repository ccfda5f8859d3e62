"""Fault 2: SIGKILL the whole supervisor (parent and children at once) mid-load, then start a new one."""

from __future__ import annotations

import os
import signal
import time

import pytest

from arq.connections import RedisSettings
from arq_supervise.config import SupervisorConfig
from tests.faults.harness import FleetFactory, Kill, Ledger, Load, alive, report
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

RATE = 100
JOB_S = 0.3
# the default heartbeat timeout (10 s) makes a 19 s lease; 3 s makes the shortest lease there is, 12 s.
# at the default --heartbeat-timeout; ARQ_FAULTS_HEARTBEAT_TIMEOUTS=3,10 measures both (tests/faults/README.md)
HEARTBEAT_TIMEOUTS = [float(s) for s in os.environ.get('ARQ_FAULTS_HEARTBEAT_TIMEOUTS', '10').split(',')]


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize('heartbeat_timeout', HEARTBEAT_TIMEOUTS)
def test_killing_the_whole_supervisor_loses_nothing_and_orphans_run_within_the_lease(
    fleets: FleetFactory, redis_server: RedisServer, redis_db: int, heartbeat_timeout: float
) -> None:
    """100 jobs/s of 0.3 s jobs (~30 in flight); `killpg(SIGKILL)` takes the parent and both children at once.

    Nobody is left to release the in-flight jobs: their in-progress keys are leases that lapse by themselves. A new
    supervisor, started at once, must run every job; the orphans run again once their lease lapsed: within 10 s at
    default flags, whatever the heartbeat timeout (the parent renews its children's leases, so they can be short).
    """
    lease_s = SupervisorConfig(settings_path='a.B', procs=1, heartbeat_timeout_s=heartbeat_timeout).effective_lease_s
    first = fleets(redis_server.port, redis_db, name='first')
    settings_path = first.write_jobs(max_jobs=50)
    args = ('--procs', '2', '--heartbeat-timeout', f'{heartbeat_timeout:g}')
    first.start(*args, settings=settings_path)
    first.wait_ready(2)
    ledger = Ledger(first.redis, first.queue)
    settings = RedisSettings(host='127.0.0.1', port=redis_server.port, database=redis_db)
    load = Load(settings, first.queue, rate=RATE, args=(JOB_S,)).start()

    load.wait_count(RATE * 3)
    wait_until(lambda: len(ledger.in_progress_keys()) >= 10, message='jobs in flight')
    victims = frozenset(first.children()) | {first.pid}
    in_flight = len(ledger.in_progress_keys())
    killed_at = first.killpg()
    wait_until(lambda: not any(alive(pid) for pid in victims), timeout=5, message='the whole group gone')

    second = fleets(redis_server.port, redis_db, name='second')
    second.start(*args, settings=second.write_jobs(max_jobs=50))
    second.wait_ready(2)
    restarted_s = time.time() - killed_at
    load.wait_count(len(load.ids) + RATE * 2)
    ids = load.stop()

    drain_s = ledger.wait_all_done(ids, timeout=lease_s + 30, context=second)
    second.signal(signal.SIGTERM)
    assert second.wait(timeout=15) == 0
    result = ledger.check(ids, [Kill(victims, killed_at)])
    figures = report(
        'kill_supervisor',
        heartbeat_timeout_s=heartbeat_timeout, lease_s=lease_s, rate=RATE, job_s=JOB_S,
        in_flight_at_kill=in_flight, new_supervisor_ready_after_s=round(restarted_s, 2),
        drain_after_load_s=round(drain_s, 2), **result.figures(),
    )  # fmt: skip
    result.assert_clean()
    assert figures['reruns_measured'] >= 10, figures
    # an orphan is claimable once its lease lapsed; a worker then needs at most a poll to see it
    assert figures['rerun_max_s'] <= lease_s + 1.5, figures
    assert figures['rerun_max_s'] <= 10, figures
