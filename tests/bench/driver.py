"""The measured process of a benchmark run, executed by either interpreter: ours or the published arq's venv.

It imports only arq's public API, so the same file runs against this repository's arq and against
``arq==0.26.3``. It must not import anything from ``tests`` (the published arq's interpreter cannot see this repo).

Modes (``python driver.py MODE --port N ...``):

``worker``
    One arq Worker on a uvloop loop, logging at INFO (arq's own log config, as ``arq`` sets it up) to stderr,
    which the orchestrator sends to a file. Its ``on_startup`` pushes to ``bench:ready`` and then blocks on
    ``BLPOP bench:go``, so the orchestrator can snapshot Redis and start the clock with every worker ready and no
    job claimed yet. ``on_shutdown`` writes this process's figures (CPU, memory, job count, last job's end) as
    JSON into ``$BENCH_OUT_DIR``.
``enqueue``
    ``--n`` enqueue_job calls, sequential (``--batch 1``) or ``asyncio.gather`` batches of ``--batch``.
``latency``
    ``--n`` single enqueues ``--interval`` seconds apart against an idle worker, each followed by ``job.result()``.
``herd``
    ``--n`` single enqueues, one at a time: each waits for its job's result, then ``--interval`` seconds of idleness.
``waiters``
    ``--n`` jobs enqueued, then one ``await job.result()`` per job, all at once; READY is printed once every waiter
    is waiting, and the time each waiter returned is reported.

``enqueue --bulk`` uses our ``enqueue_jobs([JobCall.of(...), ...])`` (the published arq has no bulk enqueue).

The same module is the settings class for ``arq-supervise`` (``tests.bench.driver.Settings``): everything it needs
comes from the environment (``BENCH_*``), since the supervisor's children are forked, not started with arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging.config
import os
import resource
import sys
import time
from typing import Any

import uvloop

from arq import Worker, create_pool
from arq.connections import RedisSettings
from arq.logs import default_log_config

# --- job functions (the same qualnames on both sides) ---

_stats = {'jobs': 0, 'first_start': 0.0, 'last_end': 0.0}


async def noop(ctx: dict[str, Any]) -> None:
    now = time.time()
    if not _stats['jobs']:
        _stats['first_start'] = now
    _stats['jobs'] += 1
    _stats['last_end'] = now


async def sleep50(ctx: dict[str, Any]) -> None:
    if not _stats['jobs']:
        _stats['first_start'] = time.time()
    await asyncio.sleep(0.05)
    _stats['jobs'] += 1
    _stats['last_end'] = time.time()


async def stamp(ctx: dict[str, Any], enqueued_at: float) -> float:
    """Return when this job started, for the enqueue→start latency."""
    return time.time()


# --- process figures, from /proc so that no third-party package is needed in either venv ---


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rusage() -> dict[str, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {'utime': r.ru_utime, 'stime': r.ru_stime, 'nvcsw': r.ru_nvcsw, 'nivcsw': r.ru_nivcsw}


def memory_kib(pid: int | str = 'self') -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS) and USS (private pages, as psutil computes it) in KiB."""
    out: dict[str, int] = {}
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith(('VmRSS:', 'VmHWM:')):
                out[line.split(':')[0].lower()] = int(line.split()[1])
    uss = 0
    with open(f'/proc/{pid}/smaps_rollup') as f:
        for line in f:
            if line.startswith(('Private_Clean:', 'Private_Dirty:')):
                uss += int(line.split()[1])
    out['uss'] = uss
    return out


def implementation() -> dict[str, Any]:
    import redis

    import arq

    return {
        'arq_file': arq.__file__,
        'arq_version': getattr(arq, 'VERSION', '?'),
        'redis_py': redis.__version__,
        'python': sys.version.split()[0],
        'loop': type(asyncio.get_running_loop()).__module__,
    }


# --- the worker, configured from the environment (also read by arq-supervise in its children) ---


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


_marks: dict[str, Any] = {}


