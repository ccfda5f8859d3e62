"""A connection of its own for the worker's claim and settle scripts: packed commands written straight to an asyncio
transport, replies parsed by hiredis.

Through redis-py's asyncio client a command costs the worker ~90 µs of CPU besides Redis's own time (its retry
wrapper, observability hooks, the connection pool, asyncio streams); the worker sends one script call per batch of
jobs, so at max_jobs 10 that was a quarter of its CPU per job. Here a call costs ~20 µs. The channel speaks to a plain
TCP or Unix-socket Redis (RESP2, with a password and a database); for TLS, Sentinel, credential providers or any
other connection class `for_pool` returns None and the worker stays on redis-py.

Calls are pipelined on the one connection and answered in order. Errors are redis-py's own exceptions (its error
parser), so every caller's handling stays as it was: a lost connection fails each call in flight with
ConnectionError, and the next call connects again. Nothing is retried here: the claim recovers its jobs by its
token, and the settle batcher sends its batch again (arq.settle).
"""

from __future__ import annotations

import asyncio
import collections
import socket
from collections.abc import Mapping, Sequence
from typing import Any, cast

import hiredis
import redis.asyncio.connection
from redis._parsers import BaseParser
from redis.asyncio import Redis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError, InvalidResponse, NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .packing import strict_utf8, unpacked_class

__all__ = ('ScriptChannel',)

# options of a plain connection that this channel does not implement: with any of them set, redis-py keeps the calls
_UNSUPPORTED = ('credential_provider', 'socket_options', 'ssl', 'ssl_context')


