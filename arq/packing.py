"""Commands packed by hiredis in our asyncio clients, as redis-py's synchronous clients already pack them.

redis-py's asyncio connections pack a command in Python, copying the growing buffer again for every argument: 55 µs
for the worker's settle-and-claim of ten jobs (27 arguments, one of 2 KB), the largest cost of a settle after Redis
itself. hiredis's C packer takes 6 µs. With hiredis installed (``redis[hiredis]`` is our dependency) and the default
UTF-8 encoding, the asyncio connections of our pools pack with redis-py's own synchronous serializer
(``redis.connection.HiredisRespSerializer``): the same bytes, and the same ``DataError`` for a value of a wrong type.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.connection import ConnectionPool

try:
    from redis.connection import HiredisRespSerializer
    from redis.utils import HIREDIS_AVAILABLE
except ImportError:  # pragma: no cover - a redis-py without the sync serializer: keep its asyncio packer
    HIREDIS_AVAILABLE = False

__all__ = ('strict_utf8', 'unpacked_class', 'use_hiredis_packing')

_UTF8 = ('utf-8', 'utf8')


class _HiredisPacking:
    """Mixed in before a redis-py asyncio connection class."""

    def pack_command(self, *args: Any) -> list[bytes]:
        return _PACKER.pack(*args)  # type: ignore[no-any-return]


if HIREDIS_AVAILABLE:
    _PACKER = HiredisRespSerializer()  # type: ignore[no-untyped-call, unused-ignore]


#: one packing subclass per redis-py connection class
_CLASSES: dict[type, type] = {}


def _with_hiredis_packing(connection_class: type) -> type:
    if connection_class not in _CLASSES:
        name = connection_class.__name__
        _CLASSES[connection_class] = type(name, (_HiredisPacking, connection_class), {'__module__': __name__})
    return _CLASSES[connection_class]


def strict_utf8(kwargs: dict[str, Any]) -> bool:
    """Whether connections made with these redis-py options encode as hiredis's packer does (strict UTF-8)."""
    encoding = str(kwargs.get('encoding', 'utf-8')).lower().replace('_', '-')
    return encoding in _UTF8 and kwargs.get('encoding_errors', 'strict') == 'strict'


def use_hiredis_packing(pool: ConnectionPool) -> None:
    """Make the connections `pool` opens from now on pack with hiredis (nothing changes without hiredis, or with an
    encoding other than strict UTF-8)."""
    if not HIREDIS_AVAILABLE or not strict_utf8(pool.connection_kwargs):
        return
    if not issubclass(pool.connection_class, _HiredisPacking):
        pool.connection_class = _with_hiredis_packing(pool.connection_class)


def unpacked_class(connection_class: type) -> type:
    """The redis-py connection class under our hiredis-packing subclass of it (the class itself if it is not one)."""
    for original, packing in _CLASSES.items():
        if packing is connection_class:
            return original
    return connection_class
