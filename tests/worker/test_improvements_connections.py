"""arq 0.26.3 on a current redis-py: closing a pool the documented way must not warn.

Fails on the published arq with redis-py >= 5.0.1 (Redis.close is deprecated there); the reference run skips it.
"""

from __future__ import annotations

import warnings

from arq.connections import RedisSettings, create_pool
from tests.worker.helpers import WorkerFactory


async def noop(ctx: dict[str, object]) -> None:
    return None


async def test_pool_close_with_close_connection_pool_does_not_warn(redis_settings: RedisSettings) -> None:
    pool = await create_pool(redis_settings)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        await pool.close(close_connection_pool=True)


async def test_worker_close_does_not_warn(worker: WorkerFactory) -> None:
    w = worker(functions=[noop])
    await w.main()
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        await w.close()


async def test_duplicate_enqueue_does_not_warn(redis_settings: RedisSettings) -> None:
    pool = await create_pool(redis_settings)
    try:
        assert await pool.enqueue_job('noop', _job_id='once') is not None
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            assert await pool.enqueue_job('noop', _job_id='once') is None
    finally:
        await pool.aclose()
