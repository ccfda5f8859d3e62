"""`make demo` runs `python -m demo`: it must work as a newcomer sees it, against a Redis it starts itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_jobs_through_the_supervisor_and_stops_cleanly() -> None:
    env = {k: v for k, v in os.environ.items() if k != 'REDIS_URL'}
    proc = subprocess.run([sys.executable, '-m', 'demo'], cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert 'started redis-server' in out
    assert 'supervisor ready: 2 workers' in out
    assert 'succeeded                    400' in out
    assert 'failed (ValueError)          5' in out
    assert 'supervisor exit code       0' in out
