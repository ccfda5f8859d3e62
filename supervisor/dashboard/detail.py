"""Everything Redis knows about one job, gathered in one round trip per queue it might be in."""

from __future__ import annotations

from typing import Any

from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_deaths_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)

from .model import JobDetail, QueueSource, RedisClient
from .reading import now_ms
from .safe_load import contains_opaque, load_payload, safe_repr

ARG_LIMIT = 4000
RESULT_LIMIT = 20_000


async def job_detail(redis: RedisClient, sources: list[QueueSource], job_id: str) -> JobDetail:
    pipe = redis.pipeline(transaction=False)
    pipe.get(job_key_prefix + job_id)
    pipe.get(result_key_prefix + job_id)
    pipe.get(in_progress_key_prefix + job_id)
    pipe.pttl(in_progress_key_prefix + job_id)
    pipe.get(retry_key_prefix + job_id)
    pipe.get(job_deaths_key_prefix + job_id)
    pipe.zscore(abort_jobs_ss, job_id)
    pipe.pttl(job_key_prefix + job_id)
    pipe.pttl(result_key_prefix + job_id)
    for queue in sources:
        pipe.zscore(queue.name, job_id)
    job_raw, result_raw, lease, lease_ttl, retry, deaths, abort, job_ttl, result_ttl, *scores = await pipe.execute()
    queue_index = next((n for n, s in enumerate(scores) if s is not None), None)
    source = sources[queue_index] if queue_index is not None else None
    detail = JobDetail(
        job_id=job_id,
        queue=source.name if source else None,
        status='not found',
        score_ms=int(scores[queue_index]) if queue_index is not None else None,
        lease_token=lease.decode(errors='replace') if lease is not None else None,
        lease_ttl_ms=int(lease_ttl) if lease is not None and lease_ttl >= 0 else None,
        job_try=int(retry) if retry is not None else None,
        deaths=int(deaths or 0),
        abort_requested=abort is not None,
        job_ttl_ms=int(job_ttl) if job_ttl >= 0 else None,
        result_ttl_ms=int(result_ttl) if result_ttl >= 0 else None,
    )
    _fill_payload(detail, result_raw if result_raw is not None else job_raw, source or _first(sources))
    detail.status = _status(detail, result_raw is not None, lease is not None, job_raw is not None)
    return detail


def _first(sources: list[QueueSource]) -> QueueSource:
    """A finished job is no longer in any queue: read it with the first queue's serializer (they rarely differ)."""
    return sources[0] if sources else QueueSource('')


def _status(detail: JobDetail, has_result: bool, has_lease: bool, has_job: bool) -> str:
    """As arq's Job.status(), with complete split by outcome."""
    if has_result:
        return 'complete' if detail.success else 'failed'
    if has_lease and detail.score_ms is not None:
        return 'in progress'
    if detail.score_ms is not None:
        return 'deferred' if detail.score_ms > now_ms() else 'queued'
    return 'not found (job key left)' if has_job else 'not found'


def _fill_payload(detail: JobDetail, raw: bytes | None, source: QueueSource) -> None:
    if raw is None:
        return
    loaded = load_payload(raw, source.deserializer)
    if loaded.value is None:
        detail.payload_error = loaded.error
        return
    d: dict[str, Any] = loaded.value
    detail.function = str(d.get('f', '?'))
    args, kwargs = d.get('a') or (), d.get('k') or {}
    detail.args = [safe_repr(a, ARG_LIMIT) for a in (args if isinstance(args, list | tuple) else [args])]
    detail.kwargs = {str(k): safe_repr(v, ARG_LIMIT) for k, v in kwargs.items()} if isinstance(kwargs, dict) else {}
    detail.retryable = isinstance(kwargs, dict) and not contains_opaque(args) and not contains_opaque(kwargs)
    detail.enqueue_ms = _int(d.get('et'))
    if 's' in d:
        detail.success = bool(d.get('s'))
        detail.job_try = _int(d.get('t'))
        detail.start_ms, detail.finish_ms = _int(d.get('st')), _int(d.get('ft'))
        detail.queue = detail.queue or (str(d['q']) if d.get('q') else None)
        result = d.get('r')
        detail.result = result if isinstance(result, str) and not detail.success else safe_repr(result, RESULT_LIMIT)


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def load_call(raw: bytes | None, source: QueueSource) -> tuple[str, tuple[Any, ...], dict[str, Any]] | None:
    """(function, args, kwargs) of a payload when they are plain data, so the job can be enqueued again."""
    loaded = load_payload(raw, source.deserializer)
    d = loaded.value
    if d is None or not isinstance(d.get('f'), str):
        return None
    args, kwargs = d.get('a') or (), d.get('k') or {}
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        return None
    if contains_opaque(args) or contains_opaque(kwargs):
        return None
    return d['f'], tuple(args), kwargs
