"""Waking idle workers: our enqueue_job publishes on the queue's nudge channel, so pickup does not wait a poll."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from .connections import ArqRedis
from .constants import nudge_channel_prefix
from .utils import reraise_if_cancelling

logger = logging.getLogger('arq.worker')

_BACKOFF_START_S, _BACKOFF_MAX_S = 0.1, 5.0
#: what makes the listener resubscribe, never die
_TROUBLE = (RedisError, OSError, asyncio.TimeoutError)


class NudgeListener:
    """
    :param wake: wakes the worker's loop
    :param wanted: whether a nudge is of use now (the worker has a free slot)
    """

    def __init__(self, pool: ArqRedis, queue_name: str, wake: Callable[[], None], wanted: Callable[[], bool]) -> None:
        self.pool = pool
        self.channel = nudge_channel_prefix + queue_name
        self.wake = wake
        self.wanted = wanted
        self.stopped = False
        self._pubsub: PubSub | None = None

    async def subscribe(self) -> None:
        """Subscribe to the nudge channel; on failure `run` tries again later."""
        pubsub = self.pool.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.channel)
        except _TROUBLE as e:
            logger.debug('could not subscribe to nudges: %s', e)
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            return
        self._pubsub = pubsub
        self.wake()  # something may have been enqueued while unsubscribed

    async def run(self) -> None:
        """Wake the loop on every nudge while it wants one; resubscribe with backoff when the connection drops."""
        backoff = _BACKOFF_START_S
        while not self.stopped:
            try:
                if self._pubsub is None:
                    await self.subscribe()
                if self._pubsub is None:
                    raise ConnectionError('not subscribed')
                async for message in self._pubsub.listen():
                    backoff = _BACKOFF_START_S
                    if message['type'] == 'message' and self.wanted():
                        self.wake()
            except _TROUBLE as e:
                reraise_if_cancelling()
                logger.debug('nudge subscription lost: %s; resubscribing in %0.1fs', e, backoff)
                await self.close()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
