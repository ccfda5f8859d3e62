"""The worker's Redis scripts, each a typed call: named parameters in, a parsed reply out (see arq.contract).

The claim and settle scripts, one call per batch of jobs, go through a connection of the worker's own
(arq.channel) where the pool's connections are plain ones; the others, and every script of a TLS or Sentinel pool, go
through redis-py's Script objects. Both send EVALSHA and load the script after a NOSCRIPT (a Redis restart, a
failover).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import contract, scripts
from .channel import ScriptChannel
from .connections import ArqRedis
from .constants import abort_entry_max_age_ms, abort_jobs_ss, in_progress_key_prefix, job_key_prefix
from .contract import ClaimReply, Settlement, SettleReply
from .utils import timestamp_ms


class WorkerScripts:
    def __init__(self, pool: ArqRedis, queue_name: str, worker_id: str, lease_ms: int) -> None:
        self.queue_name = queue_name
        self.worker_id = worker_id
        self.lease_ms = lease_ms
        self._claim = pool.register_script(scripts.CLAIM)
        self._settle = pool.register_script(scripts.SETTLE)
        self._settle_and_claim = pool.register_script(scripts.SETTLE_AND_CLAIM)
        self._refresh = pool.register_script(scripts.REFRESH_LEASES)
        self._poll_aborts = pool.register_script(scripts.POLL_ABORTS)
        self._channel = ScriptChannel.for_pool(pool)

    def disconnect(self) -> None:
        """Close the claim and settle connection (the pool's are the pool owner's); the next call opens it again."""
        if self._channel is not None:
            self._channel.disconnect()

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """A claim or settle script, through the worker's own connection when it has one."""
        if self._channel is None:
            return await script(keys=keys, args=args)
        return await self._channel.evalsha(script.sha, script.script, keys, args)

    async def claim(
        self, token: str, *, want: int, read_limit: int, check_abort: bool, recover: bool, lane: int = 0
    ) -> ClaimReply:
        """Lease up to `want` due jobs under `token`; `recover`: this token's reply was lost, return its jobs (from
        the record of claim lane `lane`)."""
        keys, args = self._claim_args(token, want, read_limit, check_abort, recover, lane)
        return contract.parse_claim(await self._run(self._claim, keys, args), token)

    def _claim_args(
        self, token: str, want: int, read_limit: int, check_abort: bool, recover: bool, lane: int
    ) -> tuple[list[str], list[Any]]:
        return contract.claim_args(
            queue=self.queue_name, worker_id=self.worker_id, token=token, now_ms=timestamp_ms(),
            lease_ms=self.lease_ms, want=want, read_limit=read_limit, check_abort=check_abort, recover=recover,
            lane=lane,
        )  # fmt: skip

    async def settle_and_claim(
        self,
        batch: Sequence[Settlement],
        *,
        recent_cap: int,
        token: str,
        want: int,
        read_limit: int,
        check_abort: bool,
        lane: int = 0,
    ) -> tuple[SettleReply, ClaimReply | None]:
        """`settle(batch)`, then `claim(token, want=...)` for the slots it frees, in one round trip (None: Redis was
        full, nothing was claimed)."""
        settle = contract.settle_args(self.queue_name, batch, now_ms=timestamp_ms(), recent_cap=recent_cap)
        claim = self._claim_args(token, want, read_limit, check_abort, False, lane)
        keys, args = contract.settle_and_claim_args(settle, claim)
        return contract.parse_settle_and_claim(await self._run(self._settle_and_claim, keys, args), token)

    async def settle(self, batch: Sequence[Settlement], *, recent_cap: int) -> SettleReply:
        keys, args = contract.settle_args(self.queue_name, batch, now_ms=timestamp_ms(), recent_cap=recent_cap)
        return contract.parse_settle(await self._run(self._settle, keys, args))

    async def refresh(self, held: dict[str, str]) -> tuple[int, list[str]]:
        """Renew the leases `held` (job id -> token): (lapsed leases taken again, ids another worker holds now)."""
        keys, args = contract.refresh_args(self.queue_name, self.lease_ms, held)
        return contract.parse_refresh(await self._refresh(keys=keys, args=args))

    async def requested_aborts(self) -> list[str]:
        """The ids whose abort was requested (stale requests are pruned on the way)."""
        args: list[Any] = [timestamp_ms(), abort_entry_max_age_ms, job_key_prefix, in_progress_key_prefix]
        return [raw.decode() for raw in await self._poll_aborts(keys=[abort_jobs_ss], args=args)]
