"""Bad input gets a clear message and loses nothing: broken payloads, unknown functions, unpicklable results,
settings that do not import or register nothing, and a Redis that is not there."""

from __future__ import annotations

import pickle
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from arq.connections import ArqRedis
from arq.jobs import Job, SerializationError
from arq.worker import FailedJobs, JobExecutionFailed, Worker, func
from tests.support.redis_server import RedisServer, free_port
from tests.worker.helpers import WorkerFactory, run_arq_cli, write_settings_module


async def add(ctx: dict[str, Any], a: int, b: int = 0) -> int:
    return a + b


async def unpicklable_result(ctx: dict[str, Any]) -> Any:
    return threading.Lock()


def put_raw_job(sync_redis: redis.Redis, queue_name: str, job_id: str, payload: bytes) -> None:
    now = int(time.time() * 1000)
    sync_redis.psetex(f'arq:job:{job_id}', 60_000, payload)
    sync_redis.zadd(queue_name, {job_id: now})


async def test_payload_that_does_not_deserialize_fails_that_job_only(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, queue_name: str
) -> None:
    put_raw_job(sync_redis, queue_name, 'garbled', b'this is not a pickle')
    good = await arq_redis.enqueue_job('add', 1, b=1)
    assert good is not None

    with pytest.raises(FailedJobs) as exc_info:
        await worker(functions=[add]).run_check()

    assert exc_info.value.count == 1
    assert await good.result(timeout=5) == 2
    garbled = Job('garbled', arq_redis, _queue_name=queue_name)
    info = await garbled.result_info()
    assert info is not None
    assert info.success is False
    assert re.search('deserializ', str(info.result), re.IGNORECASE), info.result
    with pytest.raises(Exception, match='(?i)deserializ'):
        await garbled.result(timeout=5)
    assert sync_redis.zscore(queue_name, 'garbled') is None
    assert sync_redis.exists('arq:job:garbled', 'arq:in-progress:garbled') == 0


async def test_payload_with_missing_fields_fails_that_job_only(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, queue_name: str
) -> None:
    put_raw_job(sync_redis, queue_name, 'partial', pickle.dumps({'f': 'add'}))
    good = await arq_redis.enqueue_job('add', 2)
    assert good is not None
    with pytest.raises(FailedJobs):
        await worker(functions=[add]).run_check()
    assert await good.result(timeout=5) == 2
    info = await Job('partial', arq_redis, _queue_name=queue_name).result_info()
    assert info is not None
    assert info.success is False
    assert sync_redis.zscore(queue_name, 'partial') is None


async def test_unknown_function_fails_with_function_not_found(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, queue_name: str
) -> None:
    job = await arq_redis.enqueue_job('missing', 1)
    assert job is not None
    with pytest.raises(FailedJobs):
        await worker(functions=[add]).run_check()
    with pytest.raises(JobExecutionFailed, match="^function 'missing' not found$"):
        await job.result(timeout=5)
    info = await job.result_info()
    assert info is not None
    assert info.function == 'missing'
    assert info.args == (1,)
    assert sync_redis.zscore(queue_name, job.job_id) is None


async def test_unpicklable_result_is_stored_as_failure_saying_so(arq_redis: ArqRedis, worker: WorkerFactory) -> None:
    job = await arq_redis.enqueue_job('unpicklable_result')
    assert job is not None
    await worker(functions=[unpicklable_result]).main()
    info = await job.result_info()
    assert info is not None
    assert info.success is False
    assert re.search('serializ', str(info.result), re.IGNORECASE), info.result
    with pytest.raises(Exception, match='(?i)serializ'):
        await job.result(timeout=5)


async def test_unpicklable_argument_fails_enqueue_with_serialization_error(
    arq_redis: ArqRedis, queue_name: str
) -> None:
    with pytest.raises(SerializationError, match='add'):
        await arq_redis.enqueue_job('add', threading.Lock())
    assert await arq_redis.zcard(queue_name) == 0


async def test_non_coroutine_function_is_rejected() -> None:
    def not_async(ctx: dict[str, Any]) -> None:
        return None

    with pytest.raises(RuntimeError, match='not a coroutine function'):
        func(not_async)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match='not a coroutine function'):
        Worker(functions=[not_async])  # type: ignore[list-item]


def assert_clean_cli_error(proc: Any, *mentions: str) -> None:
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert 'Traceback' not in output, output
    for mention in mentions:
        assert mention in output, output


def test_cli_settings_module_that_does_not_import(tmp_path: Path) -> None:
    proc = run_arq_cli(['no_such_module_here.WorkerSettings'], cwd=tmp_path)
    assert_clean_cli_error(proc, 'no_such_module_here')


def test_cli_settings_class_that_does_not_exist(tmp_path: Path) -> None:
    write_settings_module(tmp_path, 'settings_without_class', 'X = 1\n')
    proc = run_arq_cli(['settings_without_class.WorkerSettings'], cwd=tmp_path)
    assert_clean_cli_error(proc, 'WorkerSettings')


def test_cli_settings_without_functions(tmp_path: Path, redis_server: RedisServer, redis_db: int) -> None:
    write_settings_module(
        tmp_path,
        'settings_no_functions',
        f"""
from arq.connections import RedisSettings


class WorkerSettings:
    redis_settings = RedisSettings(host='127.0.0.1', port={redis_server.port}, database={redis_db})
""",
    )
    proc = run_arq_cli(['--burst', 'settings_no_functions.WorkerSettings'], cwd=tmp_path)
    assert_clean_cli_error(proc, 'function')


def test_cli_redis_unreachable_retries_then_exits_clearly(tmp_path: Path) -> None:
    port = free_port()
    write_settings_module(
        tmp_path,
        'settings_no_redis',
        f"""
from arq.connections import RedisSettings


async def noop(ctx):
    return None


class WorkerSettings:
    functions = [noop]
    redis_settings = RedisSettings(host='127.0.0.1', port={port}, conn_retries=2, conn_retry_delay=0)
""",
    )
    proc = run_arq_cli(['--burst', 'settings_no_redis.WorkerSettings'], cwd=tmp_path)
    assert_clean_cli_error(proc, str(port))
    retry_lines = [line for line in proc.stderr.splitlines() if str(port) in line and 'retr' in line.lower()]
    assert len(retry_lines) >= 2, proc.stderr
