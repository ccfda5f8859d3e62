"""Callback shapes used across the package."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Protocol

__all__ = ['OptionType', 'WeekdayOptionType', 'WEEKDAYS', 'SecondsTimedelta', 'WorkerCoroutine', 'StartupShutdown']

OptionType = None | int | set[int]
WEEKDAYS = 'mon', 'tues', 'wed', 'thurs', 'fri', 'sat', 'sun'
WeekdayOptionType = OptionType | str
SecondsTimedelta = int | float | timedelta


class WorkerCoroutine(Protocol):
    __qualname__: str

    async def __call__(self, ctx: dict[Any, Any], *args: Any, **kwargs: Any) -> Any:  # pragma: no cover
        ...


StartupShutdown = Callable[[dict[Any, Any]], Awaitable[Any]]
