"""The claims and settles a supervised child reports, netted per flush window.

A busy child claims and settles a batch of jobs every loop turn. One message per batch had the parent wake, parse and
apply thousands of small messages a second: a fifth of the CPU a job cost. Within one window (the child writes every
20 ms) only each job's last change matters to the parent: claimed (count it held) or settled (not). So a window's
changes go as at most one Settled and one Claimed message whose ids are disjoint, right whatever order the parent
applies them in, also for a job settled and claimed back in the same window.
"""

from __future__ import annotations

from collections.abc import Iterable


class HeldChanges:
    def __init__(self) -> None:
        self._last: dict[str, bool] = {}  # job id -> claimed (True) or settled (False), its last change
        self.settled_any = False  # a settle happened: the counters changed and go to the parent too

    def claimed(self, job_ids: Iterable[str]) -> None:
        for job_id in job_ids:
            self._last[job_id] = True

    def settled(self, job_ids: Iterable[str]) -> None:
        self.settled_any = True
        for job_id in job_ids:
            self._last[job_id] = False

    def take(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(claimed, settled) ids since the last take: each job's last change."""
        claimed = tuple(job_id for job_id, held in self._last.items() if held)
        settled = tuple(job_id for job_id, held in self._last.items() if not held)
        self._last.clear()
        self.settled_any = False
        return claimed, settled
