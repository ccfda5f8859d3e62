"""The demo's jobs and worker settings: what a user's `app.py` looks like."""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

from arq import Retry, cron, func
from arq.connections import RedisSettings


async def resize_image(ctx: dict[str, Any], image_id: int) -> str:
    await asyncio.sleep(random.uniform(0.01, 0.05))  # simulated I/O
    return f'thumbnail-{image_id}.png'


async def send_email(ctx: dict[str, Any], to: str) -> str:
    # fails on its first try a third of the time, to show retries
    if ctx['job_try'] == 1 and random.random() < 0.33:
        raise Retry(defer=0.2)
    await asyncio.sleep(0.01)
    return f'sent to {to}'


async def flaky_report(ctx: dict[str, Any], n: int) -> None:
    raise ValueError(f'report {n} has no data')


async def heartbeat(ctx: dict[str, Any]) -> None:
    await ctx['redis'].incr('demo:cron-ticks')


class WorkerSettings:
    functions = [resize_image, send_email, func(flaky_report, max_tries=1)]
    # every second; each run is enqueued once, however many workers there are
    cron_jobs = [cron(heartbeat, second=None)]
    redis_settings = RedisSettings.from_dsn(os.environ.get('REDIS_URL', 'redis://localhost:6379'))
    queue_name = 'demo:queue'
    max_jobs = 20
    job_completion_wait = 10
