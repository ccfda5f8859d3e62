"""The five hooks, their order, and what the job context holds."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import redis

from arq.connections import ArqRedis
from arq.worker import func
from tests.worker.helpers import WorkerFactory


async def record_ctx(ctx: dict[str, Any]) -> str:
    ctx['seen'].append({k: v for k, v in ctx.items() if k != 'seen'})
    return 'ok'


async def test_hooks_run_in_order_around_job(arq_redis: ArqRedis, worker: WorkerFactory) -> None:
    events: list[str] = []

    async def on_startup(ctx: dict[str, Any]) -> None:
        events.append('on_startup')

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        events.append('on_shutdown')

    async def on_job_start(ctx: dict[str, Any]) -> None:
        events.append(f'on_job_start {ctx["job_id"]}')

    async def on_job_end(ctx: dict[str, Any]) -> None:
        has_result = await ctx['redis'].exists(f'arq:result:{ctx["job_id"]}')
        events.append(f'on_job_end {ctx["job_id"]} result={has_result}')

    async def after_job_end(ctx: dict[str, Any]) -> None:
        has_result = await ctx['redis'].exists(f'arq:result:{ctx["job_id"]}')
        events.append(f'after_job_end {ctx["job_id"]} result={has_result}')

    async def job(ctx: dict[str, Any]) -> None:
        events.append(f'job {ctx["job_id"]}')

    j = await arq_redis.enqueue_job('job', _job_id='the-job')
    assert j is not None
    w = worker(
        functions=[func(job, name='job')],
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        on_job_start=on_job_start,
        on_job_end=on_job_end,
        after_job_end=after_job_end,
    )
    await w.main()
    await w.close()
    assert events == [
        'on_startup',
        'on_job_start the-job',
        'job the-job',
        'on_job_end the-job result=0',
        'after_job_end the-job result=1',
        'on_shutdown',
    ]


async def test_hooks_also_run_for_failed_jobs(arq_redis: ArqRedis, worker: WorkerFactory) -> None:
    events: list[str] = []

    async def on_job_start(ctx: dict[str, Any]) -> None:
        events.append('on_job_start')

    async def on_job_end(ctx: dict[str, Any]) -> None:
        events.append('on_job_end')

    async def after_job_end(ctx: dict[str, Any]) -> None:
        events.append('after_job_end')

    async def boom(ctx: dict[str, Any]) -> None:
        raise ValueError('boom')

    await arq_redis.enqueue_job('boom')
    await worker(
        functions=[func(boom, name='boom')],
        on_job_start=on_job_start,
        on_job_end=on_job_end,
        after_job_end=after_job_end,
    ).main()
    assert events == ['on_job_start', 'on_job_end', 'after_job_end']


async def test_startup_ctx_has_redis_pool_and_user_ctx(worker: WorkerFactory) -> None:
    seen: dict[str, Any] = {}

    async def on_startup(ctx: dict[str, Any]) -> None:
        seen.update(ctx)
        ctx['from_startup'] = 'shared'

    w = worker(functions=[record_ctx], on_startup=on_startup, ctx={'mine': 1, 'seen': []})
    await w.main()
    assert isinstance(seen['redis'], ArqRedis)
    assert seen['mine'] == 1


async def test_job_ctx_contains_redis_job_id_job_try_enqueue_time_score(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, queue_name: str
) -> None:
    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx['from_startup'] = 'shared'

    job = await arq_redis.enqueue_job('record_ctx', _job_id='ctx-job')
    assert job is not None
    score = sync_redis.zscore(queue_name, 'ctx-job')
    enqueue_info = await job.info()
    assert enqueue_info is not None
    seen: list[dict[str, Any]] = []
    w = worker(functions=[record_ctx], ctx={'mine': 1, 'seen': seen}, on_startup=on_startup)
    await w.main()
    [ctx] = seen
    assert isinstance(ctx['redis'], ArqRedis)
    assert ctx['job_id'] == 'ctx-job'
    assert ctx['job_try'] == 1
    assert isinstance(ctx['enqueue_time'], datetime)
    assert ctx['enqueue_time'] == enqueue_info.enqueue_time
    assert ctx['score'] == score
    assert isinstance(ctx['score'], int)
    assert ctx['mine'] == 1
    assert ctx['from_startup'] == 'shared'


async def test_ctx_redis_enqueues_onto_same_redis(arq_redis: ArqRedis, worker: WorkerFactory, queue_name: str) -> None:
    async def spawn(ctx: dict[str, Any]) -> None:
        await ctx['redis'].enqueue_job('child', 5, _queue_name=queue_name)

    async def child(ctx: dict[str, Any], x: int) -> int:
        return x * 2

    await arq_redis.enqueue_job('spawn')
    w = worker(functions=[func(spawn, name='spawn'), func(child, name='child')])
    assert await w.run_check() == 2
    results = await arq_redis.all_job_results()
    assert sorted(str(r.result) for r in results) == ['10', 'None']
