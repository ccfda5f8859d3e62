"""When the worker's loop turns again: at once when woken, else after a wait this module chooses.

The loop is woken by a wake token (our enqueue pushes one, arq.wake), a job's end, or a stop. Otherwise it polls:
every poll_delay as arq does, sooner for a deferred job coming due or a drain's deadline, later when every slot is
busy (a finishing job wakes it anyway).

An idle worker whose queue was empty at its last claim polls only every IDLE_POLL_S: every job that can appear in an
empty queue is announced by a wake token (our enqueue, a supervisor's release of a dead worker's jobs), except one
enqueued by a client that pushes none, such as the published arq. So a poll that finds such an unannounced job turns
the stretch off for UNANNOUNCED_MEMORY_S, and the queue is polled every poll_delay again, as arq would. With jobs in
the queue (running, deferred, or a crashed worker's waiting for its lease to lapse) the worker polls every
poll_delay, so recovery is as quick as before. An idle worker then sends under one command a second.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

#: how often an idle worker polls an empty queue whose jobs all come with wake tokens
IDLE_POLL_S = 2.0
#: after an unannounced job, how long the worker polls every poll_delay again
UNANNOUNCED_MEMORY_S = 600.0
#: the least wait when every slot is busy (only housekeeping is due)
BUSY_WAIT_S = 0.5


class Pacer:
    """
    :param on_sleep: called when the loop starts a wait that only a wake or its timeout ends (arq.wake listens then)
    """

    def __init__(self, poll_delay_s: float, on_sleep: Callable[[], None] = lambda: None) -> None:
        self.poll_delay_s = poll_delay_s
        self.on_sleep = on_sleep
        #: the loop is in such a wait now
        self.sleeping = False
        self._event = asyncio.Event()
        self._woken = False  # the last wait ended by a wake, not by its timeout
        self._queue_was_empty = False  # at the last claim
        self._unannounced_at: float | None = None  # loop time of the last job found without a wake token

    def wake(self) -> None:
        self._event.set()

    def claimed(self, queued: int, got_jobs: bool, *, polled: bool = True) -> None:
        """A claim's reply: the queue's length before it, and whether it leased any job; `polled`: the loop's claim
        (not one riding along with a settle)."""
        if polled and got_jobs and self._queue_was_empty and not self._woken:
            self._unannounced_at = asyncio.get_running_loop().time()
        self._queue_was_empty = queued == 0

    def wait_s(
        self, *, free_slots: int, claiming: bool, next_score_in_s: float | None, drain_left_s: float | None
    ) -> float:
        """How long to wait before the next turn.

        :param next_score_in_s: until the first deferred job comes due (None: no such job)
        :param drain_left_s: until a drain's deadline (None: no drain)
        """
        if free_slots == 0 and claiming:
            return max(self.poll_delay_s, BUSY_WAIT_S)
        wait_s = self.poll_delay_s
        if claiming and free_slots > 0 and self._may_stretch():
            wait_s = max(wait_s, IDLE_POLL_S)
        if next_score_in_s is not None:
            wait_s = min(wait_s, max(next_score_in_s, 0.0))
        return wait_s if drain_left_s is None else min(wait_s, drain_left_s)

    def _may_stretch(self) -> bool:
        if not self._queue_was_empty:
            return False
        at = self._unannounced_at
        return at is None or asyncio.get_running_loop().time() - at >= UNANNOUNCED_MEMORY_S

    async def sleep(self, timeout_s: float) -> None:
        """Wait `timeout_s`, or until woken; always yields, so a zero poll_delay cannot starve the jobs."""
        self._woken = self._event.is_set()
        if not self._woken and timeout_s > 0:
            self.sleeping = True
            self.on_sleep()
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout_s):
                        await self._event.wait()
            finally:
                self.sleeping = False
            self._woken = self._event.is_set()
        else:
            await asyncio.sleep(0)
        self._event.clear()
