"""One child as the parent sees it: its state and the transitions between them, its channel, its exit status.

The operating system is reached through two narrow seams, so that the arbiter can be driven by a fake in tests:
`Channel` (the child's socket and its pid, for signals) and `Processes` (fork, reap, memory, OOM kills).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import mmap
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, Protocol

import psutil  # type: ignore[import-untyped]

from arq_supervise import protocol
from arq_supervise.blame import pending_claims
from arq_supervise.config import own_cgroup_dir
from arq_supervise.exits import ExitCode
from arq_supervise.health import Counters
from arq_supervise.metrics import JobStats
from arq_supervise.protocol import ChildMessage, Command, ProtocolError

logger = logging.getLogger('arq_supervise.arbiter')


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

    @property
    def is_for_cause(self) -> bool:
        """The parent killed the child for something it did (hang, boot timeout, memory): a crash, not a stop."""
        return self in (StopReason.HANG, StopReason.BOOT_TIMEOUT, StopReason.MEMORY_KILL)


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


class Channel(Protocol):
    """The parent's end of one child: its messages in, commands and signals out."""

    @property
    def eof(self) -> bool: ...

    def fileno(self) -> int: ...

    def receive(self) -> list[ChildMessage]: ...

    def send(self, command: Command) -> None: ...

    def signal(self, signum: int) -> None: ...

    def close(self) -> None: ...


@dataclass(eq=False)
class Child:
    """A forked child: what it told us, what we asked of it, and its deadlines (absolute, from the arbiter's clock).

    Its lifecycle fields change only through the transition methods below, which keep them consistent:

      BOOTING --mark_ready--> READY --begin_drain--> DRAINING --mark_exited--> EXITED
         any --mark_unresponsive--> (stack dump sent, kill deadline set) --kill--> (SIGKILL sent)
      `retiring` (a successor is to take over this slot) is set by schedule_retirement, undone by keep_serving
    """

    slot: int
    pid: int
    channel: Channel
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
    #: --max-jobs-per-child (with its jitter): the child claims no more than this many jobs
    job_limit: int | None = None
    #: jobs after which its successor is started (a little before job_limit)
    recycle_after_jobs: int | None = None
    oom_kills_at_start: int = 0
    #: shared with the child, which records there the job it is running and its unreported claims (arq_supervise.blame)
    blame_region: mmap.mmap | None = None
    retiring: StopReason | None = field(default=None, init=False)
    stop_reason: StopReason | None = field(default=None, init=False)
    kill_deadline: float | None = field(default=None, init=False)
    sigkill_sent: bool = field(default=False, init=False)

    @property
    def is_stopping(self) -> bool:
        return self.stop_reason is not None

    @property
    def is_unresponsive(self) -> bool:
        return self.stop_reason is not None and self.stop_reason.is_for_cause

    @property
    def is_replaceable(self) -> bool:
        """Still serving its slot, with no successor planned."""
        return not self.is_stopping and self.retiring is None

    def all_held(self) -> set[str]:
        """The jobs it reported holding, and those it claimed and has not reported yet (in its blame region)."""
        if self.blame_region is None:
            return set(self.held)
        return self.held.union(pending_claims(self.blame_region))

    def fileno(self) -> int:
        return self.channel.fileno()

    def receive(self) -> list[ChildMessage]:
        return [] if self.channel.eof else self.channel.receive()

    def mark_ready(self, now: float) -> None:
        if self.state is ChildState.BOOTING:
            self.state = ChildState.READY
        self.ready_at = now

    def schedule_retirement(self, reason: StopReason) -> None:
        if not self.is_stopping:
            self.retiring = reason

    def keep_serving(self) -> None:
        """Its successor failed to boot: this child stays."""
        if not self.is_stopping:
            self.retiring = None

    def begin_drain(self, reason: StopReason, wait_s: float, deadline: float) -> bool:
        """Ask the child to finish its jobs within `wait_s` and leave; SIGKILL at `deadline`. False if stopping."""
        if self.is_stopping:
            return False
        self.stop_reason = reason
        self.state = ChildState.DRAINING
        self.channel.send(protocol.Drain(wait_s))
        self.kill_deadline = deadline
        return True

    def hurry(self, deadline: float) -> None:
        """Cancel running jobs now; SIGKILL at `deadline` if that is sooner than the current one."""
        self.channel.send(protocol.Stop())
        self.shorten_deadline(deadline)

    def shorten_deadline(self, deadline: float) -> None:
        if self.kill_deadline is None or deadline < self.kill_deadline:
            self.kill_deadline = deadline

    def mark_unresponsive(self, reason: StopReason, deadline: float, dump_signal: int) -> None:
        """Ask for a stack dump now, SIGKILL at `deadline`: the child is being killed for `reason`."""
        self.stop_reason = reason
        self.channel.signal(dump_signal)
        self.kill_deadline = deadline

    def kill(self, reason: StopReason = StopReason.DRAIN_DEADLINE) -> None:
        """SIGKILL; `reason` applies unless the child was already being killed for cause."""
        if not self.is_unresponsive:
            self.stop_reason = reason
        self.channel.signal(signal.SIGKILL)
        self.sigkill_sent = True

    def is_kill_due(self, now: float) -> bool:
        return self.kill_deadline is not None and now >= self.kill_deadline and not self.sigkill_sent

    def mark_exited(self) -> None:
        self.state = ChildState.EXITED
        self.channel.close()
        if self.blame_region is not None:
            self.blame_region.close()


