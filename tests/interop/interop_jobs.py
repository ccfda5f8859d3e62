"""Job functions shared by our worker and the published arq's worker in the interop tests.

Both sides import this module as `tests.interop.interop_jobs`, so exceptions raised here pickle under one module path
and load on either side. It imports `arq` by name: in the published-arq subprocess that is the published package, in
the test process it is ours.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from arq.worker import Retry, func


class JobFailure(ValueError):
    pass


async def add(ctx: dict[str, Any], a: int, b: int = 0) -> int:
    return a + b


async def fail(ctx: dict[str, Any], message: str = 'it went wrong') -> None:
    raise JobFailure(message)


async def retry_once(ctx: dict[str, Any]) -> str:
    if ctx['job_try'] == 1:
        raise Retry(defer=0.05)
    return f'done on try {ctx["job_try"]}'


async def always_retry(ctx: dict[str, Any]) -> None:
    raise Retry()


async def retry_later(ctx: dict[str, Any]) -> None:
    raise Retry(defer=1.5)


async def slow(ctx: dict[str, Any]) -> None:
    await asyncio.sleep(30)  # simulated work, cut short by the function's timeout


async def count_run(ctx: dict[str, Any], work_s: float = 0.05) -> int:
    """Record each execution: INCR on a key named after the job id, and which process ran it."""
    redis = ctx['redis']
    runs = await redis.incr(f'interop:runs:{ctx["job_id"]}')
    await redis.rpush('interop:ran-by', os.getpid())
    await asyncio.sleep(work_s)  # simulated work, so that both workers get a share
    return int(runs)


async def gated(ctx: dict[str, Any]) -> str:
    redis = ctx['redis']
    await redis.set(f'interop:started:{ctx["job_id"]}', os.getpid())
    while not await redis.exists(f'interop:release:{ctx["job_id"]}'):
        await asyncio.sleep(0.02)  # simulated work that lasts until the test releases it
    return 'released'


async def echo_ctx(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    return {'args': list(args), 'kwargs': kwargs, 'job_id': ctx['job_id'], 'job_try': ctx['job_try']}


async def cron_tick(ctx: dict[str, Any]) -> None:
    await ctx['redis'].rpush('interop:cron-runs', f'{ctx["job_id"]} {os.getpid()}')


FUNCTIONS = [
    add,
    fail,
    retry_once,
    func(always_retry, max_tries=2),
    retry_later,
    func(slow, timeout=0.2),
    count_run,
    gated,
    echo_ctx,
]
