"""An idle worker's memory: what only some workers need is loaded by those that use it (issue 12, idle RSS)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
import arq.cli
from arq import Worker
from arq.connections import RedisSettings

async def noop(ctx):
    return None

Worker(functions=[noop], redis_settings=RedisSettings(port=1), handle_signals=False)
# (redis-py loads its own sentinel modules with redis.asyncio)
lazy = ('zoneinfo', 'arq.sentinel', 'arq.results', 'arq.scripts_fleet')
print(' '.join(sorted(m for m in sys.modules if m.startswith(lazy))))
"""


def test_a_worker_without_cron_jobs_or_sentinels_loads_no_zone_database_sentinel_pool_or_fleet_scripts() -> None:
    out = subprocess.run([sys.executable, '-c', SCRIPT], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == []


def test_a_cron_job_loads_the_zone_database_when_it_needs_the_worker_zone() -> None:
    script = SCRIPT.replace('print(', 'w = Worker(functions=[noop], handle_signals=False); w.timezone; print(')
    out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, check=True, timeout=60)
    assert 'zoneinfo' in out.stdout.split()
