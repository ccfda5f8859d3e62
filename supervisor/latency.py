"""How long the parent's loop is busy between two waits: the longest a signal or a heartbeat can go unanswered."""

from __future__ import annotations

import math
from collections import deque

#: turns kept for the percentile: at the 0.5 s tick of an idle loop, about the last 8 minutes
WINDOW_TURNS = 1024


class LoopLatency:
    """Time from each wake-up of the loop to its next wait, over the last `window` turns, and the longest ever."""

    def __init__(self, window: int = WINDOW_TURNS) -> None:
        self.busy_s: deque[float] = deque(maxlen=window)
        self.max_s = 0.0
        self.turns = 0
        self._woke_at: float | None = None

    def woke(self, now: float) -> None:
        self._woke_at = now

    def waiting(self, now: float) -> None:
        if self._woke_at is None:
            return
        busy = max(now - self._woke_at, 0.0)
        self._woke_at = None
        self.busy_s.append(busy)
        self.max_s = max(self.max_s, busy)
        self.turns += 1

    def percentile_s(self, fraction: float) -> float:
        if not self.busy_s:
            return 0.0
        ordered = sorted(self.busy_s)
        return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]

    def summary(self) -> dict[str, float | int]:
        """For the status file and --status: milliseconds, rounded to 0.1."""
        return {'p99_ms': round(self.percentile_s(0.99) * 1000, 1), 'max_ms': round(self.max_s * 1000, 1),
                'turns': self.turns}  # fmt: skip
