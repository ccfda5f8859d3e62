"""Crashes, poison jobs, hangs and a dead parent: real signals, real processes, real Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import redis

from tests.integration.harness import Supervisor
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until


def test_sigkilled_child_is_replaced_and_its_job_runs_again_within_2s(supervisor: Supervisor) -> None:
    # a 5 s poll: the other child must be woken by the release's nudge, not find the job by polling
    supervisor.start('--procs', '2', settings=supervisor.write_settings(poll_delay=5))
    supervisor.wait_ready(2)
    job_id = supervisor.enqueue('sleeper', 'victim', 1)
    [(_, victim_pid, _, _)] = supervisor.wait_started('victim')

    killed_at = time.time()
    os.kill(victim_pid, signal.SIGKILL)
    second = supervisor.wait_started('victim', times=2, timeout=5)[1]
    rerun_s = second[3] - killed_at
    print(f'job ran again {rerun_s:.3f}s after SIGKILL of its worker')
    assert rerun_s < 2
    assert second[1] != victim_pid

    pids = supervisor.wait_ready(2)
    assert victim_pid not in pids
    wait_until(lambda: supervisor.result(job_id), message='the job finished on the second try')
    assert 'killed by SIGKILL (perhaps out of memory)' in supervisor.log()
    assert f'job released job_id={job_id} deaths=0' in supervisor.log()  # no evidence against it: uncounted


def test_job_that_kills_its_worker_twice_is_failed_with_a_reason(supervisor: Supervisor) -> None:
    supervisor.start('--procs', '2', settings=supervisor.write_settings())
    supervisor.wait_ready(2)
    job_id = supervisor.enqueue('crasher', 'poison', 13)

    result = wait_until(lambda: supervisor.result(job_id), timeout=10, message='a failed result for the poison job')
    assert result['s'] is False
    assert type(result['r']).__name__ == 'JobExecutionFailed'
    assert str(result['r']) == 'worker exited with code 13 while running this job, twice'
    assert result['f'] == 'crasher'
    assert result['q'] == supervisor.queue
    assert len(supervisor.started('poison')) == 2
    assert supervisor.redis.zscore(supervisor.queue, job_id) is None
    assert not supervisor.redis.exists(f'arq:in-progress:{job_id}', f'arq:job:{job_id}', f'arq:deaths:{job_id}')

    # the supervisor carries on: both slots refilled, other work still runs
    supervisor.wait_ready(2)
    supervisor.enqueue('quick', 'after')
    supervisor.wait_started('after')


@pytest.mark.slow
def test_blocked_event_loop_is_dumped_killed_and_replaced(supervisor: Supervisor) -> None:
    supervisor.start('--procs', '1', '--heartbeat-timeout', '3', settings=supervisor.write_settings())
    [first] = supervisor.wait_ready(1)
    job_id = supervisor.enqueue('blocker', 'hang', 60)
    supervisor.wait_started('hang')

    log = supervisor.wait_log('child unresponsive', timeout=10)
    assert 'reason=hang' in log
    wait_until(lambda: 'in blocker' in supervisor.log(), timeout=5, message='the stack dump naming the blocking job')
    # the status file is rewritten every second: wait for the kill itself before asking it for the replacement
    wait_until(lambda: not _alive(first), timeout=10, message='the hung child killed')
    [second] = supervisor.wait_ready(1, timeout=15)
    assert second != first
    assert 'killed by SIGKILL (its event loop stopped answering)' in supervisor.log()

    # the job was released and blocked its next worker too: after two deaths it is failed, not run a third time
    result = wait_until(lambda: supervisor.result(job_id), timeout=20, message='the hanging job failed')
    assert str(result['r']) == 'worker killed by SIGKILL while running this job, twice'
    supervisor.wait_ready(1, timeout=15)


@pytest.mark.slow
def test_children_exit_when_the_parent_is_sigkilled(supervisor: Supervisor) -> None:
    supervisor.start('--procs', '2', settings=supervisor.write_settings(job_completion_wait=10))
    children = supervisor.wait_ready(2)
    job_id = supervisor.enqueue('sleeper', 'orphaned', 1)
    supervisor.wait_started('orphaned')

    os.kill(supervisor.pid, signal.SIGKILL)
    supervisor.wait(timeout=5)

    def alive() -> list[int]:
        return [pid for pid in children if _alive(pid)]

    wait_until(lambda: not alive(), timeout=10, message='children gone after the parent died')
    result = supervisor.result(job_id)
    assert result is not None and result['s'] is True  # they drained: the running job finished
    assert 'parent went away, draining' in supervisor.log()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f'/proc/{pid}/stat') as f:  # an unreaped zombie (reparented to init) counts as gone
            return f.read().split(') ')[1][0] != 'Z'
    except FileNotFoundError:  # reaped between the two looks
        return False


STUBBORN = """
import asyncio as _asyncio


