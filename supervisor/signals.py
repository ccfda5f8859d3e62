"""Signals as data: the handlers do nothing, the wakeup fd carries each signal number to the parent's loop."""

from __future__ import annotations

import contextlib
import os
import select
import signal
from collections.abc import Iterable, Iterator
from types import FrameType


def _ignore(signum: int, frame: FrameType | None) -> None:
    """A handler must exist for the wakeup fd to see the signal; the byte it writes is the record."""


class SignalQueue:
    """Wait for signals and readable descriptors together, without logging or acting inside a handler."""

    def __init__(self) -> None:
        self._read_fd = -1
        self._write_fd = -1

    @contextlib.contextmanager
    def installed(self, signals: Iterable[signal.Signals]) -> Iterator[SignalQueue]:
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        previous_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        previous = {sig: signal.signal(sig, _ignore) for sig in signals}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(previous_fd)
            self.close()

    def wait(self, fds: Iterable[int], timeout_s: float) -> tuple[list[int], set[int]]:
        """Block until a signal arrives, one of `fds` is readable, or `timeout_s` passes.

        :return: the signals received (in order) and the readable descriptors among `fds`
        """
        poller = select.poll()
        poller.register(self._read_fd, select.POLLIN)
        for fd in fds:
            poller.register(fd, select.POLLIN)
        events = poller.poll(max(timeout_s, 0.0) * 1000)
        readable = {fd for fd, _ in events if fd != self._read_fd}
        return self._received(), readable

    def _received(self) -> list[int]:
        data = b''
        while True:
            try:
                chunk = os.read(self._read_fd, 4096)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        return list(data)

    def close(self) -> None:
        """Close the self-pipe; in a forked child, call `forget_in_child` instead of leaving the context."""
        for fd in (self._read_fd, self._write_fd):
            if fd >= 0:
                os.close(fd)
        self._read_fd = self._write_fd = -1

    def forget_in_child(self) -> None:
        """Drop the parent's wakeup fd and handlers in a freshly forked child."""
        signal.set_wakeup_fd(-1)
        self.close()


def reset_all_handlers() -> None:
    """Drop every Python-level handler inherited from the parent; ignored signals stay ignored."""
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            if callable(signal.getsignal(sig)):  # SIG_IGN stays (Python ignores SIGPIPE on purpose)
                signal.signal(sig, signal.SIG_DFL)
