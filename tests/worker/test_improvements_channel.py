"""The worker's claim and settle scripts go through a connection of its own (arq.channel), not redis-py's client.

What users meet must not change: the same errors, reconnection after a dropped connection or a Redis restart, the
password and database of the settings, and no job lost or run twice when that connection is cut under load.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis
from redis.exceptions import ConnectionError, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from arq.channel import ScriptChannel
from arq.clients import async_client
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.worker import Worker
from tests.support.redis_server import RedisServer
from tests.support.waiting import async_wait_until
from tests.worker.helpers import WorkerFactory


async def count_run(ctx: dict[str, Any]) -> str:
    run = uuid.uuid4().hex  # a member per run: the SADD sent again after a cut connection adds nothing
    for _ in range(5):  # the job's own Redis calls meet the cuts too; redis-py does not retry them by default
        try:
            await ctx['redis'].sadd(f'runs:{ctx["job_id"]}', run)
            break
        except ConnectionError:
            continue
    await asyncio.sleep(0.002)  # simulated work: the kills below land while jobs run, settle and are claimed
    return ctx['job_id']


async def test_plain_pools_get_a_channel_and_tls_or_sentinel_pools_keep_redis_py(redis_settings: RedisSettings) -> None:
    plain = await create_pool(redis_settings)
    unix = async_client(RedisSettings(unix_socket_path='/tmp/no-such.sock'), ArqRedis)
    tls = async_client(RedisSettings(port=redis_settings.port, ssl=True), ArqRedis)
    sentinel = async_client(RedisSettings(host=[('127.0.0.1', 26379)], sentinel=True), ArqRedis)
    try:
        channel = ScriptChannel.for_pool(plain)
        assert channel is not None and channel.address == ('tcp', '127.0.0.1', redis_settings.port)
        unix_channel = ScriptChannel.for_pool(unix)
        assert unix_channel is not None and unix_channel.address == ('unix', '/tmp/no-such.sock')
        assert ScriptChannel.for_pool(tls) is None
        assert ScriptChannel.for_pool(sentinel) is None
    finally:
        for pool in (plain, unix, tls, sentinel):
            await pool.aclose()


async def test_errors_are_redis_pys_own_and_a_flushed_script_is_loaded_again(arq_redis: ArqRedis) -> None:
    channel = ScriptChannel.for_pool(arq_redis)
    assert channel is not None
    script = arq_redis.register_script("return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}")
    try:
        with pytest.raises(ResponseError, match='wrong number of arguments'):
            await channel.call('GET')
        with pytest.raises(NoScriptError):
            await channel.call('EVALSHA', '0' * 40, 0)
        await arq_redis.script_flush()
        assert await channel.evalsha(script.sha, script.script, ['counter'], ['a']) == [b'counter', b'a', 1]
        assert await channel.evalsha(script.sha, script.script, ['counter'], ['b']) == [b'counter', b'b', 2]
        with pytest.raises(ResponseError, match='WRONGTYPE'):
            await arq_redis.lpush('a list', 'x')
            await channel.evalsha(script.sha, script.script, ['a list'], ['c'])
    finally:
        channel.disconnect()


async def test_a_reply_slower_than_the_socket_timeout_closes_the_connection_and_the_next_call_connects(
    redis_settings: RedisSettings,
) -> None:
    address = ('tcp', redis_settings.host, redis_settings.port)
    channel = ScriptChannel(address, [('SELECT', redis_settings.database)], connect_timeout_s=1, timeout_s=0.2)
    try:
        assert await channel.call('PING') == b'PONG'
        slow = asyncio.ensure_future(channel.call('BLPOP', 'channel:nothing', '0.5'))  # a reply in 0.5 s
        behind = asyncio.ensure_future(channel.call('PING'))  # a call in flight behind it fails with it
        with pytest.raises(RedisTimeoutError):
            await slow
        with pytest.raises(RedisTimeoutError):
            await behind
        assert await channel.call('PING') == b'PONG'
    finally:
        channel.disconnect()


async def test_a_cut_connection_fails_the_calls_in_flight_and_the_next_call_connects(
    arq_redis: ArqRedis, sync_redis: redis.Redis
) -> None:
    channel = ScriptChannel.for_pool(arq_redis)
    assert channel is not None
    try:
        assert await channel.call('CLIENT', 'SETNAME', 'the-channel') == b'OK'
        sync_redis.client_kill_filter(_type='normal', skipme=True)  # every client but the test's own
        with pytest.raises(ConnectionError):
            await channel.call('PING')  # the kill may land before or after this write: either way it fails
        assert await channel.call('PING') == b'PONG'
    finally:
        channel.disconnect()


async def test_password_and_database_of_the_settings_are_used(private_redis: RedisServer) -> None:
    admin = redis.Redis(port=private_redis.port)
    admin.config_set('requirepass', 's3cret')
    admin.close()
    settings = RedisSettings(port=private_redis.port, password='s3cret', database=5)
    pool = await create_pool(settings, default_queue_name='channel:auth')
    worker = Worker(functions=[count_run], redis_settings=settings, queue_name='channel:auth', burst=True,
                    poll_delay=0, handle_signals=False)  # fmt: skip
    try:
        jobs = [await pool.enqueue_job('count_run', _job_id=f'j{i}') for i in range(20)]
        assert ScriptChannel.for_pool(pool) is not None, 'the worker claims and settles on a channel'
        await worker.main()  # without AUTH its calls would fail, in another database it would find no job
        assert worker.jobs_complete == 20
        assert [await job.result(timeout=5) for job in jobs if job] == [f'j{i}' for i in range(20)]
    finally:
        await worker.close()
        await pool.aclose()


@pytest.mark.parametrize('max_jobs', [1, 10, 50])
async def test_cutting_the_workers_connections_under_load_loses_no_job_and_runs_none_twice(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, max_jobs: int
) -> None:
    total = 300
    for i in range(total):
        await arq_redis.enqueue_job('count_run', _job_id=f'job-{i}')
    w = worker(functions=[count_run], burst=False, poll_delay=0.05, max_jobs=max_jobs)
    worker.start(w)
    for threshold in (30, 90, 150, 210):  # cut while the worker is busy, at four points of the drain

        async def past(threshold: int = threshold) -> bool:
            return w.jobs_complete >= threshold

        await async_wait_until(past, timeout=30, message=f'{threshold} jobs done')
        sync_redis.client_kill_filter(_type='normal', skipme=True)

    async def all_done() -> bool:
        return w.jobs_complete >= total

    await async_wait_until(all_done, timeout=60, message='every job done')
    pipe = sync_redis.pipeline(transaction=False)
    for i in range(total):
        pipe.scard(f'runs:job-{i}')
    assert pipe.execute() == [1] * total, 'every job ran, and once'
    assert w.jobs_failed == 0 and w.jobs_retried == 0
