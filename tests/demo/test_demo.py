"""`make demo` runs `python -m demo`: it must work as a newcomer sees it, against a Redis it starts itself."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_jobs_through_the_supervisor_and_stops_cleanly() -> None:
    env = {k: v for k, v in os.environ.items() if k != 'REDIS_URL'}
    # its own session, so a timeout can end the demo's redis-server and supervisor too
    proc = subprocess.Popen(
        [sys.executable, '-m', 'demo'], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=150)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 0, out
    assert 'started redis-server' in out
    assert 'supervisor ready: 2 workers' in out
    assert 'succeeded                    400' in out
    assert 'failed (ValueError)          5' in out
    assert 'supervisor exit code       0' in out
