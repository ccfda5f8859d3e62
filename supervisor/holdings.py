"""The claims and settles a supervised child reports, netted per flush window.

A busy child claims and settles a batch of jobs every loop turn. One message per batch had the parent wake, parse and
apply thousands of small messages a second: a fifth of the CPU a job cost. Within one window (the child writes every
20 ms) only each job's last change matters to the parent: claimed (count it held) or settled (not). So a window's
changes go as at most one Settled and one Claimed message whose ids are disjoint, right whatever order the parent
applies them in, also for a job settled and claimed back in the same window.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from itertools import compress


class HeldChanges:
    def __init__(self) -> None:
        self._last: dict[str, bool] = {}  # job id -> claimed (True) or settled (False), its last change
        self.settled_any = False  # a settle happened: the counters changed and go to the parent too

    # per batch and per window, not per job: dict.fromkeys and compress loop in C
    def claimed(self, job_ids: Iterable[str]) -> None:
        self._last.update(dict.fromkeys(job_ids, True))

    def settled(self, job_ids: Iterable[str]) -> None:
        self.settled_any = True
        self._last.update(dict.fromkeys(job_ids, False))

    def take(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(claimed, settled) ids since the last take: each job's last change."""
        last = self._last
        claimed = tuple(compress(last, last.values()))
        settled = tuple(compress(last, map(operator.not_, last.values())))
        last.clear()
        self.settled_any = False
        return claimed, settled
