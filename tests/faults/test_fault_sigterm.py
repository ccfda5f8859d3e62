"""Fault 5: SIGTERM (and a second SIGTERM) during load."""

from __future__ import annotations

import signal
import time

import pytest

from arq.connections import RedisSettings
from tests.faults.harness import Fleet, FleetFactory, Kill, Ledger, Load, report
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until


def _start(fleets: FleetFactory, server: RedisServer, db: int, name: str, wait_s: float) -> tuple[Fleet, Ledger]:
    fleet = fleets(server.port, db, name=name)
    fleet.start('--procs', '2', settings=fleet.write_jobs(max_jobs=60, job_completion_wait=wait_s))
    fleet.wait_ready(2)
    return fleet, Ledger(fleet.redis, fleet.queue)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_sigterm_with_jobs_shorter_than_the_wait_finishes_them_all_and_exits_0(
    fleets: FleetFactory, redis_server: RedisServer, redis_db: int
) -> None:
    """40 jobs/s of 1 s jobs, job_completion_wait 5 s: SIGTERM while ~40 run. Every job that started finishes with
    success, none is cancelled or run twice, what was enqueued during the drain stays queued, and the exit is 0."""
    fleet, ledger = _start(fleets, redis_server, redis_db, 'short', 5)
    settings = RedisSettings(host='127.0.0.1', port=redis_server.port, database=redis_db)
    load = Load(settings, fleet.queue, rate=40, args=(1.0,)).start()
    load.wait_count(80)
    wait_until(lambda: len(ledger.in_progress_keys()) >= 20, message='jobs running')
    running = len(ledger.in_progress_keys())

    sent = time.monotonic()
    fleet.signal(signal.SIGTERM)
    code = fleet.wait(timeout=15)
    exit_s = time.monotonic() - sent
    ids = load.stop()
    result = ledger.check(ids, expect_drained=True)
    started = {job_id for job_id, runs in ledger.all_runs(ids).items() if runs}
    results = ledger.results(ids)
    unfinished = sorted(job_id for job_id in started if not (results[job_id] or {}).get('s'))
    report(
        'sigterm_short_jobs',
        job_s=1.0, job_completion_wait_s=5, running_at_sigterm=running, exit_code=code, exit_after_s=round(exit_s, 2),
        started=len(started), started_but_unfinished=len(unfinished), **result.figures(),
    )  # fmt: skip
    assert code == 0
    assert not unfinished, f'jobs started but not finished: {unfinished[:10]}'
    result.assert_clean()
    assert result.duplicated == 0
    assert result.queued > 0  # the producer kept going through the drain: those wait for the next worker
    assert exit_s < 1.0 + 3.0  # the longest job left, plus boot-free slack


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize('second_sigterm', [False, True], ids=['wait-expires', 'second-sigterm'])
def test_sigterm_with_jobs_longer_than_the_wait_requeues_them_with_their_try_given_back(
    fleets: FleetFactory, redis_server: RedisServer, redis_db: int, second_sigterm: bool
) -> None:
    """20 jobs/s of 4 s jobs. With job_completion_wait 1 s, SIGTERM cancels what still runs after 1 s and re-queues
    it with its try given back (arq:retry decremented): exit 0 within the wait + 5 s margin. With a 30 s wait, a
    second SIGTERM cuts the drain short. Either way nothing is lost: a new supervisor runs every job, at try 1."""
    wait_s = 30.0 if second_sigterm else 1.0
    fleet, ledger = _start(fleets, redis_server, redis_db, 'first', wait_s)
    settings = RedisSettings(host='127.0.0.1', port=redis_server.port, database=redis_db)
    load = Load(settings, fleet.queue, rate=20, args=(4.0,)).start()
    load.wait_count(60)
    wait_until(lambda: len(ledger.in_progress_keys()) >= 40, message='jobs running')
    running = len(ledger.in_progress_keys())
    children = frozenset(fleet.children())

    sent_at = time.time()
    sent = time.monotonic()
    fleet.signal(signal.SIGTERM)
    if second_sigterm:
        fleet.wait_log('draining children')
        fleet.signal(signal.SIGTERM)
    code = fleet.wait(timeout=wait_s + 10)
    exit_s = time.monotonic() - sent
    load.stop()
    ids = load.ids

    all_runs = ledger.all_runs(ids)
    cancelled = [job_id for job_id, runs in all_runs.items() if runs]
    results = ledger.results(cancelled)
    finished_first = [job_id for job_id in cancelled if results[job_id] is not None]
    retry_counts = fleet.redis.mget([f'arq:retry:{job_id}' for job_id in cancelled]) if cancelled else []
    tries_kept = sorted({int(v) for v in retry_counts if v is not None})
    leaked = ledger.in_progress_keys()
    assert code == 0
    assert not leaked, f'in-progress keys after the drain: {leaked[:5]}'
    assert not finished_first, 'a 4 s job finished within the drain?'
    assert tries_kept in ([], [0]), f'tries not given back: arq:retry values {tries_kept}'

    second, _ = _start(fleets, redis_server, redis_db, 'second', 30)
    drain_s = ledger.wait_all_done(ids, timeout=60, context=second)
    second.signal(signal.SIGTERM)
    assert second.wait(timeout=15) == 0
    result = ledger.check(ids, [Kill(children, sent_at)])
    reruns = [runs[1] for runs in ledger.all_runs(cancelled).values() if len(runs) > 1]
    report(
        'sigterm_long_jobs_second_sigterm' if second_sigterm else 'sigterm_long_jobs',
        job_s=4.0, job_completion_wait_s=wait_s, second_sigterm=second_sigterm, running_at_sigterm=running,
        exit_code=code, exit_after_s=round(exit_s, 2), cancelled_and_requeued=len(cancelled),
        arq_retry_after_drain=tries_kept, rerun_tries=sorted({r.job_try for r in reruns}),
        second_supervisor_drain_s=round(drain_s, 2), **result.figures(),
    )  # fmt: skip
    result.assert_clean()
    assert len(reruns) == len(cancelled)
    assert {r.job_try for r in reruns} == {1}, 'a shutdown cancel must not use up a try'
    if second_sigterm:
        assert exit_s < 3.0 + 1.0  # quick stop: cancel now (the parent's SIGKILL comes after 3 s)
    else:
        assert exit_s < wait_s + 5.0  # the wait plus the parent's margin
