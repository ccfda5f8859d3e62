"""Start, share the work, drain on SIGTERM/SIGINT, fail fast on bad settings."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.integration.harness import Supervisor
from tests.support.waiting import wait_until


def test_children_start_with_titles_and_share_one_queue(supervisor: Supervisor) -> None:
    supervisor.start('--procs', '2', settings=supervisor.write_settings(max_jobs=2))
    pids = supervisor.wait_ready(2)
    titles = sorted(' '.join(psutil.Process(pid).cmdline()) for pid in pids)
    assert titles[0].startswith(f'arq-supervise: worker 1 [{supervisor.queue}]')
    assert titles[1].startswith(f'arq-supervise: worker 2 [{supervisor.queue}]')
    parent_title = ' '.join(psutil.Process(supervisor.pid).cmdline())
    assert parent_title.startswith(f'arq-supervise: supervisor [{supervisor.queue}] {supervisor.module}.WorkerSettings')

    for i in range(12):
        supervisor.enqueue('sleeper', f'job{i}', 0.2)
    wait_until(lambda: len(supervisor.events('finished')) == 12, message='12 jobs finished')
    assert {pid for _, pid, _, _ in supervisor.events('started')} == set(pids)
    assert 'worker 1 INFO' in supervisor.log()  # child log lines carry their slot

    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(timeout=10) == 0


def test_sigterm_lets_running_jobs_finish_then_exits_0(supervisor: Supervisor) -> None:
    supervisor.start('--procs', '2', settings=supervisor.write_settings(job_completion_wait=10))
    supervisor.wait_ready(2)
    job_ids = [supervisor.enqueue('sleeper', f'slow{i}', 1.5) for i in range(2)]
    wait_until(lambda: len(supervisor.events('started')) == 2, message='both jobs started')

    started = time.monotonic()
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(timeout=15) == 0
    drain_s = time.monotonic() - started
    print(f'drain with 1.5 s jobs took {drain_s:.2f}s')

    for job_id in job_ids:
        result = supervisor.result(job_id)
        assert result is not None and result['s'] is True
    assert len(supervisor.events('finished')) == 2
    assert drain_s < 5


def test_jobs_longer_than_the_wait_are_cancelled_and_requeued(supervisor: Supervisor) -> None:
    supervisor.start('--procs', '1', '--job-completion-wait', '1', settings=supervisor.write_settings())
    supervisor.wait_ready(1)
    job_id = supervisor.enqueue('sleeper', 'long', 60)
    supervisor.wait_started('long')

    started = time.monotonic()
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(timeout=15) == 0
    drain_s = time.monotonic() - started
    print(f'drain with job_completion_wait=1 and a 60 s job took {drain_s:.2f}s')
    assert 1 <= drain_s < 1 + 5  # the wait, plus the margin the parent allows

    assert supervisor.redis.zscore(supervisor.queue, job_id) is not None  # back in the queue
    assert not supervisor.redis.exists(f'arq:in-progress:{job_id}')
    assert supervisor.result(job_id) is None


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_second_signal_cuts_the_wait_short(supervisor: Supervisor, sig: signal.Signals) -> None:
    supervisor.start('--procs', '2', settings=supervisor.write_settings(job_completion_wait=30))
    supervisor.wait_ready(2)
    job_id = supervisor.enqueue('sleeper', 'long', 60)
    supervisor.wait_started('long')

    started = time.monotonic()
    supervisor.signal(sig)
    supervisor.wait_log('draining child')
    supervisor.signal(sig)
    assert supervisor.wait(timeout=10) == 0
    stop_s = time.monotonic() - started
    print(f'stop after a second {sig.name} took {stop_s:.2f}s')
    assert stop_s < 5
    assert supervisor.redis.zscore(supervisor.queue, job_id) is not None
    assert not supervisor.redis.exists(f'arq:in-progress:{job_id}')


def test_ctrl_c_to_the_whole_group_drains_once(supervisor: Supervisor) -> None:
    """A terminal's SIGINT reaches every process: children ignore it, the parent drains them."""
    supervisor.start('--procs', '2', settings=supervisor.write_settings(job_completion_wait=10))
    supervisor.wait_ready(2)
    job_id = supervisor.enqueue('sleeper', 'short', 1)
    supervisor.wait_started('short')
    import os

    os.killpg(supervisor.pid, signal.SIGINT)
    assert supervisor.wait(timeout=15) == 0
    result = supervisor.result(job_id)
    assert result is not None and result['s'] is True


