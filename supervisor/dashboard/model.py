"""What the dashboard shows, as plain records: one source of truth for the pages, the live updates and the tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

#: a redis.asyncio client (arq's ArqRedis or any redis.asyncio.Redis without decode_responses)
RedisClient = Any
Deserializer = Callable[[bytes], Any]


class State(str, Enum):  # noqa: UP042 - the value is what the URLs carry
    queued = 'queued'
    deferred = 'deferred'
    in_progress = 'in_progress'
    complete = 'complete'
    failed = 'failed'

    @property
    def label(self) -> str:
        return self.value.replace('_', ' ')


@dataclass(frozen=True)
class QueueSource:
    """A queue the dashboard shows, and how to read its payloads (None: the restricted unpickler)."""

    name: str
    deserializer: Deserializer | None = None
    serializer: Callable[[Any], bytes] | None = None


@dataclass(frozen=True)
class QueueCounts:
    queue: str
    queued: int
    deferred: int
    in_progress: int
    in_progress_exact: bool
    # finished in the last minute / hour; None when no recent-outcomes index is kept for this queue
    complete_1m: int | None = None
    failed_1m: int | None = None
    complete_1h: int | None = None
    failed_1h: int | None = None


@dataclass(frozen=True)
class JobRow:
    job_id: str
    function: str
    args: str
    state: State
    enqueue_ms: int | None
    score_ms: int | None = None
    finish_ms: int | None = None
    result: str | None = None
    error: str | None = None  # why the payload could not be read
    lease_token: str | None = None  # the in-progress key's value, on the in-progress listing


@dataclass(frozen=True)
class JobPage:
    rows: list[JobRow]
    next_cursor: str | None  # where the next page starts, None at the end
    examined: int  # ids looked at for this page (capped)
    capped: bool  # the cap stopped the search before the page was full
    note: str | None = None


@dataclass
class JobDetail:
    job_id: str
    queue: str | None
    status: str
    function: str | None = None
    args: list[str] = field(default_factory=list)  # full (capped) reprs, one per argument
    kwargs: dict[str, str] = field(default_factory=dict)
    job_try: int | None = None
    enqueue_ms: int | None = None
    score_ms: int | None = None
    start_ms: int | None = None
    finish_ms: int | None = None
    success: bool | None = None
    result: str | None = None
    lease_token: str | None = None
    lease_ttl_ms: int | None = None
    deaths: int = 0
    abort_requested: bool = False
    job_ttl_ms: int | None = None
    result_ttl_ms: int | None = None
    payload_error: str | None = None
    retryable: bool = False  # the arguments are plain data, so the job can be enqueued again

    @property
    def poison_note(self) -> str | None:
        """Why a job that kills its worker is failed, in words, when that is what happened or is about to."""
        text = self.result or ''
        if 'while running this job' in text and 'worker' in text:
            return (
                'This job was failed by the supervisor: the worker process running it died each time '
                f'({text.strip()}), so it is treated as a poison job and not run again.'
            )
        if self.deaths:
            times = {1: 'once', 2: 'twice'}.get(self.deaths, f'{self.deaths} times')
            return (
                f'A worker process has died {times} while running this job; '
                'at the second death the supervisor fails it as a poison job.'
            )
        return None
