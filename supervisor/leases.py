"""The parent keeps its children's leases alive, so the lease can be short.

A child renews its own leases from its event loop; a loop that stalls (a job blocking it) would let them lapse and
its jobs run twice, so the lease once had to outlive the longest stall the parent tolerates (~18 s at defaults) and a
lost host's jobs waited that long to run again. The parent renews every live child's leases itself, in one script
call a second, fenced to that child's tokens: a stalled child keeps its jobs until the parent kills it for the stall
(and releases them), while a host that dies whole stops renewing, and its jobs are claimable after one short lease.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import redis

from arq import contract, scripts_fleet
from arq_supervise.config import RENEW_INTERVAL_S
from arq_supervise.process import Child
from arq_supervise.release import RedisLink, child_worker_id

logger = logging.getLogger('arq_supervise.leases')


class LeaseKeeper:
    def __init__(self, link: RedisLink, lease_s: float, interval_s: float = RENEW_INTERVAL_S) -> None:
        self.link = link
        self.lease_ms = int(lease_s * 1000)
        self.interval_s = interval_s
        self.next_at = 0.0
        self.renewed = 0

    def renew(self, children: Iterable[Child], now: float) -> None:
        """Renew what every child still reports holding; a failure waits for the next turn (the children renew too)."""
        if now < self.next_at:
            return
        self.next_at = now + self.interval_s
        holders = {job_id: child_worker_id(child.pid) for child in children for job_id in child.all_held()}
        if not holders:
            return
        _, args = contract.renew_for_args(self.lease_ms, holders)
        try:
            self.renewed = int(self.link.client.register_script(scripts_fleet.RENEW_FOR)(keys=[], args=args))
        except redis.RedisError as e:
            logger.debug("could not renew the children's leases: %s: %s", e.__class__.__name__, e)
            self.link.drop()