async def stubborn(ctx, name):
    await _record(ctx, 'started', name)
    while True:
        try:
            await _asyncio.sleep(60)
        except _asyncio.CancelledError:
            pass  # refuses to be cancelled: only SIGKILL ends it


WorkerSettings.functions = [*WorkerSettings.functions, stubborn]
"""


@pytest.mark.slow
def test_child_past_the_drain_deadline_is_killed_and_its_job_released(supervisor: Supervisor) -> None:
    settings = supervisor.write_settings(STUBBORN, job_completion_wait=1)
    supervisor.start('--procs', '1', settings=settings)
    supervisor.wait_ready(1)
    job_id = supervisor.enqueue('stubborn', 'stubborn')
    supervisor.wait_started('stubborn')

    started = time.monotonic()
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(timeout=15) == 0
    stop_s = time.monotonic() - started
    print(f'stop with a job that ignores cancellation took {stop_s:.2f}s (wait 1 s + margin 5 s)')
    assert 6 <= stop_s < 9
    log = supervisor.log()
    assert 'drain deadline passed, killing' in log
    assert f'job released job_id={job_id} deaths=0' in log  # our kill: not counted against the job
    assert supervisor.redis.zscore(supervisor.queue, job_id) is not None
    assert not supervisor.redis.exists(f'arq:in-progress:{job_id}')


@pytest.mark.slow
def test_child_stuck_while_booting_is_killed_and_counts_as_a_boot_failure(supervisor: Supervisor) -> None:
    settings = supervisor.write_settings(
        """
        async def slow_startup(ctx):
            time.sleep(30)

        WorkerSettings.on_startup = slow_startup
        """
    )
    supervisor.start('--procs', '1', '--boot-timeout', '1', settings=settings)
    assert supervisor.wait(timeout=20) == 3
    log = supervisor.log()
    assert log.count('reason=boot-timeout') == 3
    assert 'in slow_startup' in log  # the stack dump says where it was stuck


@pytest.mark.slow
def test_redis_outage_keeps_children_alive_and_recovers(supervisor: Supervisor, tmp_path: Path) -> None:
    own = RedisServer(directory=tmp_path / 'own-redis')
    own.start()
    try:
        supervisor.redis_port = own.port
        supervisor.db = 0
        supervisor.redis = redis.Redis(port=own.port, decode_responses=True)
        supervisor.start('--procs', '2', '--health-interval', '0.5', settings=supervisor.write_settings())
        pids = supervisor.wait_ready(2)

        own.stop()
        wait_until(lambda: 'child redis status' in supervisor.log(), timeout=15, message='children report the outage')
        assert supervisor.children() == pids  # nobody restarted, nobody crashed
        assert supervisor.status()['state'] == 'running'

        own.start()
        supervisor.enqueue('quick', 'after-outage')
        supervisor.wait_started('after-outage', timeout=20)
        assert supervisor.children() == pids
        wait_until(lambda: 'health keys written again' in supervisor.log(), timeout=10, message='health restored')
    finally:
        own.stop()


ORPHANS = """
import subprocess as _subprocess


async def orphan_maker(ctx, name):
    await _record(ctx, 'started', name)
    # the shell exits at once; its background sleep is re-parented to PID 1, which must reap it
    _subprocess.run(['sh', '-c', 'sleep 0.2 &'], check=True)


WorkerSettings.functions = [*WorkerSettings.functions, orphan_maker]
"""


def _can_unshare() -> bool:
    try:
        return subprocess.run(['unshare', '-fp', 'true'], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _can_unshare(), reason='needs unshare(1) and permission to create a PID namespace')
def test_as_pid_1_it_reaps_orphans_it_did_not_start(supervisor: Supervisor) -> None:
    settings = supervisor.write_settings(ORPHANS)
    supervisor.start('-v', '--procs', '1', settings=settings, prefix=('unshare', '-fp', '--kill-child'))
    wait_until(lambda: supervisor.status().get('ready') == 1, message=f'ready as PID 1\n{supervisor.log()}')
    assert supervisor.status()['pid'] == 1
    [arbiter] = psutil.Process(supervisor.pid).children()

    supervisor.enqueue('orphan_maker', 'orphans')
    supervisor.wait_log('reaped a process we did not start')
    zombies = [p for p in arbiter.children() if p.status() == psutil.STATUS_ZOMBIE]
    assert not zombies

    os.kill(arbiter.pid, signal.SIGTERM)
    assert supervisor.wait(timeout=10) == 0
