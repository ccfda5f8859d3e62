"""Taking jobs in: claim due jobs for the free slots, and start each under one record (arq.running)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

from .contract import Claim, ClaimReply
from .leases import LeaseKeeper
from .observer import WorkerObserver
from .runner import JobCounters, JobRunner
from .running import RunningJob, RunningJobs
from .worker_scripts import Claimer


class Intake:
    """
    :param on_slot_freed: called when a job's task ends (the worker's loop may claim again)
    """

    def __init__(
        self,
        claimer: Claimer,
        runner: JobRunner,
        running: RunningJobs,
        leases: LeaseKeeper,
        counters: JobCounters,
        observer: WorkerObserver,
        on_slot_freed: Callable[[], None],
    ) -> None:
        self.claimer = claimer
        self.runner = runner
        self.running = running
        self.leases = leases
        self.counters = counters
        self.observer = observer
        self._on_slot_freed = on_slot_freed
        #: the queue's length and its first job's score, as of the last claim (None: not known)
        self.queued: int | None = None
        self.next_score: int | None = None

    async def claim(self, free_slots: int, *, read_limit: int, check_abort: bool) -> ClaimReply | None:
        """Claim and start due jobs; returns the claim's reply (None: no claim was needed)."""
        reply = await self.claimer.claim(free_slots, read_limit=read_limit, check_abort=check_abort)
        if reply is None:
            return None
        self.queued, self.next_score = reply.queued, reply.next_score
        if reply.jobs:
            self._start(reply.jobs)
        return reply

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
        self._on_slot_freed()
