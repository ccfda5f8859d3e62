"""One burst drain: P worker processes (or one `arq-supervise` with P children) on pre-enqueued jobs."""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tests.bench.bench import Bench
from tests.bench.impls import DRIVER, REPO, SETTINGS_PATH, Impl, driver_env
from tests.bench.procs import QUEUE, Counters, CpuSampler, memory_kib, processes, wait_all, wait_for


@dataclass(frozen=True)
class DrainSpec:
    n: int
    function: str = 'noop'
    poll_delay: float = 0.01
    max_jobs: int = 10
    procs: int = 1
    supervised: bool = False
    log_level: str | None = None  # None: INFO, as the `arq` command configures it


def drain(
    bench: Bench, impl: Impl, spec: DrainSpec, profile_to: Path | None = None, cprofile_to: Path | None = None
) -> dict[str, float]:
    bench.probe.reset()
    bench.probe.pre_enqueue(spec.n, spec.function)
    out = bench.out_dir()
    env = drain_env(bench, impl, spec, out, cprofile_to)
    with processes() as running, open(out / 'worker.log', 'wb') as logfile:
        running += start_workers(bench, impl, spec, out, env, logfile)
        wait_for(lambda: bench.probe.client.llen('bench:ready') >= spec.procs, 120, 'workers ready', running)
        worker_pids = [int(p) for p in bench.probe.client.lrange('bench:ready', 0, -1)]
        idle = [memory_kib(pid) for pid in worker_pids]
        parent = running[0].pid if spec.supervised else None
        parent_idle = memory_kib(parent) if parent is not None else None
        spy = start_py_spy(bench, worker_pids[0], profile_to) if profile_to is not None else None
        sampler = CpuSampler(([parent] if parent is not None else []) + worker_pids)
        before = bench.probe.snapshot()
        go_at = time.time()
        bench.probe.client.lpush('bench:go', *['go'] * spec.procs)
        sample_until_exit(running, sampler, 600)
        wait_all(running, 60, f'{impl.label} drain')
        after = bench.probe.snapshot()
        if spy is not None:
            spy.wait(timeout=60)
    reports = read_reports(bench, impl, spec, out)
    metrics = drain_metrics(spec, reports, after - before, go_at, idle, sampler)
    if parent is not None and parent_idle is not None:
        metrics['parent_uss_mib'] = parent_idle['uss'] / 1024
        metrics['parent_cpu_ms'] = sampler.used_s([parent]) * 1000 / spec.n
    metrics['foreign_cores'] = (after - before).foreign_cores(sampler.used_s())
    return metrics


def drain_env(bench: Bench, impl: Impl, spec: DrainSpec, out: Path, cprofile_to: Path | None) -> dict[str, str]:
    extra = {'BENCH_OUT_DIR': str(out), 'BENCH_POLL_DELAY': str(spec.poll_delay), 'BENCH_MAX_JOBS': str(spec.max_jobs)}
    if cprofile_to is not None:
        extra['BENCH_CPROFILE'] = str(cprofile_to)
    if spec.log_level is not None:
        extra['BENCH_LOG_LEVEL'] = spec.log_level
    return driver_env(impl, bench.server.port, extra)


def start_workers(
    bench: Bench, impl: Impl, spec: DrainSpec, out: Path, env: dict[str, str], logfile: IO[bytes], burst: bool = True
) -> list[subprocess.Popen[Any]]:
    """`arq-supervise --procs P` (ours, supervised) or P separate driver worker processes."""
    if spec.supervised:
        cmd = [
            impl.python, '-m', 'arq_supervise',  # = arq-supervise
            '--procs', str(spec.procs), *(['--burst'] if burst else []),
            '--status-file', str(out / 'status.json'),
            SETTINGS_PATH,
        ]  # fmt: skip
        cwd = impl.code or REPO
        return [subprocess.Popen(cmd, cwd=cwd, env=env, stdout=logfile, stderr=logfile, start_new_session=True)]
    cmd = [impl.python, str(DRIVER), 'worker', '--port', str(bench.server.port), *(['--burst'] if burst else [])]
    return [
        subprocess.Popen(cmd, cwd=out, env=env, stdout=logfile, stderr=logfile, start_new_session=True)
        for _ in range(spec.procs)
    ]


def sample_until_exit(running: list[subprocess.Popen[Any]], sampler: CpuSampler, timeout_s: float) -> None:
    """Read the processes' CPU time from /proc until they have all exited: the last reading before an exit counts."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sampler.sample()
        if all(p.poll() is not None for p in running):
            return
        time.sleep(0.05)  # sampling interval; at most this much CPU time of a process's last moments is missed


def start_py_spy(bench: Bench, pid: int, output: Path) -> subprocess.Popen[bytes]:
    args = bench.args
    spy = subprocess.Popen(
        ['py-spy', 'record', '--pid', str(pid), '--rate', str(args.profile_rate), '--format', 'raw',
         '--output', str(output), *(['--native'] if args.native else [])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    time.sleep(1.0)  # let py-spy attach before the clock starts
    return spy


def read_reports(bench: Bench, impl: Impl, spec: DrainSpec, out: Path) -> list[dict[str, Any]]:
    reports = [json.loads(p.read_text()) for p in sorted(out.glob('worker-*.json'))]
    if len(reports) != spec.procs:
        raise RuntimeError(f'{impl.label}: {len(reports)} worker reports for {spec.procs} processes (see {out})')
    for report in reports:
        bench.check_impl(impl, report)
    jobs = sum(r['jobs'] for r in reports)
    left = bench.probe.client.zcard(QUEUE)
    if jobs != spec.n or left:
        raise RuntimeError(f'{impl.label}: ran {jobs} jobs of {spec.n}, {left} left in the queue (see {out})')
    return reports


def drain_metrics(
    spec: DrainSpec,
    reports: list[dict[str, Any]],
    delta: Counters,
    go_at: float,
    idle: list[dict[str, int]],
    sampler: CpuSampler,
) -> dict[str, float]:
    n = spec.n
    delta.calls -= 2  # our INFO and LPUSH bench:go
    delta.reads -= 2
    elapsed = max(r['last_end'] for r in reports) - go_at
    return {
        'jobs_s': n / elapsed,
        'worker_cpu_ms': sum(r['cpu_s'] for r in reports) * 1000 / n,
        'proc_cpu_ms': sampler.used_s() * 1000 / n,
        'worker_sys_ms': sum(r['rusage']['stime'] for r in reports) * 1000 / n,
        'worker_preempted': sum(r['rusage']['nivcsw'] for r in reports) / n,
        'redis_cpu_ms': delta.cpu_s * 1000 / n,
        'commands': delta.calls / n,
        'round_trips': delta.reads / n,
        'idle_rss_mib': statistics.mean(m['vmrss'] for m in idle) / 1024,
        'idle_uss_mib': statistics.mean(m['uss'] for m in idle) / 1024,
        'end_rss_mib': statistics.mean(r['end_memory']['vmrss'] for r in reports) / 1024,
        'end_uss_mib': statistics.mean(r['end_memory']['uss'] for r in reports) / 1024,
        'peak_rss_mib': max(r['end_memory']['vmhwm'] for r in reports) / 1024,
        **{f'cmd:{k}': v / n for k, v in delta.by_command.items()},
    }
