"""The job log lines keep arq's exact formats, because operators grep them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from arq.connections import ArqRedis
from arq.worker import FailedJobs, JobExecutionFailed
from tests.worker.helpers import WorkerFactory

T = r' *\d+\.\d\ds'


async def add(ctx: dict[str, Any], a: int, b: int = 0) -> int:
    return a + b


async def nothing(ctx: dict[str, Any]) -> None:
    return None


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith('arq')]


def matching(caplog: pytest.LogCaptureFixture, pattern: str) -> list[str]:
    return [m for m in messages(caplog) if re.fullmatch(pattern, m)]


async def test_start_and_success_lines(
    arq_redis: ArqRedis, worker: WorkerFactory, arq_logs: pytest.LogCaptureFixture
) -> None:
    job = await arq_redis.enqueue_job('add', 1, b=2)
    assert job is not None
    await worker(functions=[add]).main()
    assert matching(arq_logs, rf'{T} → {job.job_id}:add\(1, b=2\)'), messages(arq_logs)
    assert matching(arq_logs, rf'{T} ← {job.job_id}:add ● 3'), messages(arq_logs)


async def test_success_line_of_none_result_has_no_repr(
    arq_redis: ArqRedis, worker: WorkerFactory, arq_logs: pytest.LogCaptureFixture
) -> None:
    job = await arq_redis.enqueue_job('nothing')
    assert job is not None
    await worker(functions=[nothing]).main()
    assert matching(arq_logs, rf'{T} ← {job.job_id}:nothing ● ?'), messages(arq_logs)


async def test_log_results_false_hides_result_repr(
    arq_redis: ArqRedis, worker: WorkerFactory, arq_logs: pytest.LogCaptureFixture
) -> None:
    job = await arq_redis.enqueue_job('add', 40, b=2)
    assert job is not None
    await worker(functions=[add], log_results=False).main()
    assert matching(arq_logs, rf'{T} ← {job.job_id}:add ● ?'), messages(arq_logs)
    assert not any(m.endswith('● 42') for m in messages(arq_logs))


async def test_start_line_reports_delay_over_1_2_seconds(
    arq_redis: ArqRedis, worker: WorkerFactory, arq_logs: pytest.LogCaptureFixture
) -> None:
    job = await arq_redis.enqueue_job('add', 1, _defer_until=datetime.now(tz=UTC) - timedelta(seconds=5))
    assert job is not None
    await worker(functions=[add]).main()
    assert matching(arq_logs, rf'{T} → {job.job_id}:add\(1\) delayed=5\.\d\ds'), messages(arq_logs)


async def test_no_delay_reported_for_prompt_start(
    arq_redis: ArqRedis, worker: WorkerFactory, arq_logs: pytest.LogCaptureFixture
) -> None:
    job = await arq_redis.enqueue_job('add', 1)
    assert job is not None
    await worker(functions=[add]).main()
    assert matching(arq_logs, rf'{T} → {job.job_id}:add\(1\)'), messages(arq_logs)


async def test_long_args_are_truncated_in_start_line(
    arq_redis: ArqRedis, worker: WorkerFactory, arq_logs: pytest.LogCaptureFixture
) -> None:
    job = await arq_redis.enqueue_job('add', 1, b=10**200)
    assert job is not None
    await worker(functions=[add]).main()
    [line] = [m for m in messages(arq_logs) if '→' in m]
    assert len(line) < 200
    assert '…' in line


async def test_expired_job_is_logged_and_fails_with_job_expired(
    arq_redis: ArqRedis, sync_redis: redis.Redis, worker: WorkerFactory, arq_logs: pytest.LogCaptureFixture
) -> None:
    job = await arq_redis.enqueue_job('add', 1)
    assert job is not None
    sync_redis.delete(f'arq:job:{job.job_id}')
    with pytest.raises(FailedJobs):
        await worker(functions=[add]).run_check()
    assert f'job {job.job_id} expired' in messages(arq_logs)
    with pytest.raises(JobExecutionFailed, match='^job expired$'):
        await job.result(timeout=5)
