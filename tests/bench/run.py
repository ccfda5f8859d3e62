"""
Benchmark our arq against the published arq 0.26.3, side by side, on one redis-server this script starts.

    make bench                                   # = python -m tests.bench.run   (full run, ~15 min on 2 cores)
    python -m tests.bench.run --quick            # short run (~3 min), written to results/quick.md
    python -m tests.bench.run --scenarios drain,latency --repeat 5
    python -m tests.bench.run --profile-only     # py-spy + cProfile of our worker draining (results/profile.txt)

Every measured run is a fresh subprocess executing tests/bench/driver.py with either interpreter: this one (our
arq, installed from this repository) or the one in a separate virtual environment with `arq==0.26.3` from the
package index (created on first use under .cache/, or given with --ref-python). Both sides run on uvloop and log
at INFO as the `arq` command configures it. Runs alternate ours/theirs, repeated --repeat times; the tables show
medians with min–max and the ratio ours/theirs of the medians, all from the same invocation.

Counters, per run, taken between "every worker ready" and "every process exited":
  jobs/s          jobs / (end of the last job − the moment the orchestrator released the workers)
  worker CPU      the worker processes' own user+system time (getrusage), from release to on_shutdown
  Redis CPU       redis-server's utime+stime from /proc/<pid>/stat
  commands        INFO commandstats: total calls, which include the commands Lua scripts run
  round trips     INFO stats total_reads_processed: socket reads by redis-server (≈ requests; pipelines are one)
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import json
import math
import os
import pickle
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import redis

from tests.support.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[2]
BENCH_DIR = Path(__file__).resolve().parent
DRIVER = BENCH_DIR / 'driver.py'
RESULTS_DIR = BENCH_DIR / 'results'
REF_VENV = REPO / '.cache' / 'bench-venv-arq-0.26.3'
REF_REQUIREMENTS = ['arq==0.26.3', 'uvloop']
SETTINGS_PATH = 'tests.bench.driver.Settings'

QUEUE = 'arq:queue'  # arq's default queue name, which both sides use
CLK_TCK = os.sysconf('SC_CLK_TCK')


def log(message: str) -> None:
    print(f'[bench {time.strftime("%H:%M:%S")}] {message}', file=sys.stderr, flush=True)


# --- sizes ---


@dataclass(frozen=True)
class Sizes:
    repeat: int
    enqueue_n: int
    drain_n: int
    drain_default_n: int  # the published arq drains ~200 jobs/s at poll_delay 0.5: fewer jobs keep the run short
    io_n: int
    latency_n: int
    scaling_n: int
    scaling_procs: tuple[int, ...]


FULL = Sizes(
    repeat=3,
    enqueue_n=20_000,
    drain_n=20_000,
    drain_default_n=10_000,
    io_n=5_000,
    latency_n=200,
    scaling_n=20_000,
    scaling_procs=(1, 2, 4),
)
QUICK = Sizes(
    repeat=1,
    enqueue_n=3_000,
    drain_n=4_000,
    drain_default_n=1_000,
    io_n=2_000,
    latency_n=60,
    scaling_n=4_000,
    scaling_procs=(1, 2, 4),
)
SCENARIOS = ('enqueue', 'drain', 'io', 'latency', 'scaling')  # scaling last: it needs the supervisor


# --- the two implementations ---


@dataclass(frozen=True)
class Impl:
    key: str  # 'ours' | 'arq'
    label: str
    python: str
    code: Path | None = None  # ours: the snapshot of arq/ and supervisor/ this run imports (PYTHONPATH, cwd)


def snapshot_code(destination: Path) -> Path:
    """
    Copy arq/, supervisor/ and the driver: the whole run measures one version of our code, even if the working tree
    changes meanwhile (other work goes on in this repository while a 10-minute benchmark runs).
    """
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc')
    for source, package in (('arq', 'arq'), ('supervisor', 'arq_supervise')):
        shutil.copytree(REPO / source, destination / package, ignore=ignore)
    (destination / 'tests' / 'bench').mkdir(parents=True)
    for name in ('__init__.py', 'driver.py'):
        shutil.copy2(BENCH_DIR / name, destination / 'tests' / 'bench' / name)
    return destination


def ensure_ref_python(explicit: str | None) -> str:
    """The interpreter of a venv holding the published arq 0.26.3 (+ uvloop), created under .cache on first use."""
    if explicit:
        return explicit
    python = REF_VENV / 'bin' / 'python'
    if not python.exists():
        log(f'creating {REF_VENV} with {" ".join(REF_REQUIREMENTS)}')
        subprocess.run([sys.executable, '-m', 'venv', str(REF_VENV)], check=True)
        subprocess.run([str(python), '-m', 'pip', 'install', '-q', *REF_REQUIREMENTS], check=True)
    return str(python)


def ensure_ours_python(explicit: str | None) -> str:
    """
    A clean venv for our side: the dependencies from pyproject.toml, and this repository on sys.path through a
    plain .pth line (always the working tree, no editable-install finder). The interpreter the benchmark is started
    from may carry site hooks and editable finders that import ~70 extra modules at startup (~5 MiB of RSS here):
    both sides get a bare venv so memory compares arq with arq.
    """
    if explicit:
        return explicit
    import sysconfig
    import tomllib

    venv = REPO / '.cache' / 'bench-venv-ours'
    python = venv / 'bin' / 'python'
    requirements = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']['dependencies']
    stamp = venv / 'bench-requirements.json'
    if python.exists() and stamp.exists() and json.loads(stamp.read_text()) == requirements:
        return str(python)
    log(f'creating {venv} with {" ".join(requirements)} and {REPO} on its path')
    subprocess.run([sys.executable, '-m', 'venv', '--clear', str(venv)], check=True)
    subprocess.run([str(python), '-m', 'pip', 'install', '-q', *requirements], check=True)
    purelib = subprocess.run(
        [str(python), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    assert purelib != sysconfig.get_paths()['purelib']
    (Path(purelib) / 'arq-bench-repo.pth').write_text(f'{REPO}\n')
    stamp.write_text(json.dumps(requirements))
    return str(python)


def driver_env(impl: Impl, port: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(('PYTHON', 'BENCH_', 'ARQ_SUPERVISE_'))}
    if impl.code is not None:
        env['PYTHONPATH'] = str(impl.code)
    env['BENCH_REDIS_PORT'] = str(port)
    env.update(extra or {})
    return env


# --- Redis counters ---


def proc_cpu_s(pid: int) -> float:
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15 of stat(5))


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and USS (private pages) of a process, in KiB."""
    out = {'vmrss': 0, 'uss': 0}
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                out['vmrss'] = int(line.split()[1])
    with open(f'/proc/{pid}/smaps_rollup') as f:
        for line in f:
            if line.startswith(('Private_Clean:', 'Private_Dirty:')):
                out['uss'] += int(line.split()[1])
    return out


