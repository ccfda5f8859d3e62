"""The parent's release of a dead child's jobs, called directly against the real redis-server (no processes)."""

from __future__ import annotations

import pickle
import time
from typing import Any

import redis

from arq.connections import RedisSettings
from arq.jobs import deserialize_result, serialize_job
from arq.worker import func
from arq_supervise.release import JobReleaser, RedisLink, ReleaseQueue
from arq_supervise.settings import WorkerSettings
from tests.support.redis_server import RedisServer


def _settings(redis_server: RedisServer, db: int, queue: str, **kwargs: Any) -> WorkerSettings:
    redis_settings = RedisSettings(port=redis_server.port, database=db)
    return WorkerSettings('x.WorkerSettings', {'queue_name': queue, 'redis_settings': redis_settings, **kwargs})


def _claimed_job(r: redis.Redis, queue: str, job_id: str, job_try: int = 1, token: str = 'w1:1') -> None:
    """A job as worker `w1` holds it: queued, payload present, retry counter raised, in-progress key leased."""
    r.psetex(f'arq:job:{job_id}', 60_000, serialize_job('crunch', (1, 2), {'k': 'v'}, None, 1_700_000_000_000))
    r.zadd(queue, {job_id: 1_700_000_000_000})
    r.set(f'arq:retry:{job_id}', job_try)
    r.psetex(f'arq:in-progress:{job_id}', 12_000, token)


def _releaser(settings: WorkerSettings) -> JobReleaser:
    return JobReleaser(RedisLink(settings.redis_settings), settings)


def test_first_death_releases_the_job_at_once(
    redis_server: RedisServer, redis_db: int, sync_redis: redis.Redis, queue_name: str
) -> None:
    _claimed_job(sync_redis, queue_name, 'j1')
    [released] = _releaser(_settings(redis_server, redis_db, queue_name)).release(
        ['j1'], death='killed by SIGKILL', count_death=True, worker_id='w1'
    )
    assert (released.outcome, released.deaths) == ('released', 1)
    assert not sync_redis.exists('arq:in-progress:j1')
    assert sync_redis.zscore(queue_name, 'j1') is not None
    assert sync_redis.get('arq:deaths:j1') == b'1'
    assert 0 < sync_redis.pttl('arq:deaths:j1') <= 86_400_000


def test_a_death_we_caused_is_not_counted(
    redis_server: RedisServer, redis_db: int, sync_redis: redis.Redis, queue_name: str
) -> None:
    _claimed_job(sync_redis, queue_name, 'j1')
    [released] = _releaser(_settings(redis_server, redis_db, queue_name)).release(
        ['j1'], death='killed by SIGKILL', count_death=False, worker_id='w1'
    )
    assert (released.outcome, released.deaths) == ('released', 0)
    assert not sync_redis.exists('arq:in-progress:j1', 'arq:deaths:j1')


def test_jobs_no_longer_held_are_left_alone(
    redis_server: RedisServer, redis_db: int, sync_redis: redis.Redis, queue_name: str
) -> None:
    _claimed_job(sync_redis, queue_name, 'finished')
    sync_redis.zrem(queue_name, 'finished')  # its finish was committed just before the death
    _claimed_job(sync_redis, queue_name, 'lapsed')
    sync_redis.delete('arq:in-progress:lapsed')  # lease gone: maybe someone else's to claim now
    results = _releaser(_settings(redis_server, redis_db, queue_name)).release(
        ['finished', 'lapsed'], death='killed by SIGKILL', count_death=True, worker_id='w1'
    )
    assert results == []
    assert sync_redis.exists('arq:in-progress:finished') == 1
    assert not sync_redis.exists('arq:deaths:finished', 'arq:deaths:lapsed')


