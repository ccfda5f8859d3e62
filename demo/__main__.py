"""`python -m demo`: start Redis if needed, run `arq-supervise --procs 2`, enqueue jobs, print a summary."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
N_IMAGES, N_EMAILS, N_REPORTS = 300, 100, 5


def start_redis(directory: str) -> tuple[subprocess.Popen[bytes] | None, str]:
    """Use $REDIS_URL when given, else start a private redis-server on a free port."""
    if os.environ.get('REDIS_URL'):
        return None, os.environ['REDIS_URL']
    binary = shutil.which('redis-server')
    if binary is None:
        sys.exit('redis-server not found: install it (apt-get install redis-server) or set REDIS_URL')
    sys.path.insert(0, str(ROOT))
    from tests.support.redis_server import free_port

    port = free_port()
    proc = subprocess.Popen(
        [binary, '--port', str(port), '--bind', '127.0.0.1', '--save', '', '--dir', directory],
        stdout=subprocess.DEVNULL,
    )
    print(f'started redis-server on port {port}')
    return proc, f'redis://127.0.0.1:{port}/0'


async def enqueue_and_wait(redis_url: str) -> Counter[str]:
    from arq import create_pool
    from arq.connections import RedisSettings
    from arq.jobs import Job

    redis = await create_pool(RedisSettings.from_dsn(redis_url), default_queue_name='demo:queue')
    started = time.monotonic()
    jobs: list[Job] = []
    for i in range(N_IMAGES):
        jobs.append(await redis.enqueue_job('resize_image', i))  # type: ignore[arg-type]
    for i in range(N_EMAILS):
        jobs.append(await redis.enqueue_job('send_email', f'user{i}@example.com', _defer_by=0.5))  # type: ignore[arg-type]
    for i in range(N_REPORTS):
        jobs.append(await redis.enqueue_job('flaky_report', i))  # type: ignore[arg-type]
    print(f'enqueued {len(jobs)} jobs in {time.monotonic() - started:.2f}s')
    outcomes: Counter[str] = Counter()
    for done, job in enumerate(jobs, 1):
        try:
            await job.result(timeout=60)
            outcomes['succeeded'] += 1
        except Exception as e:
            outcomes[f'failed ({type(e).__name__})'] += 1
        if done % 100 == 0:
            print(f'  {done}/{len(jobs)} results in after {time.monotonic() - started:.2f}s')
    results = await redis.all_job_results()
    outcomes['retried at least once'] = sum(1 for r in results if r.job_try > 1)
    outcomes['cron ticks'] = int(await redis.get('demo:cron-ticks') or 0)
    print(f'all {len(jobs)} jobs done in {time.monotonic() - started:.2f}s')
    await redis.aclose()
    return outcomes


def wait_until_ready(supervisor: subprocess.Popen[bytes], command: list[str], env: dict[str, str]) -> bool:
    """Poll `arq-supervise --check` (what a probe runs) until every child is ready, or the supervisor has exited."""
    deadline = time.monotonic() + 30
    check = [*command[:-1], '--check', command[-1]]
    while time.monotonic() < deadline:
        if supervisor.poll() is not None:
            print(f'the supervisor exited with code {supervisor.returncode} before it was ready:')
            return False
        if subprocess.run(check, env=env, cwd=ROOT, capture_output=True).returncode == 0:
            print('supervisor ready: 2 workers')
            return True
        time.sleep(0.2)  # polling a condition with a deadline
    print('the supervisor did not become ready within 30s')
    return False


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        redis_proc, redis_url = start_redis(tmp)
        env = {**os.environ, 'REDIS_URL': redis_url, 'PYTHONPATH': str(ROOT)}
        command = ['arq-supervise', '--procs', '2', '--status-file', f'{tmp}/status.json', 'demo.app.WorkerSettings']
        print('running:', ' '.join(command))
        log_path = Path(tmp) / 'supervisor.log'
        log = log_path.open('wb')
        supervisor = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            if not wait_until_ready(supervisor, command, env):
                print(log_path.read_text(errors='replace'))
                return 1
            outcomes = asyncio.run(enqueue_and_wait(redis_url))
        finally:
            supervisor.send_signal(signal.SIGTERM)
            code = supervisor.wait(timeout=30)
            log.close()
            lines = log_path.read_text(errors='replace').splitlines()
            print(f'\nthe supervisor logged {len(lines)} lines; the first and last few:')
            print('\n'.join(['  ' + line for line in lines[:4] + ['...'] + lines[-6:]]))
            if redis_proc is not None:
                redis_proc.terminate()
                redis_proc.wait(timeout=10)
    print('\nsummary:')
    for what, n in sorted(outcomes.items()):
        print(f'  {what:<28} {n}')
    print(f'  supervisor exit code       {code}')
    return 0 if code == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
