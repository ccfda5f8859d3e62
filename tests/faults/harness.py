"""The fault suite's tools: a fleet under `arq-supervise`, a steady producer, and the invariant ledger.

Every job records each execution in Redis before it does anything else: `SADD ledger:runs:<job id>
<pid>:<try>:<unix time>:<nonce>`. A set with a per-execution nonce, not an INCR, because redis-py re-sends a command
whose connection dropped (CLIENT KILL, a Redis restart): an INCR could then count one run twice, a SADD cannot.

`Ledger.check()` then proves the invariants of the issue: every enqueued id has a result (success, or a failure
that explains itself) or is still queued; no id ran more often than the injected faults explain; no in-progress key
is left once the queue is empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pickle
import re
import signal
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis

from tests.integration.harness import Supervisor
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

RESULTS_DIR = Path(__file__).resolve().parent / 'results'
_STAMP = re.compile(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ')

JOBS = """
import asyncio
import os
import random
import time
import uuid

from redis.exceptions import ConnectionError as _RedisConnectionError, TimeoutError as _RedisTimeoutError

from arq.connections import RedisSettings


async def _ledger(ctx):
    # a Redis outage must not fail the job: keep trying for as long as the fault suite injects one
    record = f'{{os.getpid()}}:{{ctx["job_try"]}}:{{time.time():.6f}}:{{uuid.uuid4().hex[:8]}}'
    deadline = time.monotonic() + 60
    while True:
        try:
            await ctx['redis'].sadd(f'ledger:runs:{{ctx["job_id"]}}', record)
            return
        except (_RedisConnectionError, _RedisTimeoutError, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def work(ctx, seconds):
    await _ledger(ctx)
    await asyncio.sleep(seconds)
    return 'ok'


async def nap(ctx, low_s, high_s):
    # an innocent long job: it only waits
    await _ledger(ctx)
    await asyncio.sleep(random.uniform(low_s, high_s))
    return 'ok'


async def hog(ctx, step_mib, every_s, cap_mib):
    # eats memory in steps up to a cap, so a broken limit cannot take the machine down
    await _ledger(ctx)
    held = []
    while len(held) * step_mib < cap_mib:
        held.append(bytearray(step_mib * 2**20))  # zero-filled: every page is touched
        await asyncio.sleep(every_s)
    await asyncio.sleep(3600)


async def blocker(ctx, seconds):
    await _ledger(ctx)
    time.sleep(seconds)  # blocks the event loop on purpose
    return 'unblocked'


class WorkerSettings:
    functions = [work, nap, hog, blocker]
    redis_settings = {redis_settings}
    queue_name = {queue!r}
    max_jobs = {max_jobs}
    poll_delay = {poll_delay}
    job_completion_wait = {job_completion_wait}
"""


def report(test: str, **figures: Any) -> dict[str, Any]:
    """Print a test's figures (visible with -s) and append them to tests/faults/results/<test>.jsonl."""
    line = {'test': test, 'at': time.strftime('%Y-%m-%dT%H:%M:%S'), **figures}
    print(f'\nFAULT FIGURES {json.dumps(line)}')
    with contextlib.suppress(OSError):
        RESULTS_DIR.mkdir(exist_ok=True)
        with (RESULTS_DIR / f'{test}.jsonl').open('a') as f:
            f.write(json.dumps(line) + '\n')
    return line


def env_seconds(name: str, default: float) -> float:
    """A duration a developer may lengthen by hand (tests/faults/README.md lists the variables)."""
    return float(os.environ.get(name, default))


# --- the fleet ---


class Fleet(Supervisor):
    """One `arq-supervise` process (the console script, else `python -m arq_supervise`) with the fault jobs module."""

    def __init__(
        self, tmp_path: Path, queue: str, redis_port: int, db: int, *, client: redis.Redis | None = None
    ) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        super().__init__(tmp_path, queue, redis_port, db)
        self.redis.close()  # results are pickles: a client that returns bytes
        self.redis = client if client is not None else redis.Redis(port=redis_port, db=db)

    def write_jobs(
        self,
        *,
        redis_settings: str | None = None,
        max_jobs: int = 20,
        poll_delay: float = 0.5,
        job_completion_wait: float = 0,
        extra: str = '',
    ) -> str:
        body = JOBS.format(
            redis_settings=redis_settings or f'RedisSettings(host="127.0.0.1", port={self.redis_port}, '
            f'database={self.db})',
            queue=self.queue, max_jobs=max_jobs, poll_delay=poll_delay, job_completion_wait=job_completion_wait,
        )  # fmt: skip
        (self.tmp_path / f'{self.module}.py').write_text(body + textwrap.dedent(extra))
        return f'{self.module}.WorkerSettings'

    def start(
        self, *args: str, settings: str | None = None, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()
    ) -> Fleet:
        settings = settings or self.write_jobs()
        command = [*prefix, *supervise_command(), '--status-file', str(self.status_file), *args, settings]
        self.log_file = self.log_path.open('ab')
        self.proc = subprocess.Popen(
            command, cwd=self.tmp_path, env=env or self.env(), stdout=self.log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.seen_pids.add(self.proc.pid)
        return self

    def result(self, job_id: str) -> dict[str, Any] | None:
        raw = self.redis.get(f'arq:result:{job_id}')
        return None if raw is None else dict(pickle.loads(raw))

    def killpg(self) -> float:
        """SIGKILL the whole process group (parent and children) at once; returns the wall time of the kill."""
        assert self.proc is not None
        self.children()
        at = time.time()
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        return at

    def log_lines(self, pattern: str) -> list[tuple[float, re.Match[str]]]:
        """(wall time, match) of each log line in which `pattern` (a regex) is found."""
        regex = re.compile(pattern)
        out = []
        for line in self.log().splitlines():
            stamp = _STAMP.match(line)
            found = regex.search(line)
            if stamp and found:
                at = time.mktime(time.strptime(stamp.group(1), '%Y-%m-%d %H:%M:%S')) + int(stamp.group(2)) / 1000
                out.append((at, found))
        return out

    def exits(self) -> dict[int, float]:
        """pid -> wall time of the supervisor's `child exited` line (logged once it has reaped the child)."""
        return {int(m.group(1)): at for at, m in self.log_lines(r'child exited slot=\d+ pid=(\d+) ')}

    def respawn_delays(self) -> list[float]:
        """For each child that exited, the time until the supervisor spawned the next child in its slot."""
        spawns = self.log_lines(r'spawned child slot=(\d+) ')
        delays = []
        for exited_at, m in self.log_lines(r'child exited slot=(\d+) '):
            later = [at for at, s in spawns if s.group(1) == m.group(1) and at >= exited_at]
            if later:
                delays.append(min(later) - exited_at)
        return delays

    def kills(self, pids: Iterable[int]) -> list[Kill]:
        """The exits of `pids` as faults that may have made their in-flight jobs run again."""
        exits = self.exits()
        return [Kill(frozenset({pid}), exits[pid]) for pid in pids if pid in exits]

    def wait_for(self, predicate: Callable[[], Any], *, timeout: float, message: str) -> Any:
        """wait_until, with the log's tail as it is when the wait fails (not when it starts)."""
        try:
            return wait_until(predicate, timeout=timeout, message=message)
        except AssertionError as e:
            raise AssertionError(f'{e}\n--- supervisor log (tail) ---\n{self.log()[-4000:]}') from None


#: the fixtures of conftest.py: `fleets(port, db, name=..., client=...)`, `redis_servers(*extra_args)`
FleetFactory = Callable[..., Fleet]
RedisFactory = Callable[..., RedisServer]


def supervise_command() -> list[str]:
    """The installed `arq-supervise` next to this interpreter, or the same entry point through `-m`."""
    script = Path(sys.executable).parent / 'arq-supervise'
    if script.exists():
        return [str(script)]
    return [sys.executable, '-m', 'arq_supervise']


# --- the producer ---


@dataclass
class Load:
    """Enqueue `rate` jobs a second from a thread with its own event loop, until `stop()`.

    Ids are chosen here (`<prefix><n>`), so an enqueue whose reply was lost (Redis restarted, connection killed) is
    simply tried again with the same id: the second try returns None when the first one had got through. Only ids
    that were enqueued (a Job or None back) count; `failed_tries` counts the errors on the way.
    """

    redis_settings: Any
    queue: str
    rate: float
    function: str = 'work'
    args: tuple[Any, ...] = (0.03,)
    prefix: str = 'j'
    tick_s: float = 0.01
    limit: int | None = None

    ids: list[str] = field(default_factory=list)
    enqueued_at: dict[str, float] = field(default_factory=dict)
    failed_tries: int = 0
    last_error: str | None = None
    uncertain: list[str] = field(default_factory=list)  # stopped while an enqueue of these was failing
    repeated_ids: int = 0  # enqueues that returned None: the id was already there (a lost reply's retry)
    longest_gap_s: float = 0.0
    error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _slots: asyncio.Semaphore = field(init=False)
    _thread: threading.Thread | None = None

    def start(self) -> Load:
        self._thread = threading.Thread(target=self._main, name=f'load-{self.prefix}', daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[str]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            assert not self._thread.is_alive(), 'the producer did not stop'
        if self.error is not None:
            raise AssertionError(f'the producer failed: {self.error!r}') from self.error
        return list(self.ids)

    def enqueued_ids(self, client: redis.Redis) -> list[str]:
        """The ids enqueued: those confirmed, plus uncertain ones that Redis turns out to hold."""
        extra = [i for i in self.uncertain if client.exists(f'arq:job:{i}', f'arq:result:{i}')]
        return [*self.ids, *extra]

    def wait_count(self, n: int, timeout: float = 30) -> None:
        try:
            wait_until(lambda: len(self.ids) >= n or self.error, timeout=timeout, message=f'{n} jobs enqueued')
        except AssertionError as e:
            raise AssertionError(f'{e}; enqueued {len(self.ids)}, last enqueue error: {self.last_error}') from None
        if self.error is not None:
            raise AssertionError(f'the producer failed: {self.error!r}')

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as e:  # reported by stop(); a thread's exception would otherwise be a warning
            self.error = e

    async def _run(self) -> None:
        from arq import create_pool

        pool = await create_pool(self.redis_settings)
        # a few enqueues in flight at once: arq's pool is uncapped, and a late batch must not open a connection per
        # job (over TLS each new connection costs ~20 ms of CPU, which snowballs into connect timeouts)
        self._slots = asyncio.Semaphore(8)
        try:
            n = 0
            started = time.monotonic()
            last_ok = started
            while not self._stop.is_set() and (self.limit is None or n < self.limit):
                due = int((time.monotonic() - started) * self.rate) + 1
                if self.limit is not None:
                    due = min(due, self.limit)
                batch = [f'{self.prefix}{i:07d}' for i in range(n, due)]
                if batch:
                    await asyncio.gather(*(self._enqueue(pool, job_id) for job_id in batch))
                    n = due
                    now = time.monotonic()
                    self.longest_gap_s = max(self.longest_gap_s, now - last_ok)
                    last_ok = now
                await asyncio.sleep(self.tick_s)
        finally:
            with contextlib.suppress(Exception):
                await pool.aclose()

    async def _enqueue(self, pool: Any, job_id: str) -> None:
        async with self._slots:
            await self._enqueue_one(pool, job_id)

    async def _enqueue_one(self, pool: Any, job_id: str) -> None:
        from redis.exceptions import RedisError

        while True:
            try:
                job = await pool.enqueue_job(self.function, *self.args, _job_id=job_id, _queue_name=self.queue)
            except (TimeoutError, RedisError, OSError) as e:
                self.failed_tries += 1
                self.last_error = f'{type(e).__name__}: {e}'
                if self._stop.is_set():
                    self.uncertain.append(job_id)  # perhaps enqueued: see enqueued_ids()
                    return
                await asyncio.sleep(0.1)
                continue
            if job is None:
                self.repeated_ids += 1
            self.ids.append(job_id)
            self.enqueued_at[job_id] = time.time()
            return


# --- the ledger ---


@dataclass(frozen=True)
class Run:
    pid: int
    job_try: int
    at: float


@dataclass
class Kill:
    """A fault that may make jobs run again: the pids it killed, and when.

    `at` is taken just before the fault, `done_at` (when known) just after it: the test's thread can lose the GIL to
    the producer thread between the two for milliseconds, and a victim may start (and record) a job in that window.
    """

    pids: frozenset[int]
    at: float
    done_at: float = 0.0

    @property
    def certain_at(self) -> float:
        """A time by which the fault had surely struck."""
        return max(self.at, self.done_at)


@dataclass
class LedgerReport:
    enqueued: int
    succeeded: int
    failed: dict[str, int]
    queued: int
    lost: list[str]
    runs: int
    duplicated: int
    unexplained_duplicates: list[str]
    leaked_in_progress: list[str]
    rerun_delays_s: list[float]
    #: ids whose first run was not at try 1: a claim of theirs took a try (and a lease) but never ran them
    first_run_late_try: list[str]
    #: the runs of the first unexplained duplicates (which process, which try, when): what a failure message shows
    duplicate_runs: dict[str, list[Run]] = field(default_factory=dict)

    def figures(self) -> dict[str, Any]:
        delays = sorted(self.rerun_delays_s)
        return {
            'enqueued': self.enqueued,
            'succeeded': self.succeeded,
            'failed': self.failed,
            'still_queued': self.queued,
            'lost': len(self.lost),
            'runs': self.runs,
            'ran_twice_or_more': self.duplicated,
            'unexplained_duplicates': len(self.unexplained_duplicates),
            'leaked_in_progress_keys': len(self.leaked_in_progress),
            'reruns_measured': len(delays),
            'rerun_median_s': round(statistics.median(delays), 3) if delays else None,
            'rerun_max_s': round(delays[-1], 3) if delays else None,
            'first_run_not_at_try_1': len(self.first_run_late_try),
        }

    def assert_clean(self, *, allowed_failures: Iterable[str] = ()) -> None:
        """Nothing lost, no duplicate the faults do not explain, no lease left, no failure but the expected ones."""
        assert not self.lost, f'{len(self.lost)} jobs lost (no result, not queued): {self.lost[:10]}'
        assert not self.unexplained_duplicates, (
            f'{len(self.unexplained_duplicates)} jobs ran more often than the faults explain: '
            f'{self.unexplained_duplicates[:10]}; their runs (pid, try, time): {self.duplicate_runs}'
        )
        assert not self.leaked_in_progress, f'in-progress keys left behind: {self.leaked_in_progress[:10]}'
        allowed = tuple(allowed_failures)
        unexpected = {m: n for m, n in self.failed.items() if not any(a in m for a in allowed)}
        assert not unexpected, f'unexpected failures: {unexpected}'


class Ledger:
    """Reads back what happened to a set of job ids (see the module docstring)."""

    def __init__(self, client: redis.Redis, queue: str) -> None:
        self.redis = client
        self.queue = queue

    def runs(self, job_id: str) -> list[Run]:
        out = []
        for raw in self.redis.smembers(f'ledger:runs:{job_id}'):
            pid, job_try, at, _ = (raw.decode() if isinstance(raw, bytes) else raw).split(':')
            out.append(Run(int(pid), int(job_try), float(at)))
        return sorted(out, key=lambda r: r.at)

    def all_runs(self, job_ids: Iterable[str]) -> dict[str, list[Run]]:
        ids = list(job_ids)
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.smembers(f'ledger:runs:{job_id}')
        out: dict[str, list[Run]] = {}
        for job_id, members in zip(ids, pipe.execute(), strict=True):
            runs = []
            for raw in members:
                pid, job_try, at, _ = (raw.decode() if isinstance(raw, bytes) else raw).split(':')
                runs.append(Run(int(pid), int(job_try), float(at)))
            out[job_id] = sorted(runs, key=lambda r: r.at)
        return out

    def results(self, job_ids: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        ids = list(job_ids)
        out: dict[str, dict[str, Any] | None] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            raw = self.redis.mget([f'arq:result:{job_id}' for job_id in chunk])
            for job_id, value in zip(chunk, raw, strict=True):
                out[job_id] = None if value is None else dict(pickle.loads(value))
        return out

    def unfinished(self, job_ids: Iterable[str]) -> list[str]:
        results = self.results(job_ids)
        return [job_id for job_id, r in results.items() if r is None]

    def wait_all_done(self, job_ids: Iterable[str], timeout: float, context: Any = '') -> float:
        """Wait until every id has a result; returns the time it took."""
        ids = list(job_ids)
        started = time.monotonic()
        left = ids

        def done() -> bool:
            nonlocal left
            left = self.unfinished(left)
            return not left

        try:
            wait_until(done, timeout=timeout, message=f'results for all {len(ids)} jobs')
        except AssertionError as e:
            raise AssertionError(f'{e}; missing e.g. {left[:5]}\n{_tail(context)}') from None
        return time.monotonic() - started

    def in_progress_keys(self) -> list[str]:
        keys = []
        for key in self.redis.scan_iter(match='arq:in-progress:*', count=1000):
            keys.append(key.decode() if isinstance(key, bytes) else key)
        return keys

    def check(self, job_ids: Iterable[str], kills: Iterable[Kill] = (), *, expect_drained: bool = True) -> LedgerReport:
        """The invariant ledger for `job_ids` given the `kills` injected (each may make its in-flight jobs rerun)."""
        ids = list(dict.fromkeys(job_ids))
        kills = list(kills)
        results = self.results(ids)
        all_runs = self.all_runs(ids)
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.zscore(self.queue, job_id)
        queued = {job_id for job_id, score in zip(ids, pipe.execute(), strict=True) if score is not None}
        succeeded, failed, lost = 0, dict[str, int](), []
        for job_id in ids:
            r = results[job_id]
            if r is None:
                if job_id not in queued:
                    lost.append(job_id)
                continue
            if r['s']:
                succeeded += 1
            else:
                message = f'{type(r["r"]).__name__}: {r["r"]}'
                failed[message] = failed.get(message, 0) + 1
        unexplained, duplicated, delays = [], 0, []
        for job_id in ids:
            runs = all_runs[job_id]
            if len(runs) > 1:
                duplicated += 1
            # each run after the first must follow a kill of the pid that ran the one before it
            for before, after in zip(runs, runs[1:], strict=False):
                kill = _kill_of(before, kills)
                if kill is None or after.at < kill.at:
                    unexplained.append(job_id)
                    break
        for kill in kills:
            for job_id in ids:
                runs = all_runs[job_id]
                for before, after in zip(runs, runs[1:], strict=False):
                    if before.pid in kill.pids and before.at <= kill.certain_at and kill.at <= after.at:
                        delays.append(after.at - kill.at)
        late_try = [job_id for job_id in ids if all_runs[job_id] and all_runs[job_id][0].job_try > 1]
        leaked = self.in_progress_keys() if expect_drained else []
        return LedgerReport(
            enqueued=len(ids), succeeded=succeeded, failed=failed, queued=len(queued), lost=lost,
            runs=sum(len(r) for r in all_runs.values()), duplicated=duplicated, unexplained_duplicates=unexplained,
            leaked_in_progress=leaked, rerun_delays_s=delays, first_run_late_try=late_try,
            duplicate_runs={job_id: all_runs[job_id] for job_id in unexplained[:5]},
        )  # fmt: skip


def _kill_of(run: Run, kills: list[Kill]) -> Kill | None:
    for kill in kills:
        if run.pid in kill.pids and run.at <= kill.certain_at:
            return kill
    return None


def _tail(context: Any) -> str:
    if isinstance(context, Supervisor):
        return context.log()[-3000:]
    return str(context)


# --- processes ---


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
