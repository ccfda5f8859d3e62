"""The results file: the run's header (machine, versions, method), the targets, then the tables."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import statistics

from tests.bench.bench import Bench
from tests.bench.impls import REF_REQUIREMENTS, interpreter_versions
from tests.bench.render import render_tables
from tests.bench.targets import render_targets

METHOD = (
    'Method: every measured run is a fresh subprocess (tests/bench/driver.py) run by either interpreter; '
    'runs alternate ours/theirs; each cell is the median (min–max) of {runs}; ratios are ours/arq of the medians. '
    "Both sides run their worker on **uvloop** (`uvloop.run`; the published arq would otherwise use asyncio's "
    'default loop) and log with `arq.logs.default_log_config` to a file: at INFO (the per-job lines are paid for) '
    "unless a configuration says WARNING (arq's logger set to WARNING in the worker's on_startup, which the "
    "supervisor's children run too). Jobs for the drain scenarios are written directly in arq 0.26.3's wire format "
    '(neither side enqueues them); the workers block in `on_startup` until every one is ready, then the clock '
    'starts. jobs/s = jobs / (end of the last job − release). Worker CPU = getrusage of the worker processes from '
    'release to on_shutdown; CPU from /proc = utime+stime of every process of the side (for `arq-supervise`: the '
    'parent and its children) from release to its exit, sampled every 50 ms; Redis CPU = redis-server utime+stime '
    'from /proc; commands = INFO commandstats calls (including those inside Lua scripts); round trips = INFO stats '
    'total_reads_processed. Herd and idle figures come from MONITOR (top-level commands of the workers, by name and '
    'by script sha: our claim script is the EVALSHA of `arq.scripts.CLAIM`; the published arq has no claim script, '
    'its claim attempts are its WATCHes of an in-progress key). Result waiters: the client’s Redis connections are '
    'its TCP sockets to the Redis port (/proc/<pid>/fd and /proc/net/tcp), sampled every 20 ms.'
)


def machine_description(bench: Bench) -> str:
    cpu = '?'
    with contextlib.suppress(OSError), open('/proc/cpuinfo') as f:
        for line in f:
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    mem = '?'
    with contextlib.suppress(OSError), open('/proc/meminfo') as f:
        mem = f'{int(f.readline().split()[1]) / 1024 / 1024:.1f} GiB'
    redis_version = bench.probe.client.info('server')['redis_version']
    versions = [interpreter_versions(impl.python, bench.workdir) for impl in bench.impls]
    same = bench.ref_same_redis
    return (
        f'- machine: `nproc` {len(os.sched_getaffinity(0))}, {cpu}, {mem} RAM, '
        f'{platform.system()} {platform.release()}\n'
        f'- Python {platform.python_version()}; redis-server {redis_version} (started by the benchmark: '
        'no persistence, TCP on 127.0.0.1)\n'
        f'- ours: arq/ and supervisor/ of this repository at `{bench.head_at_start}`, copied at the start '
        f'(code fingerprint {bench.code_at_start}), in a bare venv (.cache/bench-venv-ours: the dependencies '
        f'from pyproject.toml), {versions[0]}\n'
        f'- arq 0.26.3: `pip install {" ".join(REF_REQUIREMENTS)}` in a separate venv (.cache/bench-venv-arq-0.26.3), '
        f'{versions[1]}\n'
        + (f'- for the memory comparison on the same redis-py: {same.label}, {same.python}\n' if same else '')
        + f'- date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}\n'
    )


def render(bench: Bench, command: str, elapsed_s: float) -> str:
    repeat = bench.sizes.repeat
    method = METHOD.format(runs=f'{repeat} run{"s" if repeat > 1 else ""}')
    noise = [m['foreign_cores'] for runs in bench.results.values() for ms in runs.values() for m in ms
             if 'foreign_cores' in m]  # fmt: skip
    if bench.failures:
        failures = '; '.join(sorted(set(bench.failures)))
        method += f'\n\n**{len(bench.failures)} run(s) failed** and were retried or left out: {failures}'
    if noise:
        method += (
            f'\n\nNoise: other processes on the machine used a median {statistics.median(noise):.2f} cores '
            f"(max {max(noise):.2f}) during the measured runs (/proc/stat busy time minus the benchmark's own "
            f'processes); this machine has {len(os.sched_getaffinity(0))}.'
        )
    return (
        f'## arq benchmark: ours vs the published arq 0.26.3\n\n'
        f'`{command}` — {elapsed_s / 60:.1f} min\n\n'
        f'{machine_description(bench)}\n{method}\n\n{render_targets(bench)}\n{render_tables(bench)}'
    )
