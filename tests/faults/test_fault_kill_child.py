"""Fault 1: SIGKILL a random child every 2 s under a steady load."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from arq.connections import RedisSettings
from tests.faults.harness import FleetFactory, Kill, Ledger, Load, env_seconds, report
from tests.support.redis_server import RedisServer

RATE = 300
JOB_S = 0.03
KILL_EVERY_S = 2.0


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigkill_a_random_child_every_2s_loses_nothing(
    fleets: FleetFactory, redis_server: RedisServer, redis_db: int
) -> None:
    """~300 jobs/s of 30 ms jobs on 2 children; one of them SIGKILLed every 2 s.

    The issue asks for 60 s of this; CI runs 20 s (`ARQ_FAULTS_SOAK_S=60` runs the full soak by hand). Nothing may
    be lost, only jobs in flight at a kill may run twice, and the median time from a kill to such a job running
    again is reported (target: at most 2 s).
    """
    soak_s = env_seconds('ARQ_FAULTS_SOAK_S', 20)
    fleet = fleets(redis_server.port, redis_db)
    fleet.start('--procs', '2', settings=fleet.write_jobs(max_jobs=20))
    fleet.wait_ready(2)
    ledger = Ledger(fleet.redis, fleet.queue)
    settings = RedisSettings(host='127.0.0.1', port=redis_server.port, database=redis_db)
    load = Load(settings, fleet.queue, rate=RATE, args=(JOB_S,)).start()

    rng = random.Random(os.environ.get('ARQ_FAULTS_SEED', '5'))
    kills: list[Kill] = []
    skipped = 0
    started = time.monotonic()
    next_kill = started + KILL_EVERY_S
    while time.monotonic() < started + soak_s:
        time.sleep(max(0.0, next_kill - time.monotonic()))  # pacing the fault, not synchronising on it
        next_kill += KILL_EVERY_S
        victims = fleet.ready_children()
        live = set(fleet.children())
        victims = [pid for pid in victims if pid in live]
        if not victims:
            skipped += 1
            continue
        victim = rng.choice(victims)
        at = time.time()
        os.kill(victim, signal.SIGKILL)
        kills.append(Kill(frozenset({victim}), at, time.time()))

    ids = load.stop()
    elapsed = time.monotonic() - started
    drain_s = ledger.wait_all_done(ids, timeout=60, context=fleet)
    fleet.wait_ready(2, timeout=30)
    fleet.signal(signal.SIGTERM)
    assert fleet.wait(timeout=15) == 0
    result = ledger.check(ids, kills)
    respawns = fleet.respawn_delays()[: len(kills)]  # not the SIGTERM's exits at the end
    figures = report(
        'kill_child',
        soak_s=soak_s, rate_target=RATE, rate_achieved=round(len(ids) / elapsed, 1), job_s=JOB_S, kills=len(kills),
        kill_ticks_skipped=skipped, drain_after_load_s=round(drain_s, 2),
        child_exits_logged=fleet.log().count('child exited'), respawn_max_s=round(max(respawns), 3),
        **result.figures(),
    )  # fmt: skip
    result.assert_clean(allowed_failures=['while running this job, twice'])
    # a killed child was doing work: it is replaced at once, never backed off (with the crash-loop backoff, the
    # 5th kill of a slot waited 4 s, and 60 s of this left the fleet without a child for seconds at a time)
    assert len(respawns) == len(kills) and max(respawns) < 0.4, figures
    assert skipped <= 1, figures
    assert figures['reruns_measured'] > 0
    assert figures['rerun_median_s'] <= 2.0, figures
    assert figures['rate_achieved'] >= RATE * 0.8, figures
