"""arq-supervise: run N arq workers under one parent that drains, restarts, recycles and reports them."""

from __future__ import annotations

from supervisor.config import SupervisorConfig
from supervisor.settings import WorkerSettings

__all__ = ['run']


def run(config: SupervisorConfig, settings: WorkerSettings) -> int:
    """Supervise workers until stopped; return the exit code (see supervisor.exits)."""
    from supervisor.arbiter import Arbiter

    return Arbiter(config, settings).run()