async def _on_startup(ctx: dict[str, Any]) -> None:
    redis = ctx['redis']
    if os.environ.get('BENCH_LOG_LEVEL'):  # here, not in main(), so that the supervisor's children honour it too
        logging.getLogger('arq').setLevel(os.environ['BENCH_LOG_LEVEL'])
    if os.environ.get('BENCH_SYNC', '1') == '1':
        _marks['idle_memory'] = memory_kib()
        await redis.rpush('bench:ready', os.getpid())
        await redis.blpop(['bench:go'], timeout=600)
    _marks['go_wall'] = time.time()
    _marks['go_cpu'] = cpu_s()
    _marks['go_rusage'] = rusage()
    if os.environ.get('BENCH_CPROFILE'):  # a deterministic profile of the measured part, for --profile
        import cProfile

        # CPU time, not wall time: on 2 busy cores a wall clock charges preemption to whatever call was running
        _marks['profiler'] = cProfile.Profile(time.process_time)
        _marks['profiler'].enable()


async def _on_shutdown(ctx: dict[str, Any]) -> None:
    profiler = _marks.pop('profiler', None)
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(os.environ['BENCH_CPROFILE'])
    out_dir = os.environ.get('BENCH_OUT_DIR')
    if not out_dir:
        return
    report = {
        'pid': os.getpid(),
        'jobs': _stats['jobs'],
        'first_start': _stats['first_start'],
        'last_end': _stats['last_end'],
        'go_wall': _marks.get('go_wall'),
        'cpu_s': cpu_s() - _marks.get('go_cpu', 0.0),
        'rusage': {k: v - _marks.get('go_rusage', {}).get(k, 0) for k, v in rusage().items()},
        'idle_memory': _marks.get('idle_memory'),
        'end_memory': memory_kib(),
        **implementation(),
    }
    with open(os.path.join(out_dir, f'worker-{os.getpid()}.json'), 'w') as f:
        json.dump(report, f)


class Settings:
    """arq worker settings for the benchmark; ``arq-supervise --procs P --burst tests.bench.driver.Settings``."""

    functions = [noop, sleep50, stamp]
    redis_settings = RedisSettings(host='127.0.0.1', port=int(os.environ.get('BENCH_REDIS_PORT', 6379)))
    poll_delay = _env_float('BENCH_POLL_DELAY', 0.5)
    max_jobs = int(os.environ.get('BENCH_MAX_JOBS', 10))
    allow_abort_jobs = os.environ.get('BENCH_ALLOW_ABORT') == '1'
    on_startup = _on_startup
    on_shutdown = _on_shutdown


def worker_kwargs() -> dict[str, Any]:
    return {
        'functions': Settings.functions,
        'redis_settings': Settings.redis_settings,
        'poll_delay': Settings.poll_delay,
        'max_jobs': Settings.max_jobs,
        'allow_abort_jobs': Settings.allow_abort_jobs,
        'on_startup': _on_startup,
        'on_shutdown': _on_shutdown,
    }


async def run_worker(burst: bool) -> None:
    worker = Worker(**worker_kwargs(), burst=burst)
    try:
        await worker.async_run()
    except asyncio.CancelledError:  # the published arq cancels its main task on SIGTERM
        pass
    finally:
        await worker.close()


# --- clients ---


def _line(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj) + '\n')
    sys.stdout.flush()


def _wait_for_go() -> None:
    """
    READY on stdout, then wait for a line on stdin: the orchestrator snapshots Redis in between. Blocking the loop
    is harmless here (the client has nothing else to do) and starts no thread that a profiler would sample.
    """
    _line({'ready': True})
    sys.stdin.readline()


async def run_enqueue(port: int, n: int, batch: int, bulk: bool) -> None:
    pool = await create_pool(RedisSettings(host='127.0.0.1', port=port))
    await pool.ping()
    _wait_for_go()
    cpu0, t0 = cpu_s(), time.perf_counter()
    if bulk:
        from arq.enqueue import JobCall  # ours only

        await pool.enqueue_jobs([JobCall.of('noop') for _ in range(n)])
    elif batch <= 1:
        for _ in range(n):
            await pool.enqueue_job('noop')
    else:
        for start in range(0, n, batch):
            await asyncio.gather(*(pool.enqueue_job('noop') for _ in range(min(batch, n - start))))
    wall, cpu = time.perf_counter() - t0, cpu_s() - cpu0
    _line({'wall_s': wall, 'cpu_s': cpu, 'n': n, **implementation()})
    sys.stdin.readline()  # after the Redis snapshot
    await pool.close()


