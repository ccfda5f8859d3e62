"""Results: the dict written to Redis, how long it is kept, and how clients read it back."""

from __future__ import annotations

import pickle
import time
from datetime import datetime
from typing import Any

import pytest
import redis

from arq.connections import ArqRedis
from arq.jobs import Job, JobDef, JobResult, JobStatus, ResultNotFound
from arq.worker import func
from tests.worker.helpers import WorkerFactory


class JobFailure(ValueError):
    pass


async def add(ctx: dict[str, Any], a: int, b: int = 0) -> int:
    return a + b


async def fail(ctx: dict[str, Any]) -> None:
    raise JobFailure('it went wrong')


async def nothing(ctx: dict[str, Any]) -> None:
    return None


async def test_result_dict_has_the_eleven_keys(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, queue_name: str
) -> None:
    job = await arq_redis.enqueue_job('add', 1, b=2)
    assert job is not None
    before = int(time.time() * 1000)
    await worker(functions=[add]).main()
    after = int(time.time() * 1000)
    data = pickle.loads(sync_redis.get(f'arq:result:{job.job_id}'))
    assert set(data) == {'t', 'f', 'a', 'k', 'et', 's', 'r', 'st', 'ft', 'q', 'id'}
    assert data['t'] == 1
    assert data['f'] == 'add'
    assert data['a'] == (1,)
    assert data['k'] == {'b': 2}
    assert data['s'] is True
    assert data['r'] == 3
    assert data['q'] == queue_name
    assert data['id'] == job.job_id
    assert data['et'] <= data['st'] <= data['ft']
    assert before - 1 <= data['st'] <= data['ft'] <= after + 1


async def test_success_cleans_job_retry_in_progress_keys_and_queue_entry(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, queue_name: str
) -> None:
    job = await arq_redis.enqueue_job('add', 1)
    assert job is not None
    await worker(functions=[add]).main()
    jid = job.job_id
    assert sync_redis.exists(f'arq:job:{jid}', f'arq:retry:{jid}', f'arq:in-progress:{jid}') == 0
    assert sync_redis.zscore(queue_name, jid) is None
    assert sync_redis.exists(f'arq:result:{jid}') == 1


async def test_result_ttl_is_keep_result_seconds(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory
) -> None:
    job = await arq_redis.enqueue_job('add', 1)
    assert job is not None
    await worker(functions=[add], keep_result=120).main()
    assert 115_000 < sync_redis.pttl(f'arq:result:{job.job_id}') <= 120_000


async def test_result_ttl_defaults_to_one_hour(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory
) -> None:
    job = await arq_redis.enqueue_job('add', 1)
    assert job is not None
    await worker(functions=[add]).main()
    assert 3_595_000 < sync_redis.pttl(f'arq:result:{job.job_id}') <= 3_600_000


async def test_keep_result_forever_stores_result_without_ttl(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory
) -> None:
    job = await arq_redis.enqueue_job('add', 1)
    assert job is not None
    await worker(functions=[add], keep_result_forever=True).main()
    assert sync_redis.pttl(f'arq:result:{job.job_id}') == -1
    assert await job.result(timeout=5) == 1


async def test_keep_result_forever_also_for_failures_of_the_job(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory
) -> None:
    job = await arq_redis.enqueue_job('fail')
    assert job is not None
    await worker(functions=[fail], keep_result_forever=True).main()
    assert sync_redis.pttl(f'arq:result:{job.job_id}') == -1
    with pytest.raises(JobFailure, match='it went wrong'):
        await job.result(timeout=5)


async def test_keep_result_zero_stores_no_result(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, queue_name: str
) -> None:
    job = await arq_redis.enqueue_job('add', 1)
    assert job is not None
    await worker(functions=[add], keep_result=0).main()
    assert sync_redis.exists(f'arq:result:{job.job_id}') == 0
    assert sync_redis.zscore(queue_name, job.job_id) is None
    assert await job.status() == JobStatus.not_found
    with pytest.raises(ResultNotFound):
        await job.result(timeout=5)


async def test_function_keep_result_overrides_worker(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory
) -> None:
    short = await arq_redis.enqueue_job('add', 1)
    none = await arq_redis.enqueue_job('nothing')
    assert short is not None and none is not None
    await worker(functions=[func(add, keep_result=30), func(nothing, keep_result=0)], keep_result=3600).main()
    assert 25_000 < sync_redis.pttl(f'arq:result:{short.job_id}') <= 30_000
    assert sync_redis.exists(f'arq:result:{none.job_id}') == 0


async def test_function_keep_result_forever_overrides_worker(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory
) -> None:
    job = await arq_redis.enqueue_job('add', 1)
    assert job is not None
    await worker(functions=[func(add, keep_result_forever=True)], keep_result=10).main()
    assert sync_redis.pttl(f'arq:result:{job.job_id}') == -1


async def test_function_registered_under_custom_name(arq_redis: ArqRedis, worker: WorkerFactory) -> None:
    job = await arq_redis.enqueue_job('adder', 2, b=3)
    assert job is not None
    await worker(functions=[func(add, name='adder')]).main()
    assert await job.result(timeout=5) == 5


async def test_job_result_reraises_the_job_exception(arq_redis: ArqRedis, worker: WorkerFactory) -> None:
    job = await arq_redis.enqueue_job('fail')
    assert job is not None
    await worker(functions=[fail]).main()
    with pytest.raises(JobFailure, match='it went wrong'):
        await job.result(timeout=5)
    info = await job.result_info()
    assert info is not None
    assert info.success is False
    assert isinstance(info.result, JobFailure)


