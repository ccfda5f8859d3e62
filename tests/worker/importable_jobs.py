"""Job functions registered by dotted path (`func('tests.worker.importable_jobs.multiply')`, `cron('…')`)."""

from __future__ import annotations

from typing import Any


async def multiply(ctx: dict[str, Any], a: int, b: int) -> int:
    return a * b


async def tick(ctx: dict[str, Any]) -> None:
    await ctx['redis'].rpush('ticks', ctx['job_id'])
