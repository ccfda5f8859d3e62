"""What a redis-py client will connect with, comparable between a synchronous and an asyncio client."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio

#: the redis-py options RedisSettings decide (the rest are redis-py's own defaults and internals)
OPTIONS = (
    'host', 'port', 'path', 'db', 'username', 'password', 'encoding', 'socket_connect_timeout', 'socket_timeout',
    'ssl_keyfile', 'ssl_certfile', 'ssl_cert_reqs', 'ssl_ca_certs', 'ssl_ca_data',
    'ssl_check_hostname',
)  # fmt: skip


def transport(connection_class: type[Any]) -> str:
    """'tls', 'unix' or 'tcp', whichever flavour (sync or asyncio) the connection class is."""
    if issubclass(connection_class, (redis.SSLConnection, redis.asyncio.SSLConnection)):
        return 'tls'
    if issubclass(connection_class, (redis.UnixDomainSocketConnection, redis.asyncio.UnixDomainSocketConnection)):
        return 'unix'
    return 'tcp'


def retry_policy(retry: Any) -> tuple[Any, ...] | None:
    """A Retry (sync or asyncio) as its backoff's type and parameters, its retries and its errors."""
    if retry is None:
        return None
    backoff = retry._backoff
    # redis-py's sync Retry also lists socket.timeout (the builtin TimeoutError) by default; asyncio connections raise
    # redis's TimeoutError instead, so it tells the flavours apart, not the policies
    errors = frozenset(retry._supported_errors) - {TimeoutError}
    return type(backoff), tuple(sorted(vars(backoff).items())), retry._retries, errors


def pool_options(pool: Any) -> dict[str, Any]:
    """The options every connection of `pool` gets (a connection made now has the same: see `connection_options`)."""
    kwargs = pool.connection_kwargs
    options = {name: kwargs.get(name) for name in OPTIONS}
    options['max_connections'] = pool.max_connections
    options['retry'] = retry_policy(kwargs.get('retry'))
    options['retry_on_error'] = frozenset(kwargs.get('retry_on_error') or ())
    options['transport'] = transport(pool.connection_class)
    return options


def connection_options(connection: Any) -> dict[str, Any]:
    """What one connection (sync or asyncio) was made with: the retry it will use and its transport."""
    return {
        'retry': retry_policy(connection.retry),
        'transport': transport(type(connection)),
        'socket_connect_timeout': getattr(connection, 'socket_connect_timeout', None),
        'socket_timeout': connection.socket_timeout,
        'db': connection.db,
        'username': connection.username,
        'password': connection.password,
    }


def client_options(client: redis.Redis | redis.asyncio.Redis) -> dict[str, Any]:
    """The options of a client's master connections, and for a Sentinel-managed one, of its sentinels too."""
    pool = client.connection_pool
    options = {'master': pool_options(pool)}
    manager = getattr(pool, 'sentinel_manager', None)
    if manager is not None:
        options['sentinels'] = [pool_options(s.connection_pool) for s in manager.sentinels]
    return options
