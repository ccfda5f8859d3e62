"""Time and unit conversions, and small helpers shared by the client and the worker."""

from __future__ import annotations

import asyncio
import functools
import importlib
import logging
import os
import time
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

logger = logging.getLogger('arq.utils')

SecondsTimedelta = int | float | timedelta

DEFAULT_CURTAIL = 80


def timestamp_ms() -> int:
    return round(time.time() * 1000)


def to_unix_ms(dt: datetime) -> int:
    """Epoch milliseconds of a datetime, rounded exactly as arq does (cron job ids depend on it)."""
    return round(dt.timestamp() * 1000)


# arq converts result timestamps into the zone named by one of these variables, when set
TIMEZONE_ENV_VARS = 'ARQ_TIMEZONE', 'arq_timezone', 'TIMEZONE', 'timezone'


@functools.lru_cache
def get_tz() -> tzinfo | None:
    """The zone named by the first of TIMEZONE_ENV_VARS that is set (cached, as arq's), or None for UTC."""
    for var in TIMEZONE_ENV_VARS:
        name = os.getenv(var)
        if name:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # loaded only when a zone is named

            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                logger.warning('unknown timezone: %r', name)
    return None


def ms_to_datetime(unix_ms: int) -> datetime:
    dt = datetime.fromtimestamp(unix_ms / 1000, tz=UTC)
    tz = get_tz()
    return dt.astimezone(tz) if tz else dt


def _check_number(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f'{name} must be a number of seconds or a timedelta, not {type(value).__name__!r}')


def to_ms(td: SecondsTimedelta | None, name: str = 'value') -> int | None:
    """Milliseconds, rounded to the nearest as arq does (42.123987 s is 42124 ms)."""
    if td is None:
        return None
    if isinstance(td, timedelta):
        return round(td.total_seconds() * 1000)
    _check_number(td, name)
    return round(td * 1000)


def to_seconds(td: SecondsTimedelta | None, name: str = 'value') -> float | None:
    if td is None:
        return None
    if isinstance(td, timedelta):
        return td.total_seconds()
    _check_number(td, name)
    return float(td)


def truncate(s: str, length: int = DEFAULT_CURTAIL) -> str:
    """Cut a string to at most `length` characters, ending with an ellipsis when cut."""
    if len(s) > length:
        return s[: length - 1] + '…'
    return s


def args_to_string(args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any]) -> str:
    arguments = ''
    if args:
        arguments = ', '.join(map(repr, args))
    if kwargs:
        if arguments:
            arguments += ', '
        arguments += ', '.join(f'{k}={v!r}' for k, v in sorted(kwargs.items()))
    return truncate(arguments)


def import_string(dotted_path: str) -> Any:
    """Import `pkg.module.attr` and return the attribute, with a one-line error naming what failed."""
    try:
        module_path, class_name = dotted_path.strip(' ').rsplit('.', 1)
    except ValueError as e:
        raise ImportError(f'"{dotted_path}" doesn\'t look like a module path') from e
    module = importlib.import_module(module_path)
    try:
        return getattr(module, class_name)
    except AttributeError as e:
        raise ImportError(f'Module "{module_path}" does not define a "{class_name}" attribute') from e


def reraise_if_cancelling() -> None:
    """
    Raise CancelledError if the current task was asked to stop.

    Closing a redis-py connection while a cancellation unwinds can raise a ConnectionError that replaces the
    CancelledError; a retry loop catching it would then carry on forever, ignoring the cancel.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()
