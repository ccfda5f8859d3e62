"""Helpers shared by the worker suite: the worker factory and a runner for the `arq` command."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from arq.connections import RedisSettings
from arq.worker import Worker


class WorkerFactory:
    """`worker(functions=[...], **kw)` builds a Worker bound to the test's database and queue.

    Defaults follow arq's own tests: `burst=True, poll_delay=0`. `start(w)` runs a (non-burst) worker in the
    background; teardown cancels background runs and closes every worker that was created.
    """

    def __init__(self, redis_settings: RedisSettings, queue_name: str) -> None:
        self.redis_settings = redis_settings
        self.queue_name = queue_name
        self.workers: list[Worker] = []
        self.tasks: list[asyncio.Task[None]] = []

    def __call__(
        self, functions: Sequence[Any] = (), *, burst: bool = True, poll_delay: float = 0, **kwargs: Any
    ) -> Worker:
        kwargs.setdefault('queue_name', self.queue_name)
        if 'redis_pool' not in kwargs:
            kwargs.setdefault('redis_settings', self.redis_settings)
        w = Worker(functions=functions, burst=burst, poll_delay=poll_delay, **kwargs)
        self.workers.append(w)
        return w

    def start(self, w: Worker) -> asyncio.Task[None]:
        task = asyncio.create_task(w.async_run())
        self.tasks.append(task)
        return task

    async def teardown(self) -> None:
        for task in self.tasks:
            if not task.done():
                task.cancel()
            with contextlib.suppress(BaseException):
                await task
        for w in self.workers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(w.close(), 10)


def arq_import_root() -> str:
    """The directory that holds the `arq` package this test run imports (ours, or the published one)."""
    import arq

    return str(Path(arq.__file__).resolve().parent.parent)


def run_arq_cli(args: Sequence[str], cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run `python -m arq ARGS` in a subprocess against the same `arq` package the tests import."""
    env = {**os.environ, 'PYTHONPATH': arq_import_root()}
    return subprocess.run(
        [sys.executable, '-m', 'arq', *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


async def wait_worker_ready(redis: Any, queue_name: str, timeout: float = 10) -> None:
    """A started worker has done its first loop iteration once it has written its health-check key."""
    from tests.support.waiting import async_wait_until

    key = queue_name + ':health-check'
    await async_wait_until(lambda: redis.exists(key), timeout=timeout, message=f'{key} to be written by the worker')


def write_settings_module(directory: Path, name: str, source: str) -> str:
    """Write a settings module for the CLI tests and return its module name."""
    (directory / f'{name}.py').write_text(source)
    return name


async def wait_for_key(redis: Any, key: str, timeout: float = 10) -> None:
    """Wait until `key` exists: jobs set a key when they start, so tests can act on facts rather than sleeps."""
    from tests.support.waiting import async_wait_until

    await async_wait_until(lambda: redis.exists(key), timeout=timeout, message=f'key {key} to exist')


async def wait_for(check: Callable[[], bool], *, timeout: float, message: str) -> None:
    """Wait until the synchronous `check()` holds (polled on the running loop), or fail after `timeout` seconds."""
    from tests.support.waiting import async_wait_until

    async def probe() -> bool:
        return check()

    await async_wait_until(probe, timeout=timeout, message=message)
