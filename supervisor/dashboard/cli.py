"""`arq-supervise dashboard`: serve the dashboard with uvicorn for the queues of one or more settings classes."""

from __future__ import annotations

import ipaddress
import os
import sys
from typing import Any

import click

HELP = """Serve the web dashboard for the queues of SETTINGS (e.g. app.worker.WorkerSettings; several may be given).

\b
Read-only unless --allow-actions. Authentication comes from the environment only:
ARQ_DASHBOARD_TOKEN (Authorization: Bearer), or ARQ_DASHBOARD_USERNAME and ARQ_DASHBOARD_PASSWORD (basic auth).
With --allow-actions on an address other than loopback, one of them is required.
"""


@click.command(help=HELP)
@click.argument('settings_paths', metavar='SETTINGS [SETTINGS…]', nargs=-1, required=True)
@click.option('--host', default='127.0.0.1', show_default=True, help='Address to bind.')
@click.option('--port', type=click.IntRange(0, 65535), default=8181, show_default=True)
@click.option('--redis-url', metavar='URL', envvar='ARQ_SUPERVISE_REDIS_URL',
              help="redis://, rediss:// or unix:// URL; replaces the settings' redis_settings.")  # fmt: skip
@click.option('--allow-actions', is_flag=True, help='Offer abort, retry and delete (each confirmed and logged).')
@click.option('--refresh', type=click.FloatRange(min=0.2), default=2.0, show_default=True,
              help='Seconds between live updates.')  # fmt: skip
@click.option('-v', '--verbose', is_flag=True, help='Debug logging.')
def dashboard_cli(settings_paths: tuple[str, ...], host: str, port: int, redis_url: str | None, allow_actions: bool,
                  refresh: float, verbose: bool) -> None:  # fmt: skip
    try:
        import uvicorn

        from .app import create_app
        from .security import Auth
    except ImportError as e:
        hint = "pip install 'arq-supervise[dashboard]'"
        raise click.ClickException(f'the dashboard needs its extra: {hint} ({e})') from e
    from arq_supervise import logs

    logs.configure('text', verbose)
    try:
        auth = Auth.from_env()
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    if allow_actions and auth is None and not is_loopback(host):
        raise click.UsageError(
            f'refusing to serve actions on {host} without authentication: set ARQ_DASHBOARD_TOKEN or '
            'ARQ_DASHBOARD_USERNAME/ARQ_DASHBOARD_PASSWORD, bind 127.0.0.1, or leave out --allow-actions'
        )
    redis_settings, sources = load_sources(settings_paths, redis_url)
    app = create_app(redis_settings, sources, allow_actions=allow_actions, auth=auth, refresh_s=refresh)
    click.echo(f'arq dashboard on http://{_url_host(host)}:{port}/ ({"actions on" if allow_actions else "read-only"}'
               f'{", auth required" if auth else ""})', err=True)  # fmt: skip
    uvicorn.run(app, host=host, port=port, log_level='info' if verbose else 'warning', timeout_graceful_shutdown=2)


def is_loopback(host: str) -> bool:
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f'[{host}]' if ':' in host else host


def load_sources(settings_paths: tuple[str, ...], redis_url: str | None) -> tuple[Any, list[Any]]:
    """The Redis settings (of the first SETTINGS, or the URL) and one queue per settings class, without duplicates."""
    from arq_supervise.cli import _load

    from .model import QueueSource

    if os.getcwd() not in sys.path:  # as `arq` does: settings modules are found relative to where we run
        sys.path.append(os.getcwd())
    loaded = [_load(path, redis_url) for path in settings_paths]
    sources: dict[str, QueueSource] = {}
    for settings in loaded:
        sources.setdefault(settings.queue_name, QueueSource(settings.queue_name, settings.job_deserializer,
                                                             settings.job_serializer))  # fmt: skip
    redis_settings = loaded[0].redis_settings
    if redis_settings is None:
        from arq.connections import RedisSettings

        redis_settings = RedisSettings()
    return redis_settings, list(sources.values())
