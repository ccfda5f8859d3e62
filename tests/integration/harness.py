"""Helpers to run the real `python -m arq_supervise` against the session's redis-server, with settings written per test.

Every test gets its own queue and database, a settings module in tmp_path, and a supervisor in its own session.
Jobs record facts in Redis (`<queue>:started` / `<queue>:finished` lists of `name:pid:try`), so the tests wait on
those, never on time. Teardown kills the process group and fails the test if any process is left behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import redis

from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]

JOBS = """
import asyncio
import os
import signal
import time

from arq.connections import RedisSettings

QUEUE = {queue!r}


async def _record(ctx, what, name):
    await ctx['redis'].rpush(f'{{QUEUE}}:{{what}}', f'{{name}}:{{os.getpid()}}:{{ctx["job_try"]}}:{{time.time()}}')


async def quick(ctx, name):
    await _record(ctx, 'started', name)
    await _record(ctx, 'finished', name)
    return name


async def sleeper(ctx, name, seconds):
    await _record(ctx, 'started', name)
    await asyncio.sleep(seconds)
    await _record(ctx, 'finished', name)
    return name


async def crasher(ctx, name, code):
    await _record(ctx, 'started', name)
    os._exit(code)


async def blocker(ctx, name, seconds):
    await _record(ctx, 'started', name)
    time.sleep(seconds)  # blocks the event loop on purpose: a hung child


class WorkerSettings:
    functions = [quick, sleeper, crasher, blocker]
    redis_settings = RedisSettings(port={port}, database={db})
    queue_name = QUEUE
    poll_delay = {poll_delay}
    max_jobs = {max_jobs}
    job_completion_wait = {job_completion_wait}
