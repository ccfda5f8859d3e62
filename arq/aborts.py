"""Aborting running jobs (`Job.abort()`), and cancelling again a job that ignored its cancellation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger('arq.worker')

#: a cancelled job still running after this long is cancelled again
RECANCEL_AFTER_S = 2.0
#: how often a worker running no job reads the abort set (only to prune it)
IDLE_POLL_S = 5.0

#: the ids whose abort was requested (scripts.POLL_ABORTS, pruning stale requests)
PollAborts = Callable[[], Awaitable[list[str]]]


class AbortWatcher:
    """
    :param jobs: job id -> the task running the job function (the worker's registry, read here)
    :param poll: reads the abort requests
    :param interval_s: the least time between two polls
    """

    def __init__(self, jobs: dict[str, asyncio.Task[Any]], poll: PollAborts, interval_s: float) -> None:
        self.jobs = jobs
        self._poll = poll
        self.interval_s = interval_s
        self.aborting: set[str] = set()  # jobs cancelled because an abort was requested
        self.cancelled_at: dict[str, float] = {}  # job id -> when its task was last cancelled
        self._last_poll = 0.0

    async def poll(self) -> None:
        """Cancel the running jobs whose abort was requested. A queued job's request is seen when it is claimed, so
        an idle worker reads the set only every IDLE_POLL_S, to prune stale requests (which would abort a future job
        with the same id)."""
        now = asyncio.get_running_loop().time()
        if now - self._last_poll < (self.interval_s if self.jobs else max(self.interval_s, IDLE_POLL_S)):
            return
        self._last_poll = now
        for job_id in await self._poll():
            task = self.jobs.get(job_id)
            if task is not None and job_id not in self.aborting:
                self.aborting.add(job_id)
                self.cancel(job_id, task)

    def cancel(self, job_id: str, task: asyncio.Task[Any]) -> None:
        self.cancelled_at[job_id] = asyncio.get_running_loop().time()
        task.cancel()

    def recancel_stragglers(self) -> None:
        """
        Cancel again a job still running a while after it was cancelled (aborted, or stopped by a shutdown).

        redis-py can swallow a CancelledError that lands while it sets up a connection, and a job that awaits Redis in
        a loop would then run on as if never cancelled.
        """
        now = asyncio.get_running_loop().time()
        for job_id, at in list(self.cancelled_at.items()):
            task = self.jobs.get(job_id)
            if task is None or task.done():
                del self.cancelled_at[job_id]
            elif now - at >= RECANCEL_AFTER_S:
                logger.warning(
                    'job %s still running %.1fs after it was cancelled; cancelling it again', job_id, now - at
                )
                self.cancel(job_id, task)
