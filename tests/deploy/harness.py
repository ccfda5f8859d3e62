"""Read the deployment files as their runtimes would, and run their own command lines against the test Redis.

The command lines are taken from the unit file and the Deployment as written. Only the settings path, the
job-completion wait (scaled down, the headroom above it kept) and the paths of runtime directories and volumes are
pointed at the test's own.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.integration.harness import Supervisor
from tests.support.commands import console_script

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / 'deploy'
UNIT = DEPLOY / 'systemd' / 'arq-supervise.service'
KUBERNETES = DEPLOY / 'kubernetes'
DOCKERFILE = DEPLOY / 'docker' / 'Dockerfile'

#: appended to the integration harness's job module: Redis from the environment as the deploy docs tell users to do,
#: a startup hook that records each child that booted, and jobs that resist cancellation or only the first try is slow
DEPLOYED_SETTINGS = """
WorkerSettings.redis_settings = RedisSettings.from_dsn(os.environ['REDIS_URL'])


async def _booted(ctx):
    # a startup hook that takes a moment, as real ones do, and longer in some children than in others: a READY
    # sent when only the first child is ready would be seen
    order = await ctx['redis'].incr(f'{QUEUE}:boot-order')
    await asyncio.sleep(0.3 * (1 + (order - 1) % 3))
    await ctx['redis'].rpush(f'{QUEUE}:booted', os.getpid())


async def stubborn(ctx, name):
    await _record(ctx, 'started', name)
    while True:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            pass  # refuses to be cancelled: only SIGKILL ends it


async def slow_first_try(ctx, name, seconds):
    await _record(ctx, 'started', name)
    if ctx['job_try'] == 1:
        await asyncio.sleep(seconds)
    await _record(ctx, 'finished', name)
    return name


WorkerSettings.on_startup = _booted
WorkerSettings.functions = [*WorkerSettings.functions, stubborn, slow_first_try]
"""


# --- systemd unit files ---


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value given (in order), with comments dropped and `\\` continuations joined."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ''
    for raw in path.read_text().splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        if line.endswith('\\'):
            pending = line[:-1] + ' '
            continue
        pending = ''
        if not line or line.startswith(('#', ';')):
            continue
        if line.startswith('[') and line.endswith(']'):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f'{path}: {line!r} outside a section'
        key, _, value = line.partition('=')
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_value(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit.get(section, {}).get(key)
    assert values, f'[{section}] {key}= is not set'
    return values[-1]


_SPAN_UNITS = {'us': 1e-6, 'ms': 1e-3, 's': 1.0, 'sec': 1.0, 'm': 60.0, 'min': 60.0, 'h': 3600.0, 'hr': 3600.0}


def timespan_s(value: str) -> float:
    """A systemd time span ('90', '90s', '1min 30s', '10min') in seconds."""
    total = 0.0
    for number, unit in re.findall(r'(\d+(?:\.\d+)?)\s*([a-z]*)', value.strip()):
        total += float(number) * _SPAN_UNITS[unit or 's']
    return total


def expand_specifiers(text: str, runtime_root: Path, unit_name: str) -> str:
    """The few specifiers a unit may use in ExecStart=: %t (runtime root), %n (unit name), %N, %%."""
    names = {'t': str(runtime_root), 'n': unit_name, 'N': unit_name.rsplit('.', 1)[0], '%': '%'}

    def one(match: re.Match[str]) -> str:
        assert match.group(1) in names, f'specifier %{match.group(1)} not supported by the test'
        return names[match.group(1)]

    return re.sub(r'%(.)', one, text)


def expand_variables(argv: list[str], env: dict[str, str]) -> list[str]:
    """systemd's $VAR / ${VAR} substitution in a command line (a word that is only $VAR may split, ${VAR} not)."""
    out: list[str] = []
    for word in argv:
        if re.fullmatch(r'\$[A-Za-z_][A-Za-z0-9_]*', word):
            out.extend(env.get(word[1:], '').split())
        else:
            out.append(re.sub(r'\$\{([A-Za-z_][A-Za-z0-9_]*)\}', lambda m: env.get(m.group(1), ''), word))
    return out


