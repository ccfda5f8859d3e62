"""A fake operating system for the Arbiter: children that exist only as records, a clock that moves when told.

Nothing here forks, signals or sleeps: a test spawns, says what a child sent, exits it, and moves time on.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable
from typing import NoReturn

from arq_supervise.protocol import ChildMessage, Command


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class FakeChannel:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.eof = False
        self.inbox: list[ChildMessage] = []
        self.sent: list[Command] = []
        self.signals: list[int] = []
        self.closed = False

    def fileno(self) -> int:
        return self.pid

    def receive(self) -> list[ChildMessage]:
        messages, self.inbox = self.inbox, []
        return messages

    def send(self, command: Command) -> None:
        self.sent.append(command)

    def signal(self, signum: int) -> None:
        self.signals.append(signum)

    def close(self) -> None:
        self.closed = True


class FakeProcesses:
    def __init__(self) -> None:
        self.next_pid = 100
        self.channels: dict[int, FakeChannel] = {}
        self.exited: list[tuple[int, int]] = []
        self.memory: dict[int, float] = {}
        self.resident: dict[int, float] = {}
        self.uss_reads: list[int] = []
        self.oom_kill_count = 0

    def spawn(
        self, slot: int, now: float, run: Callable[[socket.socket], NoReturn], close_inherited: Callable[[], None]
    ) -> tuple[int, FakeChannel]:
        self.next_pid += 1
        channel = self.channels[self.next_pid] = FakeChannel(self.next_pid)
        return self.next_pid, channel

    def reap(self) -> list[tuple[int, int]]:
        exited, self.exited = self.exited, []
        return exited

    def memory_mib(self, pid: int) -> float | None:
        self.uss_reads.append(pid)
        return self.memory.get(pid)

    def resident_mib(self, pid: int) -> float | None:
        """RSS: at least the USS (a test may set it apart)."""
        return self.resident.get(pid, self.memory.get(pid))

    def oom_kills(self) -> int:
        return self.oom_kill_count

    # --- what a test makes the children do ---

    def say(self, pid: int, *messages: ChildMessage) -> None:
        self.channels[pid].inbox.extend(messages)

    def exit(self, pid: int, *, code: int = 0, sig: int | None = None) -> None:
        """The child is gone: a wait status as waitpid gives it."""
        self.channels[pid].eof = True
        self.exited.append((pid, sig if sig is not None else code << 8))

    def readable(self) -> set[int]:
        return {pid for pid, channel in self.channels.items() if channel.inbox}

    def signals_to(self, pid: int) -> list[signal.Signals]:
        return [signal.Signals(s) for s in self.channels[pid].signals]
