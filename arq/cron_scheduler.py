"""Enqueueing the cron jobs that are due (the worker calls this every loop turn)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from .connections import ArqRedis
from .cron import CronJob
from .utils import to_unix_ms


async def enqueue_due(
    pool: ArqRedis, cron_jobs: Sequence[CronJob], queue_name: str, n: datetime, delay: float, num_windows: int = 2
) -> int:
    """
    Enqueue the cron jobs due before `n` + `num_windows` × `delay` seconds; returns how many.

    :param n: now, in the worker's timezone
    :param delay: the poll window in seconds
    """
    # compare instants, not wall clocks: datetimes sharing a zone compare by wall time, ignoring DST's fold
    now_ts = n.timestamp()
    cutoff_ts = now_ts + delay * num_windows
    enqueues = []
    for cron_job in cron_jobs:
        if cron_job.next_run is None:
            if cron_job.run_at_startup:
                cron_job.next_run = n
            else:
                cron_job.calculate_next(n)
                continue
        next_run = cron_job.next_run
        if next_run.timestamp() < cutoff_ts:
            if cron_job.job_id:
                job_id: str | None = cron_job.job_id
            else:
                job_id = f'{cron_job.name}:{to_unix_ms(next_run)}' if cron_job.unique else None
            defer_until = next_run if next_run.timestamp() > now_ts else None
            enqueues.append(
                pool.enqueue_job(cron_job.name, _job_id=job_id, _queue_name=queue_name, _defer_until=defer_until)
            )
            cron_job.calculate_next(next_run)
    if enqueues:
        await asyncio.gather(*enqueues)
    return len(enqueues)
