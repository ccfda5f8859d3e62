"""The worker settings class, imported in the parent before any fork so that a bad path fails fast."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from arq.constants import default_queue_name
from arq.utils import to_seconds

Deserializer = Callable[[bytes], Any]
Serializer = Callable[[Any], bytes]


class SettingsError(Exception):
    """The settings class cannot be imported or is not usable: exit code 4, no child started."""


@dataclass(frozen=True)
class WorkerSettings:
    """What the parent needs from arq's settings class, plus the Worker kwargs the children get."""

    path: str
    worker_kwargs: dict[str, Any] = field(repr=False)

    @property
    def queue_name(self) -> str:
        return str(self.worker_kwargs.get('queue_name') or default_queue_name)

    @property
    def job_completion_wait_s(self) -> float:
        return to_seconds(self.worker_kwargs.get('job_completion_wait'), 'job_completion_wait') or 0.0

    @property
    def health_check_key(self) -> str | None:
        key = self.worker_kwargs.get('health_check_key')
        return str(key) if key else None

    @property
    def redis_settings(self) -> Any:
        return self.worker_kwargs.get('redis_settings')

    @property
    def job_serializer(self) -> Serializer | None:
        return self.worker_kwargs.get('job_serializer')

    @property
    def job_deserializer(self) -> Deserializer | None:
        return self.worker_kwargs.get('job_deserializer')

    def keep_result_ms(self, function_name: str | None) -> int | None:
        """How long the worker keeps this function's result: None stores none, 0 keeps it forever (as arq.worker)."""
        from arq.functions import keep_result_ms
        from arq.worker import func

        functions = {f.name: f for f in map(func, self.worker_kwargs.get('functions') or ())}
        functions.update({c.name: c for c in self.worker_kwargs.get('cron_jobs') or ()})
        keep_s = to_seconds(self.worker_kwargs.get('keep_result', 3600), 'keep_result') or 0.0
        forever = bool(self.worker_kwargs.get('keep_result_forever', False))
        return keep_result_ms(keep_s, forever, functions.get(function_name or ''))


def load_settings(path: str, *, overrides: dict[str, Any] | None = None) -> WorkerSettings:
    """Import `module.WorkerSettings` and read it as arq does; raise SettingsError with a one-line reason."""
    from arq.settings import SettingsError as ArqSettingsError
    from arq.settings import load_settings as load_arq_settings
    from arq.worker import get_kwargs

    try:
        kwargs = dict(get_kwargs(load_arq_settings(path)))
    except ArqSettingsError as e:
        raise SettingsError(str(e)) from e
    except Exception as e:
        raise SettingsError(f'cannot read settings {path!r}: {type(e).__name__}: {e}') from e
    queue = kwargs.get('queue_name')
    if queue is not None and not isinstance(queue, str):
        raise SettingsError(f'settings {path!r}: queue_name must be a string, not {type(queue).__name__}')
    kwargs.update(overrides or {})
    settings = WorkerSettings(path=path, worker_kwargs=kwargs)
    try:
        settings.job_completion_wait_s  # noqa: B018 - validates the value's type
    except TypeError as e:
        raise SettingsError(f'settings {path!r}: {e}') from e
    _check_worker_accepts(path, kwargs)
    return settings


def _check_worker_accepts(path: str, kwargs: dict[str, Any]) -> None:
    """Build (and drop) a Worker from the settings, as each child will: a value arq refuses (job_timeout=0,
    max_jobs=0, ...) is an invalid setting, exit 4 now, rather than three boot failures and exit 3 later.
    A Worker connects to nothing until it runs."""
    from arq.worker import Worker

    try:
        Worker(**kwargs, handle_signals=False)
    except (TypeError, ValueError, RuntimeError) as e:
        raise SettingsError(f'settings {path!r}: {type(e).__name__}: {e}') from e
