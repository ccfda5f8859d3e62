"""The `arq` command: run a worker, or check the health of the workers of a settings class."""

from __future__ import annotations

import logging.config
import os
import subprocess
import sys
from typing import Any

import click
from redis.exceptions import RedisError

from .connections import RedisSettings
from .logs import default_log_config
from .settings import SettingsError, load_settings
from .utils import import_string
from .version import VERSION
from .worker import check_health, run_worker

burst_help = 'Batch mode: exit once no jobs are found in any queue.'
health_check_help = 'Health Check: run a health check and exit.'
watch_help = 'Watch a directory and reload the worker upon changes.'
verbose_help = 'Enable verbose output.'
logdict_help = "Import path for a dictionary in logdict form, to configure Arq's own logging."


@click.command('arq')
@click.version_option(VERSION, '-V', '--version', prog_name='arq')
@click.argument('worker-settings', type=str, required=True)
@click.option('--burst/--no-burst', default=None, help=burst_help)
@click.option('--check', is_flag=True, help=health_check_help)
@click.option('--watch', type=click.Path(exists=True, dir_okay=True, file_okay=False), help=watch_help)
@click.option('-v', '--verbose', is_flag=True, help=verbose_help)
@click.option('--custom-log-dict', type=str, help=logdict_help)
def cli(
    *, worker_settings: str, burst: bool | None, check: bool, watch: str | None, verbose: bool, custom_log_dict: str
) -> None:
    """
    Job queues in python with asyncio and redis.

    CLI to run the arq worker.
    """
    sys.path.append(os.getcwd())
    try:
        settings = load_settings(worker_settings)
        log_config: Any = import_string(custom_log_dict) if custom_log_dict else default_log_config(verbose)
    except (SettingsError, ImportError) as e:
        raise click.ClickException(str(e)) from None
    logging.config.dictConfig(log_config)

    if watch:
        sys.exit(watch_reload(watch, sys.argv))
    kwargs = {} if burst is None else {'burst': burst}
    try:
        if check:
            sys.exit(check_health(settings))
        run_worker(settings, **kwargs)
    except (RedisError, OSError) as e:
        where = getattr(settings, 'redis_settings', None) or RedisSettings()
        raise click.ClickException(f'could not connect to Redis at {where.describe()}: {e}') from None


def watch_reload(path: str, argv: list[str]) -> int:
    """
    Run the worker in a child process and restart it whenever a file under `path` changes.

    A fresh process imports the changed code; reloading inside one process could run stale modules (arq #168).
    """
    try:
        from watchfiles import run_process
    except ImportError as e:  # pragma: no cover
        raise click.ClickException('watchfiles not installed, use `pip install watchfiles`') from e
    args = [a for i, a in enumerate(argv[1:]) if a != '--watch' and not (i > 0 and argv[i] == '--watch')]
    args = [a for a in args if not a.startswith('--watch=')]
    command = [sys.executable, '-m', 'arq', *args]
    return run_process(path, target=_run_command, args=(command,), callback=_on_change)


def _run_command(command: list[str]) -> None:
    subprocess.run(command, check=False)


def _on_change(changes: Any) -> None:
    print('\nfiles changed, reloading arq worker...')
