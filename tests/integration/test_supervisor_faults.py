"""Crashes, poison jobs, hangs and a dead parent: real signals, real processes, real Redis."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.integration.harness import Supervisor
from tests.support.waiting import wait_until


def test_sigkilled_child_is_replaced_and_its_job_runs_again_within_2s(supervisor: Supervisor) -> None:
    supervisor.start('--procs', '2', settings=supervisor.write_settings())
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
    assert f'job released job_id={job_id} deaths=1' in supervisor.log()


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
    with open(f'/proc/{pid}/stat') as f:  # an unreaped zombie (reparented to init) counts as gone
        return f.read().split(') ')[1][0] != 'Z'
