"""--watch: restart the whole supervisor when a `.py` file changes (development only, like `arq --watch`).

watchfiles watches from a thread of its own, and a process with threads must not fork its workers. So with --watch
this process only watches: it runs the supervisor (the same command line) as its own child process, started with
exec, and on a change stops it with SIGQUIT (running jobs are cancelled and re-queued at once) and starts it again.
Every restart imports the code afresh. TERM, INT, QUIT and HUP sent to this process are passed on to the supervisor.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType

from arq_supervise import logs

logger = logging.getLogger('arq_supervise.watch')

#: set in the supervisor that a watcher runs, so that it supervises instead of watching in turn
WATCHED_ENV = 'ARQ_SUPERVISE_WATCHED'
STOPPING = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
PASSED_ON = (*STOPPING, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)


def is_watched() -> bool:
    """Whether this process is the supervisor a watcher started."""
    return os.environ.get(WATCHED_ENV) == '1'


class Watcher:
    """Runs the supervisor as a child process and restarts it when code under `root` changes."""

    def __init__(self, root: Path, command: list[str] | None = None, stop_timeout_s: float = 30.0) -> None:
        self.root = root
        self.command = command or [sys.executable, *sys.orig_argv[1:]]
        self.stop_timeout_s = stop_timeout_s
        self.stop = threading.Event()
        self.received: list[int] = []
        self.proc: subprocess.Popen[bytes] | None = None

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        if signum in STOPPING:
            self.stop.set()

    def run(self) -> int:
        import watchfiles  # only here: it imports multiprocessing, whose mere presence costs every log record a lookup

        previous = {sig: signal.signal(sig, self._record) for sig in PASSED_ON}
        try:
            proc = self.start()
            changes_seen = watchfiles.watch(self.root, watch_filter=watchfiles.PythonFilter(), stop_event=self.stop,
                                            yield_on_timeout=True, rust_timeout=200, raise_interrupt=False)  # fmt: skip
            for changes in changes_seen:
                self.pass_on(proc, stopping=False)
                if proc.poll() is not None:
                    return proc.returncode
                if changes:
                    logger.info('code changed, restarting files=%s', sorted(path for _, path in changes)[:5])
                    self.restart(proc)
                    proc = self.start()
            self.pass_on(proc, stopping=True)
            return proc.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def start(self) -> subprocess.Popen[bytes]:
        logs.flush()
        # its own process group: a terminal's Ctrl+C reaches us, and we pass it on once
        self.proc = subprocess.Popen(self.command, env={**os.environ, WATCHED_ENV: '1'}, process_group=0)
        logger.info('started supervisor pid=%d watching=%s', self.proc.pid, self.root)
        return self.proc

    def pass_on(self, proc: subprocess.Popen[bytes], *, stopping: bool) -> None:
        """Signals received so far; one that stops us waits until the watching has ended (`stopping`)."""
        kept = []
        for signum in self.received:
            if stopping or signum not in STOPPING:
                proc.send_signal(signum)
            else:
                kept.append(signum)
        self.received = kept

    def restart(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning('supervisor did not stop in %.0fs, killing its group pid=%d', self.stop_timeout_s, proc.pid)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
