"""The jobs a worker is running: one record per job, from its claim until its task ends.

Before, a running job's state was spread over five registries (the job's task, its function's task, the lease, the
abort mark, when it was last cancelled) that had to be kept in step by hand. A `RunningJob` holds all of it but the
lease, which lives on in `arq.leases.LeaseKeeper` for its own reason: a lease is held from the claim until the job's
settlement is committed, which can outlast the job's task (a settle that is re-queued for later) or end before it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .contract import Claim

logger = logging.getLogger('arq.worker')


@dataclass(eq=False)
class RunningJob:
    claim: Claim
    #: the job's whole life: run, settle, hooks (set when the job starts)
    task: asyncio.Task[None] | None = None
    #: the job function runs now (in `task`): only then does an abort, a shutdown or a lost lease cancel the task
    in_function: bool = False
    #: cancellations of `task` sent by this worker and not yet taken back (see JobRunner._call)
    cancels: int = 0
    #: cancelled because an abort was requested (the outcome is then "aborted", not "cancelled, run again")
    aborting: bool = False
    #: loop time of the last cancellation, to cancel again a job that ignored it
    cancelled_at: float | None = None
    #: its function ran past its timeout and was cancelled for it (arq.deadlines)
    timed_out: bool = False

    @property
    def job_id(self) -> str:
        return self.claim.job_id

    @property
    def function_task(self) -> asyncio.Task[Any] | None:
        """The task running the job function, while the function runs (the job's own task)."""
        return self.task if self.in_function else None

    def cancel(self) -> bool:
        """Cancel the job function if it runs; returns whether there was one to cancel."""
        task = self.function_task
        if task is None or task.done():
            return False
        self.cancelled_at = asyncio.get_running_loop().time()
        if task.cancel():
            self.cancels += 1
        return True

    def time_out(self) -> None:
        """Cancel the job function for running past its timeout (JobRunner._call makes that a TimeoutError, as
        `asyncio.timeout` would; like it, a function that swallows the cancellation is not cancelled again)."""
        task = self.function_task
        if task is None or task.done():
            return
        self.timed_out = True
        if task.cancel():
            self.cancels += 1

    def take_cancels(self) -> int:
        """How many cancellations this worker sent while the function ran (the runner takes them back)."""
        cancels, self.cancels = self.cancels, 0
        return cancels


class RunningJobs:
    """job id -> RunningJob, for the jobs whose task has not ended."""

    def __init__(self) -> None:
        self._jobs: dict[str, RunningJob] = {}

    def add(self, claim: Claim) -> RunningJob:
        job = RunningJob(claim)
        self._jobs[claim.job_id] = job
        return job

    def remove(self, job: RunningJob) -> None:
        """Forget `job`, unless a later claim of the same id replaced it."""
        if self._jobs.get(job.job_id) is job:
            del self._jobs[job.job_id]

    def get(self, job_id: str) -> RunningJob | None:
        return self._jobs.get(job_id)

    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self) -> Iterator[RunningJob]:
        return iter(list(self._jobs.values()))

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def tasks(self) -> list[asyncio.Task[None]]:
        return [job.task for job in self._jobs.values() if job.task is not None]

    def functions_running(self) -> int:
        return sum(1 for job in self._jobs.values() if job.in_function)

    def lease_lost(self, job_id: str, why: str) -> None:
        """Stop a job whose lease is gone: another worker may run it now, and its outcome here would be dropped."""
        logger.warning('lease lost: job %s is %s; cancelling it here', job_id, why, extra={'job_id': job_id})
        job = self._jobs.get(job_id)
        if job is not None:
            job.cancel()

    def cancel_all(self) -> int:
        """Cancel every job function running; returns how many were."""
        return sum(job.cancel() for job in self)

    def stragglers(self, older_than_s: float) -> list[RunningJob]:
        """Jobs still running `older_than_s` after they were cancelled."""
        now = asyncio.get_running_loop().time()
        return [
            job
            for job in self
            if job.cancelled_at is not None
            and now - job.cancelled_at >= older_than_s
            and job.function_task is not None
            and not job.function_task.done()
        ]