async def run_latency(port: int, n: int, interval: float) -> None:
    pool = await create_pool(RedisSettings(host='127.0.0.1', port=port))
    await pool.ping()
    _wait_for_go()
    pickups: list[float] = []
    round_trips: list[float] = []

    async def follow(job: Any, enqueued_at: float) -> None:
        started_at = await job.result(timeout=60)  # default poll_delay: what an application gets
        round_trips.append(time.time() - enqueued_at)
        pickups.append(started_at - enqueued_at)

    loop = asyncio.get_running_loop()
    followers = []
    next_at = loop.time()
    for _ in range(n):
        enqueued_at = time.time()
        job = await pool.enqueue_job('stamp', enqueued_at)
        followers.append(asyncio.create_task(follow(job, enqueued_at)))
        next_at += interval
        await asyncio.sleep(max(next_at - loop.time(), 0))
    await asyncio.gather(*followers)
    _line({'pickup_s': pickups, 'round_trip_s': round_trips, **implementation()})
    await pool.close()


async def run_herd(port: int, n: int, interval: float) -> None:
    """One job at a time against idle workers, each waited for, then a pause so that every worker is idle again."""
    pool = await create_pool(RedisSettings(host='127.0.0.1', port=port))
    await pool.ping()
    _wait_for_go()
    t0 = time.time()
    for _ in range(n):
        job = await pool.enqueue_job('noop')
        assert job is not None
        await job.result(timeout=60, poll_delay=0.01)
        await asyncio.sleep(interval)
    _line({'wall_s': time.time() - t0, 'n': n, **implementation()})
    await pool.close()


async def run_waiters(port: int, n: int) -> None:
    """n jobs, then n concurrent ``job.result()``; the worker is released once they all wait."""
    pool = await create_pool(RedisSettings(host='127.0.0.1', port=port))
    jobs = [await pool.enqueue_job('noop') for _ in range(n)]  # sequential: one connection before the waiters
    returned: list[float] = []

    async def wait(job: Any) -> None:
        await job.result(timeout=600)  # the default poll_delay, what an application gets
        returned.append(time.time())

    waiters = [asyncio.create_task(wait(job)) for job in jobs]
    await asyncio.sleep(1.0)  # every waiter has started waiting (subscribed, or polled once)
    _line({'ready': True})
    cpu0 = cpu_s()
    await asyncio.gather(*waiters)
    _line({'first_return': min(returned), 'last_return': max(returned), 'cpu_s': cpu_s() - cpu0, **implementation()})
    await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('mode', choices=['worker', 'enqueue', 'latency', 'herd', 'waiters'])
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--n', type=int, default=20_000)
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--interval', type=float, default=0.02)
    parser.add_argument('--burst', action='store_true')
    parser.add_argument('--bulk', action='store_true')
    args = parser.parse_args()
    os.environ['BENCH_REDIS_PORT'] = str(args.port)
    Settings.redis_settings = RedisSettings(host='127.0.0.1', port=args.port)
    # arq's own logging setup (what the `arq` command does): INFO, one line per job start and end
    logging.config.dictConfig(default_log_config(False))
    coros = {
        'worker': lambda: run_worker(args.burst),
        'enqueue': lambda: run_enqueue(args.port, args.n, args.batch, args.bulk),
        'latency': lambda: run_latency(args.port, args.n, args.interval),
        'herd': lambda: run_herd(args.port, args.n, args.interval),
        'waiters': lambda: run_waiters(args.port, args.n),
    }
    coro = coros[args.mode]()
    # the published arq runs on asyncio's default loop unless told otherwise; both run on uvloop here
    uvloop.run(coro)


if __name__ == '__main__':
    main()
