"""arq-supervise: run N arq workers under one parent that drains, restarts, recycles and reports them."""

from __future__ import annotations

import sys


def _require_our_arq() -> None:
    """Stop with one line if `arq` is the published package: it shares our import name and overwrites ours."""
    try:
        from arq.version import IMPLEMENTATION  # noqa: F401
    except ImportError:
        import arq

        where = getattr(arq, '__file__', None) or 'unknown location'
        sys.stderr.write(
            f'arq-supervise: the arq package at {where} is the published arq '
            f'{getattr(arq, "VERSION", "")}, not the one arq-supervise ships (installing arq, directly or as a '
            'dependency, replaces ours); repair: pip uninstall -y arq && pip install --force-reinstall '
            "--no-deps <this project's checkout or wheel>\n"
        )
        raise SystemExit(4) from None


_require_our_arq()

from arq_supervise.config import SupervisorConfig  # noqa: E402
from arq_supervise.settings import WorkerSettings  # noqa: E402

__all__ = ['run']


def run(config: SupervisorConfig, settings: WorkerSettings) -> int:
    """Supervise workers until stopped; return the exit code (see arq_supervise.exits)."""
    from arq_supervise.arbiter import Arbiter

    return Arbiter(config, settings).run()
