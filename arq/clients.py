"""One way from :class:`arq.connections.RedisSettings` to a redis-py client, asyncio or synchronous.

Every Redis client of this project is made here, so a setting means the same thing everywhere: in the pools of
workers and producers (:func:`arq.connections.create_pool`) and in the synchronous clients of arq-supervise's parent
and of its ``status`` command. The public names:

* :func:`client_kwargs`: the redis-py keyword arguments the settings give: ``db``, ``username``, ``password``,
  TLS (``ssl`` and every ``ssl_*``), ``retry`` and ``retry_on_error`` (with ``retry_on_timeout``), the connect
  timeout (``conn_timeout``) and ``max_connections`` (no cap unless the settings set one, as arq had).
* :func:`async_client`: a ``redis.asyncio`` client of a given class (``ArqRedis`` for ``create_pool``).
* :func:`sync_client`: a synchronous ``redis.Redis``.

Both clients reach Redis the same way. With ``sentinel=True`` the sentinels (``host``, a list of addresses) are asked
for ``sentinel_master`` and reached with ``sentinel_kwargs`` (by default with the client's socket options and retry
policy: :func:`sentinel_kwargs`), and the master with the options above, through a pool that follows
failovers (:mod:`arq.sentinel`). Otherwise the client connects to ``unix_socket_path`` if it is set (redis-py then
ignores host, port, TLS and the connect timeout), else to ``host:port``.

``overrides`` are for a caller with a tighter budget than the settings': they replace the named redis-py options and
nothing else (the supervisor's parent, whose loop must never wait long, bounds ``socket_timeout`` and turns retries
off). They reach the sentinels too when they are socket or retry options and ``sentinel_kwargs`` is not given.

Creating a client opens no connection; the first command does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.retry
from redis.exceptions import TimeoutError as RedisTimeoutError

from .packing import use_hiredis_packing

if TYPE_CHECKING:
    from .connections import RedisSettings

__all__ = ('UNCAPPED_CONNECTIONS', 'async_client', 'client_kwargs', 'sentinel_hosts', 'sentinel_kwargs', 'sync_client')

#: redis-py 6+ caps a pool at 100 connections and then raises; arq (on redis-py < 6) had no cap, and its users
#: gather() thousands of enqueues, so a pool has none unless the settings' max_connections asks for one
UNCAPPED_CONNECTIONS = 2**31

AsyncClient = TypeVar('AsyncClient', bound=redis.asyncio.Redis)


def client_kwargs(settings: RedisSettings) -> dict[str, Any]:
    """
    The redis-py keyword arguments of `settings`, the same for ``redis.Redis`` and ``redis.asyncio.Redis`` (and for
    a Sentinel's master); the address (host, port, unix socket, sentinels) is not among them.

    :param settings: the :class:`arq.connections.RedisSettings` to connect with
    """
    kwargs: dict[str, Any] = {
        'db': settings.database,
        'username': settings.username,
        'password': settings.password,
        'encoding': 'utf8',
        'socket_connect_timeout': settings.conn_timeout,
        'retry': settings.retry,
        'max_connections': settings.max_connections or UNCAPPED_CONNECTIONS,
        'ssl': settings.ssl,
    }
    if settings.retry_on_error:
        kwargs['retry_on_error'] = list(settings.retry_on_error)
    if settings.retry_on_timeout:
        # redis-py 6+ deprecates retry_on_timeout (DeprecationWarning); what it did is retry on these errors
        kwargs.setdefault('retry_on_error', []).extend([RedisTimeoutError, TimeoutError])
    if settings.ssl:
        kwargs.update(
            ssl_keyfile=settings.ssl_keyfile,
            ssl_certfile=settings.ssl_certfile,
            ssl_cert_reqs=settings.ssl_cert_reqs,
            ssl_ca_certs=settings.ssl_ca_certs,
            ssl_ca_data=settings.ssl_ca_data,
            ssl_check_hostname=settings.ssl_check_hostname,
        )
    return kwargs


def async_client(settings: RedisSettings, redis_class: type[AsyncClient], **overrides: Any) -> AsyncClient:
    """
    An asyncio client for `settings` (see the module docstring); it connects on its first command.

    :param settings: where and how to connect
    :param redis_class: ``redis.asyncio.Redis`` or a subclass, e.g. :class:`arq.connections.ArqRedis`
    :param overrides: redis-py options that replace those of the settings
    """
    kwargs = {**client_kwargs(settings), **overrides}
    client: AsyncClient
    if not settings.sentinel:
        client = redis_class(**_address(settings), **kwargs)
    else:
        from redis.asyncio.sentinel import Sentinel  # only a Sentinel user loads these (an idle worker's memory)

        from .sentinel import FollowingSentinelPool

        sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
            sentinel_hosts(settings), sentinel_kwargs=sentinel_kwargs(settings, kwargs), **kwargs
        )
        client = sentinel.master_for(
            settings.sentinel_master, redis_class=redis_class, connection_pool_class=FollowingSentinelPool
        )
    use_hiredis_packing(client.connection_pool)
    return client


def sync_client(settings: RedisSettings, **overrides: Any) -> redis.Redis:
    """
    A synchronous ``redis.Redis`` for `settings`, with the options :func:`async_client` gets; it connects on its first
    command. Its Sentinel pool reads the failover events without blocking, at each checkout.

    :param settings: where and how to connect
    :param overrides: redis-py options that replace those of the settings
    """
    kwargs = {**client_kwargs(settings), **overrides}
    kwargs['retry'] = _sync_retry(kwargs['retry'])
    if not settings.sentinel:
        return redis.Redis(**_address(settings), **kwargs)
    from redis.sentinel import Sentinel

    from .sentinel import SyncFollowingSentinelPool

    sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
        sentinel_hosts(settings), sentinel_kwargs=sentinel_kwargs(settings, kwargs), **kwargs
    )
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call, unused-ignore]
        settings.sentinel_master, redis_class=redis.Redis, connection_pool_class=SyncFollowingSentinelPool
    )
    return client


def sentinel_kwargs(settings: RedisSettings, kwargs: dict[str, Any]) -> dict[str, Any]:
    """
    How the sentinels are reached: the settings' ``sentinel_kwargs`` if given, else the socket options and the retry
    policy of `kwargs`, the master's (redis-py's own default takes the socket options only, so the sentinels' clients
    retried with redis-py's default policy whatever the settings said: 10 times with backoff on redis-py 8).

    :param settings: the settings, with ``sentinel=True``
    :param kwargs: the master's redis-py options (:func:`client_kwargs` and any overrides)
    """
    if settings.sentinel_kwargs is not None:
        return settings.sentinel_kwargs
    return {k: v for k, v in kwargs.items() if k.startswith('socket_') or k in ('retry', 'retry_on_error')}


def sentinel_hosts(settings: RedisSettings) -> list[tuple[str, int]]:
    """The sentinels' addresses; a single host with ``sentinel=True`` is a mistake worth an error."""
    if isinstance(settings.host, str):
        raise RuntimeError("str provided for 'host' but 'sentinel' is true; list of sentinels expected")
    return settings.host


def _address(settings: RedisSettings) -> dict[str, Any]:
    # redis-py connects to the unix socket when one is given, and then ignores the rest
    return {'host': settings.host, 'port': settings.port, 'unix_socket_path': settings.unix_socket_path}


def _sync_retry(retry: Any) -> Any:
    """The settings' `retry` is a ``redis.asyncio`` Retry (arq's type), whose calls a synchronous connection cannot
    await: the same policy (backoff, retries, errors) as redis-py's synchronous Retry."""
    if isinstance(retry, redis.asyncio.retry.Retry):
        return redis.retry.Retry(retry._backoff, retry._retries, retry._supported_errors)
    return retry