@dataclass
class Counters:
    calls: int
    reads: int
    cpu_s: float
    by_command: dict[str, int] = field(default_factory=dict)
    machine_busy_s: float = 0.0  # every process on the machine (/proc/stat)
    own_cpu_s: float = 0.0  # this orchestrator
    wall_s: float = 0.0

    def __sub__(self, other: Counters) -> Counters:
        by_command = {
            k: v - other.by_command.get(k, 0) for k, v in self.by_command.items() if v != other.by_command.get(k, 0)
        }
        return Counters(
            self.calls - other.calls,
            self.reads - other.reads,
            self.cpu_s - other.cpu_s,
            by_command,
            self.machine_busy_s - other.machine_busy_s,
            self.own_cpu_s - other.own_cpu_s,
            self.wall_s - other.wall_s,
        )

    def foreign_cores(self, measured_cpu_s: float) -> float:
        """CPU used by other processes on the machine during the run, in cores: noise from whatever else runs."""
        other = self.machine_busy_s - self.cpu_s - self.own_cpu_s - measured_cpu_s
        return max(other, 0.0) / self.wall_s if self.wall_s > 0 else float('nan')


def machine_busy_s() -> float:
    with open('/proc/stat') as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def own_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class RedisProbe:
    """Our own connection to the benchmark's redis-server: setup, counters, release of the workers."""

    def __init__(self, server: RedisServer) -> None:
        assert server.process is not None
        self.pid = server.process.pid
        self.client = redis.Redis(host='127.0.0.1', port=server.port)

    def snapshot(self) -> Counters:
        """One INFO command: between two snapshots it adds one call (the first INFO) and one read (the second)."""
        cpu = proc_cpu_s(self.pid)
        busy, own, wall = machine_busy_s(), own_cpu_s(), time.monotonic()
        info = self.client.execute_command('INFO', 'stats', 'commandstats')
        by_command = {k[len('cmdstat_') :]: int(v['calls']) for k, v in info.items() if k.startswith('cmdstat_')}
        return Counters(sum(by_command.values()), int(info['total_reads_processed']), cpu, by_command, busy, own, wall)

    def reset(self) -> None:
        self.client.flushall()

    def pre_enqueue(self, n: int, function: str) -> None:
        """n due jobs written as arq 0.26.3's enqueue_job writes them (§1.3 of the wire notes), by neither side."""
        now_ms = int(time.time() * 1000)
        payload = pickle.dumps({'t': None, 'f': function, 'a': (), 'k': {}, 'et': now_ms})
        for start in range(0, n, 2000):
            pipe = self.client.pipeline(transaction=False)
            ids = [uuid.uuid4().hex for _ in range(min(2000, n - start))]
            for job_id in ids:
                pipe.psetex(f'arq:job:{job_id}', 86_400_000, payload)
            pipe.zadd(QUEUE, dict.fromkeys(ids, now_ms))
            pipe.execute()


# --- processes ---


@contextlib.contextmanager
def processes() -> Iterator[list[subprocess.Popen[Any]]]:
    """Popen objects appended to the list are killed (process group) if still running when the block ends."""
    procs: list[subprocess.Popen[Any]] = []
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, procs: list[subprocess.Popen[Any]]) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f'{what}: process {p.args!r} exited early with code {p.returncode}')
        if time.monotonic() > deadline:
            raise RuntimeError(f'{what}: timed out after {timeout_s}s')
        time.sleep(0.01)  # poll interval of a condition wait; cheap next to a measured run


