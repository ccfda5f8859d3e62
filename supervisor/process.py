"""One child as the parent sees it: fork, slot, socket, state, and the decoding of its exit status."""

from __future__ import annotations

import contextlib
import enum
import errno
import mmap
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from arq_supervise import health
from arq_supervise.config import own_cgroup_dir
from arq_supervise.exits import ExitCode
from arq_supervise.health import Counters
from arq_supervise.metrics import JobStats


class ChildState(enum.Enum):
    BOOTING = 'booting'
    READY = 'ready'
    DRAINING = 'draining'
    EXITED = 'exited'


class StopReason(enum.Enum):
    """Why the parent asked a child to go; None on a child means it was not asked (a crash)."""

    SHUTDOWN = 'shutdown'
    RECYCLE = 'recycle'
    MEMORY = 'memory'
    RELOAD = 'reload'
    SCALE_DOWN = 'scale-down'
    HANG = 'hang'
    BOOT_TIMEOUT = 'boot-timeout'
    DRAIN_DEADLINE = 'drain-deadline'
    #: killed at once: its memory reached twice --max-memory-per-child
    MEMORY_KILL = 'memory-kill'


@dataclass(frozen=True, slots=True)
class ExitInfo:
    """A decoded wait status: `text` is short enough to quote in a job result ('killed by SIGKILL')."""

    code: int | None
    signal: int | None
    text: str
    hint: str = ''

    @property
    def is_clean(self) -> bool:
        return self.code == 0

    def __str__(self) -> str:
        return f'{self.text} ({self.hint})' if self.hint else self.text


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f'signal {signum}'


def describe_exit(status: int, *, requested: StopReason | None = None, oom_killed: bool = False) -> ExitInfo:
    """Decode a `waitpid` status into one sentence.

    :param requested: why we stopped the child, if we did; a SIGKILL we did not send is probably the OOM killer
    :param oom_killed: the cgroup's oom_kill counter rose since the child started
    """
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        hint = ''
        if oom_killed:
            hint = 'out of memory: the cgroup OOM killer fired'
        elif requested is StopReason.HANG:
            hint = 'its event loop stopped answering'
        elif requested is StopReason.MEMORY_KILL:
            hint = 'over twice the memory limit'
        elif requested is not None:
            hint = f'{requested.value}'
        elif sig == signal.SIGKILL:
            hint = 'perhaps out of memory'
        return ExitInfo(None, sig, f'killed by {signal_name(sig)}', hint)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1
    if code == 0:
        return ExitInfo(0, None, 'exited cleanly')
    hint = 'failed to boot' if code == ExitCode.BOOT_ERROR else ''
    return ExitInfo(code, None, f'exited with code {code}', hint)


def oom_kill_count(path: Path | None = None) -> int:
    """The cgroup v2 count of OOM kills in our own cgroup, 0 when unavailable."""
    path = path or own_cgroup_dir() / 'memory.events'
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(' ')
            if name == 'oom_kill':
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


@dataclass(eq=False)
class Child:
    """A forked child: what it told us, what we asked of it, and its deadlines (absolute, from monotonic())."""

    slot: int
    pid: int
    sock: socket.socket
    started_at: float
    state: ChildState = ChildState.BOOTING
    ready_at: float | None = None
    last_heartbeat_at: float | None = None
    counters: Counters = Counters()
    held: set[str] = field(default_factory=set)
    redis_error: str | None = None
    boot_error: str | None = None
    memory_mib: float | None = None
    stats: JobStats = field(default_factory=JobStats)
    #: set when a successor in the same slot is to take over (recycle, reload); this child drains once it is READY
    retiring: StopReason | None = None
    recycle_after_jobs: int | None = None
    stop_reason: StopReason | None = None
    kill_deadline: float | None = None
    sigkill_sent: bool = False
    oom_kills_at_start: int = 0
    #: shared with the child, which records there the job it is running (arq_supervise.blame)
    blame_region: mmap.mmap | None = None
    _buffer: bytes = b''
    eof: bool = False

    @property
    def is_stopping(self) -> bool:
        return self.stop_reason is not None

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> list[dict[str, Any]]:
        """Messages that have arrived, without blocking; sets `eof` when the child closed its end."""
        while not self.eof:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data = b''
            if not data:
                self.eof = True
                break
            self._buffer += data
        *lines, self._buffer = self._buffer.split(b'\n')
        return [health.decode(line) for line in lines if line.strip()]

    def send(self, command: bytes) -> None:
        try:
            self.sock.send(command + b'\n')
        except OSError as e:  # gone already: its exit will be reaped
            if e.errno not in (errno.EPIPE, errno.ECONNRESET, errno.EAGAIN, errno.EBADF):
                raise

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def close(self) -> None:
        self.sock.close()


def fork_child(
    slot: int,
    now: float,
    run: Callable[[socket.socket], NoReturn],
    close_inherited: Callable[[], None],
    blame_region: mmap.mmap | None = None,
) -> Child:
    """Fork a child that calls `run(sock)` and never returns into our stack; return its handle in the parent.

    `close_inherited` runs first in the child, to close the parent's descriptors (self-pipe, siblings' sockets).
    `blame_region`, created before the fork, is the memory both processes share (arq_supervise.blame).
    """
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, whose coverage is not collected
        try:
            parent_end.close()
            close_inherited()
            run(child_end)
        finally:
            os._exit(ExitCode.BOOT_ERROR)
    child_end.close()
    parent_end.setblocking(False)
    return Child(slot=slot, pid=pid, sock=parent_end, started_at=now, oom_kills_at_start=oom_kill_count(),
                 blame_region=blame_region)  # fmt: skip
