"""Follow a Sentinel failover at once, so no process keeps writing to a demoted master.

redis-py's Sentinel pool asks the sentinels for the master only when it opens a connection, and it opens one only
when an old one breaks. After `SENTINEL FAILOVER` the old master stays up and writable until the sentinels convert it
to a replica (about 10 s later); every write a pooled connection sends it meanwhile is flushed by the resync, with no
error anywhere. Measured: the replica is promoted ~80 ms after the leading sentinel announces `+try-failover`, and
`+switch-master` follows ~1 s after the promotion.

So each Sentinel-backed pool here subscribes to the failover events of every sentinel (one pub/sub connection per
sentinel, no extra round trip per command) and:

* on `+try-failover` for its master, it *fences* the master's address: it drops the pool's connections to it and
  refuses new ones, so writes wait (callers see a ConnectionError and retry) instead of landing on a node that is
  about to be abandoned;
* on `+switch-master` (or `+failover-end`, or a `-failover-abort-*`) of that sentinel, the fence is lifted; the old
  address stays refused for `DEMOTED_S` in case a sentinel that has not heard the news yet still names it, while the
  new master is found through the sentinels as usual;
* a fence lasts at most `FENCE_MAX_S`, and is lifted when its sentinel's subscription is lost.

A subscription that (re)starts asks its sentinel whether a failover is already in progress, so a pool made in the
middle of one is fenced too. Workers and client pools (asyncio) listen from a task the pool owns; the supervisor's
parent, whose loop must never wait, reads the pending events without blocking each time it checks a connection out.
Both pools are made by arq.clients (`async_client`, `sync_client`) from RedisSettings.

What this cannot do is take back a write the old master acknowledged before the fence and had not yet replicated:
the README's Sentinel section says which Redis settings bound that (`min-replicas-to-write`) and what they cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from time import monotonic
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.exceptions import ConnectionError, RedisError

from .utils import reraise_if_cancelling

logger = logging.getLogger('arq.sentinel')

Address = tuple[str, int]

#: the sentinels' channels that tell a failover's steps (`-failover-abort-*` has several reasons)
PATTERNS = ('+try-failover', '+switch-master', '+failover-end*', '-failover-abort-*')
#: a fence whose end we never hear is lifted after this long
FENCE_MAX_S = 30.0
#: how long a demoted master stays refused after `+switch-master`, while the other sentinels catch up (~50 ms)
DEMOTED_S = 15.0
#: a lost subscription is tried again after this long (the synchronous follower: at the next checkout after it)
RESUBSCRIBE_S = 1.0
_TIMEOUTS = ('socket_timeout', 'socket_connect_timeout')


@dataclass
class FailoverState:
    """What the sentinels have said about one master (pure: fed events, asked about addresses)."""

    service_name: str
    #: sentinel index -> (fenced address, deadline)
    fences: dict[int, tuple[Address, float]] = field(default_factory=dict)
    #: demoted address -> until when it is refused
    demoted: dict[Address, float] = field(default_factory=dict)

    def on_event(self, source: int, channel: str, data: str, now: float) -> Address | None:
        """Apply one event from sentinel `source`; returns an address whose connections must be dropped now."""
        words = data.split()
        if channel == '+switch-master':
            if len(words) < 5 or words[0] != self.service_name:
                return None
            old, new = (words[1], int(words[2])), (words[3], int(words[4]))
            self.fences.pop(source, None)
            self.demoted.pop(new, None)
            if old != new and self.demoted.get(old, 0.0) <= now:  # each sentinel announces it: log it once
                logger.warning('sentinel: master %s moved from %s:%d to %s:%d', self.service_name, *old, *new)
            if old != new:
                self.demoted[old] = now + DEMOTED_S
            return old
        if len(words) < 4 or words[0] != 'master' or words[1] != self.service_name:
            return None
        address = (words[2], int(words[3]))
        if channel == '+try-failover':
            if self.refusal(address, now) is None:
                logger.warning('sentinel: failover of %s started, no writes to %s:%d', self.service_name, *address)
            self.fence(source, address, now)
            return address
        if self.fences.pop(source, None) is not None:
            logger.info('sentinel: failover of %s over (%s)', self.service_name, channel)
        return None

    def fence(self, source: int, address: Address, now: float) -> None:
        self.fences[source] = (address, now + FENCE_MAX_S)

    def lost(self, source: int) -> None:
        """The subscription to sentinel `source` broke: what it fenced is no longer known."""
        self.fences.pop(source, None)

    def refusal(self, address: Address, now: float) -> str | None:
        """Why no connection to `address` may be opened now, or None."""
        for fenced, deadline in self.fences.values():
            if fenced == address and now < deadline:
                return f'failover of {self.service_name} in progress: not writing to the old master {address}'
        if self.demoted.get(address, 0.0) > now:
            return f'{address} was demoted from master of {self.service_name}; waiting for the sentinels to agree'
        return None


def _parse(message: dict[str, Any]) -> tuple[str, str] | None:
    if message.get('type') != 'pmessage':
        return None
    channel, data = message['channel'], message['data']
    return (
        channel.decode() if isinstance(channel, bytes) else str(channel),
        data.decode() if isinstance(data, bytes) else str(data),
    )


def _failing_over(state: Any) -> Address | None:
    """The master's address if this `SENTINEL MASTER` reply says a failover of it is in progress."""
    if not isinstance(state, dict):
        return None
    flags = state.get('flags', '')
    if 'failover_in_progress' not in (flags if isinstance(flags, (set, frozenset)) else str(flags).split(',')):
        return None
    return str(state['ip']), int(state['port'])


