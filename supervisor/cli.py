"""The `arq-supervise` command: flags (each also from an ARQ_SUPERVISE_* variable) into one frozen config."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import redis

from arq.connections import RedisSettings
from arq_supervise import health, logs
from arq_supervise.config import MIN_LEASE_S, SUPERVISED_LEASE_S, ConfigError, SupervisorConfig, available_cpus
from arq_supervise.exits import EXIT_CODE_HELP, ExitCode
from arq_supervise.settings import SettingsError, WorkerSettings, load_settings
from arq_supervise.watch import Watcher, is_watched

ENV_PREFIX = 'ARQ_SUPERVISE'

HELP = """Run N arq workers for SETTINGS (e.g. app.worker.WorkerSettings) under one supervising process.

\b
Signals: TERM/INT drain (a second one cuts the wait short), QUIT stops at once,
HUP deploys new code (checked first, then children replaced one by one),
TTIN/TTOU add/remove a child.

\b
Also: arq-supervise status [--watch] [--json] SETTINGS  shows every supervisor on the queue.

Every option can also be set in the environment as ARQ_SUPERVISE_<OPTION>,
e.g. ARQ_SUPERVISE_PROCS=4 or ARQ_SUPERVISE_MAX_JOBS_PER_CHILD=1000.
"""


class EnvAwareOption(click.Option):
    """An option whose bad value, when it came from ARQ_SUPERVISE_<OPTION>, is reported under the variable's name."""

    def handle_parse_result(self, ctx: click.Context, opts: Any, args: list[str]) -> tuple[Any, list[str]]:
        try:
            return super().handle_parse_result(ctx, opts, args)
        except click.BadParameter as e:
            if self.name and ctx.get_parameter_source(self.name) is click.core.ParameterSource.ENVIRONMENT:
                e.param_hint = f'{self.envvar or f"{ENV_PREFIX}_{self.name.upper()}"} (in the environment)'
            raise


option = functools.partial(click.option, cls=EnvAwareOption)


@click.command(
    help=HELP,
    epilog=EXIT_CODE_HELP,
    context_settings={'auto_envvar_prefix': ENV_PREFIX, 'show_default': True},
)
@click.argument('settings_path', metavar='SETTINGS', envvar='ARQ_SUPERVISE_SETTINGS', required=False)
@option('--procs', type=click.IntRange(min=1), help='Worker processes.  [default: CPUs available]')
@option(
    '--burst',
    is_flag=True,
    help='Children exit when the queue is empty; then the supervisor exits. Also when the settings say burst = True.',
)
@option('--fail-on-job-failure', is_flag=True, help='With --burst: exit 1 if any job failed.')
@option('--parent-redis-timeout', 'parent_redis_timeout_s', type=click.FloatRange(min=0, min_open=True, max=5),
        default=0.05, help="Seconds one of the parent's Redis commands may hold its loop; raise it for a Redis far "
                           'away (a round trip near or above 50 ms).  [default: 0.05]')  # fmt: skip
@option('--stop-unleased-jobs', is_flag=True,
        help='Stop a job whose lease could not be renewed for most of it (a partition): no job ever runs twice at '
             'once, but a Redis outage longer than the lease runs the jobs it interrupted again.')  # fmt: skip
@option('--check', is_flag=True, help='Exit 0 if the supervisor for SETTINGS is alive and all children ready.')
@option('--status', is_flag=True, help='Print the state of every child, then exit as --check does.')
@option('--live', is_flag=True,
        help='With --check: only ask whether the supervisor itself is alive (a liveness probe), not that '
             'every child is ready.')  # fmt: skip
@option('--watch', 'watch_path', envvar=f'{ENV_PREFIX}_WATCH',
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        help='Restart when a .py file under this directory changes (development).')  # fmt: skip
@option('--job-completion-wait', type=click.FloatRange(min=0), help='Seconds; overrides the settings.')
@option('--max-jobs-per-child', type=click.IntRange(min=1), help='Replace a child after this many jobs (+10% jitter).')
@option('--max-memory-per-child', type=click.FloatRange(min=0, min_open=True),
        help='Replace a child whose unique memory (USS) exceeds this many MiB.')  # fmt: skip
@option('--heartbeat-timeout', type=click.FloatRange(min=0, min_open=True), default=10.0,
        help='Seconds without a heartbeat (event loop blocked) before a child is dumped and killed.')  # fmt: skip
@option('--lease', 'lease_s', envvar=f'{ENV_PREFIX}_LEASE', type=click.FloatRange(min=MIN_LEASE_S),
        help="Seconds a job's in-progress lease lasts unrenewed: a lost host's jobs run elsewhere this soon.  "
             f'[default: {SUPERVISED_LEASE_S:g}]')  # fmt: skip
@option('--boot-timeout', type=click.FloatRange(min=0, min_open=True), default=60.0,
        help='Seconds a child may take to become ready.')  # fmt: skip
@option('--health-interval', type=click.FloatRange(min=0, min_open=True), default=5.0,
        help='Seconds between writes of the health keys in Redis.')  # fmt: skip
