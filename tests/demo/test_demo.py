"""`make demo` runs `python -m demo`: it must work as a newcomer sees it, against a Redis it starts itself.

Each run has decoy `arq`/`arq-supervise` scripts first on PATH (exit 99), so a demo that looked its commands up on
PATH, where a fresh machine has none and another machine may have another copy, fails here.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

import psutil
import redis

from arq.constants import result_key_prefix
from arq.jobs import serialize_result
from tests.support.commands import environment_bin
from tests.support.decoys import calls_log, path_with_decoys
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def run_demo(tmp_path: Path, timeout_s: float = 150, **env: str) -> tuple[int, str]:
    """Run `python -m demo` as `make demo` does; on a timeout, end it and everything it started."""
    base = {k: v for k, v in os.environ.items() if k not in ('REDIS_URL', 'PYTHONPATH') and 'ARQ_SUPERVISE' not in k}
    base['PATH'] = path_with_decoys(tmp_path / 'decoys')
    proc = subprocess.Popen(
        [sys.executable, '-m', 'demo'], cwd=ROOT, env={**base, **env}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        # the demo starts redis-server and the supervisor in sessions of their own: end them by ancestry
        family = [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]
        for member in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
        psutil.wait_procs(family, timeout=10)
        raise
    assert not calls_log(tmp_path / 'decoys').exists(), calls_log(tmp_path / 'decoys').read_text()
    return proc.returncode, out


def started_pids(out: str) -> list[int]:
    """The redis-server and supervisor the demo said it started."""
    return [int(pid) for pid in re.findall(r'^(?:started redis-server on port \d+ \(|supervisor )pid (\d+)', out, re.M)]


def assert_all_gone(pids: list[int]) -> None:
    """Neither running nor left defunct: the demo has waited for each (pid reuse within seconds is no concern)."""
    wait_until(lambda: not [pid for pid in pids if psutil.pid_exists(pid)], timeout=5, message=f'{pids} to be gone')


def test_demo_runs_jobs_through_the_supervisor_and_stops_cleanly(tmp_path: Path) -> None:
    code, out = run_demo(tmp_path)
    assert code == 0, out
    assert 'started redis-server' in out
    assert f'running: {os.path.relpath(environment_bin() / "arq-supervise", ROOT)} --procs 2' in out
    assert 'supervisor ready: 2 workers' in out
    assert 'succeeded                    400' in out
    assert 'failed (ValueError)          5' in out
    assert 'supervisor exit code       0' in out
    pids = started_pids(out)
    assert len(pids) == 2, out
    assert_all_gone(pids)


def test_a_failing_demo_stops_its_redis_server_and_says_why_in_one_line(tmp_path: Path) -> None:
    # a bad value in the supervisor's environment: it exits 2 (usage error) after redis-server has started
    code, out = run_demo(tmp_path, ARQ_SUPERVISE_HEARTBEAT_TIMEOUT='soon')
    assert code == 1, out
    last = out.strip().splitlines()[-1]
    assert last.startswith('demo failed: the supervisor exited with code 2 before it was ready: Error: '), out
    assert 'ARQ_SUPERVISE_HEARTBEAT_TIMEOUT' in last  # the environment variable the bad value came from
    assert 'FATAL' not in out and 'Traceback' not in out
    pids = started_pids(out)
    assert len(pids) == 2, out
    assert_all_gone(pids)


def test_demo_counts_only_its_own_jobs_on_a_shared_redis(tmp_path: Path, redis_url: str) -> None:
    # what the tour, or another application, left behind: retried jobs' results and earlier cron ticks
    client = redis.Redis.from_url(redis_url)
    for i in range(300):
        result = serialize_result('charge', (i,), {}, 2, 0, True, 'ok', 0, 1, f'other:{i}', 'arq:queue', f'other-{i}')
        assert result is not None
        client.set(f'{result_key_prefix}other-{i}', result, ex=600)
    client.set('demo:cron-ticks', 1000)
    client.close()

    code, out = run_demo(tmp_path, REDIS_URL=redis_url)
    assert code == 0, out
    assert 'started redis-server' not in out
    summary = dict(re.findall(r'^  ([a-z][a-z ()A-Za-z]+?) {2,}(\d+)$', out, re.M))
    assert summary['succeeded'] == '400', out
    # a third of the 100 emails retry (random); counting the 300 results above would give at least 300
    assert 0 < int(summary['retried at least once']) <= 100, out
    assert int(summary['cron ticks']) < 100, out
