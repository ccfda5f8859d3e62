"""arq-supervise: run N arq workers under one parent that drains, restarts, recycles and reports them."""

from __future__ import annotations

from arq_supervise.config import SupervisorConfig
from arq_supervise.settings import WorkerSettings

__all__ = ['run']


def run(config: SupervisorConfig, settings: WorkerSettings) -> int:
    """Supervise workers until stopped; return the exit code (see arq_supervise.exits)."""
    from arq_supervise.arbiter import Arbiter

    return Arbiter(config, settings).run()
