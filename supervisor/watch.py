"""--watch: restart everything when code changes (development only, like `arq --watch`).

Children fork from a parent that imported the code, so a rolling replacement would run stale code. Instead the
parent stops its children quickly and re-executes itself. Changes are found by polling modification times, which
needs no thread in the parent (forking from a threaded process is unsafe).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from arq_supervise import logs
from arq_supervise.config import SupervisorConfig
from arq_supervise.settings import WorkerSettings

logger = logging.getLogger('arq_supervise.watch')

SKIP_DIRS = {'__pycache__', '.git', '.venv', 'venv', 'node_modules', '.mypy_cache', '.ruff_cache', '.pytest_cache'}


class CodeWatcher:
    """Polls `*.py` modification times under a directory, at most once per `interval_s`."""

    def __init__(self, root: Path, interval_s: float = 1.0) -> None:
        self.root = root
        self.interval_s = interval_s
        self.next_scan_at = 0.0
        self.snapshot = self.scan()

    def scan(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for directory, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith('.')]
            for name in files:
                if name.endswith('.py'):
                    path = os.path.join(directory, name)
                    try:
                        found[path] = os.stat(path).st_mtime_ns
                    except OSError:
                        continue
        return found

    def changes(self, now: float) -> list[str]:
        """Paths added, removed or modified since the last scan (empty between scans)."""
        if now < self.next_scan_at:
            return []
        self.next_scan_at = now + self.interval_s
        current = self.scan()
        changed = sorted(p for p in current.keys() | self.snapshot.keys() if current.get(p) != self.snapshot.get(p))
        self.snapshot = current
        return changed


def run_watching(config: SupervisorConfig, settings: WorkerSettings) -> int:
    """Supervise; when code changes, stop the children and re-execute this command line."""
    from arq_supervise.arbiter import Arbiter

    assert config.watch_path is not None
    arbiter = Arbiter(config, settings, watcher=CodeWatcher(config.watch_path))
    code = arbiter.run()
    if arbiter.reexec_requested:
        logger.info('re-executing after code change argv=%s', sys.orig_argv)
        logs.flush()
        os.execv(sys.executable, sys.orig_argv)
    return code