class _RespProtocol(asyncio.Protocol):
    """One Redis connection: each call's future is answered by the next reply, in order."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader(protocolError=InvalidResponse, replyError=BaseParser.parse_error)
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while self._waiters and (reply := self._reader.gets()) is not False:
                self._answer(self._waiters.popleft(), reply)
        except InvalidResponse as e:
            self.close(ConnectionError(f'Redis sent a reply that cannot be parsed: {e}'))

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(ConnectionError('Connection closed by server.' if exc is None else f'Connection lost: {exc}'))

    @property
    def socket(self) -> socket.socket | None:
        return None if self._transport is None else self._transport.get_extra_info('socket')

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        if self.lost or self._transport is None:
            raise ConnectionError('the connection is closed')
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._transport.write(packed)
        return future

    def close(self, error: Exception) -> None:
        """Close the connection and fail every call still waiting for its reply."""
        self.lost = True
        if self._transport is not None:
            self._transport.close()
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_exception(error)

    @staticmethod
    def _answer(future: asyncio.Future[Any], reply: Any) -> None:
        if future.done():  # its caller was cancelled: the reply is still read, in order
            return
        if isinstance(reply, Exception):
            future.set_exception(reply)
        else:
            future.set_result(reply)


class ScriptChannel:
    """
    :param address: ('tcp', host, port) or ('unix', path)
    :param handshake: the commands sent on each new connection before any call (AUTH, SELECT, CLIENT SETNAME)
    """

    def __init__(
        self,
        address: tuple[Any, ...],
        handshake: Sequence[tuple[Any, ...]],
        *,
        connect_timeout_s: float | None,
        timeout_s: float | None,
        keepalive: Mapping[int, int] | None = None,
    ) -> None:
        self.address = address
        self._keepalive = keepalive
        self._handshake = list(handshake)
        self._connect_timeout_s = connect_timeout_s
        self._timeout_s = timeout_s
        self._protocol: _RespProtocol | None = None
        self._connecting: asyncio.Lock | None = None

    @classmethod
    def for_pool(cls, pool: Redis) -> ScriptChannel | None:
        """A channel to the Redis `pool` connects to, with its credentials and database; None when the pool's
        connections are anything but plain TCP or Unix-socket ones."""
        connections = pool.connection_pool
        kwargs = connections.connection_kwargs
        if any(kwargs.get(name) for name in _UNSUPPORTED) or kwargs.get('protocol') not in (None, 2, '2'):
            return None
        if kwargs.get('username') and kwargs.get('password') is None:  # how to AUTH then is redis-py's business
            return None
        if not strict_utf8(kwargs):  # hiredis packs str arguments as strict UTF-8
            return None
        address: tuple[Any, ...]
        connection_class = unpacked_class(connections.connection_class)
        if connection_class is UnixDomainSocketConnection:
            address = ('unix', kwargs['path'])
        elif connection_class is Connection:
            address = ('tcp', kwargs.get('host', 'localhost'), int(kwargs.get('port', 6379)))
        else:
            return None
        return cls(address, _handshake(kwargs), connect_timeout_s=kwargs.get('socket_connect_timeout'),
                   timeout_s=kwargs.get('socket_timeout'), keepalive=_keepalive(kwargs))  # fmt: skip

    async def evalsha(self, sha: str, script: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run a script by its sha; loads it first when Redis does not know it (a restart, a failover)."""
        try:
            return await self.call('EVALSHA', sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.call('SCRIPT', 'LOAD', script)
            return await self.call('EVALSHA', sha, len(keys), *keys, *args)

    async def call(self, *command: Any) -> Any:
        protocol = self._protocol
        if protocol is None or protocol.lost:
            protocol = await self._connect()
        reply = protocol.send(hiredis.pack_command(command))
        if self._timeout_s is None:
            return await reply
        # a timer, not wait_for (a task and a future more per call): it closes the connection, failing every call on
        # it, since a late reply would answer the next call
        timer = asyncio.get_running_loop().call_later(self._timeout_s, _time_out, protocol, reply)
        try:
            return await reply
        finally:
            timer.cancel()

    def disconnect(self) -> None:
        """Close the connection, failing the calls in flight; the next call connects again."""
        if self._protocol is not None:
            self._protocol.close(ConnectionError('the script connection was closed by its owner'))
            self._protocol = None

    async def _connect(self) -> _RespProtocol:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:  # calls made while connecting share the one connection
            if self._protocol is not None and not self._protocol.lost:
                return self._protocol
            self._protocol = await self._open()
            return self._protocol

    async def _open(self) -> _RespProtocol:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                if self.address[0] == 'unix':
                    _, protocol = await loop.create_unix_connection(_RespProtocol, self.address[1])
                else:
                    _, protocol = await loop.create_connection(_RespProtocol, self.address[1], self.address[2])
            if self.address[0] == 'tcp':
                _set_socket_options(protocol, self._keepalive)
        except OSError as e:  # TimeoutError among them
            raise ConnectionError(f'Error connecting to {self._describe()}: {e.__class__.__name__}: {e}') from e
        try:
            replies = [protocol.send(hiredis.pack_command(command)) for command in self._handshake]
            for reply in replies:
                await reply
        except BaseException:
            protocol.close(ConnectionError('the connection failed its handshake'))
            raise
        return protocol

    def _describe(self) -> str:
        return f'unix:{self.address[1]}' if self.address[0] == 'unix' else f'{self.address[1]}:{self.address[2]}'


def _time_out(protocol: _RespProtocol, reply: asyncio.Future[Any]) -> None:
    if not reply.done():
        protocol.close(RedisTimeoutError('Timeout reading from the script connection'))


def _keepalive(kwargs: dict[str, Any]) -> Mapping[int, int] | None:
    """The TCP keepalive options redis-py would set (None: no keepalive); redis-py 8 turns keepalive on by default."""
    if not kwargs.get('socket_keepalive'):
        return None
    options = kwargs.get('socket_keepalive_options')
    if isinstance(options, Mapping):
        return options
    defaults = getattr(redis.asyncio.connection, 'get_default_socket_keepalive_options', None)
    return defaults() if options is not None and defaults is not None else {}


def _set_socket_options(protocol: _RespProtocol, keepalive: Mapping[int, int] | None) -> None:
    sock = protocol.socket
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if keepalive is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for option, value in keepalive.items():
                sock.setsockopt(socket.SOL_TCP, option, value)
    except (OSError, TypeError) as e:
        protocol.close(ConnectionError(f'cannot set the socket options: {e}'))
        raise OSError(f'cannot set the socket options: {e}') from e


def _handshake(kwargs: dict[str, Any]) -> list[tuple[Any, ...]]:
    commands: list[tuple[Any, ...]] = []
    password, username = kwargs.get('password'), kwargs.get('username')
    if password is not None:
        commands.append(('AUTH', username, password) if username else ('AUTH', password))
    if kwargs.get('db'):
        commands.append(('SELECT', kwargs['db']))
    if kwargs.get('client_name'):
        commands.append(('CLIENT', 'SETNAME', kwargs['client_name']))
    return commands
