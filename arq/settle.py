"""Settling jobs in batches: every settlement of one loop turn goes to Redis in one script call.

The batcher owns the tasks that write, and resolves the future of every settlement on every path: a job waits for
its settle while its lease is renewed, so a future nobody resolves is a job that hangs forever while nothing looks
wrong. A write that fails for a reason that may pass (a lost connection, a failover, a full Redis) is retried with
backoff; one that fails for good (a script error, a key of the wrong type, a bug) is split, so one bad settlement
cannot hold back the others, and a job whose outcome cannot be recorded is released to run again later; if even that
fails its lease is given up and lapses by itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from redis.exceptions import (
    BusyLoadingError,
    ConnectionError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TimeoutError,
    TryAgainError,
)

from .contract import REQUEUE, Settlement, SettleReply
from .utils import timestamp_ms

logger = logging.getLogger('arq.worker')

#: writes the batch; the reply says whose settlement was dropped
WriteBatch = Callable[[list[Settlement]], Awaitable[SettleReply]]

_BACKOFF_START_S, _BACKOFF_MAX_S = 0.1, 5.0
#: a job whose outcome could not be recorded runs again after this long, not in a tight loop
RELEASE_DELAY_MS = 10_000
_TRANSIENT_REPLIES = ('NOREPLICAS', 'MASTERDOWN', 'LOADING', 'BUSY', 'OOM', 'READONLY', 'TRYAGAIN', 'CLUSTERDOWN')


def is_transient(e: BaseException) -> bool:
    """An error that may pass if the same command is sent again later."""
    passing = (ConnectionError, TimeoutError, OSError, asyncio.TimeoutError, BusyLoadingError, MasterDownError,
               OutOfMemoryError, ReadOnlyError, TryAgainError)  # fmt: skip
    if isinstance(e, passing):
        return True
    return isinstance(e, ResponseError) and str(e).startswith(_TRANSIENT_REPLIES)


class SettleBatcher:
    """
    :param write: runs the settle script for a batch
    :param on_settled: called with the settlements that left this worker (written, dropped as fenced, or given up)
    :param on_transient: called with each transient error and the backoff before the next try
    :param on_written: called after each write Redis accepted (a transient trouble is over)
    """

    def __init__(
        self,
        write: WriteBatch,
        on_settled: Callable[[list[Settlement]], None],
        *,
        on_transient: Callable[[BaseException, float], None],
        on_written: Callable[[], None] = lambda: None,
    ) -> None:
        self._write = write
        self._on_settled = on_settled
        self._on_transient = on_transient
        self._on_written = on_written
        self._pending: list[tuple[Settlement, asyncio.Future[None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def settle(self, settlement: Settlement) -> None:
        """Queue a settlement for this loop turn's batch and wait until Redis has it (or it was given up)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((settlement, future))
        await future  # cancelled with its waiter, it is still written: _settle_batch resolves only undone futures

    @property
    def busy(self) -> bool:
        """Settlements wait to be written, or are being written."""
        return bool(self._pending or self._tasks)

    async def close(self) -> None:
        """Wait for the writes under way."""
        self._flush()
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._settle_batch(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _settle_batch(self, batch: list[tuple[Settlement, asyncio.Future[None]]]) -> None:
        try:
            await self._write_or_split([s for s, _ in batch])
        finally:  # also when cancelled while retrying (the worker is closing): the leases then lapse by themselves
            self._on_settled([s for s, _ in batch])
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    async def _write_or_split(self, batch: list[Settlement]) -> None:
        try:
            reply, resent = await self._write_retrying(batch)
        except Exception as e:
            if len(batch) > 1:
                logger.warning('settling %d jobs failed (%s: %s); settling them one by one', len(batch),
                               e.__class__.__name__, e)  # fmt: skip
                for settlement in batch:
                    await self._write_or_split([settlement])
                return
            await self._fall_back(batch[0], e)
            return
        for job_id in reply.lost:
            logger.warning('lease lost, result dropped: job %s is held by another worker or waits to run again',
                           job_id, extra={'job_id': job_id})  # fmt: skip
        for job_id in reply.gone:
            if resent:  # an earlier try may have been applied before the connection broke: we cannot tell
                logger.warning('result dropped: job %s was settled already (by another worker whose lease it was, '
                               'or by this settle before its reply was lost)', job_id,
                               extra={'job_id': job_id})  # fmt: skip
            else:
                logger.warning('lease lost, result dropped: job %s was finished by another worker', job_id,
                               extra={'job_id': job_id})  # fmt: skip

    async def _fall_back(self, settlement: Settlement, error: Exception) -> None:
        job_id = settlement.job_id
        why = f'{error.__class__.__name__}: {error}'
        if settlement.finishes:
            logger.error('could not record the outcome of job %s (%s); releasing it to run again in %ds', job_id,
                         why, RELEASE_DELAY_MS // 1000, extra={'job_id': job_id})  # fmt: skip
            delay_ms = RELEASE_DELAY_MS + max(timestamp_ms() - settlement.score, 0) if settlement.score else 0
            release = Settlement(job_id, REQUEUE, settlement.token, score_incr=delay_ms)
            try:
                await self._write_retrying([release])
                return
            except Exception as e:
                why = f'{e.__class__.__name__}: {e}'
        logger.error('could not settle job %s (%s); giving up its lease, which lapses by itself', job_id, why,
                     extra={'job_id': job_id})  # fmt: skip

    async def _write_retrying(self, batch: list[Settlement]) -> tuple[SettleReply, bool]:
        """(the reply, whether the batch had to be sent more than once: an earlier try may have been applied)"""
        backoff, resent = _BACKOFF_START_S, False
        while True:
            try:
                reply = await self._write(batch)
            except Exception as e:
                if not is_transient(e):
                    raise
                # keep trying: the job ran, dropping its outcome would run it again; the lease is kept meanwhile
                self._on_transient(e, backoff)
                await asyncio.sleep(backoff)
                backoff, resent = min(backoff * 2, _BACKOFF_MAX_S), True
                continue
            self._on_written()
            return reply, resent