async def test_job_result_waits_for_the_worker(arq_redis: ArqRedis, worker: WorkerFactory) -> None:
    job = await arq_redis.enqueue_job('add', 20, b=22)
    assert job is not None
    worker.start(worker(functions=[add], burst=False, poll_delay=0.05))
    assert await job.result(timeout=10, poll_delay=0.05) == 42


async def test_job_result_times_out_when_nothing_runs_it(arq_redis: ArqRedis) -> None:
    job = await arq_redis.enqueue_job('add', 1)
    assert job is not None
    with pytest.raises(TimeoutError):
        await job.result(timeout=0.1, poll_delay=0.02)


async def test_job_result_raises_result_not_found_for_unknown_job(arq_redis: ArqRedis, queue_name: str) -> None:
    with pytest.raises(ResultNotFound):
        await Job('does-not-exist', arq_redis, _queue_name=queue_name).result(timeout=1)


async def test_info_of_queued_job_is_job_def_with_score(
    arq_redis: ArqRedis, sync_redis: redis.Redis, queue_name: str
) -> None:
    job = await arq_redis.enqueue_job('add', 1, b=2, _defer_by=60)
    assert job is not None
    info = await job.info()
    assert isinstance(info, JobDef)
    assert not isinstance(info, JobResult)
    assert info.function == 'add'
    assert info.args == (1,)
    assert info.kwargs == {'b': 2}
    assert info.job_try is None
    assert isinstance(info.enqueue_time, datetime)
    assert info.enqueue_time.tzinfo is not None
    assert info.score == sync_redis.zscore(queue_name, job.job_id)
    assert await job.result_info() is None


async def test_info_and_result_info_of_finished_job_is_job_result(
    arq_redis: ArqRedis, worker: WorkerFactory, queue_name: str
) -> None:
    job = await arq_redis.enqueue_job('add', 1, b=2)
    assert job is not None
    await worker(functions=[add]).main()
    for info in (await job.info(), await job.result_info()):
        assert isinstance(info, JobResult)
        assert info.function == 'add'
        assert info.args == (1,)
        assert info.kwargs == {'b': 2}
        assert info.job_try == 1
        assert info.success is True
        assert info.result == 3
        assert info.queue_name == queue_name
        assert info.job_id == job.job_id
        assert info.enqueue_time <= info.start_time <= info.finish_time
    info = await job.info()
    assert info is not None
    assert info.score is None


async def test_info_of_unknown_job_is_none(arq_redis: ArqRedis, queue_name: str) -> None:
    job = Job('nope', arq_redis, _queue_name=queue_name)
    assert await job.info() is None
    assert await job.result_info() is None


async def test_queued_jobs_lists_queued_and_deferred_jobs_with_scores(
    arq_redis: ArqRedis, sync_redis: redis.Redis, queue_name: str
) -> None:
    now_job = await arq_redis.enqueue_job('add', 1)
    later_job = await arq_redis.enqueue_job('add', 2, _defer_by=60)
    await arq_redis.enqueue_job('add', 3, _queue_name=queue_name + ':elsewhere')
    assert now_job is not None and later_job is not None
    jobs = await arq_redis.queued_jobs()
    assert [(j.job_id, j.function, j.args) for j in jobs] == [
        (now_job.job_id, 'add', (1,)),
        (later_job.job_id, 'add', (2,)),
    ]
    assert all(isinstance(j, JobDef) for j in jobs)
    assert jobs[1].score == sync_redis.zscore(queue_name, later_job.job_id)
    elsewhere = await arq_redis.queued_jobs(queue_name=queue_name + ':elsewhere')
    assert [j.args for j in elsewhere] == [(3,)]


async def test_queued_jobs_of_empty_queue_is_empty(arq_redis: ArqRedis) -> None:
    assert list(await arq_redis.queued_jobs()) == []


async def test_all_job_results_covers_every_queue_sorted_by_enqueue_time(
    arq_redis: ArqRedis, worker: WorkerFactory, queue_name: str
) -> None:
    first = await arq_redis.enqueue_job('add', 1)
    second = await arq_redis.enqueue_job('fail')
    third = await arq_redis.enqueue_job('add', 3, _queue_name=queue_name + ':b')
    assert first is not None and second is not None and third is not None
    await worker(functions=[add, fail]).main()
    await worker(functions=[add], queue_name=queue_name + ':b').main()
    results = await arq_redis.all_job_results()
    assert sorted(r.job_id for r in results) == sorted([first.job_id, second.job_id, third.job_id])
    assert [r.enqueue_time for r in results] == sorted(r.enqueue_time for r in results)
    by_id = {r.job_id: (r.success, r.queue_name) for r in results}
    assert by_id[first.job_id] == (True, queue_name)
    assert by_id[second.job_id] == (False, queue_name)
    assert by_id[third.job_id] == (True, queue_name + ':b')
    assert all(isinstance(r, JobResult) for r in results)


async def test_all_job_results_empty_without_results(arq_redis: ArqRedis) -> None:
    assert list(await arq_redis.all_job_results()) == []


async def test_result_written_without_queue_and_id_reads_with_defaults(
    arq_redis: ArqRedis, sync_redis: redis.Redis, queue_name: str
) -> None:
    old = {'t': 1, 'f': 'add', 'a': (1,), 'k': {}, 'et': 1_700_000_000_000, 's': True, 'r': 1}
    sync_redis.set('arq:result:old-style', pickle.dumps({**old, 'st': 1_700_000_000_001, 'ft': 1_700_000_000_002}))
    info = await Job('old-style', arq_redis, _queue_name=queue_name).result_info()
    assert info is not None
    assert (info.queue_name, info.job_id, info.result) == ('<unknown>', '<unknown>', 1)
    [listed] = await arq_redis.all_job_results()
    assert listed.job_id == 'old-style'