def test_settings_import_error_exits_4_before_any_fork(supervisor: Supervisor) -> None:
    (supervisor.tmp_path / 'broken_app.py').write_text('def oops(:\n')
    for settings in ('broken_app.WorkerSettings', 'no_such_module.WorkerSettings', 'nodots'):
        done = supervisor.run('--procs', '2', settings=settings)
        assert done.returncode == 4, done.stderr
        assert 'arq-supervise: cannot import settings' in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        assert 'spawned' not in done.stderr


def test_settings_without_functions_exit_4(supervisor: Supervisor) -> None:
    (supervisor.tmp_path / 'empty_app.py').write_text('class WorkerSettings:\n    queue_name = "x"\n')
    done = supervisor.run('--procs', '1', settings='empty_app.WorkerSettings')
    assert done.returncode == 4
    assert 'define no functions' in done.stderr


def test_usage_error_exits_2(supervisor: Supervisor) -> None:
    done = supervisor.run('--procs', '0', settings=supervisor.write_settings())
    assert done.returncode == 2
    assert "'--procs'" in done.stderr
    done = supervisor.run('--heartbeat-timeout', '1', settings=supervisor.write_settings())
    assert done.returncode == 2
    assert 'heartbeat' in done.stderr


@pytest.mark.parametrize(('variable', 'value'), [('ARQ_SUPERVISE_PROCS', '0'), ('ARQ_SUPERVISE_LEASE', '1')])
def test_a_bad_value_from_the_environment_is_reported_under_its_variable(
    supervisor: Supervisor, variable: str, value: str
) -> None:
    command = [sys.executable, '-m', 'arq_supervise', supervisor.write_settings()]
    done = subprocess.run(command, cwd=supervisor.tmp_path, env=supervisor.env(**{variable: value}),
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 2
    assert f'Invalid value for {variable} (in the environment)' in done.stderr, done.stderr


def test_child_failing_on_startup_halts_with_exit_3(supervisor: Supervisor) -> None:
    settings = supervisor.write_settings(
        """
        async def broken_startup(ctx):
            raise RuntimeError('database is not there')

        WorkerSettings.on_startup = broken_startup
        """
    )
    supervisor.start('--procs', '2', settings=settings)
    assert supervisor.wait(timeout=20) == 3
    log = supervisor.log()
    assert log.count('Traceback (most recent call last)') == 1  # the first failure's; the others are one line each
    assert log.count('worker failed to boot') >= 3
    last = log.strip().splitlines()[-1]
    # two children fail side by side: both may fail again in the turn that reaches the limit (3), so 4 is counted
    failures = re.search(r'exit_code=3: children failed to boot (\d+) times in a row', last)
    assert failures is not None and int(failures.group(1)) >= 3, last
    assert last.endswith('last error: RuntimeError: database is not there'), last
    assert 'could not release' not in log  # a child that never became ready held no job


def test_burst_runs_the_queue_dry_then_exits_0(supervisor: Supervisor) -> None:
    for i in range(6):
        supervisor.enqueue('quick', f'q{i}')
    supervisor.start('--procs', '2', '--burst', settings=supervisor.write_settings())
    assert supervisor.wait(timeout=20) == 0
    assert len(supervisor.events('finished')) == 6


def test_burst_in_the_settings_means_burst_not_children_replaced_as_they_exit(supervisor: Supervisor) -> None:
    """Without it, each child drained the queue, exited cleanly and was replaced at once, dozens of times a second."""
    for i in range(3):
        supervisor.enqueue('quick', f'q{i}')
    settings = supervisor.write_settings('\nWorkerSettings.burst = True\n')
    supervisor.start('--procs', '2', settings=settings)
    assert supervisor.wait(timeout=20) == 0
    assert len(supervisor.events('finished')) == 3
    assert supervisor.log().count('spawned child') == 2


def test_a_second_supervisor_refuses_a_status_file_in_use(supervisor: Supervisor) -> None:
    """Two supervisors writing one status file would make --check answer for whichever wrote last."""
    settings = supervisor.write_settings()
    supervisor.start('--procs', '1', settings=settings)
    supervisor.wait_ready(1)
    second = supervisor.run('--procs', '1', settings=settings)  # the same --status-file
    assert second.returncode == 2, second.stderr
    assert f'supervisor pid {supervisor.pid}' in second.stderr
    assert f'writes {str(supervisor.status_file)!r}' in second.stderr
    assert 'give this one its own --status-file' in second.stderr
    assert supervisor.status()['pid'] == supervisor.pid  # the file still speaks for the first one
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(timeout=10) == 0
    # a stopped supervisor's file is taken over
    supervisor.log_file.close()
    supervisor.start('--procs', '1', settings=settings)
    wait_until(lambda: supervisor.status().get('pid') == supervisor.pid and supervisor.status().get('ready') == 1,
               message='the next supervisor owns the status file')  # fmt: skip
