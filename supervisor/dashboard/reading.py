"""Queue counts and job listings read from Redis with bounded work: never KEYS, never a full read of a queue.

A queue is arq's sorted set (score = ms when the job may start; running jobs stay in it). Deferred jobs are those
scored in the future; due jobs are queued unless an in-progress key exists. Running jobs sit near the head, since
workers claim the oldest due jobs first, so they are found by walking the head in chunks up to a cap.
Finished jobs come from the recent-outcomes index (`arq:recent:<queue>:complete|failed`, newest first) when the
workers keep it; otherwise from a capped SCAN of result keys.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from arq.constants import in_progress_key_prefix, job_key_prefix, recent_outcomes_key_prefix, result_key_prefix

from .model import JobPage, JobRow, QueueCounts, QueueSource, RedisClient, State
from .safe_load import load_payload, safe_repr

CHUNK = 500
#: the most ids one listing request (or the in-progress count) looks at
SCAN_CAP = 5000
RUNNING_CAP = 2000
MINUTE_MS, HOUR_MS = 60_000, 3_600_000


def now_ms() -> int:
    return int(time.time() * 1000)


def recent_key(queue: str, outcome: str) -> str:
    return f'{recent_outcomes_key_prefix}{queue}:{outcome}'


def _text(value: bytes | str) -> str:
    return value.decode(errors='replace') if isinstance(value, bytes) else value


async def running_at_head(redis: RedisClient, queue: str, now: int, cap: int = RUNNING_CAP) -> tuple[list[str], bool]:
    """Ids of due jobs that hold an in-progress key, among the oldest `cap`; and whether all due jobs were seen."""
    running: list[str] = []
    offset = 0
    while offset < cap:
        ids = [_text(i) for i in await redis.zrangebyscore(queue, '-inf', now, start=offset, num=CHUNK)]
        if not ids:
            return running, True
        leased = await redis.mget([in_progress_key_prefix + i for i in ids])
        running.extend(i for i, v in zip(ids, leased, strict=True) if v is not None)
        if len(ids) < CHUNK:
            return running, True
        offset += CHUNK
    return running, False


async def queue_counts(redis: RedisClient, queue: str, now: int | None = None) -> QueueCounts:
    now = now_ms() if now is None else now
    pipe = redis.pipeline(transaction=False)
    pipe.zcount(queue, '-inf', now)
    pipe.zcount(queue, f'({now}', '+inf')
    for outcome in ('complete', 'failed'):
        pipe.exists(recent_key(queue, outcome))
        pipe.zcount(recent_key(queue, outcome), now - MINUTE_MS, '+inf')
        pipe.zcount(recent_key(queue, outcome), now - HOUR_MS, '+inf')
    due, deferred, c_exists, c_1m, c_1h, f_exists, f_1m, f_1h = await pipe.execute()
    running, exact = await running_at_head(redis, queue, now)
    indexed = bool(c_exists or f_exists)  # an absent index reads as "n/a", not as zero
    return QueueCounts(
        queue=queue, queued=max(int(due) - len(running), 0), deferred=int(deferred), in_progress=len(running),
        in_progress_exact=exact,
        complete_1m=int(c_1m) if indexed else None, failed_1m=int(f_1m) if indexed else None,
        complete_1h=int(c_1h) if indexed else None, failed_1h=int(f_1h) if indexed else None,
    )  # fmt: skip


def _row(
    source: QueueSource, job_id: str, payload: bytes | None, state: State, score: float | None,
    lease: bytes | None = None,
) -> JobRow:  # fmt: skip
    loaded = load_payload(payload, source.deserializer)
    d = loaded.value or {}
    finished = state in (State.complete, State.failed)
    return JobRow(
        job_id=job_id,
        function=str(d.get('f', '?')),
        args=_call_preview(d.get('a'), d.get('k')) if loaded.value is not None else '',
        state=state,
        enqueue_ms=d.get('et') if isinstance(d.get('et'), int) else None,
        score_ms=int(score) if score is not None else None,
        finish_ms=d.get('ft') if finished and isinstance(d.get('ft'), int) else None,
        result=safe_repr(d.get('r'), 120) if finished and loaded.value is not None else None,
        error=loaded.error,
        lease_token=_text(lease) if lease is not None else None,
    )


def _call_preview(args: object, kwargs: object) -> str:
    parts = [safe_repr(a, 60) for a in (args if isinstance(args, list | tuple) else [args])]
    if isinstance(kwargs, dict):
        parts += [f'{k}={safe_repr(v, 60)}' for k, v in kwargs.items()]
    text = ', '.join(parts)
    return text if len(text) <= 160 else text[:159] + '…'


Matcher = Callable[[JobRow], bool]


def matcher(function: str, id_part: str) -> Matcher:
    def match(row: JobRow) -> bool:
        return (not function or row.function == function) and (not id_part or id_part in row.job_id)

    return match


async def list_queue(
    redis: RedisClient, source: QueueSource, state: State, match: Matcher, cursor: int, page_size: int
) -> JobPage:
    """A page of queued, deferred or running jobs, walking the queue from rank `cursor` at most SCAN_CAP ids."""
    now = now_ms()
    low, high = ('-inf', now) if state is not State.deferred else (f'({now}', '+inf')
    rows: list[JobRow] = []
    examined = 0
    offset = cursor
    while examined < SCAN_CAP:
        chunk = await redis.zrangebyscore(source.name, low, high, start=offset, num=CHUNK, withscores=True)
        if not chunk:
            return JobPage(rows, None, examined, False)
        ids = [_text(i) for i, _ in chunk]
        scores = [s for _, s in chunk]
        rows_here, taken = await _chunk_rows(redis, source, state, ids, scores, match, page_size - len(rows))
        rows += rows_here
        examined += taken
        offset += taken
        if len(rows) >= page_size:
            return JobPage(rows, str(offset), examined, False)
        if len(chunk) < CHUNK:
            return JobPage(rows, None, examined, False)
    return JobPage(rows, str(offset), examined, True)


async def _chunk_rows(
    redis: RedisClient, source: QueueSource, state: State, ids: list[str], scores: list[float], match: Matcher,
    wanted: int,
) -> tuple[list[JobRow], int]:  # fmt: skip
    """Rows of one chunk that match, stopping once `wanted` are found; also how many ids were consumed."""
    pipe = redis.pipeline(transaction=False)
    pipe.mget([job_key_prefix + i for i in ids])
    pipe.mget([in_progress_key_prefix + i for i in ids])
    payloads, leases = await pipe.execute()
    rows: list[JobRow] = []
    for n, (job_id, score, payload, lease) in enumerate(zip(ids, scores, payloads, leases, strict=True)):
        if state is State.in_progress and lease is None or state is State.queued and lease is not None:
            continue
        row = _row(source, job_id, payload, state, score, lease)
        if match(row):
            rows.append(row)
            if len(rows) >= wanted:
                return rows, n + 1
    return rows, len(ids)


async def list_finished(
    redis: RedisClient, source: QueueSource, state: State, match: Matcher, cursor: str, page_size: int
) -> JobPage:
    """A page of complete or failed jobs, newest first, from the recent-outcomes index (or a capped SCAN)."""
    key = recent_key(source.name, state.value)
    if not await redis.exists(key):
        return await _scan_results(redis, source, state, match, cursor, page_size)
    rows: list[JobRow] = []
    examined = 0
    offset = int(cursor or 0)
    while examined < SCAN_CAP:
        chunk = await redis.zrevrange(key, offset, offset + CHUNK - 1, withscores=True)
        if not chunk:
            return JobPage(rows, None, examined, False)
        ids = [_text(i) for i, _ in chunk]
        results = await redis.mget([result_key_prefix + i for i in ids])
        for job_id, raw in zip(ids, results, strict=True):
            examined += 1
            offset += 1
            if raw is None:  # its result expired or was deleted; the index outlives it until trimmed
                continue
            row = _row(source, job_id, raw, state, None)
            if match(row):
                rows.append(row)
                if len(rows) >= page_size:
                    return JobPage(rows, str(offset), examined, False)
        if len(chunk) < CHUNK:
            return JobPage(rows, None, examined, False)
    return JobPage(rows, str(offset), examined, True)


async def _scan_results(
    redis: RedisClient, source: QueueSource, state: State, match: Matcher, cursor: str, page_size: int
) -> JobPage:
    """Without the index: SCAN result keys (every queue's) from `cursor`, keeping this queue's, at most SCAN_CAP."""
    note = 'no recent-outcomes index for this queue: results found by a capped SCAN, in no particular order'
    rows: list[JobRow] = []
    examined, scan_cursor = 0, int(cursor or 0)
    while examined < SCAN_CAP and len(rows) < page_size:
        scan_cursor, keys = await redis.scan(scan_cursor, match=result_key_prefix + '*', count=CHUNK)
        examined += len(keys)
        if keys:
            for key, raw in zip(keys, await redis.mget(keys), strict=True):
                loaded = load_payload(raw, source.deserializer)
                d = loaded.value or {}
                if d.get('q', source.name) != source.name or bool(d.get('s')) != (state is State.complete):
                    continue
                row = _row(source, _text(key)[len(result_key_prefix) :], raw, state, None)
                if match(row):
                    rows.append(row)
        if scan_cursor == 0:
            return JobPage(rows, None, examined, False, note)
    return JobPage(rows, str(scan_cursor), examined, examined >= SCAN_CAP, note)


async def list_jobs(
    redis: RedisClient, source: QueueSource, state: State, *, function: str = '', id_part: str = '',
    cursor: str = '', page_size: int = 50,
) -> JobPage:  # fmt: skip
    match = matcher(function, id_part)
    if state in (State.complete, State.failed):
        return await list_finished(redis, source, state, match, cursor, page_size)
    return await list_queue(redis, source, state, match, int(cursor or 0), page_size)
