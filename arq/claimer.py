"""Claiming jobs under lease tokens, in two lanes.

A worker that claims for all its slots at once runs its jobs in step: they start together, end together, and settle
in one round trip that claims their successors; while that round trip is out, no job of this worker runs. So each
claim asks for at most half the slots, and the worker keeps two claims going: one half's jobs run while the other
half's settle-and-claim is on the wire. Measured on no-op jobs against a local Redis: at max_jobs 100, a third to a
half more jobs/s for the same CPU per job; at max_jobs 10, a few per cent more jobs/s for a third more CPU per job
(twice the claim calls, each with its fixed cost). The longer the round trip to Redis, the more the overlap is worth.

Each lane claims under a fresh token each time and keeps it until the reply arrives: a claim whose reply was lost (a
dropped connection, a timeout, a failover) is sent again with the same token and gets its jobs back from the lane's
claim record (scripts.CLAIM). A lane with a lost reply is recovered before any other claim, and its slots stay counted
as asked for meanwhile, so the two lanes never claim more than the worker's free slots between them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from . import contract
from .contract import ClaimReply, Settlement, SettleReply
from .worker_scripts import WorkerScripts

T = TypeVar('T')

#: a worker with fewer slots claims in one lane: a half of one or two slots is not worth its own round trip
MIN_SPLIT_SLOTS = 4
LANES = 2


@dataclass(slots=True)
class _Lane:
    number: int
    #: of the claim whose reply has not arrived: in flight, or lost (then sent again with `recover`)
    token: str | None = None
    #: the slots that claim asked for (0: none pending)
    asking: int = 0
    #: the running jobs that a settle-and-claim in flight settles: their slots are the ones it claims for
    frees: int = 0
    in_flight: bool = False

    @property
    def lost(self) -> bool:
        return self.token is not None and not self.in_flight


class Claimer:
    """
    :param max_jobs: the worker's slots; from MIN_SPLIT_SLOTS on, each claim asks for at most half of them
    """

    def __init__(self, scripts: WorkerScripts, max_jobs: int = 1) -> None:
        self._scripts = scripts
        self._claims = 0
        self._lanes = [_Lane(n) for n in range(LANES if max_jobs >= MIN_SPLIT_SLOTS else 1)]
        #: the most jobs one claim asks for
        self.claim_size = max(1, -(-max_jobs // len(self._lanes)))

    @property
    def pending(self) -> bool:
        """A claim was sent and its reply has not arrived (yet, or ever: the next claim recovers its jobs)."""
        return any(lane.token is not None for lane in self._lanes)

    @property
    def asking(self) -> int:
        """How many jobs the pending claims may start between them."""
        return sum(lane.asking for lane in self._lanes)

    @property
    def reserved(self) -> int:
        """The slots that pending claims may fill, less those of the running jobs whose settle claims for them (they
        leave when its reply comes): not free for another claim. Negative when a settle frees more than it asks."""
        return sum(lane.asking - lane.frees for lane in self._lanes)

    @property
    def lost(self) -> bool:
        """A lane's reply was lost: its jobs wait for the next `claim()` to recover them."""
        return any(lane.lost for lane in self._lanes)

    @property
    def can_refill(self) -> bool:
        """A lane is free and no lost reply waits to be recovered: a settle may claim in the same round trip."""
        return self._free_lane() is not None and not self.lost

    def record_keys(self) -> list[str]:
        """Every lane's claim record (deleted when the worker closes)."""
        return [contract.claim_record_key(self._scripts.worker_id, lane.number) for lane in self._lanes]

    async def claim(self, want: int, *, read_limit: int, check_abort: bool) -> ClaimReply | None:
        """Lease up to `want` due jobs (at most `claim_size`), or recover those of a lane whose reply was lost; None
        when there is nothing to ask or every lane is out."""
        lane = next((lane for lane in self._lanes if lane.lost), None)
        recovering = lane is not None
        if lane is None:
            lane = self._free_lane()
            if lane is None or want <= 0:
                return None
        ask = lane.asking if recovering else min(want, self.claim_size)
        return await self._send(
            lane, ask,
            lambda token: self._scripts.claim(
                token, want=ask, read_limit=read_limit, check_abort=check_abort, recover=recovering, lane=lane.number
            ),
        )  # fmt: skip

    async def settle_and_claim(
        self, batch: Sequence[Settlement], want: int, *, recent_cap: int, read_limit: int, check_abort: bool
    ) -> tuple[SettleReply, ClaimReply | None]:
        """Settle `batch` and claim up to `want` jobs (at most `claim_size`) in the same round trip; only when
        `can_refill` (a lost reply leaves its lane pending, and the next `claim()` recovers its jobs)."""
        lane = self._free_lane()
        assert lane is not None and self.can_refill, 'a pending claim must be recovered by claim() first'
        ask = min(want, self.claim_size)
        return await self._send(
            lane, ask,
            lambda token: self._scripts.settle_and_claim(
                batch, recent_cap=recent_cap, token=token, want=ask, read_limit=read_limit, check_abort=check_abort,
                lane=lane.number,
            ),
            frees=len(batch),
        )  # fmt: skip

    def _free_lane(self) -> _Lane | None:
        return next((lane for lane in self._lanes if lane.token is None), None)

    async def _send(self, lane: _Lane, ask: int, call: Callable[[str], Awaitable[T]], frees: int = 0) -> T:
        """Run `call` under the lane's token (a fresh one unless recovering); the lane stays pending until it
        returns."""
        if lane.token is None:
            self._claims += 1
            lane.token = contract.lease_token(self._scripts.worker_id, self._claims)
        lane.in_flight, lane.asking, lane.frees = True, ask, frees
        try:
            result = await call(lane.token)
        finally:  # a settle that failed is sent again alone: its jobs stay running until then
            lane.in_flight, lane.frees = False, 0
        lane.token, lane.asking = None, 0
        return result
