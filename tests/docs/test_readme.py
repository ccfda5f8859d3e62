"""Every code block in README.md is run here, as a newcomer would run it."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.commands import env_with_venv_path, environment_bin
from tests.support.decoys import calls_log, path_with_decoys
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r'^```(\w+)\n(.*?)^```', re.S | re.M)


def blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall((ROOT / 'README.md').read_text()) if lang == language]


def test_every_block_is_of_a_kind_this_file_runs() -> None:
    languages = {lang for lang, _ in FENCE.findall((ROOT / 'README.md').read_text())}
    assert languages <= {'bash', 'python'}, languages
    assert len(blocks('bash')) == 3
    assert len(blocks('python')) == 4


def test_setup_commands_are_make_targets_and_ci_runs_the_test_one() -> None:
    commands = [line.split('#')[0].strip() for line in blocks('bash')[0].splitlines() if line.strip()]
    assert commands == ['make demo', 'make test']
    for command in commands:  # a dry run: the targets exist and resolve (tests/demo runs the demo for real)
        assert subprocess.run([*command.split(), '-n'], cwd=ROOT, capture_output=True).returncode == 0
    assert 'make test' in (ROOT / '.ci' / 'run').read_text()


def test_tour_says_what_it_needs_before_its_first_command() -> None:
    readme = (ROOT / 'README.md').read_text()
    tour = readme[readme.index('## A five-minute tour') :]
    tour = tour[: tour.index('\n## ')]
    before = tour[: tour.index('```')]
    assert 'localhost:6379' in before and 'REDIS_URL' in before
    # the commands `make demo` installed, first on PATH before the tour runs one of them
    [activate] = [b.strip() for b in blocks('bash') if 'activate' in b]
    assert activate == '. .venv/bin/activate'
    assert tour.index(activate) < tour.index('arq-supervise --procs')
    assert re.search(r'^VENV \?= \.venv$', (ROOT / 'Makefile').read_text(), re.M)


def tour_shell(commands: str, tour_dir: Path) -> list[str]:
    """bash running `commands` in the tour's directory after the README's activation line, as a newcomer would.

    Under `make test` the README's `.venv/bin/activate` is this interpreter's environment; a suite run from another
    virtual environment activates that one instead, and one run outside any puts this interpreter's scripts first.
    """
    [activate] = [b.strip() for b in blocks('bash') if 'activate' in b]
    if environment_bin() == ROOT / '.venv' / 'bin':
        activation = f'cd {shlex.quote(str(ROOT))} && {activate}'
    elif (environment_bin() / 'activate').exists():
        activation = f'. {shlex.quote(str(environment_bin() / "activate"))}'
    else:
        activation = f'export PATH={shlex.quote(env_with_venv_path()["PATH"])}'
    return ['bash', '-c', f'{activation} && cd {shlex.quote(str(tour_dir))} && {commands}']


@pytest.fixture
def tour_dir(tmp_path: Path) -> Path:
    [app] = [b for b in blocks('python') if 'class WorkerSettings' in b and 'nightly_report' in b]
    (tmp_path / 'app.py').write_text(app)
    return tmp_path


@pytest.fixture
def tour_env(tour_dir: Path, redis_url: str) -> dict[str, str]:
    """The newcomer's environment: REDIS_URL set, decoy `arq`/`arq-supervise` (exit 99) first on PATH until the
    README's activation puts this environment's commands before them."""
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    return {
        **env,
        'PATH': path_with_decoys(tour_dir / 'decoys'),
        'REDIS_URL': redis_url,
        'ARQ_SUPERVISE_STATUS_FILE': str(tour_dir / 'status.json'),
    }


@pytest.fixture
def supervisor(tour_dir: Path, tour_env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    [command] = [b.strip() for b in blocks('bash') if b.strip().startswith('arq-supervise')]
    proc = subprocess.Popen(tour_shell(f'exec {command}', tour_dir), env=tour_env, start_new_session=True)
    check = shlex.join([*command.split()[:-1], '--check', command.split()[-1]])
    wait_until(
        lambda: (
            proc.poll() is not None
            or subprocess.run(tour_shell(check, tour_dir), env=tour_env, capture_output=True).returncode == 0
        ),
        timeout=30,
        message='the README supervisor to be ready',
    )
    assert proc.poll() is None, f'the README supervisor exited with code {proc.returncode}'
    yield proc
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not calls_log(tour_dir / 'decoys').exists(), calls_log(tour_dir / 'decoys').read_text()


def test_tour_client_gets_results_from_the_supervised_workers_and_runs_again(
    supervisor: subprocess.Popen[bytes], tour_dir: Path, tour_env: dict[str, str]
) -> None:
    [client] = [b for b in blocks('python') if 'enqueue_job' in b]
    (tour_dir / 'client.py').write_text(client)
    for run in ('first', 'second'):  # the second finds the first's `resize-x` result, kept for an hour
        out = subprocess.run(
            tour_shell('python client.py', tour_dir), env=tour_env, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, f'{run} run: {out.stderr}'
        assert out.stdout.splitlines() == [
            'cat.png@640px',
            'charged 42',
            'JobStatus.deferred',
            'dog.png@200px',
            'x.png@200px',
        ], f'{run} run'


@pytest.mark.parametrize('index', [0, 1])
def test_security_examples_run(index: int, tmp_path: Path) -> None:
    examples = [b for b in blocks('python') if 'enqueue_job' not in b and 'nightly_report' not in b]
    script = tmp_path / 'example.py'
    script.write_text(examples[index])
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
