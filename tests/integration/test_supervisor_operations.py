"""Recycling, scaling, rolling reload, health keys, status file, --check, sd_notify and the pid file."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.integration.harness import Supervisor
from tests.support.waiting import wait_until


def _ready_then_drained(log: str, slot: int, reason: str) -> list[tuple[int, int]]:
    """(new pid, old pid) pairs for `slot` where the new child was READY before the old one was told to drain."""
    pairs = []
    ready_at = {int(m.group(1)): m.start() for m in re.finditer(rf'child ready slot={slot} pid=(\d+)', log)}
    for m in re.finditer(rf'draining child slot={slot} pid=(\d+) reason={reason}', log):
        old = int(m.group(1))
        earlier_ready = [pid for pid, at in ready_at.items() if at < m.start() and pid != old]
        assert earlier_ready, f'slot {slot}: pid {old} drained before any successor was ready'
        pairs.append((max(earlier_ready, key=lambda p: ready_at[p]), old))
    return pairs


@pytest.mark.slow
def test_max_jobs_per_child_recycles_one_child_at_a_time(supervisor: Supervisor) -> None:
    settings = supervisor.write_settings(max_jobs=1)
    supervisor.start('--procs', '1', '--max-jobs-per-child', '3', settings=settings)
    supervisor.wait_ready(1)
    for i in range(9):
        supervisor.enqueue('sleeper', f'j{i}', 0.2)
    wait_until(lambda: len(supervisor.events('finished')) == 9, timeout=30, message='9 jobs finished')

    started = supervisor.events('started')
    pids = [pid for _, pid, _, _ in started]
    assert len(set(pids)) >= 3, pids
    assert all(job_try == 1 for _, _, job_try, _ in started)  # recycling never cancelled a job
    assert all(pids.count(pid) <= 3 for pid in set(pids))  # a child stops claiming at its limit
    assert _ready_then_drained(supervisor.log(), 1, 'recycle')


@pytest.mark.slow
def test_max_jobs_per_child_is_not_overshot_by_fast_jobs(supervisor: Supervisor) -> None:
    """300 no-op jobs, --max-jobs-per-child 50 (+ up to 10 % jitter): no child runs more than 55, so at least 6 do."""
    supervisor.start('--procs', '1', '--max-jobs-per-child', '50', settings=supervisor.write_settings())
    supervisor.wait_ready(1)
    supervisor.enqueue_many('quick', [(f'q{i}',) for i in range(300)])
    wait_until(lambda: len(supervisor.events('finished')) == 300, timeout=45, message='300 jobs finished')
    pids = [pid for _, pid, _, _ in supervisor.events('started')]
    per_child = sorted((pids.count(pid) for pid in set(pids)), reverse=True)
    assert per_child[0] <= 55 and len(per_child) >= 6, per_child
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(timeout=15) == 0


def test_ttin_adds_and_ttou_removes_a_child(supervisor: Supervisor) -> None:
    supervisor.start('--procs', '1', settings=supervisor.write_settings())
    [first] = supervisor.wait_ready(1)
    supervisor.signal(signal.SIGTTIN)
    two = supervisor.wait_ready(2)
    assert first in two
    assert supervisor.status()['procs'] == 2

    supervisor.signal(signal.SIGTTOU)
    [left] = supervisor.wait_ready(1)
    assert left == first  # the highest slot goes
    assert 'reason=scale-down' in supervisor.log()
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(timeout=10) == 0


@pytest.mark.slow
def test_hup_replaces_children_one_by_one_without_losing_a_job(supervisor: Supervisor) -> None:
    supervisor.start('--procs', '2', settings=supervisor.write_settings(job_completion_wait=10))
    old = supervisor.wait_ready(2)
    job_id = supervisor.enqueue('sleeper', 'during-reload', 1.5)
    supervisor.wait_started('during-reload')

    supervisor.signal(signal.SIGHUP)
    wait_until(lambda: not set(supervisor.children()) & set(old), timeout=20, message='all old children replaced')
    new = supervisor.wait_ready(2)
    assert not set(new) & set(old)

    result = supervisor.result(job_id)
    assert result is not None and result['s'] is True
    assert len(supervisor.started('during-reload')) == 1  # it was not cancelled and re-run
    log = supervisor.log()
    assert len(_ready_then_drained(log, 1, 'reload')) == 1
    assert len(_ready_then_drained(log, 2, 'reload')) == 1
    assert 'reload complete' in log


def test_health_key_supervisor_key_and_status_file(supervisor: Supervisor) -> None:
    supervisor.start('--procs', '2', '--health-interval', '0.5', settings=supervisor.write_settings())
    pids = supervisor.wait_ready(2)
    for i in range(4):
        supervisor.enqueue('quick', f'h{i}')
    wait_until(lambda: len(supervisor.events('finished')) == 4, message='4 jobs finished')

    health_key = f'{supervisor.queue}:health-check'
    pattern = r'\w{3}-\d\d \d\d:\d\d:\d\d j_complete=4 j_failed=0 j_retried=0 j_ongoing=0 queued=0'
    wait_until(
        lambda: re.fullmatch(pattern, supervisor.redis.get(health_key) or ''),
        message='the health line counting all children',
    )
    assert 0 < supervisor.redis.pttl(health_key) <= 1500

    [key] = supervisor.redis.keys(f'arq:supervisor:{supervisor.queue}:*')
    assert key.endswith(f':{supervisor.pid}')
    detail = json.loads(supervisor.redis.get(key))
    assert detail['pid'] == supervisor.pid
    assert sorted(c['pid'] for c in detail['children']) == pids
    assert {c['state'] for c in detail['children']} == {'ready'}

    # the status file is rewritten every second: it may trail the health line by that much
    status = wait_until(lambda: (s := supervisor.status())['totals']['complete'] == 4 and s, message='4 in the file')
    assert status['state'] == 'running'
    assert status['ready'] == status['procs'] == 2
    assert status['totals']['complete'] == 4
    child = status['children'][0]
    assert child['memory_mib'] > 1
    assert child['heartbeat_age_s'] < 3

    check = supervisor.run('--check', settings=supervisor.write_settings())
    assert check.returncode == 0, check.stderr
    assert 'healthy: 2/2 children ready' in check.stdout
    assert _arq_check(supervisor) == 0  # the published arq's own probe reads our line
    status_out = supervisor.run('--status', 'not.imported')  # with --status-file no application code is imported
    assert status_out.returncode == 0, status_out.stderr
    assert 'state=running ready=2/2 complete=4' in status_out.stdout
    assert len(status_out.stdout.strip().splitlines()) == 6  # summary, loop latency, header, a line per child, verdict
    assert re.search(r'^loop latency: p99=[\d.]+ms max=[\d.]+ms over \d+ turns$', status_out.stdout, re.M)
    assert status['loop']['turns'] > 0 and 0 <= status['loop']['p99_ms'] <= status['loop']['max_ms']

    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(timeout=10) == 0
    assert supervisor.redis.exists(key) == 0  # our own key is removed; the shared health line just expires
    assert supervisor.status()['state'] == 'stopped'
    check = supervisor.run('--check', settings=supervisor.write_settings())
    assert check.returncode == 1
    assert 'unhealthy' in check.stderr
    wait_until(lambda: _arq_check(supervisor) == 1, message='the health line expired')


def _arq_check(supervisor: Supervisor) -> int:
    command = [sys.executable, '-m', 'arq', '--check', f'{supervisor.module}.WorkerSettings']
    done = subprocess.run(command, cwd=supervisor.tmp_path, env=supervisor.env(), capture_output=True, timeout=30)
    return done.returncode


def test_sd_notify_ready_watchdog_reloading_stopping(supervisor: Supervisor, tmp_path: Path) -> None:
    path = str(tmp_path / 'notify.sock')
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(10)
        pid_file = tmp_path / 'arq.pid'
        env = supervisor.env(NOTIFY_SOCKET=path, WATCHDOG_USEC='1000000')
        supervisor.start('--procs', '2', '--pid-file', str(pid_file), settings=supervisor.write_settings(), env=env)

        messages = [server.recv(4096).decode()]
        while 'READY=1' not in messages[-1]:
            messages.append(server.recv(4096).decode())
        assert 'STATUS=2/2 children ready' in messages[-1]
        assert f'MAINPID={supervisor.pid}' in messages[-1]
        assert len(supervisor.children()) == 2  # READY only once the children are
        assert pid_file.read_text().strip() == str(supervisor.pid)

        while 'WATCHDOG=1' not in messages[-1]:  # every WATCHDOG_USEC / 2
            messages.append(server.recv(4096).decode())

        supervisor.signal(signal.SIGHUP)
        while 'RELOADING=1' not in messages[-1]:
            messages.append(server.recv(4096).decode())
        while 'READY=1' not in messages[-1]:  # again, once every child has been replaced
            messages.append(server.recv(4096).decode())

        supervisor.signal(signal.SIGTERM)
        while 'STOPPING=1' not in messages[-1]:
            messages.append(server.recv(4096).decode())
        assert 'EXTEND_TIMEOUT_USEC=6000000' in messages[-1]  # job_completion_wait 0 + margin 5 + 1
        assert supervisor.wait(timeout=10) == 0
        assert not pid_file.exists()


HOG = """
_hoard = []


