"""A full Redis (maxmemory with noeviction): nothing is lost, the error is said once and truthfully, work resumes.

Over its limit Redis refuses writes that need memory but still answers reads. Our settle script starts with a DEL,
which Redis allows (and a script that began writing may finish), so running jobs still record their outcome and free
their payloads; a claim starts with a SET and is refused, so no new job starts. The worker must report that error
once rather than alternate it with `redis connection restored` on every read that works, the supervisor's status
must show it until it clears, and after memory is freed everything resumes with nothing lost.
"""

from __future__ import annotations

import signal
import time

import pytest
import redis

from arq.jobs import serialize_job
from tests.faults.harness import FleetFactory, Ledger, RedisFactory, report

JOBS = 12
SLOTS = 4
JOB_S = 1.5


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_full_redis_holds_outcomes_reports_once_and_resumes(
    fleets: FleetFactory, redis_servers: RedisFactory
) -> None:
    server = redis_servers('--maxmemory-policy', 'noeviction')
    client = redis.Redis(port=server.port)
    fleet = fleets(server.port, client=client)
    fleet.start('--procs', '1', '--health-interval', '1', settings=fleet.write_jobs(max_jobs=SLOTS))
    fleet.wait_ready(1)
    ledger = Ledger(client, fleet.queue)
    now_ms = round(time.time() * 1000)
    ids = [f'full-{i}' for i in range(JOBS)]
    for job_id in ids:
        client.psetex(f'arq:job:{job_id}', 120_000, serialize_job('work', (JOB_S,), {}, None, now_ms))
        client.zadd(fleet.queue, {job_id: now_ms})
    fleet.wait_for(lambda: sum(bool(ledger.runs(i)) for i in ids) == SLOTS, timeout=15, message='a first batch')

    client.config_set('maxmemory', 1)  # below what is used: every write is refused from now on
    full_at = time.monotonic()

    def reported() -> str | None:
        children = fleet.status().get('children', [])
        return children[0].get('redis_error') if children and children[0].get('redis_error') else None

    error = fleet.wait_for(reported, timeout=15, message='the status file to name the error')
    held_s = JOB_S + 3  # the first batch ends meanwhile
    fleet.wait_for(lambda: time.monotonic() > full_at + held_s, timeout=held_s + 1, message='the outage to last')
    assert fleet.status()['children'][0].get('redis_error'), 'the error stays reported while it lasts'
    during = fleet.log()
    finished = [i for i in ids if client.exists(f'arq:result:{i}')]
    started = [i for i in ids if ledger.runs(i)]
    assert len(finished) == SLOTS and finished == started, 'the running jobs recorded their outcome; no other began'

    client.config_set('maxmemory', 0)
    freed_at = time.monotonic()
    drain_s = ledger.wait_all_done(ids, timeout=30, context=fleet)
    fleet.wait_for(lambda: not reported(), timeout=10, message='the status file to clear the error')
    fleet.signal(signal.SIGTERM)
    assert fleet.wait(timeout=15) == 0
    result = ledger.check(ids)
    figures = report(
        'full_redis',
        jobs=JOBS, finished_while_full=len(finished), status_error=error,
        settle_warnings=during.count('redis error in settle'),
        loop_warnings=during.count('redis error in worker loop'), restored_during=during.count('connection restored'),
        results_after_freeing_s=round(drain_s, 2), resumed_after_s=round(time.monotonic() - freed_at, 2),
        **result.figures(),
    )  # fmt: skip
    result.assert_clean()
    assert result.duplicated == 0, figures
    assert 'OutOfMemoryError' in str(error), figures
    assert figures['settle_warnings'] == 0 and figures['loop_warnings'] == 1, figures
    assert figures['restored_during'] == 0, figures  # no 'redis connection restored' while writes are refused
