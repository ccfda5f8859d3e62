"""The worker's leases: the in-progress keys of the jobs it runs, renewed while they run.

Every third of a lease all held leases are renewed in one script call. A lease the renewal finds held by another
worker is lost: that worker runs the job now, so the job is given up here and stopped (its settle would be dropped
by the fence anyway). A lease that lapsed while nobody else took the job (Redis was down for everyone) is taken
again, and the job runs on.

A lease that cannot be renewed is, by default, not given up by itself: from inside, a Redis that is down for
everyone (no other worker can take the job, and stopping it would only run it twice) looks like a partition of this
worker alone (another worker takes the job once the lease lapses). While renewals fail they are tried ten times a
lease instead of three, so after a partition heals the loss is seen, and the job stopped, within a tenth of a lease:
a job runs on two workers at once for at most the partition's length beyond the lease, plus that tenth.

With `stop_unleased` a job whose renewals have failed for three quarters of its lease is stopped before the lease
can lapse, so no job ever runs on two workers at once; the price is a second run of jobs that a Redis outage longer
than that interrupted. A loop that stalled tries no renewal, so it gives nothing up: its first renewal after the stall
decides (a supervisor renews its children's leases meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from time import monotonic

from .constants import lease_renewals
from .settle import is_transient

logger = logging.getLogger('arq.worker')

#: renews the given leases (job id -> token); returns (lapsed leases taken again, ids another worker holds now)
Refresh = Callable[[dict[str, str]], Awaitable[tuple[int, list[str]]]]

#: renewals per lease while they fail (lease_renewals while they work): a lost lease is seen soon after Redis is back
RENEWALS_WHILE_FAILING = 10
#: with stop_unleased, a job whose lease has not been renewed for this fraction of it is stopped
GIVE_UP_FRACTION = 0.75


class LeaseKeeper:
    """
    :param on_lost: called with a job id and why when its lease is given up; the caller stops the job
    :param stop_unleased: give up a lease whose renewals failed for GIVE_UP_FRACTION of it (see the module docstring)
    """

    def __init__(
        self,
        refresh: Refresh,
        lease_s: float,
        on_lost: Callable[[str, str], None],
        *,
        stop_unleased: bool = False,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        self._refresh = refresh
        self.lease_s = lease_s
        self._on_lost = on_lost
        self.stop_unleased = stop_unleased
        self._clock = clock
        self.held: dict[str, str] = {}  # job id -> the token of its lease
        self._renewed_at: dict[str, float] = {}  # job id -> when its lease was last known to be set
        self._failing = False

    def hold(self, job_id: str, token: str) -> None:
        self.held[job_id] = token
        self._renewed_at[job_id] = self._clock()

    def drop(self, job_id: str, token: str | None = None) -> bool:
        """Stop renewing the job's lease; with `token`, only that lease: the job may have been claimed again since
        (a settle that re-queues it and claims it back in one call, a claim's reply handled before a settle's).
        Returns whether a lease was dropped."""
        if job_id not in self.held or (token is not None and self.held[job_id] != token):
            return False
        del self.held[job_id]
        self._renewed_at.pop(job_id, None)
        return True

    async def run(self) -> None:
        """Renew until cancelled."""
        while True:
            # while renewals fail, try more often: once Redis answers again, a lost lease is seen soon
            await asyncio.sleep(self.lease_s / (RENEWALS_WHILE_FAILING if self._failing else lease_renewals))
            if self.held:
                await self.renew()

    async def renew(self) -> None:
        started = self._clock()  # before the call: Redis sets the new expiry later, never earlier
        try:
            # bounded: behind a silent partition a command waits for its socket timeout, and a lease must be given up
            # before it can lapse
            async with asyncio.timeout(self.lease_s / (2 * lease_renewals)):  # half the time between renewals
                lapsed, lost = await self._refresh(dict(self.held))
        except Exception as e:
            if not is_transient(e):  # a bug or bad data: keep the task alive, the next turn tries again
                logger.exception('unexpected error renewing job leases')
                return
            if not self._failing:
                logger.warning('could not renew job leases: %s: %s', e.__class__.__name__, e)
            self._failing = True
            if self.stop_unleased:
                self._give_up_unrenewed(self._clock())
            return
        self._failing = False
        for job_id in self.held:
            self._renewed_at[job_id] = started
        if lapsed:
            logger.warning('%d job leases had lapsed (event loop blocked or Redis unreachable); renewed', lapsed)
        for job_id in lost:
            if job_id in self.held:
                self.drop(job_id)
                self._on_lost(job_id, 'held by another worker now')

    def _give_up_unrenewed(self, now: float) -> None:
        for job_id, renewed_at in list(self._renewed_at.items()):
            if now - renewed_at >= self.lease_s * GIVE_UP_FRACTION:
                self.drop(job_id)
                self._on_lost(job_id, f'not renewed for {now - renewed_at:.1f}s, so it may run elsewhere soon')
