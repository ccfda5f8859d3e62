"""Job timeouts with one loop timer for all the running jobs.

`asyncio.timeout` around each job function makes and cancels a timer handle per job: about 5 µs, a twentieth of the
worker's CPU for a short job. Jobs with the same timeout end in the order they started (most of them long before
their deadline), so the running jobs are kept per timeout length in start order, in a dict (removal in O(1)), and one
timer waits for the earliest deadline. It never fires after a deadline: when the job it was set for has ended, it
finds the next deadline and waits again (once per timeout length at most, never once per job).
"""

from __future__ import annotations

import asyncio
import math

from .running import RunningJob


class Deadlines:
    def __init__(self) -> None:
        #: timeout length -> the jobs running with it, in start order, with their deadlines (loop time)
        self._running: dict[float, dict[RunningJob, float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def watch(self, job: RunningJob, timeout_s: float | None) -> None:
        """Time `job`'s function out after `timeout_s` (None: never), unless `forget` comes first."""
        if timeout_s is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self._running.setdefault(timeout_s, {})[job] = deadline
        if deadline < self._timer_at:
            self._arm(loop, deadline)

    def forget(self, job: RunningJob, timeout_s: float | None) -> None:
        """`job`'s function has ended."""
        if timeout_s is not None:
            self._running.get(timeout_s, {}).pop(job, None)

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = loop.call_at(at, self._expire)

    def _expire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        loop = asyncio.get_running_loop()
        now, earliest = loop.time(), math.inf
        for jobs in self._running.values():
            while jobs:
                job, deadline = next(iter(jobs.items()))
                if deadline > now:
                    earliest = min(earliest, deadline)
                    break
                del jobs[job]
                job.time_out()
        if earliest < math.inf:
            self._arm(loop, earliest)
