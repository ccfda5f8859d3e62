"""Idle workers: the Redis commands they send with nothing to do, the herd an enqueue wakes, their memory."""

from __future__ import annotations

import collections
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.bench.bench import Bench, read_line, send_line
from tests.bench.impls import Impl
from tests.bench.procs import Monitor, memory_kib, processes, wait_for
from tests.bench.runs_drain import DrainSpec, drain_env, start_workers

SETTLE_S = 2.0  # after the release: every worker has polled once and sits idle in its loop


def named(counts: collections.Counter[str], claim_sha: str) -> dict[str, int]:
    """'evalsha <sha>' -> 'evalsha (claim)' / 'evalsha (other script)'."""
    out: collections.Counter[str] = collections.Counter()
    for key, count in counts.items():
        if key.startswith('evalsha '):
            key = 'evalsha (claim)' if key == f'evalsha {claim_sha}' else 'evalsha (other script)'
        out[key] += count
    return dict(out)


def idle(bench: Bench, impl: Impl, claim_sha: str) -> dict[str, float]:
    """One worker at default settings with allow_abort_jobs=True, idle: its commands per second, its memory."""
    bench.probe.reset()
    out = bench.out_dir()
    spec = DrainSpec(n=0, poll_delay=0.5, max_jobs=10)
    env = drain_env(bench, impl, spec, out, None) | {'BENCH_ALLOW_ABORT': '1'}
    window_s = bench.sizes.idle_s
    with processes() as running, open(out / 'worker.log', 'wb') as logfile:
        running += start_workers(bench, impl, spec, out, env, logfile, burst=False)
        wait_for(lambda: bench.probe.client.llen('bench:ready') >= 1, 120, 'worker ready', running)
        bench.probe.client.lpush('bench:go', 'go')
        time.sleep(SETTLE_S)
        memory = memory_kib(running[0].pid)
        monitor = Monitor(bench.server.port, {bench.probe.address()})
        try:
            before, stats_before = monitor.mark(), bench.probe.snapshot()
            time.sleep(window_s)
            after, stats_after = monitor.mark(), bench.probe.snapshot()
        finally:
            monitor.close()
    top = named(after - before, claim_sha)
    inner = stats_after - stats_before
    return {
        'idle_cmds_per_s': sum(top.values()) / window_s,
        'idle_calls_per_s': (inner.calls - 1) / window_s,  # less our second INFO
        'idle_rss_mib': memory['vmrss'] / 1024,
        'idle_uss_mib': memory['uss'] / 1024,
        **{f'cmd:{k}': v / window_s for k, v in top.items()},
    }


@dataclass(frozen=True)
class HerdWindow:
    claims: int
    commands: int
    seconds: float


def herd(bench: Bench, impl: Impl, claim_sha: str, poll_delay: float) -> dict[str, float]:
    """
    8 idle workers (ours: `arq-supervise --procs 8`; arq: 8 worker processes), then single enqueues one at a time,
    each waited for. Claims: our claim script's EVALSHA calls; the published arq's claim attempts are its WATCHes of
    an in-progress key (one per job a worker tries to take). The idle rate, counted first, is subtracted.
    """
    n, procs = bench.sizes.herd_n, bench.sizes.herd_procs
    bench.probe.reset()
    out = bench.out_dir()
    spec = DrainSpec(n=0, poll_delay=poll_delay, max_jobs=10, procs=procs, supervised=impl.key == 'ours')
    with processes() as running, open(out / 'worker.log', 'wb') as logfile:
        running += start_workers(bench, impl, spec, out, drain_env(bench, impl, spec, out, None), logfile, burst=False)
        wait_for(lambda: bench.probe.client.llen('bench:ready') >= procs, 120, 'workers ready', running)
        pids = [int(p) for p in bench.probe.client.lrange('bench:ready', 0, -1)]
        bench.probe.client.lpush('bench:go', *['go'] * procs)
        time.sleep(SETTLE_S)
        uss = [memory_kib(pid)['uss'] / 1024 for pid in pids]
        parent_uss = memory_kib(running[0].pid)['uss'] / 1024 if spec.supervised else float('nan')
        monitor = Monitor(bench.server.port, {bench.probe.address()})
        try:
            idle_window = herd_window(monitor, impl, claim_sha, lambda: time.sleep(max(3.0, poll_delay)))
            client = bench.client(impl, out, 'herd', '--n', str(n), '--interval', '0.2')
            running.append(client)
            read_line(client, f'{impl.label} herd')  # ready
            busy_window = herd_window(monitor, impl, claim_sha, lambda: run_client(client, impl))
        finally:
            monitor.close()
    idle_claims_s = idle_window.claims / idle_window.seconds
    return {
        'claims_per_enqueue': (busy_window.claims - idle_claims_s * busy_window.seconds) / n,
        'claims_per_enqueue_gross': busy_window.claims / n,
        'idle_claims_per_s': idle_claims_s,
        'idle_cmds_per_s': idle_window.commands / idle_window.seconds,
        'child_uss_mib': statistics.median(uss),
        'parent_uss_mib': parent_uss,
    }


def run_client(client: subprocess.Popen[str], impl: Impl) -> None:
    send_line(client)
    read_line(client, f'{impl.label} herd')


def herd_window(monitor: Monitor, impl: Impl, claim_sha: str, during: Callable[[], None]) -> HerdWindow:
    before, t0 = monitor.mark(), time.monotonic()
    during()
    after, t1 = monitor.mark(), time.monotonic()
    counts = named(after - before, claim_sha)
    claims = counts.get('evalsha (claim)', 0) if impl.key == 'ours' else counts.get('watch', 0)
    return HerdWindow(claims, sum(counts.values()), t1 - t0)