@option('--status-file', type=click.Path(dir_okay=False, path_type=Path),
        help='JSON status, replaced every second.  [default: named after the queue, in /tmp]')  # fmt: skip
@option('--pid-file', type=click.Path(dir_okay=False, path_type=Path), help='Write the supervisor pid here.')
@option('--redis-url', metavar='URL',
        help="redis://, rediss:// or unix:// URL; replaces the settings' redis_settings.")  # fmt: skip
@option('--metrics-port', type=click.IntRange(min=0, max=65535),
        help='Serve Prometheus /metrics, /livez and /readyz on this port.  [default: off]')  # fmt: skip
@option('--metrics-host', default='127.0.0.1',
        help='Address for --metrics-port; 0.0.0.0 for a scraper on another host or pod.')  # fmt: skip
@option('-v', '--verbose', is_flag=True, help='Debug logging.')
@option('--log-format', type=click.Choice(['text', 'json']), default='text')
def cli(settings_path: str | None, check: bool, status: bool, live: bool, redis_url: str | None,
        job_completion_wait: float | None,
        max_memory_per_child: float | None, heartbeat_timeout: float, boot_timeout: float, health_interval: float,
        procs: int | None, **options: Any) -> None:  # fmt: skip
    logs.configure(options['log_format'], options['verbose'])
    if os.getcwd() not in sys.path:  # as `arq` does: settings modules are found relative to where we run
        sys.path.append(os.getcwd())
    if (check or status) and options['status_file']:  # a probe that imports no application code: cheap to run often
        raise SystemExit(run_check(options['status_file'], verbose=status, live_only=live))
    if settings_path is None:
        raise click.UsageError('Missing argument SETTINGS (it may be left out only with --check --status-file).')
    settings = _load(settings_path, redis_url, verbose=options['verbose'])
    if check or status:
        raise SystemExit(run_check(health.default_status_file(settings.queue_name), verbose=status, live_only=live))
    # burst = True in the settings means what --burst means (arq's own CLI reads it from the settings too)
    options['burst'] = options['burst'] or bool(settings.worker_kwargs.get('burst'))
    try:
        config = SupervisorConfig(
            settings_path=settings_path,
            procs=procs or available_cpus(),
            job_completion_wait_s=job_completion_wait,
            max_memory_per_child_mib=max_memory_per_child,
            heartbeat_timeout_s=heartbeat_timeout,
            boot_timeout_s=boot_timeout,
            health_interval_s=health_interval,
            **options,
        )
    except ConfigError as e:
        raise click.UsageError(str(e)) from e
    # a status file that cannot be written would leave every probe failing while the workers run: refuse it now
    status_file = config.status_file or health.default_status_file(settings.queue_name)
    _check_writable_directory(status_file, '--status-file')
    _check_status_file_free(status_file)
    with _pid_file(config.pid_file):
        raise SystemExit(_supervise(config, settings, _overrides(redis_url)))


def _check_writable_directory(path: Path, option: str) -> None:
    directory = path.parent
    if not directory.is_dir():
        raise click.BadParameter(f'directory {str(directory)!r} does not exist', param_hint=option)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise click.BadParameter(f'directory {str(directory)!r} is not writable', param_hint=option)


def _check_status_file_free(path: Path) -> None:
    """Refuse to share a status file with a running supervisor: its probes would answer for either of us."""
    other = health.status_file_owner(path, now_wall=time.time(), own_pid=os.getpid())
    if other is None:
        return
    raise click.BadParameter(
        f'supervisor pid {other.get("pid")} (queue {other.get("queue")!r}) is running and writes {str(path)!r}: '
        'give this one its own --status-file, or stop that one first',
        param_hint='--status-file',
    )


def _overrides(redis_url: str | None) -> dict[str, Any]:
    if not redis_url:
        return {}
    try:
        return {'redis_settings': RedisSettings.from_dsn(redis_url)}
    except (RuntimeError, ValueError) as e:
        raise click.BadParameter(str(e), param_hint='--redis-url') from None


def _load(settings_path: str, redis_url: str | None = None, verbose: bool = False) -> WorkerSettings:
    try:
        return load_settings(settings_path, overrides=_overrides(redis_url))
    except SettingsError as e:
        cause = e.__cause__
        if verbose and cause is not None:
            click.echo(''.join(traceback.format_exception(cause)).rstrip(), err=True)
        click.echo(f'arq-supervise: {e}{_where(cause)}', err=True)
        raise SystemExit(ExitCode.CONFIG_ERROR) from None


def _where(error: BaseException | None) -> str:
    """' (at app/tasks.py:12)': where an import of the settings failed, when the error says."""
    if isinstance(error, SyntaxError) and error.filename:
        return f' (at {error.filename}:{error.lineno})'
    frames = traceback.extract_tb(error.__traceback__) if error is not None else []
    frames = [f for f in frames if '/importlib/' not in f.filename and not f.filename.startswith('<frozen')]
    return f' (at {frames[-1].filename}:{frames[-1].lineno})' if frames else ''


def _supervise(config: SupervisorConfig, settings: WorkerSettings, overrides: dict[str, Any]) -> int:
    if config.watch_path is not None and not is_watched():
        return Watcher(config.watch_path).run()
    from arq_supervise.arbiter import Arbiter

    load = functools.partial(load_settings, config.settings_path, overrides=overrides)
    return Arbiter(config, settings, load=load).run()


