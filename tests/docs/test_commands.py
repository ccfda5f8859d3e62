"""Everything the suite and the demo start is this environment's `arq`/`arq-supervise`, never a copy found on PATH.

A fresh machine has none on PATH (the commands live in .venv/bin), and another machine may have an older copy
there; a suite that passes only where one is installed has not passed. `make test` runs with decoys first on PATH
(tests/support/decoys.py), which fail the run if anything reaches them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.commands import console_script, env_with_venv_path, environment_bin
from tests.support.decoys import DECOY_EXIT, path_with_decoys

ROOT = Path(__file__).resolve().parents[2]


def test_make_test_runs_the_suite_with_decoys_first_on_path() -> None:
    dry_run = subprocess.run(['make', '-n', 'test'], cwd=ROOT, capture_output=True, text=True)
    assert dry_run.returncode == 0, dry_run.stderr
    [pytest_line] = [line for line in dry_run.stdout.splitlines() if '-m pytest' in line]
    assert '-p tests.support.decoys' in pytest_line


@pytest.mark.parametrize('name', ['arq', 'arq-supervise'])
def test_our_commands_resolve_to_this_environment_even_with_decoys_first_on_path(name: str, tmp_path: Path) -> None:
    decoyed = {**os.environ, 'PATH': path_with_decoys(tmp_path / 'decoys')}
    assert subprocess.run([name, '--help'], env=decoyed, capture_output=True).returncode == DECOY_EXIT
    argv = console_script(name)
    assert argv[0] in (str(environment_bin() / name), sys.executable)
    assert subprocess.run([*argv, '--help'], env=decoyed, capture_output=True).returncode == 0
    first = shutil.which(name, path=env_with_venv_path(decoyed)['PATH'])
    assert first is not None and Path(first).parent == environment_bin()


INNER_TEST = """
import subprocess

from tests.support.commands import console_script, env_with_venv_path


def test_runs_a_command() -> None:
    subprocess.run({argv}, env={env}, capture_output=True)  # whatever it returns: the test itself passes
"""


@pytest.mark.parametrize(
    ('argv', 'env', 'decoy'),
    [
        ("['arq-supervise', '--help']", 'None', 'arq-supervise'),
        ("['arq', '--help']", 'None', 'arq'),
        ("[*console_script('arq-supervise'), '--help']", 'None', None),
        ("['arq-supervise', '--help']", 'env_with_venv_path()', None),
    ],
)
def test_a_run_that_reaches_a_decoy_fails_and_names_the_call(
    argv: str, env: str, decoy: str | None, tmp_path: Path
) -> None:
    (tmp_path / 'test_inner.py').write_text(textwrap.dedent(INNER_TEST.format(argv=argv, env=env)))
    (tmp_path / 'pytest.ini').write_text('[pytest]\n')
    done = subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-p', 'tests.support.decoys',
         '-c', str(tmp_path / 'pytest.ini'), str(tmp_path / 'test_inner.py')],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if decoy:
        assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout
        assert 'commands run from PATH instead of this environment' in done.stdout
        assert f'/{decoy} --help' in done.stdout  # the decoy's own path and the arguments it was given
    else:
        assert done.returncode == pytest.ExitCode.OK, done.stdout + done.stderr
