"""Interop fixtures: a virtual environment with the published arq 0.26.3 (built once, cached under .cache/), and
helpers that drive it through tests/interop/published_arq.py as a subprocess.

Our own `arq` runs in the test process; the published one only ever runs in that venv's interpreter, started in a
temporary directory and without PYTHONPATH, so neither can shadow the other.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from arq.connections import ArqRedis, RedisSettings, create_pool
from tests.support.redis_server import RedisServer

PUBLISHED_VERSION = '0.26.3'
REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_DIR = REPO_ROOT / '.cache' / f'interop-venv-arq-{PUBLISHED_VERSION}'
SCRIPT = Path(__file__).resolve().parent / 'published_arq.py'
CHECK = f'import arq, msgpack, sys; sys.exit(arq.VERSION != {PUBLISHED_VERSION!r})'


def venv_python(venv: Path) -> Path:
    return venv / 'bin' / 'python'


def venv_is_usable(venv: Path) -> bool:
    python = venv_python(venv)
    if not python.exists():
        return False
    proc = subprocess.run([str(python), '-I', '-c', CHECK], capture_output=True, timeout=60)
    return proc.returncode == 0


def build_venv(target: Path) -> None:
    """(Re)create the venv from scratch; callers hold the lock, and a half-built one fails `venv_is_usable`."""
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run([sys.executable, '-m', 'venv', str(target)], check=True, capture_output=True, timeout=300)
    pip = [str(venv_python(target)), '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check']
    proc = subprocess.run([*pip, f'arq=={PUBLISHED_VERSION}', 'msgpack'], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f'could not install arq=={PUBLISHED_VERSION} into {target}:\n{proc.stdout}\n{proc.stderr}')


@pytest.fixture(scope='session')
def published_python() -> Path:
    """The interpreter of a venv holding the published arq 0.26.3 (and msgpack), created on first use."""
    VENV_DIR.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV_DIR.parent / f'{VENV_DIR.name}.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be building it right now
        if not venv_is_usable(VENV_DIR):
            build_venv(VENV_DIR)
    if not venv_is_usable(VENV_DIR):
        raise RuntimeError(f'{VENV_DIR} does not import arq {PUBLISHED_VERSION}')
    return venv_python(VENV_DIR)


def published_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME')}
    env['PYTHONDONTWRITEBYTECODE'] = '1'
    return env


@dataclass
class PublishedArq:
    """Runs published_arq.py commands with the published arq, against the test's Redis database and queue."""

    python: Path
    port: int
    db: int
    queue_name: str
    cwd: Path

    def argv(self, command: str, arg: Any = None) -> list[str]:
        argv = [str(self.python), str(SCRIPT), str(self.port), str(self.db), self.queue_name, command]
        if arg is not None:
            argv.append(json.dumps(arg))
        return argv

    def run(self, command: str, arg: Any = None, timeout: float = 60) -> Any:
        """Run a command to completion (blocking: only while no in-process worker needs the event loop)."""
        proc = subprocess.run(
            self.argv(command, arg),
            cwd=self.cwd,
            env=published_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            raise AssertionError(f'published arq {command} failed ({proc.returncode}):\n{proc.stderr}')
        return json.loads(proc.stdout.strip().splitlines()[-1])

    async def arun(self, command: str, arg: Any = None, timeout: float = 60) -> Any:
        """Run a command while the event loop keeps serving an in-process worker."""
        proc = await self.start(command, arg)
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if proc.returncode != 0:
            raise AssertionError(f'published arq {command} failed ({proc.returncode}):\n{stderr.decode()}')
        return json.loads(stdout.decode().strip().splitlines()[-1])

    async def start(self, command: str, arg: Any = None) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *self.argv(command, arg),
            cwd=self.cwd,
            env=published_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )


@pytest.fixture
def published(
    published_python: Path, redis_server: RedisServer, redis_db: int, queue_name: str, tmp_path: Path
) -> PublishedArq:
    return PublishedArq(published_python, redis_server.port, redis_db, queue_name, tmp_path)


@pytest.fixture
def redis_settings(redis_server: RedisServer, redis_db: int) -> RedisSettings:
    return RedisSettings(host='127.0.0.1', port=redis_server.port, database=redis_db)


@pytest.fixture
async def arq_redis(redis_settings: RedisSettings, queue_name: str) -> AsyncIterator[ArqRedis]:
    pool = await create_pool(redis_settings, default_queue_name=queue_name)
    yield pool
    await pool.aclose()
