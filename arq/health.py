"""The worker's health record: arq's `<queue>:health-check` line, written every `health_check_interval`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

from redis.exceptions import RedisError

from . import scripts
from .connections import ArqRedis, RedisSettings, create_pool
from .constants import default_queue_name, health_check_key_suffix
from .worker_options import get_kwargs

logger = logging.getLogger('arq.worker')

#: (complete, failed, retried, ongoing) now
Counters = Callable[[], tuple[int, int, int, int]]


def health_check_line(now: datetime, complete: int, failed: int, retried: int, ongoing: int, queued: int) -> str:
    """arq's health line, e.g. ``Nov-28 21:45:26 j_complete=2 j_failed=1 j_retried=1 j_ongoing=2 queued=3``."""
    return (
        f'{now:%b-%d %H:%M:%S} j_complete={complete} j_failed={failed} j_retried={retried} '
        f'j_ongoing={ongoing} queued={queued}'
    )


class HealthRecorder:
    def __init__(self, key: str, queue_name: str, interval_s: float, counters: Counters) -> None:
        self.key = key
        self.queue_name = queue_name
        self.interval_s = interval_s
        self.counters = counters
        self._last_at = 0.0
        self._last_logged: str | None = None
        self.last_line: str | None = None

    async def record(self, pool: ArqRedis, now: float) -> None:
        """Write the line if `interval_s` has passed since the last one (`now`: the loop's clock)."""
        if self._last_at and now - self._last_at < self.interval_s:
            return
        self._last_at = now
        queued = await pool.zcard(self.queue_name)
        line = health_check_line(datetime.now(), *self.counters(), queued)
        await pool.psetex(self.key, int((self.interval_s + 1) * 1000), line.encode())
        self.last_line = line
        # as arq: the first record is not logged, later ones only when the counters changed
        counters = line[line.index('j_complete=') :]
        if self._last_logged is not None and self._last_logged != counters:
            logger.info('recording health: %s', line)
        self._last_logged = counters

    async def delete(self, pool: ArqRedis) -> None:
        """Delete the key only if it is still our line: another worker on the queue may be alive (arq #291)."""
        if self.last_line is None:
            return
        with contextlib.suppress(RedisError, OSError):
            await pool.eval(scripts.DELETE_IF_EQUAL, 1, self.key, self.last_line)


async def async_check_health(
    redis_settings: RedisSettings | None, health_check_key: str | None = None, queue_name: str | None = None
) -> int:
    redis_settings = redis_settings or RedisSettings()
    redis: ArqRedis = await create_pool(redis_settings)
    queue_name = queue_name or default_queue_name
    health_check_key = health_check_key or (queue_name + health_check_key_suffix)
    try:
        data: bytes | None = await redis.get(health_check_key)  # type: ignore[assignment]
    finally:
        await redis.close()
    if not data:
        logger.warning('Health check failed: no health check sentinel value found')
        return 1
    logger.info('Health check successful: %s', data.decode(errors='replace'))
    return 0


def check_health(settings_cls: Any) -> int:
    """Run a health check on the worker and return the appropriate exit code: 0 if healthy, 1 if not."""
    cls_kwargs = get_kwargs(settings_cls)
    redis_settings = cast(RedisSettings | None, cls_kwargs.get('redis_settings'))
    health_check_key = cast(str | None, cls_kwargs.get('health_check_key'))
    queue_name = cast(str | None, cls_kwargs.get('queue_name'))
    return asyncio.run(async_check_health(redis_settings, health_check_key, queue_name))