async def hog(ctx, name, mib):
    await _record(ctx, 'started', name)
    _hoard.append(b'x' * (mib * 2**20))  # touched pages: unique to this process


WorkerSettings.functions = [*WorkerSettings.functions, hog]
"""


def test_child_over_the_memory_limit_is_replaced(supervisor: Supervisor) -> None:
    supervisor.start('--procs', '1', '--max-memory-per-child', '80', settings=supervisor.write_settings(HOG))
    [first] = supervisor.wait_ready(1)
    assert supervisor.status()['children'][0]['memory_mib'] < 80
    supervisor.enqueue('hog', 'hog', 120)
    supervisor.wait_started('hog')

    wait_until(lambda: first not in supervisor.children(), timeout=15, message='the bloated child replaced')
    [second] = supervisor.wait_ready(1)
    assert second != first
    log = supervisor.log()
    assert re.search(rf'child to be replaced slot=1 pid={first} reason=memory uss_mib=1\d\d limit=80', log)
    assert _ready_then_drained(log, 1, 'memory') == [(second, first)]


def test_watch_restarts_everything_when_code_changes(supervisor: Supervisor) -> None:
    """--watch runs the supervisor as a child of a watchfiles watcher and starts it afresh when code changes."""
    settings = supervisor.write_settings()
    supervisor.start('--procs', '1', '--watch', str(supervisor.tmp_path), settings=settings)
    first = wait_until(lambda: supervisor.status().get('ready') == 1 and supervisor.status(), timeout=15,
                       message=f'a ready supervisor\n{supervisor.log()[-3000:]}')  # fmt: skip
    assert first['pid'] != supervisor.pid  # the watcher's child
    supervisor.seen_pids.update([first['pid'], *(c['pid'] for c in first['children'])])
    module = supervisor.tmp_path / f'{supervisor.module}.py'
    module.write_text(module.read_text() + '\nWorkerSettings.max_jobs = 3\n')

    def restarted() -> dict[str, Any] | None:
        status = supervisor.status()
        return status if status.get('ready') == 1 and status['pid'] != first['pid'] else None

    second = wait_until(restarted, timeout=20, message=f'a new supervisor\n{supervisor.log()[-3000:]}')
    supervisor.seen_pids.update([second['pid'], *(c['pid'] for c in second['children'])])
    assert not psutil.pid_exists(first['pid'])
    assert 'code changed, restarting' in supervisor.log()
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(timeout=15) == 0
    assert not psutil.pid_exists(second['pid'])


def test_json_logs_one_object_per_line(supervisor: Supervisor) -> None:
    extra = """
    class Declined(Exception):
        def extra(self):
            return {'card': 'visa', 'attempt': 3}


    async def declined(ctx):
        raise Declined('card declined')


    WorkerSettings.functions = [*WorkerSettings.functions, declined]
    """
    supervisor.start('--procs', '1', '--log-format', 'json', settings=supervisor.write_settings(extra))
    [child] = supervisor.wait_ready(1)
    job_id = supervisor.enqueue('quick', 'json-logged')
    failed_id = supervisor.enqueue('declined')
    wait_until(lambda: supervisor.events('finished') and 'card declined' in supervisor.log(), message='the jobs ran')
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(timeout=10) == 0
    records = [json.loads(line) for line in supervisor.log().splitlines()]
    roles = {(r['role'], r['pid']) for r in records}
    assert ('supervisor', supervisor.pid) in roles
    assert ('worker 1', child) in roles
    assert any(r['message'].startswith('child ready slot=1') for r in records)
    job_lines = [r for r in records if r.get('job_id') == job_id]
    assert {r['slot'] for r in job_lines} == {1}
    assert any('→' in r['message'] for r in job_lines) and any('←' in r['message'] for r in job_lines)
    # ISO 8601 with the UTC offset, e.g. 2024-11-28T21:45:26.123+01:00
    assert all(re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d', r['ts']) for r in records)
    [failure] = [r for r in records if r.get('job_id') == failed_id and r['level'] == 'ERROR']
    assert failure['extra'] == {'card': 'visa', 'attempt': 3}  # arq's exception extras
    assert 'Declined: card declined' in failure['exc']
