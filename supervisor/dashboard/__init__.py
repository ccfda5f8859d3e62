"""The web dashboard: every queue, job and worker of the fleet; abort and retry from the browser.

Needs the `dashboard` extra (`pip install 'arq-supervise[dashboard]'`). Mount it in your own Starlette or FastAPI
service::

    from arq.connections import RedisSettings
    from arq_supervise.dashboard import create_app

    app.mount('/arq', create_app(RedisSettings(), ['arq:queue']))

or run it alone with `arq-supervise dashboard app.WorkerSettings`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .model import QueueSource
    from .security import Auth

__all__ = ['Auth', 'QueueSource', 'create_app']
_HOMES = {'create_app': '.app', 'QueueSource': '.model', 'Auth': '.security'}


def __getattr__(name: str) -> Any:
    """Imported on first use, so `arq-supervise dashboard` can explain a missing extra instead of failing here."""
    if name not in _HOMES:
        raise AttributeError(name)
    return getattr(importlib.import_module(_HOMES[name], __name__), name)
