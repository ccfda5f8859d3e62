"""Read job payloads and results in the web process without running anybody's code.

Unpickling can call any importable function (README, "Pickle runs code"), and a dashboard reads payloads that anyone
with write access to Redis may have written. So pickles are read with an unpickler that builds plain data only:
builtin containers and scalars, plus a few value types whose constructors are pure (datetimes, Decimal, UUID).
Every other global a pickle names becomes an `Opaque` placeholder that records its name and the arguments it was
given, and calls nothing. A placeholder is shown as "not displayable" with its class name, and an exception
placeholder (arq stores failures as pickled exceptions) as `ValueError('…')` text built from its arguments.

With a data-only serializer configured (msgpack, JSON), that deserializer is used instead.
"""

from __future__ import annotations

import builtins
import datetime
import decimal
import io
import pickle
import reprlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: payloads larger than this are not read at all
MAX_PAYLOAD_BYTES = 1 << 20

_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ('builtins', name): getattr(builtins, name) for name in ('set', 'frozenset', 'bytearray', 'complex', 'slice')
}
_SAFE_GLOBALS.update(
    {
        ('datetime', 'datetime'): datetime.datetime,
        ('datetime', 'date'): datetime.date,
        ('datetime', 'time'): datetime.time,
        ('datetime', 'timedelta'): datetime.timedelta,
        ('datetime', 'timezone'): datetime.timezone,
        ('decimal', 'Decimal'): decimal.Decimal,
    }
)
# exceptions arq stores as results; shown by name and arguments (never constructed)
_EXCEPTION_MODULES = frozenset(
    {'builtins', 'exceptions', 'asyncio.exceptions', 'concurrent.futures._base', 'arq.worker', 'arq.jobs'}
)


class Opaque:
    """Something a pickle wanted built from a class we do not trust; holds what it was given, runs nothing."""

    module: str = '?'
    qualname: str = '?'

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None

    def __new__(cls, *args: Any, **kwargs: Any) -> Opaque:  # NEWOBJ calls cls.__new__(cls, *args)
        return super().__new__(cls)

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __reduce__(self) -> Any:  # never re-pickle a placeholder into a payload
        raise TypeError('a placeholder for an untrusted object cannot be serialized')

    @property
    def name(self) -> str:
        return f'{self.module}.{self.qualname}'

    @property
    def looks_like_exception(self) -> bool:
        if self.module not in _EXCEPTION_MODULES:
            return False
        return self.qualname.endswith(('Error', 'Exception', 'Failed')) or self.qualname in {'Retry', 'RetryJob'}

    def describe(self) -> str:
        if self.looks_like_exception:
            args = ', '.join(safe_repr(a, 2000) for a in self.args if not isinstance(a, Opaque))
            return f'{self.qualname}({args})'
        return f'<not displayable: {self.name}>'


def _placeholder_class(module: str, name: str) -> type[Opaque]:
    return type(name.rsplit('.', 1)[-1], (Opaque,), {'module': module, 'qualname': name})


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        safe = _SAFE_GLOBALS.get((module, name))
        if safe is not None:
            return safe
        return _placeholder_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        return _placeholder_class('persistent', repr(pid)[:50])()


def restricted_loads(data: bytes) -> Any:
    """Unpickle plain data only; any other class comes back as an `Opaque` placeholder. Never runs payload code."""
    return _RestrictedUnpickler(io.BytesIO(data)).load()


@dataclass(frozen=True)
class Loaded:
    """A payload as the dashboard can show it: the dict, or why it could not be read."""

    value: dict[str, Any] | None
    error: str | None = None


def load_payload(raw: bytes | None, deserializer: Callable[[bytes], Any] | None) -> Loaded:
    """The payload dict of a job or result, read safely (see the module docstring)."""
    if raw is None:
        return Loaded(None, 'missing')
    if len(raw) > MAX_PAYLOAD_BYTES:
        return Loaded(None, f'payload of {len(raw):,} bytes is too large to display')
    try:
        value = deserializer(raw) if deserializer is not None else restricted_loads(raw)
    except Exception as e:  # a corrupt payload is something to show, not a reason for a 500
        return Loaded(None, f'unreadable payload: {type(e).__name__}: {e}')
    if not isinstance(value, dict):
        return Loaded(None, f'unexpected payload type {type(value).__name__}')
    return Loaded(value)


def contains_opaque(value: Any, depth: int = 0) -> bool:
    """Whether any part of `value` is a placeholder (so it cannot be enqueued again as it was)."""
    if isinstance(value, Opaque) or depth > 50:
        return True
    if isinstance(value, dict):
        return any(contains_opaque(k, depth + 1) or contains_opaque(v, depth + 1) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return any(contains_opaque(v, depth + 1) for v in value)
    return False


class _SafeRepr(reprlib.Repr):
    def repr1(self, x: Any, level: int) -> str:
        if isinstance(x, Opaque):  # before reprlib's dispatch on the type's name, which a pickle chooses
            return x.describe()
        return super().repr1(x, level)


def safe_repr(value: Any, limit: int = 200) -> str:
    """A repr cut to about `limit` characters; placeholders say what they are. The caller escapes it for HTML."""
    r = _SafeRepr()
    r.maxstring = r.maxother = max(limit, 20)
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = r.maxfrozenset = max(limit // 10, 6)
    r.maxlevel = 6
    text = r.repr(value)
    return text if len(text) <= limit else text[: limit - 1] + '…'