def wait_all(procs: list[subprocess.Popen[Any]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    for p in procs:
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            raise RuntimeError(f'{what}: {p.args!r} still running after {timeout_s}s') from None
        if p.returncode != 0:
            raise RuntimeError(f'{what}: {p.args!r} exited with code {p.returncode}')


class Bench:
    def __init__(self, args: argparse.Namespace, sizes: Sizes, impls: list[Impl], workdir: Path, command: str) -> None:
        self.args = args
        self.command = command
        self.sizes = sizes
        self.impls = impls
        self.workdir = workdir
        self.server = RedisServer(directory=workdir / 'redis')
        self.server.start()
        self.probe = RedisProbe(self.server)
        # results[(section, config)][impl.key] = list of per-run metric dicts
        self.results: dict[tuple[str, str], dict[str, list[dict[str, float]]]] = {}
        self.checked: set[str] = set()
        self.run_counter = 0
        self.failures: list[str] = []
        self.head_at_start = git_head()
        self.code_at_start = code_fingerprint(impls[0].code or REPO)

    def close(self) -> None:
        self.server.stop()

    def record(self, section: str, config: str, impl: Impl, metrics: dict[str, float]) -> None:
        self.results.setdefault((section, config), {}).setdefault(impl.key, []).append(metrics)

    def check_impl(self, impl: Impl, report: dict[str, Any]) -> None:
        """Every report: the right arq (ours: the snapshot; theirs: the venv's), on uvloop."""
        ours_path = str((impl.code or REPO) / 'arq') if impl.key == 'ours' else str(REPO / 'arq')
        arq_file = report['arq_file']
        if (impl.key == 'ours') != arq_file.startswith(ours_path) or (impl.key != 'ours' and '/arq-bench-' in arq_file):
            raise RuntimeError(f'{impl.label} imported the wrong arq: {arq_file}')
        if report.get('loop') != 'uvloop':
            raise RuntimeError(f'{impl.label} is not running on uvloop: {report.get("loop")}')
        if impl.key in self.checked:
            return
        self.checked.add(impl.key)
        log(f'{impl.label}: arq {report["arq_version"]} from {arq_file}, redis-py {report["redis_py"]}, uvloop')

    def out_dir(self) -> Path:
        self.run_counter += 1
        d = self.workdir / f'run-{self.run_counter:03d}'
        d.mkdir()
        return d

    def attempt(self, run: Callable[[], dict[str, float]]) -> dict[str, float] | None:
        """One measured run; a failure is logged (with the run's logs) and retried once, then the run is skipped."""
        for attempt in (1, 2):
            try:
                return run()
            except Exception as e:
                self.failures.append(f'{e.__class__.__name__}: {e}')
                log(f'run failed (attempt {attempt}): {e.__class__.__name__}: {e}')
                for path in sorted((self.workdir / f'run-{self.run_counter:03d}').glob('*.log')):
                    tail = path.read_text(errors='replace').splitlines()[-15:]
                    log(f'last lines of {path}:\n    ' + '\n    '.join(tail))
        return None

    def alternating(self) -> Iterator[tuple[int, Impl]]:
        for rep in range(self.sizes.repeat):
            order = self.impls if rep % 2 == 0 else list(reversed(self.impls))
            for impl in order:
                yield rep, impl

    # --- one burst drain: P worker processes (or one supervisor with P children) on pre-enqueued jobs ---

    def drain(
        self,
        impl: Impl,
        *,
        n: int,
        function: str,
        poll_delay: float,
        max_jobs: int,
        procs: int = 1,
        supervised: bool = False,
        profile_to: Path | None = None,
        cprofile_to: Path | None = None,
        log_level: str | None = None,
    ) -> dict[str, float]:
        self.probe.reset()
        self.probe.pre_enqueue(n, function)
        out = self.out_dir()
        env = driver_env(
            impl,
            self.server.port,
            {'BENCH_OUT_DIR': str(out), 'BENCH_POLL_DELAY': str(poll_delay), 'BENCH_MAX_JOBS': str(max_jobs)},
        )
        if cprofile_to is not None:
            env['BENCH_CPROFILE'] = str(cprofile_to)
        if log_level is not None:
            env['BENCH_LOG_LEVEL'] = log_level
        with processes() as running, open(out / 'worker.log', 'wb') as logfile:
            if supervised:
                cmd = [
                    impl.python, '-m', 'arq_supervise',  # = arq-supervise
                    '--procs', str(procs), '--burst',
                    '--status-file', str(out / 'status.json'),
                    SETTINGS_PATH,
                ]  # fmt: skip
                running.append(
                    subprocess.Popen(
                        cmd, cwd=impl.code or REPO, env=env, stdout=logfile, stderr=logfile, start_new_session=True
                    )
                )
            else:
                cmd = [impl.python, str(DRIVER), 'worker', '--port', str(self.server.port), '--burst']
                for _ in range(procs):
                    running.append(
                        subprocess.Popen(cmd, cwd=out, env=env, stdout=logfile, stderr=logfile, start_new_session=True)
                    )
            wait_for(lambda: self.probe.client.llen('bench:ready') >= procs, 120, 'workers ready', running)
            worker_pids = [int(p) for p in self.probe.client.lrange('bench:ready', 0, -1)]
            idle = [memory_kib(pid) for pid in worker_pids]
            parent_idle = memory_kib(running[0].pid) if supervised else None
            spy = self.start_py_spy(worker_pids[0], profile_to) if profile_to is not None else None
            parent_cpu = [proc_cpu_s(running[0].pid)] if supervised else []
            before = self.probe.snapshot()
            go_at = time.time()
            self.probe.client.lpush('bench:go', *['go'] * procs)
            if supervised:  # the parent's own CPU time, last read just before it exits (its children report theirs)
                deadline = time.monotonic() + 600
                while running[0].poll() is None and time.monotonic() < deadline:
                    with contextlib.suppress(OSError, IndexError, ValueError):
                        parent_cpu[1:] = [proc_cpu_s(running[0].pid)]
                    time.sleep(0.05)  # sampling interval; the parent idles between its loop turns
            wait_all(running, 600, f'{impl.label} drain')
            after = self.probe.snapshot()
            if spy is not None:
                spy.wait(timeout=60)
        reports = [json.loads(p.read_text()) for p in sorted(out.glob('worker-*.json'))]
        if len(reports) != procs:
            raise RuntimeError(f'{impl.label}: {len(reports)} worker reports for {procs} processes (see {out})')
        for report in reports:
            self.check_impl(impl, report)
        jobs = sum(r['jobs'] for r in reports)
        left = self.probe.client.zcard(QUEUE)
        if jobs != n or left:
            raise RuntimeError(f'{impl.label}: ran {jobs} jobs of {n}, {left} left in the queue (see {out})')
        delta = after - before
        delta.calls -= 2  # our INFO and LPUSH bench:go
        delta.reads -= 2
        by_command = {f'cmd:{k}': v / n for k, v in delta.by_command.items()}
        elapsed = max(r['last_end'] for r in reports) - go_at
        metrics = {
            'jobs_s': n / elapsed,
            'worker_cpu_ms': sum(r['cpu_s'] for r in reports) * 1000 / n,
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
            **by_command,
        }
        measured_cpu = sum(r['cpu_s'] for r in reports)
        if parent_idle is not None:
            metrics['parent_uss_mib'] = parent_idle['uss'] / 1024
            metrics['parent_cpu_ms'] = (parent_cpu[-1] - parent_cpu[0]) * 1000 / n
            measured_cpu += parent_cpu[-1] - parent_cpu[0]
        metrics['foreign_cores'] = delta.foreign_cores(measured_cpu)
        return metrics

    # --- scenarios ---

    def scenario_enqueue(self) -> None:
        n = self.sizes.enqueue_n
        for batch, config in ((1, 'sequential'), (100, 'gather, batches of 100')):
            for rep, impl in self.alternating():
                m = self.attempt(partial(self.enqueue, impl, n, batch))
                if m is None:
                    continue
                self.record('enqueue', config, impl, m)
                log(f'enqueue {config} {impl.label} #{rep + 1}: {m["jobs_s"]:.0f} jobs/s')

    def start_py_spy(self, pid: int, output: Path) -> subprocess.Popen[bytes]:
        spy = subprocess.Popen(
            ['py-spy', 'record', '--pid', str(pid), '--rate', str(self.args.profile_rate), '--format', 'raw',
             '--output', str(output), *(['--native'] if self.args.native else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        time.sleep(1.0)  # let py-spy attach before the clock starts
        return spy

    def enqueue(self, impl: Impl, n: int, batch: int, profile_to: Path | None = None) -> dict[str, float]:
        self.probe.reset()
        out = self.out_dir()
        cmd = [impl.python, str(DRIVER), 'enqueue', '--port', str(self.server.port), '--n', str(n)]
        cmd += ['--batch', str(batch)]
        with processes() as running, open(out / 'client.log', 'wb') as logfile:
            p = subprocess.Popen(
                cmd, cwd=out, env=driver_env(impl, self.server.port), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=logfile, start_new_session=True, text=True,
            )  # fmt: skip
            running.append(p)
            assert p.stdin is not None and p.stdout is not None
            json.loads(p.stdout.readline())  # ready
            spy = self.start_py_spy(p.pid, profile_to) if profile_to is not None else None
            before = self.probe.snapshot()
            p.stdin.write('go\n')
            p.stdin.flush()
            line = p.stdout.readline()
            after = self.probe.snapshot()
            p.stdin.write('bye\n')
            p.stdin.flush()
            wait_all(running, 60, f'{impl.label} enqueue')
            if spy is not None:
                spy.wait(timeout=60)
        if not line:
            raise RuntimeError(f'{impl.label} enqueue client failed, see {out}/client.log')
        report = json.loads(line)
        self.check_impl(impl, report)
        queued = self.probe.client.zcard(QUEUE)
        if queued != n:
            raise RuntimeError(f'{impl.label}: {queued} jobs queued of {n}')
        delta = after - before
        delta.calls -= 1
        delta.reads -= 1
        by_command = {f'cmd:{k}': v / n for k, v in delta.by_command.items()}
        return {
            **by_command,
            'foreign_cores': delta.foreign_cores(report['cpu_s']),
            'jobs_s': n / report['wall_s'],
            'client_cpu_ms': report['cpu_s'] * 1000 / n,
            'redis_cpu_ms': delta.cpu_s * 1000 / n,
            'commands': delta.calls / n,
            'round_trips': delta.reads / n,
        }

    def scenario_drain(self) -> None:
        configs = [
            ('poll_delay 0.01, max_jobs 10', 0.01, 10, self.sizes.drain_n),
            ('poll_delay 0.01, max_jobs 100', 0.01, 100, self.sizes.drain_n),
            ('default (poll_delay 0.5, max_jobs 10)', 0.5, 10, self.sizes.drain_default_n),
        ]
        for config, poll_delay, max_jobs, n in configs:
            for rep, impl in self.alternating():
                m = self.attempt(
                    partial(self.drain, impl, n=n, function='noop', poll_delay=poll_delay, max_jobs=max_jobs)
                )
                if m is None:
                    continue
                self.record('drain', f'{config}, {n:,} jobs', impl, m)
                log(f'drain {config} {impl.label} #{rep + 1}: {m["jobs_s"]:.0f} jobs/s, {m["commands"]:.1f} cmd/job')

    def scenario_io(self) -> None:
        n = self.sizes.io_n
        for max_jobs in (100, 500):
            config = f'asyncio.sleep(0.05), max_jobs {max_jobs}, poll_delay 0.5, {n:,} jobs'
            for rep, impl in self.alternating():
                m = self.attempt(partial(self.drain, impl, n=n, function='sleep50', poll_delay=0.5, max_jobs=max_jobs))
                if m is None:
                    continue
                self.record('io', config, impl, m)
                log(f'io max_jobs {max_jobs} {impl.label} #{rep + 1}: {m["jobs_s"]:.0f} jobs/s')

    def scenario_scaling(self) -> None:
        n = self.sizes.scaling_n
        for procs in self.sizes.scaling_procs:
            for rep, impl in self.alternating():
                supervised = impl.key == 'ours'
                m = self.attempt(
                    partial(self.drain, impl, n=n, function='noop', poll_delay=0.01, max_jobs=10, procs=procs,
                            supervised=supervised)
                )  # fmt: skip
                if m is None:
                    continue
                self.record('scaling', f'P = {procs}', impl, m)
                log(f'scaling P={procs} {impl.label} #{rep + 1}: {m["jobs_s"]:.0f} jobs/s, {m["commands"]:.1f} cmd/job')

    def scenario_latency(self) -> None:
        for rep, impl in self.alternating():
            m = self.attempt(partial(self.latency, impl))
            if m is None:
                continue
            self.record(
                'latency', f'{self.sizes.latency_n} enqueues 20 ms apart, idle worker, default settings', impl, m
            )
            log(f'latency {impl.label} #{rep + 1}: pickup p50 {m["pickup_p50_ms"]:.1f} ms')

    def latency(self, impl: Impl) -> dict[str, float]:
        self.probe.reset()
        out = self.out_dir()
        env = driver_env(impl, self.server.port, {'BENCH_OUT_DIR': str(out)})  # default poll_delay and max_jobs
        with processes() as running, open(out / 'worker.log', 'wb') as logfile:
            worker = subprocess.Popen(
                [impl.python, str(DRIVER), 'worker', '--port', str(self.server.port)],
                cwd=out, env=env, stdout=logfile, stderr=logfile, start_new_session=True,
            )  # fmt: skip
            running.append(worker)
            wait_for(lambda: self.probe.client.llen('bench:ready') >= 1, 120, 'worker ready', running)
            self.probe.client.lpush('bench:go', 'go')
            time.sleep(1.5)  # the worker is now idle in its loop
            idle = memory_kib(worker.pid)
            client = subprocess.Popen(
                [impl.python, str(DRIVER), 'latency', '--port', str(self.server.port),
                 '--n', str(self.sizes.latency_n), '--interval', '0.02'],
                cwd=out, env=driver_env(impl, self.server.port), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=logfile, start_new_session=True, text=True,
            )  # fmt: skip
            running.append(client)
            assert client.stdin is not None and client.stdout is not None
            json.loads(client.stdout.readline())
            client.stdin.write('go\n')
            client.stdin.flush()
            line = client.stdout.readline()
            wait_all([client], 120, f'{impl.label} latency client')
            worker.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(timeout=10)
        if not line:
            raise RuntimeError(f'{impl.label} latency client failed, see {out}/worker.log')
        report = json.loads(line)
        self.check_impl(impl, report)
        pickup = sorted(x * 1000 for x in report['pickup_s'])
        rtt = sorted(x * 1000 for x in report['round_trip_s'])
        return {
            'pickup_p50_ms': percentile(pickup, 50),
            'pickup_p95_ms': percentile(pickup, 95),
            'pickup_p99_ms': percentile(pickup, 99),
            'rtt_p50_ms': percentile(rtt, 50),
            'rtt_p99_ms': percentile(rtt, 99),
            'idle_rss_mib': idle['vmrss'] / 1024,
            'idle_uss_mib': idle['uss'] / 1024,
        }

    def profile(self, impl: Impl) -> Path:
        """
        Where our worker's time goes: py-spy of one drain (poll 0.01, max_jobs 10), a cProfile of another (call
        counts per job; its overhead inflates the times) and py-spy of the sequential enqueue client.
        """
        n = self.args.profile_jobs
        rate = self.args.profile_rate
        native = ' --native' if self.args.native else ''
        parts = []

        raw = self.workdir / 'profile-drain.raw'
        m = self.drain(impl, n=n, function='noop', poll_delay=0.01, max_jobs=10, profile_to=raw)
        parts.append(
            f'## py-spy record --rate {rate}{native}: {impl.label} worker draining {n:,} no-op jobs '
            '(poll_delay 0.01, max_jobs 10, logging at INFO to a file)\n'
            f'under py-spy: {m["jobs_s"]:,.0f} jobs/s, worker CPU {m["worker_cpu_ms"]:.3f} ms/job. py-spy samples '
            'wall time of running threads: a thread preempted on these 2 busy cores (typically right after its '
            'socket write wakes redis-server) is charged to the line it was on, so StreamWriter.writelines looks '
            'heavier than its CPU cost; the cProfile below uses CPU time.\n\n'
            + summarize_profile(raw, top=self.args.profile_top)
        )

        stats_path = self.workdir / 'drain.pstats'
        m = self.drain(impl, n=n, function='noop', poll_delay=0.01, max_jobs=10, cprofile_to=stats_path)
        parts.append(
            f'## cProfile (timer: process CPU time) of the same drain ({n:,} jobs; profiled {m["jobs_s"]:,.0f} '
            f'jobs/s, {m["worker_cpu_ms"]:.3f} ms CPU/job with the profiler on): calls per job, share of CPU time\n\n'
            + summarize_cprofile(stats_path, n, top=self.args.profile_top)
        )

        lines = ["## What the per-job log lines cost: the same drain with arq's logger at INFO and at WARNING\n"]
        lines.append('| side | logging | jobs/s | worker CPU per job (ms) |')
        lines.append('|---|---|---:|---:|')
        for side in self.impls:
            for level in ('INFO', 'WARNING'):
                runs = [
                    self.drain(side, n=self.sizes.drain_n, function='noop', poll_delay=0.01, max_jobs=10,
                               log_level=level)
                    for _ in range(2)
                ]  # fmt: skip
                jobs_s = statistics.median(r['jobs_s'] for r in runs)
                cpu_ms = statistics.median(r['worker_cpu_ms'] for r in runs)
                lines.append(f'| {side.label} | {level} | {jobs_s:,.0f} | {cpu_ms:.3f} |')
        parts.append('\n'.join(lines) + '\n')

        raw = self.workdir / 'profile-enqueue.raw'
        e_n = self.sizes.enqueue_n
        m = self.enqueue(impl, e_n, 1, profile_to=raw)
        parts.append(
            f'## py-spy record --rate {rate}{native}: {impl.label} client, {e_n:,} sequential enqueue_job\n'
            f'under py-spy: {m["jobs_s"]:,.0f} jobs/s, client CPU {m["client_cpu_ms"]:.3f} ms/job\n\n'
            + summarize_profile(raw, top=self.args.profile_top)
        )

        path = RESULTS_DIR / ('profile-native.txt' if self.args.native else 'profile.txt')
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f'# Profiles of our arq ({self.head_at_start}, code fingerprint {self.code_at_start}), '
            f'{time.strftime("%Y-%m-%d %H:%M")}\n'
            f'# `{self.command}`\n\n' + '\n\n'.join(parts)
        )
        return path


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float('nan')
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


# --- profile summary (py-spy raw = collapsed stacks: "frame;frame;... count") ---


def summarize_profile(raw: Path, top: int = 30) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    paths: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_s = line.rpartition(' ')
        if not stack:
            continue
        count = int(count_s)
        frames = [short_frame(f) for f in stack.split(';')]
        frames = [f for f in frames if f]  # the process/thread header frames
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        ours = [f for f in frames if '(arq/' in f]
        paths[f'{ours[-1] if ours else "(outside arq)"} → {frames[-1]}'] += count
        for f in set(frames):
            inclusive[f] += count
    lines = [f'{total} samples (active threads only)\n', f'\nTop {top} by own time (the innermost frame):']
    lines += [f'  {100 * c / total:5.1f}%  {f}' for f, c in own.most_common(top)]
    lines.append(f'\nTop {top} by inclusive time (anywhere on the stack):')
    lines += [f'  {100 * c / total:5.1f}%  {f}' for f, c in inclusive.most_common(top)]
    lines.append(f'\nTop {top} paths: the innermost frame in arq/ → the innermost frame (what our code spends on):')
    lines += [f'  {100 * c / total:5.1f}%  {p}' for p, c in paths.most_common(top)]
    lines.append('\nBy area (own time, by the file of the innermost frame):')
    areas: collections.Counter[str] = collections.Counter()
    for f, c in own.items():
        areas[area_of(f)] += c
    lines += [f'  {100 * c / total:5.1f}%  {a}' for a, c in areas.most_common()]
    return '\n'.join(lines) + '\n'


def summarize_cprofile(path: Path, jobs: int, top: int = 30) -> str:
    import pstats

    stats = pstats.Stats(str(path))
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (filename, line, name), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = short_frame(f'{name} ({filename}:{line})')
        rows.append((where, nc, tt, ct))
    out = [f'{total:.2f} s profiled, {jobs:,} jobs\n', f'Top {top} by own time:  calls/job  own%  cumulative%']
    for where, nc, tt, ct in sorted(rows, key=lambda r: -r[2])[:top]:
        out.append(f'  {nc / jobs:8.2f}  {100 * tt / total:5.1f}%  {100 * ct / total:5.1f}%  {where}')
    out.append(f'\nTop {top} by cumulative time:  calls/job  own%  cumulative%')
    for where, nc, tt, ct in sorted(rows, key=lambda r: -r[3])[:top]:
        out.append(f'  {nc / jobs:8.2f}  {100 * tt / total:5.1f}%  {100 * ct / total:5.1f}%  {where}')
    return '\n'.join(out) + '\n'


def short_frame(frame: str) -> str:
    """'run_job (/x/site-packages/arq/worker.py:123)' -> 'run_job (arq/worker.py)'."""
    if frame.startswith(('process ', 'thread ')):
        return ''
    name, _, where = frame.partition(' (')
    where = where.rstrip(')')
    path = where.rsplit(':', 1)[0]
    if '/arq-bench-' in path and '/code/' in path:  # our code, as snapshotted for this run
        path = path.split('/code/', 1)[1]
    for marker in ('site-packages/', 'lib/python3.11/', f'{REPO}/'):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f'{name} ({path})'


def area_of(frame: str) -> str:
    path = frame.rpartition('(')[2].rstrip(')')
    for prefix, area in (
        ('arq/', 'arq (ours)'),
        ('redis/', 'redis-py'),
        ('logging/', 'logging'),
        ('asyncio/', 'asyncio'),
        ('uvloop/', 'uvloop'),
        ('pickle', 'pickle'),
        ('tests/bench', 'the job functions'),
    ):
        if path.startswith(prefix) or prefix in path:
            return area
    return f'other: {path.split("/")[0]}'


# --- report ---


@dataclass
class Row:
    metric: str
    unit: str
    higher_is_better: bool
    digits: int | None = None  # None: automatic


ROWS: dict[str, list[tuple[str, Row]]] = {
    'enqueue': [
        ('jobs_s', Row('enqueue jobs/s', '', True, 0)),
        ('client_cpu_ms', Row('client CPU per job', 'ms', False)),
        ('redis_cpu_ms', Row('Redis CPU per job', 'ms', False)),
        ('commands', Row('Redis commands per job', '', False)),
        ('round_trips', Row('round trips per job', '', False)),
        ('foreign_cores', Row('other load on the machine during the run', 'cores', False)),
    ],
    'drain': [
        ('jobs_s', Row('jobs/s', '', True, 0)),
        ('worker_cpu_ms', Row('worker CPU per job', 'ms', False)),
        ('worker_sys_ms', Row('… of which in the kernel', 'ms', False)),
        ('worker_preempted', Row('worker involuntary context switches per job', '', False)),
        ('redis_cpu_ms', Row('Redis CPU per job', 'ms', False)),
        ('commands', Row('Redis commands per job', '', False)),
        ('round_trips', Row('round trips per job', '', False)),
        ('end_rss_mib', Row('worker RSS at the end', 'MiB', False, 1)),
        ('foreign_cores', Row('other load on the machine during the run', 'cores', False)),
    ],
    'io': [
        ('jobs_s', Row('jobs/s', '', True, 0)),
        ('worker_cpu_ms', Row('worker CPU per job', 'ms', False)),
        ('commands', Row('Redis commands per job', '', False)),
        ('round_trips', Row('round trips per job', '', False)),
        ('foreign_cores', Row('other load on the machine during the run', 'cores', False)),
    ],
    'latency': [
        ('pickup_p50_ms', Row('enqueue→start p50', 'ms', False)),
        ('pickup_p95_ms', Row('enqueue→start p95', 'ms', False)),
        ('pickup_p99_ms', Row('enqueue→start p99', 'ms', False)),
        ('rtt_p50_ms', Row('enqueue→job.result() p50', 'ms', False)),
        ('rtt_p99_ms', Row('enqueue→job.result() p99', 'ms', False)),
    ],
    'scaling': [
        ('jobs_s', Row('total jobs/s', '', True, 0)),
        ('worker_cpu_ms', Row('workers CPU per job (all children)', 'ms', False)),
        ('parent_cpu_ms', Row('supervisor parent CPU per job', 'ms', False)),
        ('redis_cpu_ms', Row('Redis CPU per job', 'ms', False)),
        ('commands', Row('Redis commands per job', '', False)),
        ('round_trips', Row('round trips per job', '', False)),
        ('idle_uss_mib', Row('USS per worker process, idle', 'MiB', False, 1)),
        ('end_uss_mib', Row('USS per worker process, after the drain', 'MiB', False, 1)),
        ('foreign_cores', Row('other load on the machine during the run', 'cores', False)),
    ],
}
TITLES = {
    'enqueue': '1. enqueue (one client process)',
    'drain': '2. drain: pre-enqueued no-op jobs, one worker process, burst',
    'io': '4. IO-bound: one worker process, burst',
    'latency': '5. latency',
    'scaling': '3. scaling: ours = `arq-supervise --procs P --burst`, arq 0.26.3 = P separate worker processes; '
    'poll_delay 0.01, max_jobs 10 per process',
}


def fmt(value: float, digits: int | None = None) -> str:
    if value != value:  # nan
        return '–'
    if digits is None:
        a = abs(value)
        digits = 0 if a >= 100 else 1 if a >= 10 else 2 if a >= 1 else 3 if a >= 0.01 else 4
    return f'{value:,.{digits}f}'


def spread(values: list[float], digits: int | None) -> str:
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med, digits)
    return f'{fmt(med, digits)} ({fmt(min(values), digits)}–{fmt(max(values), digits)})'


def ratio(ours: list[float], theirs: list[float]) -> float:
    t = statistics.median(theirs)
    return statistics.median(ours) / t if t else float('nan')


def fmt_ratio(r: float) -> str:
    if r != r:
        return '–'
    return f'{r:.1f}×' if r >= 10 else f'{r:.2f}×' if r >= 0.1 else f'{r:.3f}×'


def section_order(bench: Bench) -> list[str]:
    return [s for s in ('enqueue', 'drain', 'scaling', 'io', 'latency') if any(k[0] == s for k in bench.results)]


def render_tables(bench: Bench) -> str:
    ours, theirs = bench.impls[0], bench.impls[1]
    out: list[str] = []
    for section in section_order(bench):
        out.append(f'### {TITLES[section]}\n')
        out.append(f'| configuration | metric | {ours.label} | {theirs.label} | ours/arq |')
        out.append('|---|---|---:|---:|---:|')
        for (sec, config), by_impl in bench.results.items():
            if sec != section:
                continue
            for key, row in ROWS[section]:
                a = [m[key] for m in by_impl.get('ours', []) if key in m]
                b = [m[key] for m in by_impl.get('arq', []) if key in m]
                if not a and not b:
                    continue
                unit = f' ({row.unit})' if row.unit else ''
                cells = [spread(v, row.digits) if v else '–' for v in (a, b)]
                r = fmt_ratio(ratio(a, b)) if a and b else '–'
                out.append(f'| {config} | {row.metric}{unit} | {cells[0]} | {cells[1]} | {r} |')
        out.append('')
    out.append(render_commands(bench))
    mem = render_memory(bench)
    if mem:
        out.append(mem)
    return '\n'.join(out)


def _values(bench: Bench, section: str, config_prefix: str, impl: str, key: str) -> list[float]:
    for (sec, config), by_impl in bench.results.items():
        if sec == section and config.startswith(config_prefix):
            return [m[key] for m in by_impl.get(impl, []) if key in m]
    return []


def render_commands(bench: Bench) -> str:
    """Redis commands per job by command name (INFO commandstats), for the configurations that explain the totals."""
    wanted = [
        ('enqueue', 'sequential'),
        ('drain', 'poll_delay 0.01, max_jobs 10,'),
        ('drain', 'poll_delay 0.01, max_jobs 100,'),
        ('scaling', 'P = 4'),
    ]
    columns: list[tuple[str, str, dict[str, float]]] = []
    for section, prefix in wanted:
        for (sec, config), by_impl in bench.results.items():
            if sec == section and config.startswith(prefix):
                for impl in bench.impls:
                    runs = by_impl.get(impl.key, [])
                    keys = {k for m in runs for k in m if k.startswith('cmd:')}
                    medians = {k[4:]: statistics.median(m.get(k, 0.0) for m in runs) for k in keys}
                    columns.append((f'{section} {prefix.rstrip(",")}', impl.label, medians))
    if not columns:
        return ''
    skip = ('info', 'lpush', 'blpop', 'rpush')  # ours: the orchestrator's and the workers' start handshake
    commands = sorted({c for _, _, m in columns for c, v in m.items() if c not in skip and v >= 0.0005})
    commands.sort(key=lambda c: -max(m.get(c, 0.0) for _, _, m in columns))
    lines = [
        '### Redis commands per job, by command (INFO commandstats; includes the commands run inside Lua scripts)\n',
        '| command | ' + ' | '.join(f'{cfg}: {label}' for cfg, label, _ in columns) + ' |',
        '|---|' + '---:|' * len(columns),
    ]
    for c in commands:
        cells = [fmt(m[c]) if m.get(c) else '' for _, _, m in columns]
        lines.append(f'| {c} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def render_memory(bench: Bench) -> str:
    rows = [
        ('idle worker RSS (latency scenario, idle 1.5 s in its loop)', 'latency', '', 'idle_rss_mib'),
        ('idle worker USS (same)', 'latency', '', 'idle_uss_mib'),
        (
            'worker RSS after the drain (poll 0.01, max_jobs 10)',
            'drain',
            'poll_delay 0.01, max_jobs 10,',
            'end_rss_mib',
        ),
        ('worker peak RSS during it', 'drain', 'poll_delay 0.01, max_jobs 10,', 'peak_rss_mib'),
    ]
    for procs in bench.sizes.scaling_procs:
        rows.append((f'USS per worker process, P = {procs}, idle', 'scaling', f'P = {procs}', 'idle_uss_mib'))
        rows.append((f'USS per worker process, P = {procs}, after the drain', 'scaling', f'P = {procs}', 'end_uss_mib'))
    rows.append(('USS of the supervisor parent, P = 4, idle', 'scaling', 'P = 4', 'parent_uss_mib'))
    lines = []
    for label, section, prefix, key in rows:
        a = _values(bench, section, prefix, 'ours', key)
        b = _values(bench, section, prefix, 'arq', key)
        if not a and not b:
            continue
        cells = [spread(v, 1) if v else '–' for v in (a, b)]
        r = fmt_ratio(ratio(a, b)) if a and b else '–'
        lines.append(f'| {label} | {cells[0]} | {cells[1]} | {r} |')
    if not lines:
        return ''
    head = [
        '### 6. memory (MiB; RSS from /proc/<pid>/status, USS = private pages from /proc/<pid>/smaps_rollup)\n',
        f'| | {bench.impls[0].label} | {bench.impls[1].label} | ours/arq |',
        '|---|---:|---:|---:|',
    ]
    return '\n'.join(head + lines) + '\n'


@dataclass
class Target:
    metric: str
    issue_arq: str
    target: str
    ours: str = '–'
    theirs: str = '–'
    met: str = 'not run'
    notes: list[str] = field(default_factory=list)


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float('nan')


def render_targets(bench: Bench) -> str:
    def v(section: str, prefix: str, impl: str, key: str) -> float:
        return med(_values(bench, section, prefix, impl, key))

    def verdict(ok: bool | None) -> str:
        return '–' if ok is None else ('**met**' if ok else '**missed**')

    def known(*xs: float) -> bool:
        return all(x == x for x in xs)

    rows: list[tuple[str, str, str, str, str, str]] = []  # metric, issue's arq, target, arq here, ours here, verdict

    for label, prefix, factor, issue in (
        ('drain jobs/s, poll 0.01, max_jobs 10', 'poll_delay 0.01, max_jobs 10,', 10, '914'),
        ('drain jobs/s, poll 0.01, max_jobs 100', 'poll_delay 0.01, max_jobs 100,', 20, '745'),
        ('drain jobs/s, default settings', 'default', 40, '211'),
    ):
        o, t = v('drain', prefix, 'ours', 'jobs_s'), v('drain', prefix, 'arq', 'jobs_s')
        r = o / t if known(o, t) and t else float('nan')
        rows.append((label, issue, f'≥ {factor}× arq', fmt(t, 0), f'{fmt(o, 0)} ({fmt_ratio(r)})',
                     verdict(r >= factor if known(r) else None)))  # fmt: skip

    drain_prefixes = ('poll_delay 0.01, max_jobs 10,', 'poll_delay 0.01, max_jobs 100,', 'default')

    def per_config(key: str, impl: str) -> list[float]:
        return [v('drain', p, impl, key) for p in drain_prefixes]

    def triple(values: list[float]) -> str:
        return ' / '.join(fmt(x) for x in values)

    for label, key, limit, issue in (
        ('worker CPU per job (ms)', 'worker_cpu_ms', 0.10, '1.0'),
        ('Redis CPU per job (ms)', 'redis_cpu_ms', 0.05, '0.29'),
        ('Redis round trips per job (socket reads by redis-server)', 'round_trips', 0.5, '6'),
        ('Redis commands per job, counting those inside Lua scripts', 'commands', 10, '17'),
    ):
        o, t = per_config(key, 'ours'), per_config(key, 'arq')
        ok = all(x <= limit for x in o if known(x)) if any(known(x) for x in o) else None
        rows.append((f'{label}; drain mj10 / mj100 / default', issue, f'≤ {limit:g}', triple(t), triple(o),
                     verdict(ok)))  # fmt: skip

    o1, o4 = v('scaling', 'P = 1', 'ours', 'commands'), v('scaling', 'P = 4', 'ours', 'commands')
    t1, t4 = v('scaling', 'P = 1', 'arq', 'commands'), v('scaling', 'P = 4', 'arq', 'commands')
    rows.append(('commands per job at P = 4 (P = 1)', '28', 'same as at P = 1', f'{fmt(t4)} ({fmt(t1)})',
                 f'{fmt(o4)} ({fmt(o1)})', verdict(o4 <= o1 * 1.1 if known(o1, o4) else None)))  # fmt: skip

    s1, s2 = v('scaling', 'P = 1', 'ours', 'jobs_s'), v('scaling', 'P = 2', 'ours', 'jobs_s')
    a1, a2 = v('scaling', 'P = 1', 'arq', 'jobs_s'), v('scaling', 'P = 2', 'arq', 'jobs_s')
    s4, a4 = v('scaling', 'P = 4', 'ours', 'jobs_s'), v('scaling', 'P = 4', 'arq', 'jobs_s')
    rows.append(('total jobs/s, P = 2 vs P = 1 on 2 cores (P = 1 → 2 → 4)', '(arq falls)', '≥ 1.4×',
                 f'{fmt_ratio(a2 / a1) if known(a1, a2) else "–"} ({fmt(a1, 0)} → {fmt(a2, 0)} → {fmt(a4, 0)})',
                 f'{fmt_ratio(s2 / s1) if known(s1, s2) else "–"} ({fmt(s1, 0)} → {fmt(s2, 0)} → {fmt(s4, 0)})',
                 verdict(s2 / s1 >= 1.4 if known(s1, s2) else None)))  # fmt: skip

    p50, p99 = v('latency', '', 'ours', 'pickup_p50_ms'), v('latency', '', 'ours', 'pickup_p99_ms')
    q50, q99 = v('latency', '', 'arq', 'pickup_p50_ms'), v('latency', '', 'arq', 'pickup_p99_ms')
    rows.append(('pickup latency p50 / p99 (ms), default settings', '252 / 498', '≤ 2 / ≤ 10',
                 f'{fmt(q50)} / {fmt(q99)}', f'{fmt(p50)} / {fmt(p99)}',
                 verdict(p50 <= 2 and p99 <= 10 if known(p50, p99) else None)))  # fmt: skip
    r50, t50 = v('latency', '', 'ours', 'rtt_p50_ms'), v('latency', '', 'arq', 'rtt_p50_ms')
    rows.append(('enqueue→result round trip p50 (ms), default settings', '502', '≤ 3', fmt(t50), fmt(r50),
                 verdict(r50 <= 3 if known(r50) else None)))  # fmt: skip

    eo, et = v('enqueue', 'sequential', 'ours', 'jobs_s'), v('enqueue', 'sequential', 'arq', 'jobs_s')
    ro, rt = v('enqueue', 'sequential', 'ours', 'round_trips'), v('enqueue', 'sequential', 'arq', 'round_trips')
    rows.append(('enqueue jobs/s (sequential), round trips per enqueue', '1,188, 3', '≥ 2×, 1',
                 f'{fmt(et, 0)}, {fmt(rt)}',
                 f'{fmt(eo, 0)} ({fmt_ratio(eo / et) if known(eo, et) else "–"}), {fmt(ro)}',
                 verdict(eo / et >= 2 and ro <= 1.05 if known(eo, et, ro) else None)))  # fmt: skip

    mo, mt = v('latency', '', 'ours', 'idle_rss_mib'), v('latency', '', 'arq', 'idle_rss_mib')
    rows.append(('idle worker RSS (MiB)', '32', '≤ arq', fmt(mt, 1), fmt(mo, 1),
                 verdict(mo <= mt if known(mo, mt) else None)))  # fmt: skip

    out = [
        '### Targets of issue 6\n',
        '| metric | arq in the issue | target | arq 0.26.3 here | ours here | |',
        '|---|---:|---:|---:|---:|---|',
    ]
    out += [f'| {" | ".join(r)} |' for r in rows]
    return '\n'.join(out) + '\n'


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
        f'- date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}\n'
    )


def interpreter_versions(python: str, cwd: Path) -> str:
    code = (
        'import arq, redis, uvloop, platform; '
        'print(f"arq {arq.VERSION}, Python {platform.python_version()}, redis-py {redis.__version__}, '
        'uvloop {uvloop.__version__}")'
    )
    return subprocess.run([python, '-c', code], capture_output=True, text=True, cwd=cwd).stdout.strip() or '?'


def code_fingerprint(root: Path) -> str:
    """A hash of arq/ and supervisor/ under root: which code a results file measured."""
    import hashlib

    digest = hashlib.sha1()
    for path in sorted([*(root / 'arq').rglob('*.py'), *(root / 'supervisor').rglob('*.py')]):
        digest.update(str(path.relative_to(root)).encode() + b'\0' + path.read_bytes())
    return digest.hexdigest()[:12]


def git_head() -> str:
    try:
        head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(['git', 'status', '--porcelain', 'arq', 'supervisor'], cwd=REPO, capture_output=True,
                               text=True).stdout.strip()  # fmt: skip
        return head.stdout.strip() + (' + uncommitted changes in arq/ or supervisor/' if dirty else '')
    except OSError:
        return '?'


def render(bench: Bench, command: str, elapsed_s: float) -> str:
    s = bench.sizes
    method = (
        'Method: every measured run is a fresh subprocess (tests/bench/driver.py) run by either interpreter; '
        'runs alternate ours/theirs; each cell is the median (min–max) of '
        f'{s.repeat} run{"s" if s.repeat > 1 else ""}; ratios are ours/arq of the medians. Both sides run their '
        "worker on **uvloop** (`uvloop.run`; the published arq would otherwise use asyncio's default loop) and log at "
        'INFO with `arq.logs.default_log_config` to a file, so the per-job log lines are paid for. '
        "Jobs for the drain scenarios are written directly in arq 0.26.3's wire format (neither side enqueues them); "
        'the workers block in `on_startup` until every one is ready, then the clock starts. jobs/s = jobs / '
        '(end of the last job − release). Worker CPU = getrusage of the worker processes from release to '
        'on_shutdown; Redis CPU = redis-server utime+stime from /proc; commands = INFO commandstats calls '
        '(including those inside Lua scripts); round trips = INFO stats total_reads_processed (socket reads by '
        'redis-server). The default-settings drain uses fewer jobs than the others because the published arq '
        'needs ~45 s per 10,000 jobs there.'
    )
    noise = [m['foreign_cores'] for runs in bench.results.values() for ms in runs.values() for m in ms
             if 'foreign_cores' in m]  # fmt: skip
    if bench.failures:
        method += f'\n\n**{len(bench.failures)} run(s) failed** and were retried or left out: ' + '; '.join(
            sorted(set(bench.failures))
        )
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


def main() -> None:
    parser = argparse.ArgumentParser(
        prog='python -m tests.bench.run', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('--quick', action='store_true', help='small sizes, one repetition (~3 min)')
    parser.add_argument('--scenarios', default=','.join(SCENARIOS),
                        help=f'comma-separated subset of {",".join(SCENARIOS)} (memory figures come from drain, '
                        'latency and scaling)')  # fmt: skip
    parser.add_argument('--repeat', type=int, help='repetitions per configuration and side (default 3, quick 1)')
    parser.add_argument('--ref-python', help='interpreter with arq==0.26.3 and uvloop (default: a venv in .cache)')
    parser.add_argument('--ours-python', help='interpreter that imports our arq (default: a bare venv in .cache)')
    parser.add_argument(
        '--output', type=Path, help='markdown file (default results/latest.md, quick: results/quick.md)'
    )
    parser.add_argument(
        '--profile',
        action='store_true',
        help='also profile our worker draining (py-spy and cProfile) and enqueuing: results/profile.txt',
    )
    parser.add_argument('--profile-only', action='store_true', help='only the profiles, no tables')
    parser.add_argument('--profile-rate', type=int, default=500, help='py-spy samples per second')
    parser.add_argument('--profile-top', type=int, default=30)
    parser.add_argument('--profile-jobs', type=int, default=30_000, help='jobs drained under py-spy')
    parser.add_argument('--native', action='store_true', help='py-spy --native: C frames too (uvloop, hiredis)')
    parser.add_argument('--keep', action='store_true', help='keep the work directory (logs of every run)')
    args = parser.parse_args()

    sizes = QUICK if args.quick else FULL
    if args.repeat:
        sizes = Sizes(**{**sizes.__dict__, 'repeat': args.repeat})
    scenarios = [s.strip() for s in args.scenarios.split(',') if s.strip()]
    unknown = set(scenarios) - set(SCENARIOS) - {'memory'}
    if unknown:
        parser.error(f'unknown scenarios: {", ".join(sorted(unknown))}')
    if 'memory' in scenarios:  # memory is read in these
        scenarios = [s for s in SCENARIOS if s in scenarios or s in ('drain', 'latency', 'scaling')]
    scenarios = [s for s in SCENARIOS if s in scenarios]  # scaling last
    if args.profile_only:
        scenarios = []
    output = args.output or RESULTS_DIR / ('quick.md' if args.quick else 'latest.md')
    command = 'python -m tests.bench.run' + ''.join(f' {a}' for a in sys.argv[1:])

    workdir = Path(tempfile.mkdtemp(prefix='arq-bench-'))
    impls = [
        Impl('ours', 'ours', ensure_ours_python(args.ours_python), snapshot_code(workdir / 'code')),
        Impl('arq', 'arq 0.26.3', ensure_ref_python(args.ref_python)),
    ]
    started = time.monotonic()
    bench = Bench(args, sizes, impls, workdir, command)
    try:
        for scenario in scenarios:
            log(f'--- {scenario} ---')
            getattr(bench, f'scenario_{scenario}')()
        if args.profile or args.profile_only:
            path = bench.profile(impls[0])
            log(f'profile written to {path}')
        if scenarios:
            report = render(bench, command, time.monotonic() - started)
            print(report)
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(report)
            log(f'written to {output} in {(time.monotonic() - started) / 60:.1f} min')
    finally:
        bench.close()
        if args.keep or bench.failures:
            log(f'work directory kept: {workdir}')
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    main()
