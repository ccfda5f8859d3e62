"""Taking jobs in: claim due jobs for the free slots, and start each under one record (arq.running)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

from .claimer import Claimer
from .contract import Claim, ClaimReply, Settlement, SettleReply
from .leases import LeaseKeeper
from .observer import WorkerObserver
from .pacing import Pacer
from .runner import JobCounters, JobRunner
from .running import RunningJob, RunningJobs


class Intake:
    """
    :param pacer: told of each claim's reply, and woken when a job's task ends and `turn_after_job` says the loop
        has something to do then (a slot to claim for, the last job gone)
    """

    def __init__(
        self,
        claimer: Claimer,
        runner: JobRunner,
        running: RunningJobs,
        leases: LeaseKeeper,
        counters: JobCounters,
        observer: WorkerObserver,
        pacer: Pacer,
        turn_after_job: Callable[[], bool] = lambda: True,
    ) -> None:
        self.claimer = claimer
        self.runner = runner
        self.running = running
        self.leases = leases
        self.counters = counters
        self.observer = observer
        self.pacer = pacer
        self.turn_after_job = turn_after_job
        #: the queue's length and its first job's score, as of the last claim (None: not known)
        self.queued: int | None = None
        self.next_score: int | None = None

    async def claim(self, free_slots: int, *, read_limit: int, check_abort: bool) -> ClaimReply | None:
        """Claim and start due jobs; returns the claim's reply (None: no claim was needed)."""
        reply = await self.claimer.claim(free_slots, read_limit=read_limit, check_abort=check_abort)
        if reply is not None:
            self._accept(reply)
            self.pacer.claimed(reply.queued, bool(reply.jobs))
            capped = free_slots > self.claimer.claim_size and len(reply.jobs) >= self.claimer.claim_size
            if capped or self.claimer.lost:  # the queue may hold more, or another lane's jobs wait to be recovered
                self.pacer.wake()
        return reply

    async def settle_and_claim(
        self, batch: list[Settlement], want: int, *, recent_cap: int, read_limit: int, check_abort: bool
    ) -> SettleReply:
        """Settle `batch` and claim jobs for up to `want` slots (those the batch frees) in one round trip."""
        settled, claimed = await self.claimer.settle_and_claim(
            batch, want, recent_cap=recent_cap, read_limit=read_limit, check_abort=check_abort
        )
        if claimed is not None:
            self._accept(claimed)
            self.pacer.claimed(claimed.queued, bool(claimed.jobs), polled=False)
        return settled

    def _accept(self, reply: ClaimReply) -> None:
        self.queued, self.next_score = reply.queued, reply.next_score
        if reply.jobs:
            self._start(reply.jobs)

    def _start(self, claims: list[Claim]) -> None:
        for claim in claims:
            self.leases.hold(claim.job_id, claim.token)
        self.counters.started += len(claims)
        self.observer.claimed([c.job_id for c in claims])
        for claim in claims:
            job = self.running.add(claim)
            job.task = asyncio.create_task(self.runner.run(job))
            job.task.add_done_callback(functools.partial(self._done, job))

    def _done(self, job: RunningJob, task: asyncio.Task[None]) -> None:
        self.running.remove(job)
        if self.turn_after_job():
            self.pacer.wake()
