"""A pytest plugin that puts decoy `arq` and `arq-supervise` first on PATH for the whole session.

`make test` loads it (`-p tests.support.decoys`). Anything in the suite, or in the demo it runs, that starts one of
our commands through a PATH lookup instead of tests/support/commands.py gets a decoy that records the call, says so
on stderr and exits 99. The session then fails and names every such call, even if the test that made it passed.
Command lines run as a user types them (the README's) put this environment's scripts before the decoys
(`env_with_venv_path()`, or sourcing the venv's `activate`), so they reach the real ones.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.support.commands import MODULES

DECOY_EXIT = 99
_directory = pytest.StashKey[Path]()
_saved_path = pytest.StashKey[str | None]()

SCRIPT = """#!/bin/sh
echo "$0 $*" >> '{log}'
echo "decoy {name} (exit {code}): this ran '{name}' found on PATH, not this environment's" >&2
exit {code}
"""


def calls_log(directory: Path) -> Path:
    """Where the decoys in `directory` record each call, one `argv` per line."""
    return directory / 'calls.log'


def write_decoys(directory: Path) -> Path:
    """Decoy `arq` and `arq-supervise` scripts in `directory` (put it first on a PATH); returns `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in MODULES:
        script = directory / name
        script.write_text(SCRIPT.format(log=calls_log(directory), name=name, code=DECOY_EXIT))
        script.chmod(0o755)
    return directory


def path_with_decoys(directory: Path, path: str | None = None) -> str:
    """`path` (default: $PATH) with decoys written to `directory` in front."""
    return os.pathsep.join([str(write_decoys(directory)), os.environ.get('PATH', os.defpath) if path is None else path])


def pytest_configure(config: pytest.Config) -> None:
    directory = Path(tempfile.mkdtemp(prefix='arq-decoys-'))
    config.stash[_directory] = directory
    config.stash[_saved_path] = os.environ.get('PATH')
    os.environ['PATH'] = path_with_decoys(directory)


def decoy_calls(config: pytest.Config) -> list[str]:
    log = calls_log(config.stash[_directory])
    return log.read_text().splitlines() if log.exists() else []


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if decoy_calls(session.config) and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    calls = decoy_calls(config)
    if calls:
        terminalreporter.section('commands run from PATH instead of this environment', red=True)
        terminalreporter.line('use tests/support/commands.py (console_script, env_with_venv_path); the calls were:')
        for call in calls:
            terminalreporter.line(f'  {call}')


def pytest_unconfigure(config: pytest.Config) -> None:
    if _directory not in config.stash:
        return
    saved = config.stash[_saved_path]
    if saved is None:
        os.environ.pop('PATH', None)
    else:
        os.environ['PATH'] = saved
    shutil.rmtree(config.stash[_directory], ignore_errors=True)