"""


class Supervisor:
    """One `python -m arq_supervise` process and what the test can observe of it."""

    def __init__(self, tmp_path: Path, queue: str, redis_port: int, db: int) -> None:
        self.tmp_path = tmp_path
        self.queue = queue
        self.redis_port = redis_port
        self.db = db
        self.module = f'app_{queue.replace(":", "_")}'
        self.status_file = tmp_path / 'status.json'
        self.log_path = tmp_path / 'supervisor.log'
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen_pids: set[int] = set()
        self.redis = redis.Redis(port=redis_port, db=db, decode_responses=True)

    # --- setup ---

    def write_settings(
        self, extra: str = '', *, max_jobs: int = 10, job_completion_wait: float = 0, poll_delay: float = 0.1
    ) -> str:
        body = JOBS.format(queue=self.queue, port=self.redis_port, db=self.db, max_jobs=max_jobs,
                           job_completion_wait=job_completion_wait, poll_delay=poll_delay)  # fmt: skip
        (self.tmp_path / f'{self.module}.py').write_text(body + textwrap.dedent(extra))
        return f'{self.module}.WorkerSettings'

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(('ARQ_SUPERVISE_', 'NOTIFY_SOCKET', 'WATCHDOG'))}
        env['PYTHONPATH'] = os.pathsep.join([str(self.tmp_path), str(REPO), env.get('PYTHONPATH', '')])
        env.update(extra)
        return env

    def start(
        self, *args: str, settings: str | None = None, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()
    ) -> Supervisor:
        settings = settings or self.write_settings()
        command = [
            *prefix,
            sys.executable,
            '-m',
            'arq_supervise',
            '--status-file',
            str(self.status_file),
            *args,
            settings,
        ]
        self.log_file = self.log_path.open('ab')
        self.proc = subprocess.Popen(
            command, cwd=self.tmp_path, env=env or self.env(), stdout=self.log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.seen_pids.add(self.proc.pid)
        return self

    def run(self, *args: str, settings: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run to completion (for commands that exit by themselves)."""
        command = [sys.executable, '-m', 'arq_supervise', '--status-file', str(self.status_file), *args]
        if settings:
            command.append(settings)
        return subprocess.run(command, cwd=self.tmp_path, env=self.env(), capture_output=True, text=True,
                              timeout=timeout, start_new_session=True)  # fmt: skip

    # --- observing ---

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors='replace') if self.log_path.exists() else ''

    def status(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.status_file.read_text()))
        except (OSError, ValueError):
            return {}

    def children(self) -> list[int]:
        """Pids of the live worker processes (from the OS, not from the supervisor's own report)."""
        try:
            pids = [p.pid for p in psutil.Process(self.pid).children() if p.status() != psutil.STATUS_ZOMBIE]
        except psutil.NoSuchProcess:
            return []
        self.seen_pids.update(pids)
        return sorted(pids)

    def ready_children(self) -> list[int]:
        status = self.status()
        return sorted(c['pid'] for c in status.get('children', []) if c['state'] == 'ready')

    def wait_ready(self, procs: int, timeout: float = 15) -> list[int]:
        def check() -> list[int] | None:
            ready = self.ready_children()  # the status file may lag by a tick: it must agree with the OS
            return ready if len(ready) == procs and self.children() == ready else None

        pids: list[int] = wait_until(check, timeout=timeout, message=f'{procs} ready children\n{self.log()[-3000:]}')
        self.seen_pids.update(pids)
        return pids

    def wait_log(self, text: str, timeout: float = 15) -> str:
        try:
            wait_until(lambda: text in self.log(), timeout=timeout, message=f'{text!r} in the log')
        except AssertionError as e:
            raise AssertionError(f'{e}\n{self.log_digest()}') from None
        return self.log()

    def log_digest(self) -> str:
        """The log as it is now, for a failure's message: the supervisor's own lines (the job lines drown them), then
        the last lines of all."""
        lines = self.log().splitlines()
        own = [line for line in lines if ' arq.worker:' not in line]
        return '\n'.join(['--- supervisor lines:', *own[-60:], '--- last lines:', *lines[-20:]])

    def events(self, what: str) -> list[tuple[str, int, int, float]]:
        """(name, pid, try, time) per `started` / `finished` record of the jobs."""
        out = []
        for raw in self.redis.lrange(f'{self.queue}:{what}', 0, -1):
            name, pid, job_try, at = raw.split(':')
            out.append((name, int(pid), int(job_try), float(at)))
        return out

    def started(self, name: str) -> list[tuple[str, int, int, float]]:
        return [e for e in self.events('started') if e[0] == name]

    def wait_started(self, name: str, times: int = 1, timeout: float = 10) -> list[tuple[str, int, int, float]]:
        result: list[tuple[str, int, int, float]] = wait_until(
            lambda: len(self.started(name)) >= times and self.started(name),
            timeout=timeout,
            message=f'job {name} started {times}x\n{self.log()[-3000:]}',
        )
        return result

    def enqueue(self, function: str, *args: Any, job_id: str | None = None) -> str:
        from arq import create_pool
        from arq.connections import RedisSettings

        async def go() -> str:
            pool = await create_pool(RedisSettings(port=self.redis_port, database=self.db))
            try:
                job = await pool.enqueue_job(function, *args, _job_id=job_id, _queue_name=self.queue)
                assert job is not None
                return job.job_id
            finally:
                await pool.aclose()

        return asyncio.run(go())

    def enqueue_many(self, function: str, args: list[tuple[Any, ...]]) -> None:
        """Many jobs through one pool."""
        from arq import create_pool
        from arq.connections import RedisSettings

        async def go() -> None:
            pool = await create_pool(RedisSettings(port=self.redis_port, database=self.db))
            try:
                for a in args:
                    await pool.enqueue_job(function, *a, _queue_name=self.queue)
            finally:
                await pool.aclose()

        asyncio.run(go())

    def result(self, job_id: str) -> dict[str, Any] | None:
        import pickle

        raw = redis.Redis(port=self.redis_port, db=self.db).get(f'arq:result:{job_id}')
        return None if raw is None else dict(pickle.loads(raw))

    # --- stopping ---

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def cleanup(self) -> list[str]:
        """Kill whatever is left of the group; return descriptions of processes that had outlived the supervisor."""
        leftovers: list[str] = []
        if self.proc is not None:
            self.children()
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                gone = _wait_group_gone(self.proc.pid, timeout=10 if sig == signal.SIGTERM else 5)
                if gone:
                    break
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=5)
            self.log_file.close()
        for pid in self.seen_pids:
            try:
                process = psutil.Process(pid)
                if process.status() != psutil.STATUS_ZOMBIE:
                    leftovers.append(f'{pid} {" ".join(process.cmdline())}')
                    process.kill()
            except psutil.NoSuchProcess:
                pass
        self.redis.close()
        return leftovers


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        alive = [p for p in psutil.process_iter(['pid']) if _pgid(p.pid) == pgid and _not_zombie(p)]
        if not alive:
            return True
        time.sleep(0.05)  # poll interval of a condition wait
    return False


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _not_zombie(process: psutil.Process) -> bool:
    try:
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
