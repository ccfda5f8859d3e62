"""Waking idle workers at once: our enqueue pushes a token on the queue's wake list, and an idle worker blocks on it.

Each token wakes one worker (BLPOP hands an element to one waiting client), so an enqueue wakes one idle worker, not
every one of them: eight idle children used to send eight claims for every job enqueued. A worker with no free slot
does not wait on the list, so tokens go to workers that can take the job. Jobs enqueued by the published arq push no
token: they are picked up at the worker's poll.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

from redis.exceptions import RedisError

from .connections import ArqRedis
from .constants import wake_list_prefix
from .utils import reraise_if_cancelling

logger = logging.getLogger('arq.worker')

_BACKOFF_START_S, _BACKOFF_MAX_S = 0.1, 5.0
#: what makes the listener wait and try again, never die
_TROUBLE = (RedisError, OSError, asyncio.TimeoutError)
#: the longest one BLPOP blocks: an idle worker's one command every few seconds (a stop cancels it at once); less
#: than the connection's socket timeout (redis-py 8 defaults to 5 s), which would drop the connection every time
BLOCK_S = 10


class WakeListener:
    """
    Waits for tokens only while the worker's loop sleeps with a free slot: a loop that is busy claims anyway, and a
    listener that took tokens then (a full queue has many) would only hand them back, two commands per token for
    nothing (they were 4,000 of the 8,000 commands of a 20,000-job drain).

    :param wake: wakes the worker's loop
    :param can_take: whether the worker can take a job now (a free slot)
    :param waiting: whether the loop sleeps now (it calls `recheck()` when it starts to)
    """

    def __init__(
        self,
        pool: ArqRedis,
        queue_name: str,
        wake: Callable[[], None],
        can_take: Callable[[], bool],
        waiting: Callable[[], bool],
    ) -> None:
        self.pool = pool
        self.key = wake_list_prefix + queue_name
        self.wake = wake
        self.can_take = can_take
        self.waiting = waiting
        self.stopped = False
        self._recheck = asyncio.Event()
        socket_timeout = pool.connection_pool.connection_kwargs.get('socket_timeout')
        self.block_s = BLOCK_S if not socket_timeout else max(1, min(BLOCK_S, math.ceil(socket_timeout) - 1))

    def recheck(self) -> None:
        """The worker's loop started to sleep: it may want a token now."""
        self._recheck.set()

    def wanted(self) -> bool:
        return self.waiting() and self.can_take()

    async def run(self) -> None:
        """Take wake tokens while the worker can take jobs; back off while Redis fails."""
        backoff = _BACKOFF_START_S
        while not self.stopped:
            if not self.wanted():
                self._recheck.clear()
                await self._recheck.wait()
                continue
            try:
                token = await self.pool.blpop([self.key], timeout=self.block_s)
            except _TROUBLE as e:
                reraise_if_cancelling()
                logger.debug('waiting for wake tokens failed: %s; again in %0.1fs', e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                continue
            backoff = _BACKOFF_START_S
            if token is not None:
                await self._woken()

    async def _woken(self) -> None:
        if self.can_take():  # the loop claims soon, sleeping or not
            self.wake()
            return
        try:  # every slot filled meanwhile: give the token to another worker
            await self.pool.rpush(self.key, '1')
        except _TROUBLE as e:
            logger.debug('could not hand a wake token back: %s', e)
