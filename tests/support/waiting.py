"""Wait on facts with deadlines, never on sleeps."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

POLL_S = 0.02


def wait_until(predicate: Callable[[], Any], *, timeout: float = 10.0, message: str = 'condition') -> Any:
    """Call `predicate` until it returns something truthy; fail with the last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {timeout}s waiting for {message}; last value: {last!r}')
        time.sleep(POLL_S)


async def async_wait_until(
    predicate: Callable[[], Awaitable[Any]], *, timeout: float = 10.0, message: str = 'condition'
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {timeout}s waiting for {message}; last value: {last!r}')
        await asyncio.sleep(POLL_S)
