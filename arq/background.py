"""The worker's background tasks (lease renewal, the wake listener): started together, stopped within a bound."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class BackgroundTasks:
    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[Any]] = []

    def start(self, *coroutines: Coroutine[Any, Any, Any]) -> None:
        self.tasks.extend(asyncio.create_task(c) for c in coroutines)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        if not self.tasks:
            return
        _, pending = await asyncio.wait(self.tasks, timeout=0.5)
        # redis-py can swallow a cancellation that lands while a connection is being set up (only after a reconnect
        # here): the wait is bounded either way
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        self.tasks = []
