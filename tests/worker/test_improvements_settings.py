"""Settings classes with inherited attributes, and a DST-correct default cron timezone.

These fail on the published arq by design; the reference run skips files named test_improvements_*.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from arq.connections import ArqRedis, RedisSettings
from arq.worker import Worker, create_worker


async def add(ctx: dict[str, Any], a: int, b: int = 0) -> int:
    return a + b


async def test_settings_class_inherits_attributes(
    arq_redis: ArqRedis, redis_settings: RedisSettings, queue_name: str
) -> None:
    """arq reads only `Settings.__dict__`, so a subclass of a base settings class registers nothing."""

    class BaseSettings:
        functions = [add]
        redis_settings = None
        queue_name = ''
        poll_delay = 0
        max_jobs = 4

    BaseSettings.redis_settings = redis_settings  # type: ignore[assignment]
    BaseSettings.queue_name = queue_name

    class WorkerSettings(BaseSettings):
        burst = True
        max_jobs = 2

    job = await arq_redis.enqueue_job('add', 2, b=3)
    assert job is not None
    w = create_worker(WorkerSettings)
    try:
        assert w.queue_name == queue_name
        assert w.max_jobs == 2, 'the subclass wins over its base'
        assert await w.run_check() == 1
    finally:
        await w.close()
    assert await job.result(timeout=5) == 5


@pytest.fixture
def london_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv('TZ', 'Europe/London')
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


async def test_default_timezone_follows_daylight_saving_time(london_time: None, redis_settings: RedisSettings) -> None:
    """arq freezes the UTC offset in force at start-up, so crons drift by an hour across a DST change."""
    w = Worker(functions=[add], redis_settings=redis_settings, handle_signals=False)
    tz = w.timezone
    assert tz is not None
    assert tz.utcoffset(datetime(2026, 1, 15, 12, 0)) == timedelta(0)
    assert tz.utcoffset(datetime(2026, 7, 15, 12, 0)) == timedelta(hours=1)