def run_check(status_file: Path, verbose: bool = False, live_only: bool = False) -> int:
    """
    0 when the status file shows a live supervisor with every child ready (with `live_only`: a live supervisor,
    whatever its children are doing), else 1 and why, on stderr.
    """
    try:
        document = json.loads(status_file.read_text())
    except (OSError, ValueError) as e:
        click.echo(f'arq-supervise: unhealthy: cannot read status file {status_file}: {e}', err=True)
        return 1
    if verbose:
        click.echo(format_status(document))
    max_age_s = max(5.0, 3 * float(document.get('status_interval_s', 1.0)))
    problem = health.check_status(
        document,
        now_wall=time.time(),
        max_age_s=max_age_s,
        pid_alive=health.pid_alive(int(document.get('pid', 0))),
        live_only=live_only,
    )
    if problem:
        click.echo(f'arq-supervise: unhealthy: {problem}', err=True)
        return 1
    what = 'alive' if live_only else 'healthy'
    click.echo(f'arq-supervise: {what}: {document["ready"]}/{document["procs"]} children ready')
    return 0


def format_status(document: dict[str, Any]) -> str:
    totals = document.get('totals', {})
    lines = [
        f'supervisor pid={document.get("pid")} host={document.get("host")} queue={document.get("queue")} '
        f'state={document.get("state")} ready={document.get("ready")}/{document.get("procs")} '
        f'complete={totals.get("complete")} failed={totals.get("failed")} retried={totals.get("retried")} '
        f'jobs/s={document.get("jobs_per_s", "-")}',
        _loop_line(document.get('loop') or {}),
        *([f'health keys not written to redis: {document["publish_error"]}'] if document.get('publish_error') else []),
        f'{"slot":>4} {"pid":>8} {"state":<12} {"ongoing":>7} {"complete":>8} {"failed":>6} {"mem MiB":>8} '
        f'{"beat s":>6} {"restarts":>8}  last exit',
    ]
    for c in document.get('children', []):
        lines.append(
            f'{c["slot"]:>4} {c["pid"]:>8} {c["state"]:<12} {c["ongoing"]:>7} {c["complete"]:>8} {c["failed"]:>6} '
            f'{c["memory_mib"] if c["memory_mib"] is not None else "-":>8} '
            f'{c["heartbeat_age_s"] if c["heartbeat_age_s"] is not None else "-":>6} {c["restarts"]:>8}  '
            f'{c["last_exit"] or "-"}'
        )
    return '\n'.join(lines)


def _loop_line(loop: dict[str, Any]) -> str:
    if not loop:
        return 'loop latency: -'
    return f'loop latency: p99={loop.get("p99_ms")}ms max={loop.get("max_ms")}ms over {loop.get("turns")} turns'


@contextlib.contextmanager
def _pid_file(path: Path | None) -> Iterator[None]:
    if path is None:
        yield
        return
    pid = str(os.getpid())
    try:
        path.write_text(pid + '\n')
    except OSError as e:
        raise click.BadParameter(f'cannot write {str(path)!r}: {e.strerror}', param_hint='--pid-file') from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if path.read_text().strip() == pid:
                path.unlink()


@click.command(help='Show every supervisor on the queue of SETTINGS: children, states, jobs/s, memory, restarts.')
@click.argument('settings_path', metavar='SETTINGS')
@click.option('--watch', is_flag=True, help='Refresh until interrupted.')
@click.option('--json', 'as_json', is_flag=True, help='One JSON document per refresh, for machines.')
@click.option('--redis-url', metavar='URL', envvar='ARQ_SUPERVISE_REDIS_URL',
              help="redis://, rediss:// or unix:// URL; replaces the settings' redis_settings.")  # fmt: skip
@click.option('--interval', type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help='Seconds between refreshes with --watch.')  # fmt: skip
def status_cli(settings_path: str, watch: bool, as_json: bool, redis_url: str | None, interval: float) -> None:
    from arq_supervise.release import sync_client
    from arq_supervise.status import show

    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    settings = _load(settings_path, redis_url)
    client = sync_client(settings.redis_settings)
    try:
        code = show(client, settings.queue_name, as_json=as_json, watch=watch, interval_s=interval, echo=click.echo)
    except redis.RedisError as e:
        click.echo(f'arq-supervise: cannot read from Redis: {e}', err=True)
        code = ExitCode.UNEXPECTED
    except KeyboardInterrupt:
        code = ExitCode.OK
    finally:
        client.close()
    raise SystemExit(code)


def main() -> None:
    if sys.argv[1:2] == ['status']:  # `arq-supervise status SETTINGS`: a subcommand beside the main command
        status_cli(args=sys.argv[2:], prog_name='arq-supervise status')
    if sys.argv[1:2] == ['dashboard']:
        from arq_supervise.dashboard.cli import dashboard_cli

        dashboard_cli(args=sys.argv[2:], prog_name='arq-supervise dashboard')
    cli(prog_name='arq-supervise')
