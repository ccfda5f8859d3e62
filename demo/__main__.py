"""`python -m demo`: start Redis if needed, run `arq-supervise --procs 2`, enqueue jobs, print a summary.

Whatever goes wrong, the demo stops what it started (the supervisor, then redis-server) and says why in one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

# `python -m demo` runs from the checkout, so the suite's helpers are importable beside it
from tests.support.commands import console_script
from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
N_IMAGES, N_EMAILS, N_REPORTS = 300, 100, 5
QUEUE = 'demo:queue'
CRON_TICKS = 'demo:cron-ticks'
READY_TIMEOUT_S = 30


class DemoFailed(Exception):
    """Why the demo stopped early, in one line."""


@contextlib.contextmanager
def redis_url(directory: Path) -> Iterator[str]:
    """$REDIS_URL when given, else a private redis-server on a free port, stopped on the way out."""
    if os.environ.get('REDIS_URL'):
        yield os.environ['REDIS_URL']
        return
    # its own session, like the supervisor's: a Ctrl+C reaches the demo alone, which stops them in order
    server = RedisServer(directory=directory, start_new_session=True)
    try:
        try:
            server.start()
        except RuntimeError as e:  # not installed, or it did not start
            raise DemoFailed(str(e).splitlines()[0]) from None
        assert server.process is not None
        print(f'started redis-server on port {server.port} (pid {server.process.pid})')
        yield f'{server.url}/0'
    finally:
        server.stop()


@contextlib.contextmanager
def supervisor(redis: str, directory: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`arq-supervise --procs 2` of this environment (never one found on PATH), drained with SIGTERM on the way out."""
    command = [*console_script('arq-supervise'), '--procs', '2', '--status-file', f'{directory}/status.json']
    settings = 'demo.app.WorkerSettings'
    env = {**os.environ, 'REDIS_URL': redis, 'PYTHONPATH': str(ROOT)}
    shown = [os.path.relpath(command[0], ROOT) if command[0].startswith(str(ROOT)) else command[0], *command[1:]]
    print('running:', shlex.join([*shown, settings]))
    log_path = directory / 'supervisor.log'
    with log_path.open('wb') as log:
        proc = subprocess.Popen(
            [*command, settings], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    print(f'supervisor pid {proc.pid}')
    try:
        wait_until_ready(proc, [*command, '--check', settings], env, log_path)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        show_log(log_path)


def wait_until_ready(proc: subprocess.Popen[bytes], check: list[str], env: dict[str, str], log_path: Path) -> None:
    """Poll `arq-supervise --check` (what a probe runs) until every child is ready, or the supervisor has exited."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DemoFailed(
                f'the supervisor exited with code {proc.returncode} before it was ready: {last_line(log_path)}'
            )
        if subprocess.run(check, env=env, cwd=ROOT, capture_output=True).returncode == 0:
            print('supervisor ready: 2 workers')
            return
        time.sleep(0.2)  # the poll interval of a condition with a deadline
    raise DemoFailed(f'the supervisor was not ready within {READY_TIMEOUT_S}s: {last_line(log_path)}')


def last_line(path: Path) -> str:
    """The log's last error line (the reason), else its last line."""
    lines = [line.strip() for line in path.read_text(errors='replace').splitlines() if line.strip()]
    errors = [line for line in lines if ' ERROR ' in line or line.startswith('Error:')]
    return (errors or lines or ['(it logged nothing)'])[-1]


def show_log(path: Path) -> None:
    lines = path.read_text(errors='replace').splitlines()
    print(f'\nthe supervisor logged {len(lines)} lines; the first and last few:')
    shown = lines if len(lines) <= 10 else [*lines[:4], '...', *lines[-6:]]
    print('\n'.join('  ' + line for line in shown))


async def enqueue_and_wait(redis_url: str) -> Counter[str]:
    """Enqueue the demo's jobs and wait for each; count only these jobs, whatever else the Redis holds."""
    from arq import create_pool
    from arq.connections import RedisSettings
    from arq.jobs import Job

    redis = await create_pool(RedisSettings.from_dsn(redis_url), default_queue_name=QUEUE)
    try:
        ticks_before = int(await redis.get(CRON_TICKS) or 0)
        started = time.monotonic()
        jobs: list[Job | None] = []
        for i in range(N_IMAGES):
            jobs.append(await redis.enqueue_job('resize_image', i))
        for i in range(N_EMAILS):
            jobs.append(await redis.enqueue_job('send_email', f'user{i}@example.com', _defer_by=0.5))
        for i in range(N_REPORTS):
            jobs.append(await redis.enqueue_job('flaky_report', i))
        print(f'enqueued {len(jobs)} jobs in {time.monotonic() - started:.2f}s')
        outcomes: Counter[str] = Counter()
        for done, job in enumerate(jobs, 1):
            assert job is not None  # fresh random ids are never taken
            try:
                await job.result(timeout=60)
                outcomes['succeeded'] += 1
            except Exception as e:
                outcomes[f'failed ({type(e).__name__})'] += 1
            info = await job.result_info()
            outcomes['retried at least once'] += bool(info and info.job_try > 1)
            if done % 100 == 0:
                print(f'  {done}/{len(jobs)} results in after {time.monotonic() - started:.2f}s')
        outcomes['cron ticks'] = int(await redis.get(CRON_TICKS) or 0) - ticks_before
        print(f'all {len(jobs)} jobs done in {time.monotonic() - started:.2f}s')
        return outcomes
    finally:
        await redis.aclose()


def run() -> tuple[Counter[str], int]:
    with tempfile.TemporaryDirectory() as tmp, redis_url(Path(tmp) / 'redis') as url:
        with supervisor(url, Path(tmp)) as proc:
            outcomes = asyncio.run(enqueue_and_wait(url))
        return outcomes, proc.returncode


def fail(message: str) -> None:
    sys.stdout.flush()  # after what the demo printed so far, when both go to one pipe
    print(f'\n{message}', file=sys.stderr)


def main() -> int:
    try:
        outcomes, code = run()
    except DemoFailed as e:
        fail(f'demo failed: {e}')
        return 1
    except KeyboardInterrupt:  # the supervisor drained and redis-server stopped on the way out
        fail('demo interrupted')
        return 130
    except Exception as e:  # after the same clean-up: Redis went away, a job could not be enqueued, ...
        fail(f'demo failed: {type(e).__name__}: {e}')
        return 1
    print('\nsummary:')
    for what, n in sorted(outcomes.items()):
        print(f'  {what:<28} {n}')
    print(f'  supervisor exit code       {code}')
    return 0 if code == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
