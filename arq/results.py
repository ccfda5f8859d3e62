"""Waiting for results at scale: one shared subscription and batched reads per client, not a connection per waiter.

`Job.result()` once opened a pub/sub connection of its own and read the job's keys over another: 10,000 concurrent
waiters meant 10,000 subscriber connections and as many concurrent reads. Here every waiter of one client shares one
subscriber connection (one channel per awaited job, unsubscribed when its last waiter leaves) and the reads of one
loop turn go to Redis as one pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from .constants import job_done_channel_prefix, result_key_prefix

logger = logging.getLogger('arq.jobs')

_TROUBLE = (RedisError, OSError, asyncio.TimeoutError)
_SUBSCRIBE, _UNSUBSCRIBE = 'subscribe', 'unsubscribe'
#: the longest pipeline of reads sent at once
_MAX_READS = 5000

_watches: weakref.WeakKeyDictionary[Redis, ResultWatch] = weakref.WeakKeyDictionary()


def result_watch(redis: Redis) -> ResultWatch:
    """The watch shared by every waiter on this client (in this event loop)."""
    watch = _watches.get(redis)
    if watch is None or watch.loop is not asyncio.get_running_loop():
        watch = _watches[redis] = ResultWatch(redis)
    return watch


class ResultWatch:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.loop = asyncio.get_running_loop()
        self._events: dict[str, set[asyncio.Event]] = {}  # channel -> the events of its waiters
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._reads: dict[tuple[str, str], list[asyncio.Future[tuple[Any, Any]]]] = {}
        self._reading: asyncio.Task[None] | None = None
        self._batches: dict[str, tuple[list[str], asyncio.Future[None]]] = {}  # (un)subscribes of this loop turn
        self._sending: set[asyncio.Task[None]] = set()

    # --- notifications ---

    async def watch(self, job_id: str) -> asyncio.Event:
        """An event set when the job's done notification arrives; `unwatch` it when done waiting."""
        channel = job_done_channel_prefix + job_id
        event = asyncio.Event()
        waiters = self._events.setdefault(channel, set())
        waiters.add(event)
        if len(waiters) == 1:
            with contextlib.suppress(*_TROUBLE):  # no notification then: the waiter's poll still finds the result
                # shielded: the subscription is shared with the other waiters of this loop turn
                await asyncio.shield(self._queue(_SUBSCRIBE, channel))
        return event

    async def unwatch(self, job_id: str, event: asyncio.Event) -> None:
        channel = job_done_channel_prefix + job_id
        waiters = self._events.get(channel)
        if waiters is None:
            return
        waiters.discard(event)
        if not waiters:
            del self._events[channel]
            self._queue(_UNSUBSCRIBE, channel)  # sent with this loop turn's others; nobody waits for it

    def _queue(self, kind: str, channel: str) -> asyncio.Future[None]:
        """(Un)subscribe `channel` together with the others of this loop turn: 10,000 waiters finishing at once sent
        10,000 UNSUBSCRIBEs one by one, and the last notifications queued behind them."""
        batch = self._batches.get(kind)
        if batch is None:
            batch = self._batches[kind] = ([], self.loop.create_future())
            self.loop.call_soon(self._send_batch, kind)
        batch[0].append(channel)
        return batch[1]

    def _send_batch(self, kind: str) -> None:
        channels, future = self._batches.pop(kind)
        task = self.loop.create_task(self._send(kind, channels, future))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, kind: str, channels: list[str], future: asyncio.Future[None]) -> None:
        error: BaseException | None = None
        try:
            if kind == _SUBSCRIBE:
                await self._subscribe(channels)
            else:
                await self._unsubscribe(channels)
        except _TROUBLE as e:
            logger.debug('result notifications: %s of %d channels failed: %s', kind, len(channels), e)
            error = e
        finally:
            if not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
                    future.exception()  # marked retrieved: waiters that left meanwhile leave no warning

    async def _unsubscribe(self, channels: list[str]) -> None:
        pubsub = self._pubsub
        if not self._events or pubsub is None:
            return  # nobody waits: the reader closes the subscriber connection, and every subscription with it
        still_unwatched = [c for c in channels if c not in self._events]  # watched again meanwhile: kept
        if still_unwatched:
            await pubsub.unsubscribe(*still_unwatched)
        if self._pubsub is not pubsub:  # closed meanwhile: redis-py may have reconnected it to unsubscribe
            await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]

    async def _subscribe(self, channels: list[str]) -> None:
        if self._pubsub is None:
            self._pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(*channels)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_notifications())

    async def _read_notifications(self) -> None:
        """Dispatch notifications while anyone waits, then close the subscriber connection."""
        while self._events and self._pubsub is not None:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except _TROUBLE as e:
                logger.debug('result notifications interrupted: %s', e)
                await asyncio.sleep(0.5)  # redis-py reconnects and subscribes again on the next read
                continue
            if message is not None and message.get('type') == 'message':
                channel = message['channel']
                for event in self._events.get(channel.decode() if isinstance(channel, bytes) else channel, ()):
                    event.set()
        pubsub, self._pubsub = self._pubsub, None
        self._reader = None  # a waiter arriving while this one closes starts a reader of its own
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]

    # --- reads ---

    async def read(self, job_id: str, queue_name: str) -> tuple[Any, Any]:
        """(the job's score in its queue or None, its stored result or None), read with every other read queued in
        this loop turn."""
        future: asyncio.Future[tuple[Any, Any]] = self.loop.create_future()
        if not self._reads and self._reading is None:
            self.loop.call_soon(self._flush_reads)
        self._reads.setdefault((job_id, queue_name), []).append(future)
        return await future

    def _flush_reads(self) -> None:
        """Send what is queued as one pipeline; reads queued meanwhile wait for it (one connection for all reads)."""
        if self._reading is not None or not self._reads:
            return
        keys = list(self._reads)[:_MAX_READS]
        batch = {key: self._reads.pop(key) for key in keys}
        self._reading = self.loop.create_task(self._read_batch(batch))
        self._reading.add_done_callback(self._read_done)

    def _read_done(self, task: asyncio.Task[None]) -> None:
        self._reading = None
        self._flush_reads()

    async def _read_batch(self, batch: dict[tuple[str, str], list[asyncio.Future[tuple[Any, Any]]]]) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id, queue_name in batch:
                    pipe.zscore(queue_name, job_id)
                    pipe.get(result_key_prefix + job_id)
                replies = await pipe.execute()
        except BaseException as e:
            for futures in batch.values():
                for future in futures:
                    if future.done():
                        continue
                    if isinstance(e, Exception):
                        future.set_exception(e)
                    else:
                        future.cancel()
            if not isinstance(e, Exception):
                raise
            return
        for i, futures in enumerate(batch.values()):
            for future in futures:
                if not future.done():
                    future.set_result((replies[2 * i], replies[2 * i + 1]))