def read_environment_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(('#', ';')):
            key, _, value = line.partition('=')
            env[key.strip()] = value.strip().strip('"')
    return env


def unit_environment(unit: dict[str, dict[str, list[str]]]) -> dict[str, str]:
    """The variables set by Environment= lines (each may hold several quoted assignments)."""
    env: dict[str, str] = {}
    for line in unit.get('Service', {}).get('Environment', []):
        for assignment in shlex.split(line):
            key, _, value = assignment.partition('=')
            env[key] = value
    return env


# --- command lines ---


def arq_supervise_command() -> list[str]:
    """The installed `arq-supervise` of the interpreter running the tests (the path a unit or an image would use)."""
    return console_script('arq-supervise')  # never a PATH lookup: it could find another copy


def option_value(argv: list[str], name: str) -> str:
    """The value of `--name VALUE` or `--name=VALUE` in argv."""
    for i, word in enumerate(argv):
        if word == name:
            return argv[i + 1]
        if word.startswith(name + '='):
            return word.split('=', 1)[1]
    raise AssertionError(f'{name} not in {argv}')


def with_option(argv: list[str], name: str, value: str) -> list[str]:
    out = list(argv)
    for i, word in enumerate(out):
        if word == name:
            out[i + 1] = value
            return out
        if word.startswith(name + '='):
            out[i] = f'{name}={value}'
            return out
    raise AssertionError(f'{name} not in {argv}')


def settings_argument(argv: list[str]) -> str:
    """The positional SETTINGS: the last word, which names a class in a module."""
    assert re.fullmatch(r'[A-Za-z_][\w.]*\.[A-Za-z_]\w*', argv[-1]), f'last argument is not a settings path: {argv}'
    return argv[-1]


def rebase(argv: list[str], mapping: dict[str, Path]) -> list[str]:
    """Point every argument under one of the mapping's directories at its stand-in directory."""
    out = []
    for word in argv:
        for prefix, replacement in mapping.items():
            if word == prefix or word.startswith(prefix.rstrip('/') + '/'):
                word = str(replacement) + word[len(prefix.rstrip('/')) :]
                break
        out.append(word)
    return out


def base_environment(**extra: str) -> dict[str, str]:
    """What a service manager passes: a PATH and not much else (nothing of the test runner's own session)."""
    env = {
        'PATH': os.pathsep.join([str(Path(sys.executable).parent), '/usr/local/bin', '/usr/bin', '/bin']),
        'LANG': 'C.UTF-8',
        # the project is importable from its checkout even when it is not installed in this interpreter
        'PYTHONPATH': str(REPO),
    }
    env.update(extra)
    return env


class DeployedSupervisor(Supervisor):
    """The integration harness's observer (jobs, results, cleanup) for a command line taken from a deploy file."""

    def launch(self, argv: list[str], env: dict[str, str], cwd: Path) -> DeployedSupervisor:
        self.log_file = self.log_path.open('ab')
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.seen_pids.add(self.proc.pid)
        return self

    def booted(self) -> list[int]:
        return [int(pid) for pid in self.redis.lrange(f'{self.queue}:booted', 0, -1)]

    def job_settled(self, job_id: str) -> str | None:
        """'finished' (a result exists), 'queued' (back in the queue, no worker holds it), else None: lost or held."""
        result = self.result(job_id)
        if result is not None:
            return 'finished' if result['s'] else f'failed: {result["r"]!r}'
        if self.redis.zscore(self.queue, job_id) is not None and not self.redis.exists(f'arq:in-progress:{job_id}'):
            return 'queued'
        return None


def run_quiet(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, **kwargs)
