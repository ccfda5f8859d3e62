"""Aborting running jobs (`Job.abort()`), and cancelling again a job that ignored its cancellation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .running import RunningJobs

logger = logging.getLogger('arq.worker')

#: a cancelled job still running after this long is cancelled again
RECANCEL_AFTER_S = 2.0
#: how often a worker running no job reads the abort set (only to prune it)
IDLE_POLL_S = 10.0

#: the ids whose abort was requested (scripts.POLL_ABORTS, pruning stale requests)
PollAborts = Callable[[], Awaitable[list[str]]]


class AbortWatcher:
    """
    :param running: the worker's running jobs (read and cancelled here)
    :param poll: reads the abort requests
    :param interval_s: the least time between two polls while jobs run
    """

    def __init__(self, running: RunningJobs, poll: PollAborts, interval_s: float) -> None:
        self.running = running
        self._poll = poll
        self.interval_s = interval_s
        self._last_poll = 0.0

    def due(self) -> bool:
        """Whether a poll is due. A queued job's request is seen when it is claimed, so a worker running no job reads
        the set only every IDLE_POLL_S, to prune stale requests (which would abort a future job with the same id)."""
        interval_s = self.interval_s if self.running.functions_running() else max(self.interval_s, IDLE_POLL_S)
        return asyncio.get_running_loop().time() - self._last_poll >= interval_s

    async def poll(self) -> None:
        """Cancel the running jobs whose abort was requested, when a poll is due."""
        if not self.due():
            return
        self._last_poll = asyncio.get_running_loop().time()
        for job_id in await self._poll():
            job = self.running.get(job_id)
            if job is not None and not job.aborting and job.in_function:
                job.aborting = True
                job.cancel()

    def recancel_stragglers(self) -> None:
        """
        Cancel again a job still running a while after it was cancelled (aborted, or stopped by a shutdown).

        redis-py can swallow a CancelledError that lands while it sets up a connection, and a job that awaits Redis in
        a loop would then run on as if never cancelled.
        """
        for job in self.running.stragglers(RECANCEL_AFTER_S):
            logger.warning('job %s still running %.1fs after it was cancelled; cancelling it again', job.job_id,
                           asyncio.get_running_loop().time() - (job.cancelled_at or 0))  # fmt: skip
            job.cancel()
