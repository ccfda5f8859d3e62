"""How a worker stops: one state machine instead of six flags.

    RUNNING ──start_drain(wait > 0)──▶ DRAINING ──deadline passed──▶ CANCELLING
       │                                  │                             ▲
       └──────start_drain(0), stop_now────┴────────stop_now─────────────┘

RUNNING claims jobs. DRAINING claims none and lets the running jobs finish until its deadline; the loop ends once
none is left. CANCELLING has cancelled the running jobs (they go back to the queue, their try given back) and the
loop ends at once; the worker then waits for their settlements.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import signal
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .runner import JobCounters
    from .running import RunningJobs

logger = logging.getLogger('arq.worker')


class Phase(enum.Enum):
    RUNNING = 'running'
    DRAINING = 'draining'
    CANCELLING = 'cancelling'


class StopState:
    def __init__(self) -> None:
        self.phase = Phase.RUNNING
        #: what asked for the stop, for arq's log lines: a signal's name, or 'request'
        self.reason = 'request'
        #: loop time by which a drain gives up waiting for the running jobs
        self.deadline: float | None = None

    @property
    def running(self) -> bool:
        return self.phase is Phase.RUNNING

    @property
    def draining(self) -> bool:
        return self.phase is Phase.DRAINING

    @property
    def cancelling(self) -> bool:
        return self.phase is Phase.CANCELLING

    def drain(self, now: float, wait_s: float) -> bool:
        """Stop claiming and let jobs finish within `wait_s`; returns whether this started the stop (not a repeat)."""
        if not self.running:
            return False
        if wait_s > 0:
            self.phase, self.deadline = Phase.DRAINING, now + wait_s
        else:
            self.phase = Phase.CANCELLING
        return True

    def cancel(self) -> bool:
        """Give up waiting: the running jobs are to be cancelled. Returns whether this changed the phase."""
        if self.cancelling:
            return False
        self.phase = Phase.CANCELLING
        return True

    def drain_over(self, now: float, jobs_running: int) -> bool:
        """While DRAINING: no job is left, or the deadline passed."""
        return self.draining and (jobs_running == 0 or now >= (self.deadline or 0))

    def seconds_left(self, now: float) -> float | None:
        """Until the drain's deadline, or None when no drain is waiting."""
        if not self.draining or self.deadline is None:
            return None
        return max(self.deadline - now, 0.0)


class Shutdown:
    """The worker's stop: its state, the cancellation of running jobs, and arq's shutdown log lines."""

    def __init__(self, running: RunningJobs, counters: JobCounters, wake: Callable[[], None]) -> None:
        self.state = StopState()
        self.running = running
        self.counters = counters
        self._wake = wake

    def advance(self) -> bool:
        """Move a drain on (its deadline passed, or no job is left: log arq's line, cancel what still runs); returns
        whether the worker's loop goes on."""
        if self.state.drain_over(asyncio.get_running_loop().time(), len(self.running)):
            self._log('shutdown on %s, wait complete', self.state.reason, 'ongoing to cancel')
            self.cancel_running('wait complete')
        return self.state.running or self.state.draining

    def drain(self, wait_s: float) -> None:
        """Stop claiming; let running jobs finish within `wait_s`, then cancel the rest (they go back to the queue)."""
        if self.state.drain(asyncio.get_running_loop().time(), wait_s) and self.state.cancelling:
            self.cancel_running('stopping', started=True)
        self._wake()

    def stop_now(self) -> None:
        self.cancel_running('stopping now')
        self._wake()

    def cancel_running(self, why: str, *, started: bool = False) -> None:
        """Cancel the running jobs, once (`started`: the state is CANCELLING already, by this very stop)."""
        if not self.state.cancel() and not started:
            return
        cancelled = self.running.cancel_all()
        if cancelled:
            logger.info('%s: cancelling %d running jobs, they will be run again', why, cancelled)

    def signalled(self, sig: signal.Signals, what: str) -> None:
        """arq's line for a stopping signal: `what` the ongoing jobs are ('ongoing to cancel', 'to be completed')."""
        self.state.reason = sig.name
        self._log('shutdown on %s', sig.name, what)

    def _log(self, head: str, reason: str, what: str) -> None:
        c = self.counters
        logger.info(f'{head} ◆ %d jobs complete ◆ %d failed ◆ %d retries ◆ %d {what}', reason, c.complete, c.failed,
                    c.retried, len(self.running))  # fmt: skip


@contextlib.contextmanager
def signal_handlers(enabled: bool, handler: Callable[[int], None]) -> Iterator[None]:
    """SIGINT and SIGTERM call `handler` while in the block (nothing when not `enabled`)."""
    if not enabled:
        yield
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handler, sig)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
