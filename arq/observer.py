"""What a worker tells whoever embeds it: `Worker(observer=...)`.

A supervisor passes one to follow its worker (readiness, the leases it holds, per-function statistics); the default
observes nothing. The methods are called on the worker's event loop, so they must be quick and must not block; an
exception raised by one is logged and otherwise ignored, never fatal to the worker or its jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

logger = logging.getLogger('arq.worker')

#: a job's outcome, as `job_finished` reports it
COMPLETE, FAILED, RETRIED, ABORTED = 'complete', 'failed', 'retried', 'aborted'


class WorkerObserver:
    def ready(self) -> None:
        """on_startup ran and Redis answered: the worker is about to claim jobs."""

    def claimed(self, job_ids: Sequence[str]) -> None:
        """The worker now holds the in-progress leases of these jobs."""

    def settled(self, job_ids: Sequence[str]) -> None:
        """These jobs' finish or re-queue is committed (or was given up): the worker no longer holds them."""

    def job_finished(self, function: str, outcome: str, duration_s: float, lag_ms: int) -> None:
        """A job function ran: `outcome` is COMPLETE, FAILED, RETRIED or ABORTED; `lag_ms` is its start minus its
        score (how late it started)."""

    def job_failed_early(self, function: str | None, outcome: str) -> None:
        """A job failed without running (FAILED: expired, bad payload, unknown function, out of tries; ABORTED: its
        abort was requested before it started). `function` is None when this worker has no function of its name."""


class _Guarded(WorkerObserver):
    """Passes each call on; an exception is logged, never raised into the worker."""

    def __init__(self, inner: WorkerObserver) -> None:
        self._inner = inner

    def _call(self, method: Callable[..., None], *args: Any) -> None:
        try:
            method(*args)
        except Exception:
            self._failed(method.__name__)

    def _failed(self, method: str) -> None:
        logger.exception('worker observer %s.%s failed', type(self._inner).__name__, method)

    def ready(self) -> None:
        self._call(self._inner.ready)

    def claimed(self, job_ids: Sequence[str]) -> None:
        self._call(self._inner.claimed, job_ids)

    def settled(self, job_ids: Sequence[str]) -> None:
        self._call(self._inner.settled, job_ids)

    def job_finished(self, function: str, outcome: str, duration_s: float, lag_ms: int) -> None:
        try:  # written out, not through _call: this one comes once per job
            self._inner.job_finished(function, outcome, duration_s, lag_ms)
        except Exception:
            self._failed('job_finished')

    def job_failed_early(self, function: str | None, outcome: str) -> None:
        self._call(self._inner.job_failed_early, function, outcome)


def guarded(observer: WorkerObserver | None) -> WorkerObserver:
    """`observer`, made safe to call from the worker (the no-op default as it is)."""
    if observer is None or type(observer) is WorkerObserver:
        return WorkerObserver()
    return _Guarded(observer)
