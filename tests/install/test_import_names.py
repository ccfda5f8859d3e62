"""Our import names live beside the packages users have in the same environment: supervisord, the published arq."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_a_published_arq_in_place_of_ours_stops_arq_supervise_with_one_line(tmp_path: Path) -> None:
    """`pip install arq` (directly, or as another package's dependency) replaces our arq/: say so, don't crash."""
    published = tmp_path / 'site' / 'arq'
    published.mkdir(parents=True)
    (published / '__init__.py').write_text("VERSION = '0.26.3'\n")
    (published / 'version.py').write_text("VERSION = '0.26.3'\n")
    (published / 'constants.py').write_text("default_queue_name = 'arq:queue'\n")
    env = {**os.environ, 'PYTHONPATH': str(tmp_path / 'site')}
    out = subprocess.run(
        [sys.executable, '-m', 'arq_supervise', '--help'], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 4, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert 'is the published arq' in lines[0] and 'pip uninstall -y arq' in lines[0]
    assert str(published) in lines[0]


def test_ours_runs_with_our_arq() -> None:
    out = subprocess.run([sys.executable, '-m', 'arq_supervise', '--help'], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert 'supervisor' not in {name.split('.')[0] for name in sys.modules if name == 'supervisor'}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_supervisord_installs_beside_us_and_both_run(tmp_path: Path) -> None:
    """Many arq users run workers under supervisord, often from the same environment: its `supervisor` package and
    our `arq_supervise` must both import, in either order of installation."""
    env_dir = tmp_path / 'venv'
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / 'bin' / 'python')
    quiet = ['-q', '--disable-pip-version-check']
    # that environment alone: a PYTHONPATH of the test run (a checkout, with its supervisor/ directory) must not leak
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    source = tmp_path / 'source'  # a copy: pip builds in the source tree, and the checkout must stay clean
    for name in ('arq', 'supervisor'):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns('__pycache__', 'screenshots'))
    for name in ('pyproject.toml', 'README.md'):
        shutil.copy2(ROOT / name, source / name)
    for step in (['install', *quiet, str(source)], ['install', *quiet, 'supervisor']):
        done = subprocess.run([python, '-m', 'pip', *step], capture_output=True, text=True, timeout=240, env=env)
        if done.returncode != 0 and 'supervisor' in step and 'No matching distribution' in done.stderr:
            pytest.skip('supervisor (supervisord) is not available from the package index here')
        assert done.returncode == 0, done.stderr[-2000:]
    bin_dir = env_dir / 'bin'
    ours = subprocess.run([str(bin_dir / 'arq-supervise'), '--help'], capture_output=True, text=True, cwd=tmp_path,
                          env=env)  # fmt: skip
    assert ours.returncode == 0, ours.stderr
    theirs = subprocess.run([str(bin_dir / 'supervisord'), '--version'], capture_output=True, text=True, cwd=tmp_path,
                            env=env)  # fmt: skip
    assert theirs.returncode == 0, theirs.stderr
    both = subprocess.run(
        [python, '-c', 'import supervisor.options, arq_supervise.cli, arq.worker; print("ok")'],
        capture_output=True, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert both.stdout.strip() == 'ok', both.stderr
    check = subprocess.run([python, '-m', 'pip', 'check'], capture_output=True, text=True, env=env)
    assert check.returncode == 0, check.stdout
