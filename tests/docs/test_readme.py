"""Every code block in README.md is run here, as a newcomer would run it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r'^```(\w+)\n(.*?)^```', re.S | re.M)


def blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall((ROOT / 'README.md').read_text()) if lang == language]


def test_every_block_is_of_a_kind_this_file_runs() -> None:
    languages = {lang for lang, _ in FENCE.findall((ROOT / 'README.md').read_text())}
    assert languages <= {'bash', 'python'}, languages
    assert len(blocks('bash')) == 2
    assert len(blocks('python')) == 4


def test_setup_commands_are_make_targets_and_ci_runs_the_test_one() -> None:
    commands = [line.split('#')[0].strip() for line in blocks('bash')[0].splitlines() if line.strip()]
    assert commands == ['make demo', 'make test']
    for command in commands:  # a dry run: the targets exist and resolve (tests/demo runs the demo for real)
        assert subprocess.run([*command.split(), '-n'], cwd=ROOT, capture_output=True).returncode == 0
    assert 'make test' in (ROOT / '.ci' / 'run').read_text()


@pytest.fixture
def tour_dir(tmp_path: Path) -> Path:
    [app] = [b for b in blocks('python') if 'class WorkerSettings' in b and 'nightly_report' in b]
    (tmp_path / 'app.py').write_text(app)
    return tmp_path


@pytest.fixture
def supervisor(tour_dir: Path, redis_url: str) -> Iterator[subprocess.Popen[bytes]]:
    [command] = [b.strip() for b in blocks('bash') if b.strip().startswith('arq-supervise')]
    env = {
        **os.environ,
        'REDIS_URL': redis_url,
        'PYTHONPATH': str(tour_dir),
        'ARQ_SUPERVISE_STATUS_FILE': str(tour_dir / 'status.json'),
    }
    proc = subprocess.Popen(command.split(), cwd=tour_dir, env=env, start_new_session=True)
    check = [*command.split()[:-1], '--check', command.split()[-1]]
    wait_until(
        lambda: subprocess.run(check, cwd=tour_dir, env=env, capture_output=True).returncode == 0,
        timeout=30,
        message='the README supervisor to be ready',
    )
    yield proc
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_tour_client_gets_results_from_the_supervised_workers(
    supervisor: subprocess.Popen[bytes], tour_dir: Path, redis_url: str
) -> None:
    [client] = [b for b in blocks('python') if 'enqueue_job' in b]
    script = tour_dir / 'client.py'
    script.write_text(client)
    out = subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, 'REDIS_URL': redis_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        'cat.png@640px',
        'charged 42',
        'JobStatus.deferred',
        'dog.png@200px',
        'x.png@200px',
    ]


@pytest.mark.parametrize('index', [0, 1])
def test_security_examples_run(index: int, tmp_path: Path) -> None:
    examples = [b for b in blocks('python') if 'enqueue_job' not in b and 'nightly_report' not in b]
    script = tmp_path / 'example.py'
    script.write_text(examples[index])
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