class SocketChannel:
    """A real child: its end of a socketpair (JSON lines) and its pid."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock
        self.eof = False
        self._buffer = b''

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> list[ChildMessage]:
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
        if len(self._buffer) > protocol.MAX_LINE_BYTES:
            logger.warning('child sent an over-long line, dropped pid=%d bytes=%d', self.pid, len(self._buffer))
            self._buffer = b''
        return [m for m in map(self._decode, lines) if m is not None]

    def _decode(self, line: bytes) -> ChildMessage | None:
        if not line.strip():
            return None
        try:
            message = protocol.decode(line)
        except ProtocolError as e:
            logger.warning('ignored a message from a child pid=%d error=%s', self.pid, e)
            return None
        if isinstance(message, protocol.Drain | protocol.Stop):
            logger.warning('ignored a command sent by a child pid=%d message=%r', self.pid, message)
            return None
        return message

    def send(self, command: Command) -> None:
        try:
            self.sock.send(protocol.encode(command))
        except OSError as e:  # gone already: its exit will be reaped
            if e.errno not in (errno.EPIPE, errno.ECONNRESET, errno.EAGAIN, errno.EBADF):
                raise

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def close(self) -> None:
        self.sock.close()


class Processes(Protocol):
    """The operating system as the arbiter uses it; `ForkedProcesses` is the real one."""

    def spawn(
        self, slot: int, now: float, run: Callable[[socket.socket], NoReturn], close_inherited: Callable[[], None]
    ) -> tuple[int, Channel]: ...

    def reap(self) -> list[tuple[int, int]]: ...

    def memory_mib(self, pid: int) -> float | None: ...

    def resident_mib(self, pid: int) -> float | None: ...

    def oom_kills(self) -> int: ...


class ForkedProcesses:
    """fork(), waitpid(-1, WNOHANG), USS from /proc, the cgroup's OOM kill count."""

    def spawn(
        self, slot: int, now: float, run: Callable[[socket.socket], NoReturn], close_inherited: Callable[[], None]
    ) -> tuple[int, Channel]:
        """Fork a child that calls `run(sock)` and never returns into our stack.

        `close_inherited` runs first in the child, to close the parent's descriptors (self-pipe, siblings' sockets).
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
        return pid, SocketChannel(pid, parent_end)

    def reap(self) -> list[tuple[int, int]]:
        """Every exited child, ours or (as PID 1) anyone's: (pid, wait status)."""
        exited: list[tuple[int, int]] = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return exited
            if pid == 0:
                return exited
            exited.append((pid, status))

    def memory_mib(self, pid: int) -> float | None:
        """Unique memory (USS): what recycling the child would free, unlike peak RSS."""
        try:
            return float(psutil.Process(pid).memory_full_info().uss / 2**20)
        except (psutil.Error, OSError):
            return None

    def resident_mib(self, pid: int) -> float | None:
        """Resident memory (RSS, from statm): cheap, and never less than USS."""
        try:
            return float(psutil.Process(pid).memory_info().rss / 2**20)
        except (psutil.Error, OSError):
            return None

    def oom_kills(self) -> int:
        return oom_kill_count()