# --- asyncio: workers and client pools ---


class AsyncFollower:
    """One task per sentinel, owned by the pool, feeding a FailoverState and dropping fenced connections."""

    def __init__(self, pool: FollowingSentinelPool) -> None:
        self.pool = pool
        self.state = FailoverState(pool.service_name)
        self._tasks: list[asyncio.Task[None]] = []

    def ensure_started(self) -> None:
        if not self._tasks:
            sentinels = self.pool.sentinel_manager.sentinels
            self._tasks = [asyncio.create_task(self._follow(i, client)) for i, client in enumerate(sentinels)]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        # bounded: redis-py can swallow a cancellation that lands while it connects (or authenticates), and a pool's
        # close must not hang on it; closing the sentinel connections unblocks such a task, cancelled again
        _, pending = await asyncio.wait(tasks, timeout=1.0)
        if pending:
            for client in self.pool.sentinel_manager.sentinels:
                with contextlib.suppress(Exception):
                    await client.connection_pool.disconnect()
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=1.0)

    async def _follow(self, source: int, client: redis.asyncio.Redis) -> None:
        while True:
            reraise_if_cancelling()
            pubsub = client.pubsub()
            try:
                await pubsub.psubscribe(*PATTERNS)
                failing = _failing_over(await client.sentinel_master(self.pool.service_name))
                if failing is not None:
                    self.state.fence(source, failing, monotonic())
                    await self.pool.drop_connections_to(failing)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    event = _parse(message) if message else None
                    if event is not None:
                        address = self.state.on_event(source, *event, monotonic())
                        if address is not None:
                            await self.pool.drop_connections_to(address)
            except (RedisError, OSError) as e:
                logger.debug('sentinel subscription %d lost: %s', source, e)
                self.state.lost(source)
            except Exception:  # a reply we cannot read must not end the following for good
                logger.exception('sentinel subscription %d failed', source)
                self.state.lost(source)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
            await asyncio.sleep(RESUBSCRIBE_S)


class _AsyncFencedConnection(redis.asyncio.sentinel.SentinelManagedConnection):
    def __init__(self, **kwargs: Any) -> None:
        self.follower: AsyncFollower = kwargs.pop('follower')
        super().__init__(**kwargs)  # type: ignore[no-untyped-call, unused-ignore]

    async def connect_to(self, address: Address) -> None:
        self.follower.ensure_started()
        reason = self.follower.state.refusal(address, monotonic())
        if reason is not None:
            raise ConnectionError(reason)
        await super().connect_to(address)  # type: ignore[no-untyped-call, unused-ignore]


class _AsyncFencedSSLConnection(_AsyncFencedConnection, redis.asyncio.SSLConnection):
    pass


class FollowingSentinelPool(redis.asyncio.sentinel.SentinelConnectionPool):
    """redis-py's asyncio Sentinel pool, plus the follower above (started with the first connection)."""

    def __init__(self, service_name: str, sentinel_manager: Any, **kwargs: Any) -> None:
        ssl = kwargs.get('ssl', False)
        kwargs['connection_class'] = _AsyncFencedSSLConnection if ssl else _AsyncFencedConnection
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call, unused-ignore]
        self.follower = AsyncFollower(self)
        self.connection_kwargs['follower'] = self.follower

    async def drop_connections_to(self, address: Address) -> None:
        """Close idle connections to `address`; cut in-use ones (their command fails, is retried elsewhere)."""
        for conn in _matching(self._available_connections, address):
            await conn.disconnect()
        for conn in _matching(self._in_use_connections, address):
            conn.mark_for_reconnect()
            writer = getattr(conn, '_writer', None)
            if writer is not None:
                writer.transport.abort()

    async def aclose(self) -> None:
        await self.follower.stop()
        await super().aclose()
        with contextlib.suppress(RedisError, OSError):
            await self.sentinel_manager.aclose()  # the pool is the only user of its sentinel clients


