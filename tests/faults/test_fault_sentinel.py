"""Fault 11: Redis Sentinel failovers under load (a master, a replica, three sentinels; see sentinel_bed.py).

`SENTINEL FAILOVER` leaves the old master up and writable for ~10 s after the replica's promotion; before
arq/sentinel.py every process kept writing to it and those writes were flushed by the resync (1,104 acknowledged
jobs lost of 6,001 in the issue's run). The ledger here is read from the master the sentinels name at the end, so
whatever went to the old master counts as lost.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.faults.harness import Fleet, FleetFactory, Ledger, Load, report
from tests.faults.sentinel_bed import SentinelBed
from tests.support.waiting import wait_until

# the ledgers are what these tests check; a redis-py connection of the test process (a plain redis.asyncio
# Connection, not one of our pools') to the old master, collected unclosed during a failover, is left to its own issue:
# CI saw its ResourceWarnings fail two of these tests on 2026-11-30, each with a clean ledger
pytestmark = pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')

RATE = 200
JOB_S = 0.05
FLOW_AGAIN_S = 5.0


@pytest.fixture
def sentinel_beds(tmp_path: Path) -> Iterator[Callable[..., SentinelBed]]:
    """`sentinel_beds(*node_config)` starts a bed (config lines for both data nodes); teardown stops every process."""
    made: list[SentinelBed] = []

    def make(*node_config: str, sentinel_password: str | None = None) -> SentinelBed:
        bed = SentinelBed(tmp_path / f'bed-{len(made)}', node_config=node_config, sentinel_password=sentinel_password)
        made.append(bed)
        return bed.start()

    yield make
    for bed in made:
        bed.stop()


def _start(fleets: FleetFactory, bed: SentinelBed) -> tuple[Fleet, list[int], Load]:
    fleet = fleets(bed.nodes[0].port, client=redis.Redis(port=bed.nodes[0].port))
    fleet.start('--procs', '2', settings=fleet.write_jobs(redis_settings=bed.settings_source()))
    pids = fleet.wait_ready(2)
    load = Load(bed.settings(), fleet.queue, rate=RATE, args=(JOB_S,)).start()
    load.wait_count(RATE * 3)
    return fleet, pids, load


def _promoted(bed: SentinelBed, port: int, timeout: float) -> float:
    """Wait until the node on `port` says it is a master; the wall time it was first seen so."""
    wait_until(lambda: bed.role(port) == 'master', timeout=timeout, message=f'node {port} promoted')
    return time.time()


def _finish(fleet: Fleet, pids: list[int], load: Load, bed: SentinelBed, promoted_at: float) -> dict[str, Any]:
    """Stop the load, drain, check the fleet and the ledger (read from the master the sentinels name now)."""
    load.wait_count(len(load.ids) + RATE * 2, timeout=30)  # the load flows again (FLOW_AGAIN_S is asserted below)
    load.stop()
    master = redis.Redis(port=bed.master_port())
    ids = load.enqueued_ids(master)
    ledger = Ledger(master, fleet.queue)
    drain_s = ledger.wait_all_done(ids, timeout=30, context=fleet)
    command = [
        sys.executable,
        '-m',
        'arq_supervise',
        'status',
        '--json',
        '--interval',
        '0.2',
        f'{fleet.module}.WorkerSettings',
    ]
    status = subprocess.run(command, cwd=fleet.tmp_path, env=fleet.env(), capture_output=True, text=True, timeout=30)
    assert status.returncode == 0, status.stderr[-2000:]
    assert fleet.children() == pids, f'a worker was replaced\n{fleet.log()[-3000:]}'
    assert 'child exited' not in fleet.log()
    fleet.signal(signal.SIGTERM)
    assert fleet.wait(timeout=15) == 0
    all_runs = ledger.all_runs(ids)
    after = [r.at for runs in all_runs.values() for r in runs if r.at > promoted_at]
    enqueued_after = [at for at in load.enqueued_at.values() if at > promoted_at]
    result = ledger.check(ids)
    results = ledger.results(ids)
    return {
        'result': result,
        'first_run_after_promotion_s': round(min(after) - promoted_at, 2) if after else None,
        'first_enqueue_after_promotion_s': round(min(enqueued_after) - promoted_at, 2) if enqueued_after else None,
        'results_without_run_record': sum(1 for i in ids if results[i] is not None and not all_runs[i]),
        'producer_failed_tries': load.failed_tries,
        'producer_longest_gap_s': round(load.longest_gap_s, 2),
        'drain_after_load_s': round(drain_s, 2),
        'status_ok': status.returncode == 0,
    }


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_sentinel_failover_under_load_loses_nothing_acknowledged(
    fleets: FleetFactory, sentinel_beds: Callable[..., SentinelBed]
) -> None:
    """`SENTINEL FAILOVER` under 200 jobs/s: every process fences the old master on `+try-failover` and follows
    `+switch-master`, so nothing acknowledged is lost, no worker dies and jobs run again within 5 s."""
    bed = sentinel_beds()
    fleet, pids, load = _start(fleets, bed)
    old, new = bed.nodes[0].port, bed.nodes[1].port
    failover_at = time.time()
    bed.failover()
    promoted_at = _promoted(bed, new, timeout=10)
    figures = _finish(fleet, pids, load, bed, promoted_at)
    # the old master is converted ~10 s after the promotion: it must hold nothing the new master lacks by then
    wait_until(lambda: bed.role(old) == 'slave', timeout=20, message='the old master converted to a replica')
    result = figures.pop('result')
    report(
        'sentinel_failover',
        rate=RATE, job_s=JOB_S, promotion_after_failover_s=round(promoted_at - failover_at, 2), **figures,
        **result.figures(),
    )  # fmt: skip
    try:
        result.assert_clean()
    except AssertionError as e:  # the fleet's lines about the jobs that ran twice, and its warnings
        ids = result.unexplained_duplicates[:5]
        lines = [line for line in fleet.log().splitlines() if any(i in line for i in ids) or 'WARN' in line]
        raise AssertionError('\n'.join([str(e), *lines[-80:]])) from None
    assert figures['results_without_run_record'] == 0
    assert figures['first_run_after_promotion_s'] is not None
    assert figures['first_run_after_promotion_s'] <= FLOW_AGAIN_S
    assert figures['first_enqueue_after_promotion_s'] is not None
    assert figures['first_enqueue_after_promotion_s'] <= FLOW_AGAIN_S


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_sentinel_master_sigkill_under_load_measures_what_is_lost(
    fleets: FleetFactory, sentinel_beds: Callable[..., SentinelBed]
) -> None:
    """SIGKILL of the master under 200 jobs/s: the sentinels promote the replica after `down-after-milliseconds`
    (1 s here); enqueues fail meanwhile (none of those ran), the workers carry on. Whatever the master acknowledged
    but had not replicated when it died is lost: measured and reported (on loopback, nothing so far)."""
    bed = sentinel_beds()
    fleet, pids, load = _start(fleets, bed)
    old, new = bed.nodes[0].port, bed.nodes[1].port
    killed_at = time.time()
    process = bed.node(old).process
    assert process is not None
    process.kill()
    promoted_at = _promoted(bed, new, timeout=20)
    figures = _finish(fleet, pids, load, bed, promoted_at)
    result = figures.pop('result')
    report(
        'sentinel_master_sigkill',
        rate=RATE, job_s=JOB_S, promotion_after_kill_s=round(promoted_at - killed_at, 2), **figures,
        **result.figures(),
    )  # fmt: skip
    assert not result.leaked_in_progress
    assert not result.failed, result.failed
    assert figures['first_run_after_promotion_s'] is not None
    assert figures['first_run_after_promotion_s'] <= FLOW_AGAIN_S


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_sentinel_failover_with_min_replicas_to_write_costs_a_stall(
    fleets: FleetFactory, sentinel_beds: Callable[..., SentinelBed]
) -> None:
    """The README's belt and braces: `min-replicas-to-write 1` on both nodes. With one replica, the promoted master
    has none until the sentinels convert the old one (~10 s): writes are refused until then. Measured: the stall,
    the refused enqueues, and that nothing acknowledged is lost. Jobs whose outcome Redis refused for that long run
    again (their leases lapse): counted, not forbidden."""
    bed = sentinel_beds('min-replicas-to-write 1', 'min-replicas-max-lag 10')
    fleet, pids, load = _start(fleets, bed)
    new = bed.nodes[1].port
    failover_at = time.time()
    bed.failover()
    promoted_at = _promoted(bed, new, timeout=10)
    figures = _finish(fleet, pids, load, bed, promoted_at)
    result = figures.pop('result')
    report(
        'sentinel_failover_min_replicas',
        rate=RATE, job_s=JOB_S, promotion_after_failover_s=round(promoted_at - failover_at, 2), **figures,
        **result.figures(),
    )  # fmt: skip
    assert not result.lost and not result.leaked_in_progress and not result.failed
    assert figures['results_without_run_record'] == 0


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_sentinels_that_need_a_password_work_through_sentinel_kwargs(
    sentinel_beds: Callable[..., SentinelBed],
) -> None:
    """`RedisSettings(sentinel_kwargs={'password': ...})` reaches every Sentinel client: workers' and clients' pools
    and the supervisor parent's; without it the sentinels refuse, with a clear error."""
    from arq.connections import create_pool
    from arq_supervise.release import sync_client

    bed = sentinel_beds(sentinel_password='sentinel-secret')
    pool = await create_pool(bed.settings())
    try:
        job = await pool.enqueue_job('work', 0.01, _job_id='through-sentinels')
        assert job is not None
    finally:
        await pool.aclose()
    parent = sync_client(bed.settings())
    try:
        assert parent.exists('arq:job:through-sentinels') == 1
    finally:
        parent.close()
    with pytest.raises(redis.RedisError):
        await create_pool(bed.settings(sentinel_kwargs={}, conn_retries=0))
