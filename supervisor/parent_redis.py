"""The parent's Redis budget: how long one Redis call may hold the loop that must answer signals and heartbeats.

Every call the parent makes (a release, the health keys, the history sample) runs on its loop, so each gets a short
socket timeout for the command and its reply, and a somewhat longer one to connect (a TLS handshake across a
network). A call that times out or fails lets the link rest: for `REST_S` no call is tried at all, so a Redis that
has stopped answering costs the loop one timeout per rest, not one per call. What failed is tried again later:
releases by the ReleaseQueue, the health keys on the next second.

The client is release.py's `sync_client` (arq's options, arq.clients, with a 2 s command timeout and no retries,
which the short-lived `arq-supervise status` uses as they are); in the parent these bounds replace its timeouts for
the master's connections. A Sentinel's own clients (which only name the master) keep the 2 s.
"""

from __future__ import annotations

from collections.abc import Callable
from time import monotonic

import redis

from arq.connections import RedisSettings
from arq_supervise.release import RedisLink, sync_client

#: the longest one command (a script call with its reply) may hold the parent's loop
COMMAND_TIMEOUT_S = 0.05
#: the longest a TCP (or TLS) connect may hold it; the handshake's commands have COMMAND_TIMEOUT_S
CONNECT_TIMEOUT_S = 0.2
#: after a failed call, no call is tried for this long
REST_S = 1.0


class Resting(redis.ConnectionError):
    """Raised instead of a call while the link rests after a failure."""


class BoundedRedisLink(RedisLink):
    """The parent's connection with the bounds above; `drop()` (what callers do after an error) starts a rest."""

    def __init__(
        self,
        redis_settings: RedisSettings | None,
        *,
        command_timeout_s: float = COMMAND_TIMEOUT_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        rest_s: float = REST_S,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        super().__init__(redis_settings)
        self.command_timeout_s = command_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.rest_s = rest_s
        self.clock = clock
        self.resting_until = 0.0

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            if self.clock() < self.resting_until:
                raise Resting(f'not trying Redis for {self.resting_until - self.clock():.1f}s after a failed call')
            self._client = bounded(sync_client(self._redis_settings), self.command_timeout_s, self.connect_timeout_s)
        return self._client

    def drop(self) -> None:
        """After an error: close the connection (its reply may still come) and rest."""
        if self._client is not None:
            self.resting_until = self.clock() + self.rest_s
        self.close()

    def close(self) -> None:
        """Close without resting: before a fork, or at the end."""
        super().drop()

    def wake(self) -> None:
        """Try again now, resting or not (the last releases before the parent exits)."""
        self.resting_until = 0.0


def bounded(client: redis.Redis, command_timeout_s: float, connect_timeout_s: float) -> redis.Redis:
    """The same client with the parent's timeouts, set before it opens any connection."""
    client.connection_pool.connection_kwargs.update(
        socket_timeout=command_timeout_s, socket_connect_timeout=connect_timeout_s
    )
    return client
