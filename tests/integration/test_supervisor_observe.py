"""--metrics-port: Prometheus text summed over children, plus /livez and /readyz, served by the parent's loop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.harness import Supervisor
from tests.support.redis_server import free_port
from tests.support.waiting import wait_until


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f'http://127.0.0.1:{port}{path}', timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_sum_jobs_over_children_and_survive_a_child_crash(supervisor: Supervisor) -> None:
    port = free_port()
    supervisor.start('--procs', '2', '--metrics-port', str(port), settings=supervisor.write_settings())
    pids = supervisor.wait_ready(2)
    assert 'serving metrics host=127.0.0.1' in supervisor.log()  # loopback unless --metrics-host says otherwise
    for i in range(6):
        supervisor.enqueue('quick', f'm{i}')
    wait_until(lambda: len(supervisor.events('finished')) == 6, message='6 jobs finished')

    def jobs_complete() -> float:
        samples = _samples(_get(port, '/metrics')[1])
        return samples.get(('arq_jobs_total', (('function', 'quick'), ('outcome', 'complete'))), 0)

    wait_until(lambda: jobs_complete() == 6, message='6 complete jobs in /metrics')
    samples = _samples(_get(port, '/metrics')[1])
    assert samples[('arq_job_duration_seconds_count', (('function', 'quick'),))] == 6
    assert samples[('arq_queue_lag_seconds_count', ())] == 6
    assert samples[('arq_supervisor_children', (('state', 'ready'),))] == 2
    assert (
        0
        <= samples[('arq_supervisor_loop_busy_p99_seconds', ())]
        <= samples[('arq_supervisor_loop_stall_max_seconds', ())]
    )
    assert _get(port, '/livez')[0] == 200
    assert _get(port, '/readyz')[0] == 200

    os.kill(pids[0], signal.SIGKILL)
    supervisor.wait_ready(2)
    wait_until(
        lambda: _samples(_get(port, '/metrics')[1]).get(('arq_supervisor_restarts_total', (('cause', 'crash'),))),
        message='the crash counted as a restart',
    )
    assert jobs_complete() == 6, 'a dead child’s jobs stay counted'


def test_metrics_count_a_job_that_never_ran_and_arrive_within_a_second(supervisor: Supervisor) -> None:
    port = free_port()
    supervisor.start('--procs', '1', '--metrics-port', str(port), settings=supervisor.write_settings())
    supervisor.wait_ready(1)

    def count(function: str, outcome: str) -> float:
        samples = _samples(_get(port, '/metrics')[1])
        return samples.get(('arq_jobs_total', (('function', function), ('outcome', outcome))), 0)

    supervisor.enqueue('no_such_function')
    supervisor.enqueue('quick', 'counted')
    wait_until(lambda: supervisor.events('finished'), message='the quick job finished')
    finished = time.monotonic()
    wait_until(lambda: count('quick', 'complete') == 1, timeout=5, message='the quick job in /metrics')
    assert time.monotonic() - finished < 1.0, 'counters reach /metrics with the job, not at the next heartbeat'
    assert count('<unknown>', 'failed') == 1  # as --status counts it; the label does not take the payload's name
    wait_until(lambda: supervisor.status()['totals']['failed'] == 1, message='--status agrees')


def test_status_command_lists_every_supervisor_on_the_queue(supervisor: Supervisor) -> None:
    settings = supervisor.write_settings()
    supervisor.start('--procs', '2', '--health-interval', '0.3', settings=settings)
    pids = supervisor.wait_ready(2)
    for i in range(3):
        supervisor.enqueue('quick', f's{i}')
    wait_until(lambda: len(supervisor.events('finished')) == 3, message='3 jobs finished')
    command = [sys.executable, '-m', 'arq_supervise', 'status', '--interval', '0.3']

    def status_json() -> dict[str, Any]:
        out = subprocess.run([*command, '--json', settings], cwd=supervisor.tmp_path, env=supervisor.env(),
                             capture_output=True, text=True, timeout=30)  # fmt: skip
        assert out.returncode == 0, out.stderr
        return dict(json.loads(out.stdout))

    document = wait_until(
        lambda: (d := status_json())['supervisors'] and d['supervisors'][0]['totals']['complete'] == 3 and d,
        message='status --json shows our supervisor with 3 complete jobs',
    )
    [row] = document['supervisors']
    assert row['pid'] == supervisor.pid
    assert sorted(c['pid'] for c in row['children']) == pids
    assert 'jobs_per_s' in row and row['verdict'] == 'live' and row['age_s'] < 5
    table = subprocess.run([*command, settings], cwd=supervisor.tmp_path, env=supervisor.env(),
                           capture_output=True, text=True, timeout=30)  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert f'worker 1: pid {pids[0]}' in table.stdout or f'worker 2: pid {pids[0]}' in table.stdout


def test_probes_need_no_settings_with_a_status_file(supervisor: Supervisor) -> None:
    supervisor.start('--procs', '1', settings=supervisor.write_settings())
    supervisor.wait_ready(1)
    live = supervisor.run('--check', '--live')  # run() passes --status-file; no SETTINGS: no app code imported
    assert live.returncode == 0, live.stderr
    assert 'alive' in live.stdout
    ready = supervisor.run('--check')
    assert ready.returncode == 0, ready.stderr
    no_settings = subprocess.run(
        [sys.executable, '-m', 'arq_supervise', '--procs', '1'], capture_output=True, text=True
    )
    assert no_settings.returncode == 2
    assert 'Missing argument SETTINGS' in no_settings.stderr


def test_redis_url_option_replaces_the_settings_redis(supervisor: Supervisor) -> None:
    wrong = 'WorkerSettings.redis_settings = RedisSettings(port=1, conn_retries=0)\n'
    settings = supervisor.write_settings(wrong)
    url = f'redis://127.0.0.1:{supervisor.redis_port}/{supervisor.db}'
    supervisor.start('--procs', '1', settings=settings, env=supervisor.env(ARQ_SUPERVISE_REDIS_URL=url))
    supervisor.wait_ready(1)
    supervisor.enqueue('quick', 'via-url')
    wait_until(lambda: supervisor.events('finished'), message='the job ran against the URL given')