# --- synchronous: the supervisor's parent, `arq-supervise status` ---


@dataclass
class _Subscription:
    pubsub: redis.client.PubSub | None = None
    retry_at: float = 0.0


class SyncFollower:
    """Reads the sentinels' events without blocking, each time the pool checks a connection out."""

    def __init__(self, pool: SyncFollowingSentinelPool) -> None:
        self.pool = pool
        self.state = FailoverState(pool.service_name)
        self._subs = [_Subscription() for _ in pool.sentinel_manager.sentinels]

    def poll(self) -> None:
        now = monotonic()
        for source, sub in enumerate(self._subs):
            if sub.pubsub is None and now >= sub.retry_at:
                self._subscribe(source, sub, now)
            if sub.pubsub is None:
                continue
            try:
                while (message := sub.pubsub.get_message(timeout=0.0)) is not None:
                    event = _parse(message)
                    address = self.state.on_event(source, *event, now) if event else None
                    if address is not None:
                        self.pool.drop_connections_to(address)
            except (RedisError, OSError) as e:
                logger.debug('sentinel subscription %d lost: %s', source, e)
                self._close(source, sub, now)

    def _subscribe(self, source: int, sub: _Subscription, now: float) -> None:
        sentinel = self.pool.sentinel_manager.sentinels[source]
        # the pool's own timeouts (the parent bounds them), so a sentinel that does not answer cannot hold the loop
        timeouts = {k: v for k, v in self.pool.connection_kwargs.items() if k in _TIMEOUTS}
        options = {**sentinel.connection_pool.connection_kwargs, **timeouts}
        client = redis.Redis(
            connection_pool=redis.ConnectionPool(connection_class=sentinel.connection_pool.connection_class, **options)
        )
        try:
            sub.pubsub = client.pubsub()  # type: ignore[no-untyped-call, unused-ignore]
            sub.pubsub.psubscribe(*PATTERNS)
            failing = _failing_over(client.sentinel_master(self.pool.service_name))
        except (RedisError, OSError) as e:
            logger.debug('cannot subscribe to sentinel %d: %s', source, e)
            self._close(source, sub, now)
            return
        if failing is not None:
            self.state.fence(source, failing, now)
            self.pool.drop_connections_to(failing)

    def _close(self, source: int, sub: _Subscription, now: float) -> None:
        self.state.lost(source)
        pubsub, sub.pubsub, sub.retry_at = sub.pubsub, None, now + RESUBSCRIBE_S
        if pubsub is not None:
            with contextlib.suppress(Exception):
                pubsub.close()
                pubsub.connection_pool.disconnect()

    def close(self) -> None:
        for source, sub in enumerate(self._subs):
            self._close(source, sub, 0.0)


class _SyncFencedConnection(redis.sentinel.SentinelManagedConnection):
    def __init__(self, **kwargs: Any) -> None:
        self.follower: SyncFollower = kwargs.pop('follower')
        super().__init__(**kwargs)  # type: ignore[no-untyped-call, unused-ignore]

    def connect_to(self, address: Address) -> None:
        reason = self.follower.state.refusal(address, monotonic())
        if reason is not None:
            raise ConnectionError(reason)
        super().connect_to(address)  # type: ignore[no-untyped-call, unused-ignore]


class _SyncFencedSSLConnection(_SyncFencedConnection, redis.SSLConnection):
    pass


class SyncFollowingSentinelPool(redis.sentinel.SentinelConnectionPool):
    """redis-py's Sentinel pool, reading the sentinels' events (without waiting) at every checkout."""

    def __init__(self, service_name: str, sentinel_manager: Any, **kwargs: Any) -> None:
        ssl = kwargs.get('ssl', False)
        kwargs['connection_class'] = _SyncFencedSSLConnection if ssl else _SyncFencedConnection
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call, unused-ignore]
        self.follower = SyncFollower(self)
        self.connection_kwargs['follower'] = self.follower

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        self.follower.poll()
        return super().get_connection(*args, **kwargs)

    def drop_connections_to(self, address: Address) -> None:
        for conn in _matching([*self._available_connections, *self._in_use_connections], address):
            conn.disconnect()

    def disconnect(self, inuse_connections: bool = True) -> None:
        follower: SyncFollower | None = getattr(self, 'follower', None)
        if inuse_connections and follower is not None:  # closing the pool (before a fork, after an error)
            follower.close()
        super().disconnect(inuse_connections)


def _matching(connections: Iterable[Any], address: Address) -> list[Any]:
    return [c for c in connections if (c.host, c.port) == address]