def test_second_death_fails_the_job_with_an_arq_result(
    redis_server: RedisServer, redis_db: int, sync_redis: redis.Redis, queue_name: str
) -> None:
    releaser = _releaser(_settings(redis_server, redis_db, queue_name, keep_result=120))
    _claimed_job(sync_redis, queue_name, 'poison')
    releaser.release(['poison'], death='killed by SIGKILL', count_death=True, worker_id='w1')
    _claimed_job(sync_redis, queue_name, 'poison', job_try=2)
    before_ms = time.time() * 1000
    [failed] = releaser.release(['poison'], death='killed by SIGKILL', count_death=True, worker_id='w1')

    assert (failed.outcome, failed.deaths) == ('failed', 2)
    result = deserialize_result(sync_redis.get('arq:result:poison'))  # type: ignore[arg-type]
    assert result.success is False
    assert type(result.result).__name__ == 'JobExecutionFailed'
    assert str(result.result) == 'worker killed by SIGKILL while running this job, twice'
    assert (result.function, result.args, result.kwargs, result.job_try) == ('crunch', (1, 2), {'k': 'v'}, 2)
    assert result.queue_name == queue_name
    assert result.finish_time.timestamp() * 1000 >= before_ms - 1000
    assert 0 < sync_redis.pttl('arq:result:poison') <= 120_000
    assert sync_redis.zscore(queue_name, 'poison') is None
    gone = ['arq:job:poison', 'arq:retry:poison', 'arq:in-progress:poison', 'arq:deaths:poison']
    assert not sync_redis.exists(*gone)


def test_failed_result_follows_keep_result_forever_and_zero(
    redis_server: RedisServer, redis_db: int, sync_redis: redis.Redis, queue_name: str
) -> None:
    for job_id, kwargs, ttl in (('forever', {'keep_result_forever': True}, -1), ('none', {'keep_result': 0}, -2)):
        releaser = _releaser(_settings(redis_server, redis_db, queue_name, **kwargs))
        _claimed_job(sync_redis, queue_name, job_id)
        sync_redis.set(f'arq:deaths:{job_id}', 1)
        [failed] = releaser.release([job_id], death='exited with code 13', count_death=True, worker_id='w1')
        assert failed.outcome == 'failed'
        assert sync_redis.pttl(f'arq:result:{job_id}') == ttl
        assert sync_redis.zscore(queue_name, job_id) is None


async def crunch(ctx: dict[str, Any]) -> None:
    return None


def test_failed_result_follows_the_functions_own_keep_result(
    redis_server: RedisServer, redis_db: int, sync_redis: redis.Redis, queue_name: str
) -> None:
    settings = _settings(redis_server, redis_db, queue_name, keep_result=3600, functions=[func(crunch, keep_result=30)])
    _claimed_job(sync_redis, queue_name, 'own')
    sync_redis.set('arq:deaths:own', 1)
    [failed] = _releaser(settings).release(['own'], death='exited with code 13', count_death=True, worker_id='w1')
    assert failed.outcome == 'failed'
    assert 25_000 < sync_redis.pttl('arq:result:own') <= 30_000


def test_unreadable_payload_still_fails_the_job(
    redis_server: RedisServer, redis_db: int, sync_redis: redis.Redis, queue_name: str
) -> None:
    _claimed_job(sync_redis, queue_name, 'garbled')
    sync_redis.set('arq:job:garbled', b'not a pickle')
    sync_redis.set('arq:deaths:garbled', 1)
    [failed] = _releaser(_settings(redis_server, redis_db, queue_name)).release(
        ['garbled'], death='killed by SIGSEGV', count_death=True, worker_id='w1'
    )
    assert failed.outcome == 'failed'
    result = pickle.loads(sync_redis.get('arq:result:garbled'))  # type: ignore[arg-type]
    assert result['f'] == '<unknown>'
    assert str(result['r']) == 'worker killed by SIGSEGV while running this job, twice'


def test_release_queue_retries_while_redis_is_down_then_gives_up(
    redis_server: RedisServer, redis_db: int, queue_name: str
) -> None:
    down = WorkerSettings(
        'x.WorkerSettings', {'queue_name': queue_name, 'redis_settings': RedisSettings(port=1, database=redis_db)}
    )
    queue = ReleaseQueue(_releaser(down), retry_for_s=6.0)
    queue.release(['j1'], death='killed by SIGKILL', count_death=True, now=100.0)
    assert len(queue.pending) == 1
    queue.retry(now=103.0)
    assert len(queue.pending) == 1
    queue.retry(now=106.0)  # by now the lease lapses by itself
    assert queue.pending == []


