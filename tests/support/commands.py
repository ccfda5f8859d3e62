"""The project's commands as this interpreter's environment installed them, never a copy found on PATH.

A test (or the demo) that runs `arq-supervise` by bare name runs whatever PATH finds first: in a fresh clone with a
plain PATH that is nothing at all, and on a developer's machine it may be an older copy installed elsewhere. Every
place that starts one of our commands asks here instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

#: our console scripts and the module each one runs (pyproject.toml's [project.scripts])
MODULES = {'arq': 'arq', 'arq-supervise': 'arq_supervise'}


def environment_bin() -> Path:
    """The directory of this interpreter's scripts: `.venv/bin` under `make test` (not resolved: a venv's python
    is a symlink to the base interpreter, whose directory holds none of our scripts)."""
    return Path(sys.executable).parent


def console_script(name: str) -> list[str]:
    """The argv prefix that runs our command `name`: the script beside `sys.executable`, else `python -m module`."""
    script = environment_bin() / name
    if script.exists():
        return [str(script)]
    return [sys.executable, '-m', MODULES[name]]


def env_with_venv_path(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of `env` (default: os.environ) whose PATH starts with this environment's scripts, for subprocesses that
    run command lines as a user types them (`arq-supervise ...`, `python client.py`)."""
    out = dict(os.environ if env is None else env)
    first = str(environment_bin())
    rest = [p for p in out.get('PATH', os.defpath).split(os.pathsep) if p and p != first]
    out['PATH'] = os.pathsep.join([first, *rest])
    return out
