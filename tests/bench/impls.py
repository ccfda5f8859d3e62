"""The implementations compared: our arq (a snapshot of this repository's code) and the published arq 0.26.3."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.bench.procs import log

REPO = Path(__file__).resolve().parents[2]
BENCH_DIR = Path(__file__).resolve().parent
DRIVER = BENCH_DIR / 'driver.py'
RESULTS_DIR = BENCH_DIR / 'results'
REF_VENV = REPO / '.cache' / 'bench-venv-arq-0.26.3'
REF_REQUIREMENTS = ['arq==0.26.3', 'uvloop']
SETTINGS_PATH = 'tests.bench.driver.Settings'


@dataclass(frozen=True)
class Impl:
    key: str  # 'ours' | 'arq': the column its figures go in
    label: str
    python: str
    code: Path | None = None  # ours: the snapshot of arq/ and supervisor/ this run imports (PYTHONPATH, cwd)


def snapshot_code(destination: Path) -> Path:
    """
    Copy arq/, supervisor/ and the driver: the whole run measures one version of our code, even if the working tree
    changes meanwhile (other work goes on in this repository while a 10-minute benchmark runs).
    """
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc')
    for source, package in (('arq', 'arq'), ('supervisor', 'arq_supervise')):
        shutil.copytree(REPO / source, destination / package, ignore=ignore)
    (destination / 'tests' / 'bench').mkdir(parents=True)
    for name in ('__init__.py', 'driver.py'):
        shutil.copy2(BENCH_DIR / name, destination / 'tests' / 'bench' / name)
    return destination


def ensure_ref_python(explicit: str | None) -> str:
    """The interpreter of a venv holding the published arq 0.26.3 (+ uvloop), created under .cache on first use."""
    if explicit:
        return explicit
    python = REF_VENV / 'bin' / 'python'
    if not python.exists():
        log(f'creating {REF_VENV} with {" ".join(REF_REQUIREMENTS)}')
        subprocess.run([sys.executable, '-m', 'venv', str(REF_VENV)], check=True)
        subprocess.run([str(python), '-m', 'pip', 'install', '-q', *REF_REQUIREMENTS], check=True)
    return str(python)


def ours_redis_py(ours_python: str) -> str:
    code = 'import redis; print(redis.__version__)'
    return subprocess.run([ours_python, '-c', code], check=True, capture_output=True, text=True).stdout.strip()


def ensure_ref_same_redis_python(ours_python: str) -> str:
    """
    The published arq 0.26.3 on our side's redis-py (it pins redis<6, so `--no-deps`): memory compared with the same
    client library on both sides. It imports and runs a worker fine on redis-py 8.
    """
    version = ours_redis_py(ours_python)
    venv = REPO / '.cache' / f'bench-venv-arq-0.26.3-redis-{version}'
    python = venv / 'bin' / 'python'
    if not python.exists():
        log(f'creating {venv}: arq 0.26.3 (--no-deps) with redis-py {version}')
        subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True)
        pip = [str(python), '-m', 'pip', 'install', '-q']
        subprocess.run([*pip, f'redis[hiredis]=={version}', 'uvloop', 'click>=8.0', 'typing-extensions'], check=True)
        subprocess.run([*pip, '--no-deps', 'arq==0.26.3'], check=True)
    return str(python)


def ensure_ours_python(explicit: str | None) -> str:
    """
    A clean venv for our side: the dependencies from pyproject.toml, and this repository on sys.path through a
    plain .pth line (always the working tree, no editable-install finder). The interpreter the benchmark is started
    from may carry site hooks and editable finders that import ~70 extra modules at startup (~5 MiB of RSS here):
    both sides get a bare venv so memory compares arq with arq.
    """
    if explicit:
        return explicit
    import sysconfig
    import tomllib

    venv = REPO / '.cache' / 'bench-venv-ours'
    python = venv / 'bin' / 'python'
    requirements = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']['dependencies']
    stamp = venv / 'bench-requirements.json'
    if python.exists() and stamp.exists() and json.loads(stamp.read_text()) == requirements:
        return str(python)
    log(f'creating {venv} with {" ".join(requirements)} and {REPO} on its path')
    subprocess.run([sys.executable, '-m', 'venv', '--clear', str(venv)], check=True)
    subprocess.run([str(python), '-m', 'pip', 'install', '-q', *requirements], check=True)
    purelib = subprocess.run(
        [str(python), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    assert purelib != sysconfig.get_paths()['purelib']
    (Path(purelib) / 'arq-bench-repo.pth').write_text(f'{REPO}\n')
    stamp.write_text(json.dumps(requirements))
    return str(python)


def driver_env(impl: Impl, port: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(('PYTHON', 'BENCH_', 'ARQ_SUPERVISE_'))}
    if impl.code is not None:
        env['PYTHONPATH'] = str(impl.code)
    env['BENCH_REDIS_PORT'] = str(port)
    env.update(extra or {})
    return env


def claim_script_sha(impl: Impl) -> str:
    """The sha1 of our claim script, as redis-py's Script sends it with EVALSHA."""
    code = 'import hashlib; from arq import scripts; print(hashlib.sha1(scripts.CLAIM.encode()).hexdigest())'
    env = driver_env(impl, 0)
    return subprocess.run([impl.python, '-c', code], env=env, check=True, capture_output=True, text=True).stdout.strip()


def interpreter_versions(python: str, cwd: Path) -> str:
    code = (
        'import arq, redis, uvloop, platform; '
        'print(f"arq {arq.VERSION}, Python {platform.python_version()}, redis-py {redis.__version__}, '
        'uvloop {uvloop.__version__}")'
    )
    return subprocess.run([python, '-c', code], capture_output=True, text=True, cwd=cwd).stdout.strip() or '?'


def code_fingerprint(root: Path) -> str:
    """A hash of arq/ and supervisor/ under root: which code a results file measured."""
    digest = hashlib.sha1()
    paths = [
        *(root / 'arq').rglob('*.py'),
        *(root / 'arq_supervise').rglob('*.py'),
        *(root / 'supervisor').rglob('*.py'),
    ]
    for path in sorted(paths):
        digest.update(str(path.relative_to(root)).encode() + b'\0' + path.read_bytes())
    return digest.hexdigest()[:12]


def git_head() -> str:
    try:
        head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(['git', 'status', '--porcelain', 'arq', 'supervisor'], cwd=REPO, capture_output=True,
                               text=True).stdout.strip()  # fmt: skip
        return head.stdout.strip() + (' + uncommitted changes in arq/ or supervisor/' if dirty else '')
    except OSError:
        return '?'
