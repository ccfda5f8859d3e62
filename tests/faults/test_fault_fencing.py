"""Fenced leases: a worker paused past its lease (a stalled VM, a long partition) cannot undo the run that followed.

Worker A runs a job and is SIGSTOPped. Its lease lapses, worker B claims the job and finishes it. A is then
SIGCONTed and its job's first run ends: its settle (a result, or a Retry's re-queue) must change nothing, so the
job's outcome is B's run, and the job ran exactly twice, never three times.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from arq.jobs import serialize_job
from tests.faults.harness import Fleet, FleetFactory, Ledger, report
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

LEASE_S = 2.0
FLAKY = """
from arq import Retry


async def flaky(ctx, seconds):
    # fails its first try with a Retry: a late re-queue of that try would make a third run
    await _ledger(ctx)
    await asyncio.sleep(seconds)
    if ctx['job_try'] == 1:
        raise Retry(defer=0)
    return 'ok'


WorkerSettings.functions = [*WorkerSettings.functions, flaky]
WorkerSettings.lease_s = {lease_s}
"""


class Workers:
    """Plain `arq` worker processes (no supervisor: nothing kills a paused one) on the fleet's settings."""

    def __init__(self, fleet: Fleet, settings: str) -> None:
        self.fleet = fleet
        self.settings = settings
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: list[IO[bytes]] = []

    def start(self, name: str) -> subprocess.Popen[bytes]:
        log = (self.fleet.tmp_path / f'{name}.log').open('ab')
        self.logs.append(log)
        proc = subprocess.Popen(
            [sys.executable, '-m', 'arq', self.settings], cwd=self.fleet.tmp_path, env=self.fleet.env(),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.procs[name] = proc
        wait_until(lambda: 'Starting worker' in self.log(name), timeout=20, message=f'worker {name} to start')
        return proc

    def log(self, name: str) -> str:
        path: Path = self.fleet.tmp_path / f'{name}.log'
        return path.read_text(errors='replace') if path.exists() else ''

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self.logs:
            log.close()


@pytest.fixture
def workers(fleets: FleetFactory, redis_server: RedisServer, redis_db: int) -> Iterator[Workers]:
    fleet = fleets(redis_server.port, redis_db)
    settings = fleet.write_jobs(max_jobs=5, poll_delay=0.05, extra=FLAKY.format(lease_s=LEASE_S))
    made = Workers(fleet, settings)
    yield made
    made.stop()


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize('function', ['work', 'flaky'], ids=['late-result', 'late-retry'])
def test_a_worker_paused_past_its_lease_cannot_undo_the_next_run(workers: Workers, function: str) -> None:
    fleet, job_id = workers.fleet, f'fenced-{function}'
    ledger = Ledger(fleet.redis, fleet.queue)
    a = workers.start('a')
    enqueue(fleet, function, job_id, seconds=1.0)
    wait_until(lambda: ledger.runs(job_id), timeout=10, message='worker a to start the job')
    os.kill(a.pid, signal.SIGSTOP)
    workers.start('b')
    result = wait_until(lambda: fleet.result(job_id), timeout=30, message="worker b's result")
    os.kill(a.pid, signal.SIGCONT)
    wait_until(lambda: 'lease lost, result dropped' in workers.log('a'), timeout=15, message="a's fenced settle")

    runs = ledger.runs(job_id)
    after = fleet.result(job_id)
    figures = report(
        'fencing', function=function, lease_s=LEASE_S, runs=len(runs), tries=[r.job_try for r in runs],
        result_try=after and after['t'], fenced_lines=workers.log('a').count('lease lost, result dropped'),
    )  # fmt: skip
    assert [r.job_try for r in runs] == [1, 2], figures  # a's run, then b's: never a third
    assert runs[0].pid == a.pid and runs[1].pid != a.pid, figures
    assert after == result and after is not None and after['s'] is True and after['t'] == 2, figures
    assert fleet.redis.zscore(fleet.queue, job_id) is None, 'not put back by the late re-queue'
    assert not fleet.redis.exists(f'arq:in-progress:{job_id}')
    # a carries on: it is not stuck on the job it lost
    enqueue(fleet, 'work', 'after', seconds=0.01)
    wait_until(lambda: fleet.result('after'), timeout=15, message='a later job to run')
    assert a.poll() is None and workers.procs['b'].poll() is None


def enqueue(fleet: Fleet, function: str, job_id: str, seconds: float) -> None:
    """Enqueue as arq's client does (job key, then the queue entry); the workers poll every 50 ms."""
    now_ms = round(time.time() * 1000)
    fleet.redis.psetex(f'arq:job:{job_id}', 60_000, serialize_job(function, (seconds,), {}, None, now_ms))
    fleet.redis.zadd(fleet.queue, {job_id: now_ms})
