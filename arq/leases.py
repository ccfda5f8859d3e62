"""The worker's leases: the in-progress keys of the jobs it runs, renewed while they run.

Every third of a lease all held leases are renewed in one script call. A lease the renewal finds held by another
worker is lost: that worker runs the job now, so the job is given up here and stopped (its settle would be dropped
by the fence anyway). A lease that lapsed while nobody else took the job (Redis was down for everyone) is taken
again, and the job runs on.

A lease that cannot be renewed is not given up by itself: from inside, a Redis that is down for everyone (no other
worker can take the job, and stopping it would only run it twice) looks like a partition of this worker alone
(another worker takes the job once the lease lapses). While renewals fail they are tried ten times a lease instead
of three, so after a partition heals the loss is seen, and the job stopped, within a tenth of a lease: a job runs on
two workers at once for at most the partition's length beyond the lease, plus that tenth.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .settle import is_transient

logger = logging.getLogger('arq.worker')

#: renews the given leases (job id -> token); returns (lapsed leases taken again, ids another worker holds now)
Refresh = Callable[[dict[str, str]], Awaitable[tuple[int, list[str]]]]


class LeaseKeeper:
    """
    :param on_lost: called with a job id and why when its lease is found held by another worker; the caller stops
      the job
    """

    def __init__(
        self,
        refresh: Refresh,
        lease_s: float,
        on_lost: Callable[[str, str], None],
    ) -> None:
        self._refresh = refresh
        self.lease_s = lease_s
        self._on_lost = on_lost
        self.held: dict[str, str] = {}  # job id -> the token of its lease
        self._failing = False

    def hold(self, job_id: str, token: str) -> None:
        self.held[job_id] = token

    def drop(self, job_id: str) -> None:
        self.held.pop(job_id, None)

    async def run(self) -> None:
        """Renew until cancelled."""
        while True:
            # while renewals fail, try more often: once Redis answers again, a lost lease is seen soon
            await asyncio.sleep(self.lease_s / (10 if self._failing else 3))
            if self.held:
                await self.renew()

    async def renew(self) -> None:
        try:
            lapsed, lost = await self._refresh(dict(self.held))
        except Exception as e:
            if not is_transient(e):  # a bug or bad data: keep the task alive, the next turn tries again
                logger.exception('unexpected error renewing job leases')
                return
            if not self._failing:
                logger.warning('could not renew job leases: %s: %s', e.__class__.__name__, e)
            self._failing = True
            return
        self._failing = False
        if lapsed:
            logger.warning('%d job leases had lapsed (event loop blocked or Redis unreachable); renewed', lapsed)
        for job_id in lost:
            if job_id in self.held:
                self.drop(job_id)
                self._on_lost(job_id, 'held by another worker now')
