"""Loading a worker settings class from an import path, with one-line errors instead of tracebacks."""

from __future__ import annotations

import inspect
from typing import Any

from .utils import import_string


class SettingsError(Exception):
    """The settings path or the settings themselves are unusable; the message says why in one line."""


def load_settings(path: str) -> Any:
    """Import `module.Settings` and check it describes a worker (functions or cron jobs)."""
    try:
        settings = import_string(path)
    except Exception as e:  # ImportError, or whatever the module raised while being imported
        raise SettingsError(f'cannot import settings {path!r}: {e.__class__.__name__}: {e}') from e
    check_settings(settings, path)
    return settings


def _get(settings: Any, name: str) -> Any:
    if isinstance(settings, dict):
        return settings.get(name)
    return getattr(settings, name, None)


def check_settings(settings: Any, path: str) -> None:
    if not (isinstance(settings, dict) or inspect.isclass(settings)):
        raise SettingsError(f'worker settings {path!r} must be a class or a dict, not {type(settings).__name__}')
    functions = _get(settings, 'functions') or ()
    cron_jobs = _get(settings, 'cron_jobs') or ()
    if not functions and not cron_jobs:
        raise SettingsError(f'worker settings {path!r} define no functions and no cron_jobs')
    from .worker import func

    for f in functions:
        try:
            func(f)
        except (RuntimeError, TypeError, ValueError, ImportError) as e:
            raise SettingsError(f'worker settings {path!r}: {e}') from e
