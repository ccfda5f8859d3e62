"""Processes and counters for the orchestrator: /proc readings, Redis snapshots, MONITOR, subprocess bookkeeping."""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

from tests.support.redis_server import RedisServer

QUEUE = 'arq:queue'  # arq's default queue name, which both sides use
CLK_TCK = os.sysconf('SC_CLK_TCK')


def log(message: str) -> None:
    print(f'[bench {time.strftime("%H:%M:%S")}] {message}', file=sys.stderr, flush=True)


# --- /proc ---


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


def redis_connections(pid: int, redis_port: int) -> int:
    """TCP sockets of one process connected to the given port (its Redis connections), from /proc/net/tcp."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f'/proc/{pid}/fd'):
            with contextlib.suppress(OSError):
                target = os.readlink(f'/proc/{pid}/fd/{fd}')
                if target.startswith('socket:['):
                    inodes.add(target[8:-1])
    count = 0
    for table in ('/proc/net/tcp', '/proc/net/tcp6'):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[9] in inodes and int(parts[2].rsplit(':', 1)[1], 16) == redis_port and parts[3] == '01':
                    count += 1
    return count


class CpuSampler:
    """utime+stime of some processes from /proc, read until each exits (the last reading before its exit counts)."""

    def __init__(self, pids: list[int]) -> None:
        self.first = {pid: proc_cpu_s(pid) for pid in pids}
        self.last = dict(self.first)

    def sample(self) -> None:
        for pid in self.first:
            with contextlib.suppress(OSError, IndexError, ValueError):
                self.last[pid] = proc_cpu_s(pid)

    def used_s(self, pids: list[int] | None = None) -> float:
        return sum(self.last[p] - self.first[p] for p in (self.first if pids is None else pids))


def machine_busy_s() -> float:
    with open('/proc/stat') as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def own_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# --- Redis ---


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


class RedisProbe:
    """Our own connection to the benchmark's redis-server: setup, counters, release of the workers."""

    def __init__(self, server: RedisServer) -> None:
        assert server.process is not None
        self.pid = server.process.pid
        self.port = server.port
        self.client = redis.Redis(host='127.0.0.1', port=server.port)

    def snapshot(self) -> Counters:
        """One INFO command: between two snapshots it adds one call (the first INFO) and one read (the second)."""
        cpu = proc_cpu_s(self.pid)
        busy, own, wall = machine_busy_s(), own_cpu_s(), time.monotonic()
        info = self.client.info('stats', 'commandstats')
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

    def address(self) -> str:
        return str(self.client.client_info()['addr'])


class Monitor:
    """
    MONITOR on its own connection, in a thread: the top-level commands other clients send, counted by name (and by
    script sha for EVALSHA), leaving out the commands Lua scripts run and this orchestrator's own connection.
    """

    def __init__(self, port: int, ignore_addresses: set[str]) -> None:
        self.ignore = ignore_addresses
        self.counts: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()
        self.sock = socket.create_connection(('127.0.0.1', port))
        self.sock.sendall(b'MONITOR\r\n')
        self.reader = self.sock.makefile('rb')
        if not self.reader.readline().startswith(b'+OK'):
            raise RuntimeError('MONITOR refused')
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            for raw in self.reader:
                line = raw.decode(errors='replace')
                head, _, rest = line.partition('] ')
                address = head.rpartition(' ')[2]
                if address == 'lua' or address in self.ignore:
                    continue
                words = rest.split('"')  # '"evalsha" "<sha>" "1" ...' -> ['', 'evalsha', ' ', '<sha>', ...]
                if len(words) < 2:
                    continue
                name = words[1].lower()
                key = f'{name} {words[3]}' if name == 'evalsha' and len(words) > 3 else name
                with self.lock:
                    self.counts[key] += 1

    def mark(self) -> collections.Counter[str]:
        time.sleep(0.05)  # commands sent before this instant have reached the reader thread
        with self.lock:
            return collections.Counter(self.counts)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=5)


# --- subprocesses ---


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


def stop(proc: subprocess.Popen[Any], timeout_s: float = 15) -> None:
    """SIGTERM to the process group (a supervisor and its children), then wait; SIGKILL past the timeout."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