def test_a_lease_another_worker_holds_now_is_never_released(
    redis_server: RedisServer, redis_db: int, sync_redis: redis.Redis, queue_name: str
) -> None:
    _claimed_job(sync_redis, queue_name, 'reclaimed', token='w2:7')  # w1's lease lapsed, w2 claimed it since
    results = _releaser(_settings(redis_server, redis_db, queue_name)).release(
        ['reclaimed'], death='killed by SIGKILL', count_death=True, worker_id='w1'
    )
    assert results == []
    assert sync_redis.get('arq:in-progress:reclaimed') == b'w2:7'
    assert not sync_redis.exists('arq:deaths:reclaimed')


def test_jobs_the_parent_never_heard_of_are_found_and_released_uncounted(
    redis_server: RedisServer, redis_db: int, sync_redis: redis.Redis, queue_name: str
) -> None:
    """A child that died between a claim and telling its parent: its leases are found at the head of the queue."""
    _claimed_job(sync_redis, queue_name, 'known')
    _claimed_job(sync_redis, queue_name, 'unknown', token='w1:2')
    _claimed_job(sync_redis, queue_name, 'other', token='w10:1')  # another worker whose id starts the same way
    results = _releaser(_settings(redis_server, redis_db, queue_name)).release(
        ['known'], death='killed by SIGKILL', count_death=True, worker_id='w1'
    )
    assert sorted((r.job_id, r.deaths) for r in results) == [('known', 1), ('unknown', 0)]
    assert not sync_redis.exists('arq:in-progress:known', 'arq:in-progress:unknown', 'arq:deaths:unknown')
    assert sync_redis.get('arq:in-progress:other') == b'w10:1'


def test_a_release_sent_again_after_a_lost_reply_counts_the_death_once(
    redis_server: RedisServer, redis_db: int, sync_redis: redis.Redis, queue_name: str
) -> None:
    releaser = _releaser(_settings(redis_server, redis_db, queue_name))
    _claimed_job(sync_redis, queue_name, 'j1')
    for _ in range(2):
        releaser.release(['j1'], death='killed by SIGKILL', count_death=True, worker_id='w1')
    assert sync_redis.get('arq:deaths:j1') == b'1'


def test_a_poison_failure_wakes_result_waiters_and_is_indexed(
    redis_server: RedisServer, redis_db: int, sync_redis: redis.Redis, queue_name: str
) -> None:
    """The supervisor fails a poison job through the worker's own settle: Job.result() waiters are woken."""
    pubsub = sync_redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe('arq:done:poison')
    _claimed_job(sync_redis, queue_name, 'poison')
    sync_redis.set('arq:deaths:poison', 1)
    [failed] = _releaser(_settings(redis_server, redis_db, queue_name)).release(
        ['poison'], death='killed by SIGKILL', count_death=True, worker_id='w1'
    )
    assert failed.outcome == 'failed'
    deadline = time.monotonic() + 5
    message = None
    while message is None and time.monotonic() < deadline:  # the first read may return the subscribe confirmation
        message = pubsub.get_message(timeout=0.5)
    pubsub.close()
    assert message is not None and message['channel'] == b'arq:done:poison', 'no job-done notification'
    assert sync_redis.zscore(f'arq:recent:{queue_name}:failed', 'poison') is not None


def test_a_payload_with_a_function_name_of_the_wrong_type_still_fails_the_job(
    redis_server: RedisServer, redis_db: int, sync_redis: redis.Redis, queue_name: str
) -> None:
    _claimed_job(sync_redis, queue_name, 'odd')
    sync_redis.set('arq:job:odd', pickle.dumps({'t': 1, 'f': ['not', 'a', 'name'], 'a': (), 'k': {}, 'et': 1}))
    sync_redis.set('arq:deaths:odd', 1)
    [failed] = _releaser(_settings(redis_server, redis_db, queue_name)).release(
        ['odd'], death='killed by SIGKILL', count_death=True, worker_id='w1'
    )
    assert failed.outcome == 'failed'
    assert pickle.loads(sync_redis.get('arq:result:odd'))['f'] == '<unknown>'  # type: ignore[arg-type]
