from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from arq_supervise import notify
from arq_supervise.signals import SignalQueue


def test_sd_notify_is_a_no_op_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv('NOTIFY_SOCKET', raising=False)
    assert notify.sd_notify('READY=1') is False


def test_sd_notify_sends_one_datagram(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = str(tmp_path / 'notify.sock')
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(5)
        monkeypatch.setenv('NOTIFY_SOCKET', path)
        assert notify.sd_notify('READY=1', 'STATUS=2/2 ready')
        assert server.recv(4096) == b'READY=1\nSTATUS=2/2 ready'


def test_watchdog_interval_is_half_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('WATCHDOG_USEC', '10000000')
    monkeypatch.setenv('WATCHDOG_PID', str(os.getpid()))
    assert notify.watchdog_interval_s() == 5.0
    monkeypatch.setenv('WATCHDOG_PID', '1')
    assert notify.watchdog_interval_s() is None


def test_signal_queue_records_real_signals_in_order() -> None:
    queue = SignalQueue()
    with queue.installed([signal.SIGUSR1, signal.SIGHUP]):
        signal.raise_signal(signal.SIGUSR1)
        signal.raise_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        received: list[int] = []
        while len(received) < 2 and time.monotonic() < deadline:
            got, _ = queue.wait([], 1.0)
            received += got
    assert received == [signal.SIGUSR1, signal.SIGHUP]
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_signal_queue_reports_readable_descriptors() -> None:
    queue = SignalQueue()
    a, b = socket.socketpair()
    with a, b, queue.installed([signal.SIGUSR1]):
        assert queue.wait([a.fileno()], 0.01) == ([], set())
        b.send(b'x')
        assert queue.wait([a.fileno()], 1.0) == ([], {a.fileno()})
