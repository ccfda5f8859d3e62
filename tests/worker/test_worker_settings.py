"""Worker settings as arq reads them: a class with its own attributes, or a dict, through create_worker."""

from __future__ import annotations

from typing import Any

from arq.connections import ArqRedis, RedisSettings
from arq.worker import Worker, create_worker


async def add(ctx: dict[str, Any], a: int, b: int = 0) -> int:
    return a + b


async def test_create_worker_from_settings_class(
    arq_redis: ArqRedis, redis_settings: RedisSettings, queue_name: str
) -> None:
    class WorkerSettings:
        functions = [add]
        redis_settings = None
        queue_name = ''
        burst = True
        poll_delay = 0
        max_jobs = 3
        not_a_worker_option = 'ignored'

    WorkerSettings.redis_settings = redis_settings  # type: ignore[assignment]
    WorkerSettings.queue_name = queue_name
    job = await arq_redis.enqueue_job('add', 1, b=2)
    assert job is not None
    w = create_worker(WorkerSettings)
    try:
        assert isinstance(w, Worker)
        assert w.queue_name == queue_name
        assert w.max_jobs == 3
        assert await w.run_check() == 1
    finally:
        await w.close()
    assert await job.result(timeout=5) == 3


async def test_create_worker_from_dict_with_overrides(
    arq_redis: ArqRedis, redis_settings: RedisSettings, queue_name: str
) -> None:
    settings = {'functions': [add], 'redis_settings': redis_settings, 'queue_name': queue_name, 'burst': False}
    job = await arq_redis.enqueue_job('add', 5)
    assert job is not None
    w = create_worker(settings, burst=True, poll_delay=0)
    try:
        assert await w.run_check() == 1
    finally:
        await w.close()
    assert await job.result(timeout=5) == 5
