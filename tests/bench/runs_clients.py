"""Measured runs around a client process: enqueue (sequential, gathered, bulk), latency, and 10,000 result waiters."""

from __future__ import annotations

import math
import select
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from tests.bench.bench import Bench, read_line, send_line
from tests.bench.impls import DRIVER, Impl, driver_env
from tests.bench.procs import QUEUE, processes, redis_connections, wait_all, wait_for
from tests.bench.runs_drain import DrainSpec, drain_env, read_reports, start_py_spy, start_workers


def enqueue(
    bench: Bench, impl: Impl, n: int, batch: int, bulk: bool = False, profile_to: Path | None = None
) -> dict[str, float]:
    """n enqueue_job calls (sequential, or gathered in batches), or one enqueue_jobs call of n jobs (ours)."""
    bench.probe.reset()
    out = bench.out_dir()
    with processes() as running:
        options = ['--n', str(n), '--batch', str(batch), *(['--bulk'] if bulk else [])]
        p = bench.client(impl, out, 'enqueue', *options)
        running.append(p)
        read_line(p, f'{impl.label} enqueue')  # ready
        spy = start_py_spy(bench, p.pid, profile_to) if profile_to is not None else None
        before = bench.probe.snapshot()
        send_line(p)
        report = read_line(p, f'{impl.label} enqueue')
        after = bench.probe.snapshot()
        send_line(p, 'bye')
        wait_all(running, 60, f'{impl.label} enqueue')
        if spy is not None:
            spy.wait(timeout=60)
    bench.check_impl(impl, report)
    queued = bench.probe.client.zcard(QUEUE)
    if queued != n:
        raise RuntimeError(f'{impl.label}: {queued} jobs queued of {n}')
    delta = after - before
    delta.calls -= 1
    delta.reads -= 1
    return {
        **{f'cmd:{k}': v / n for k, v in delta.by_command.items()},
        'foreign_cores': delta.foreign_cores(report['cpu_s']),
        'jobs_s': n / report['wall_s'],
        'client_cpu_ms': report['cpu_s'] * 1000 / n,
        'redis_cpu_ms': delta.cpu_s * 1000 / n,
        'commands': delta.calls / n,
        'round_trips': delta.reads / n,
    }


def latency(bench: Bench, impl: Impl) -> dict[str, float]:
    """An idle worker at default settings; single enqueues 20 ms apart, each followed by job.result()."""
    bench.probe.reset()
    out = bench.out_dir()
    env = driver_env(impl, bench.server.port, {'BENCH_OUT_DIR': str(out)})  # default poll_delay and max_jobs
    with processes() as running, open(out / 'worker.log', 'wb') as logfile:
        worker = subprocess.Popen(
            [impl.python, str(DRIVER), 'worker', '--port', str(bench.server.port)],
            cwd=out, env=env, stdout=logfile, stderr=logfile, start_new_session=True,
        )  # fmt: skip
        running.append(worker)
        wait_for(lambda: bench.probe.client.llen('bench:ready') >= 1, 120, 'worker ready', running)
        bench.probe.client.lpush('bench:go', 'go')
        time.sleep(1.5)  # the worker is now idle in its loop
        client = bench.client(impl, out, 'latency', '--n', str(bench.sizes.latency_n), '--interval', '0.02')
        running.append(client)
        read_line(client, f'{impl.label} latency')
        send_line(client)
        report = read_line(client, f'{impl.label} latency')
        wait_all([client], 120, f'{impl.label} latency client')
        worker.send_signal(signal.SIGTERM)
    bench.check_impl(impl, report)
    pickup = sorted(x * 1000 for x in report['pickup_s'])
    rtt = sorted(x * 1000 for x in report['round_trip_s'])
    return {
        'pickup_p50_ms': percentile(pickup, 50),
        'pickup_p95_ms': percentile(pickup, 95),
        'pickup_p99_ms': percentile(pickup, 99),
        'rtt_p50_ms': percentile(rtt, 50),
        'rtt_p99_ms': percentile(rtt, 99),
    }


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float('nan')
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


class ConnectionPeak:
    """The most Redis connections one process held at once, sampled from /proc every 20 ms in a thread."""

    def __init__(self, pid: int, port: int) -> None:
        self.pid, self.port = pid, port
        self.peak = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.stopped.wait(0.02):
            self.peak = max(self.peak, redis_connections(self.pid, self.port))

    def close(self) -> int:
        self.stopped.set()
        self.thread.join(timeout=5)
        return self.peak


def read_line_within(proc: subprocess.Popen[str], timeout_s: float, what: str) -> dict[str, Any]:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    if not ready:
        raise TimeoutError(f'{what}: no answer within {timeout_s:.0f} s')
    return read_line(proc, what)


def waiters(bench: Bench, impl: Impl) -> dict[str, float]:
    """
    n jobs enqueued, n concurrent job.result() in one client; then one worker (poll 0.01, max_jobs 100) drains them.
    Counts the client's Redis connections (peak, from /proc) and the time from the last job's end to the last return.
    """
    n, timeout_s = bench.sizes.waiters_n, bench.sizes.waiters_timeout_s
    bench.probe.reset()
    out = bench.out_dir()
    spec = DrainSpec(n=n, max_jobs=100)
    with processes() as running, open(out / 'worker.log', 'wb') as logfile:
        running += start_workers(bench, impl, spec, out, drain_env(bench, impl, spec, out, None), logfile)
        wait_for(lambda: bench.probe.client.llen('bench:ready') >= 1, 120, 'worker ready', running)
        client = bench.client(impl, out, 'waiters', '--n', str(n))
        running.append(client)
        peak = ConnectionPeak(client.pid, bench.server.port)
        try:
            read_line_within(client, timeout_s, f'{impl.label} waiters: every waiter waiting')
            waiting_connections = redis_connections(client.pid, bench.server.port)
            bench.probe.client.lpush('bench:go', 'go')
            report = read_line_within(client, timeout_s, f'{impl.label} waiters: every waiter returned')
        finally:
            connections = peak.close()
        wait_all(running, 60, f'{impl.label} waiters')
    bench.check_impl(impl, report)
    worker = read_reports(bench, impl, spec, out)[0]
    return {
        'connections_peak': connections,
        'connections_waiting': waiting_connections,
        'tail_s': report['last_return'] - worker['last_end'],
        'first_return_s': report['first_return'] - worker['go_wall'],
        'client_cpu_ms': report['cpu_s'] * 1000 / n,
    }


def waiters_or_reason(bench: Bench, impl: Impl) -> dict[str, float] | str:
    """The waiters run, or why this side could not do it (the published arq may not, at 10,000 waiters)."""
    try:
        return waiters(bench, impl)
    except (TimeoutError, RuntimeError) as e:
        tail = ''
        logs = sorted((bench.workdir / f'run-{bench.run_counter:03d}').glob('waiters-client.log'))
        if logs:
            lines = [ln for ln in logs[0].read_text(errors='replace').splitlines() if ln.strip()]
            tail = f'; the client’s last line: {lines[-1][:200]}' if lines else ''
        return f'{e}{tail}'
