"""SIGHUP deploys new code: the new settings are checked in a short-lived process, then imported afresh.

The parent imported the application before its first fork, so children forked later would run that old code. On
HUP the parent first imports the settings in a separate, short-lived Python process (`python -m
arq_supervise.reload SETTINGS`): a broken deploy (a syntax error, a missing module) fails there, the old children
keep running and the log says why, with the traceback. When the check passes, the parent forgets the application's
modules (everything imported from outside the standard library and site-packages) and imports the settings again,
so the children it forks from then on, one slot at a time, run the new code. Installed packages are not reloaded:
upgrading a dependency still takes a restart.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

logger = logging.getLogger('arq_supervise.arbiter')

_SHARED = ('arq', 'arq_supervise', '__main__')


class SettingsCheck:
    """One import of the settings in a child Python process; the arbiter reaps it and asks `verdict`."""

    def __init__(self, settings_path: str, started_at: float, timeout_s: float) -> None:
        self.output = tempfile.TemporaryFile()  # noqa: SIM115 - closed in verdict(), after the check exits
        command = [sys.executable, '-m', 'arq_supervise.reload', settings_path]
        env = {**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [os.getcwd(), os.environ.get('PYTHONPATH')]))}
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=self.output, stderr=subprocess.STDOUT,
                                     env=env)  # fmt: skip
        self.deadline = started_at + timeout_s

    @property
    def pid(self) -> int:
        return self.proc.pid

    def verdict(self, status: int) -> str | None:
        """None when the settings loaded, else what the check printed (the error and its traceback)."""
        self.output.seek(0)
        text = self.output.read().decode(errors='replace').strip()
        self.output.close()
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            return None
        return text or f'the check exited with status {status}'

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)


def forget_application_modules() -> list[str]:
    """Drop from sys.modules every module that is neither ours, nor stdlib, nor installed; return their names."""
    installed = {Path(p).resolve() for key, p in sysconfig.get_paths().items() if key in _LIBRARY_PATHS}
    forgotten = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, '__file__', None)
        if file is None or name.partition('.')[0] in _SHARED:
            continue
        path = Path(file).resolve()
        if any(path.is_relative_to(root) for root in installed):
            continue
        del sys.modules[name]
        forgotten.append(name)
    return forgotten


_LIBRARY_PATHS = ('stdlib', 'platstdlib', 'purelib', 'platlib')


def main() -> int:
    """`python -m arq_supervise.reload SETTINGS`: exit 0 if the settings load, else 4 with the traceback."""
    from arq_supervise.exits import ExitCode
    from arq_supervise.settings import SettingsError, load_settings

    try:
        load_settings(sys.argv[1])
    except SettingsError as e:
        import traceback

        cause = e.__cause__ or e
        traceback.print_exception(cause)
        print(f'arq-supervise: {e}')
        return int(ExitCode.CONFIG_ERROR)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
