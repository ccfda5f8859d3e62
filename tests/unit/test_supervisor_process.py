from __future__ import annotations

import faulthandler
import os
import signal
from pathlib import Path

import pytest

from arq_supervise.process import StopReason, describe_exit, oom_kill_count


def _status_of(code: int | None = None, sig: int | None = None) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        if sig is not None:
            faulthandler.disable()  # pytest's dump of a deliberate SIGSEGV is noise
            os.kill(os.getpid(), sig)
        os._exit(code or 0)
    _, status = os.waitpid(pid, 0)
    return status


def test_clean_exit() -> None:
    info = describe_exit(_status_of(0))
    assert info.is_clean
    assert str(info) == 'exited cleanly'


def test_exit_code_and_boot_error() -> None:
    assert str(describe_exit(_status_of(13))) == 'exited with code 13'
    assert str(describe_exit(_status_of(3))) == 'exited with code 3 (failed to boot)'


def test_sigkill_we_did_not_send_hints_at_oom() -> None:
    info = describe_exit(_status_of(sig=signal.SIGKILL))
    assert info.text == 'killed by SIGKILL'
    assert info.hint == 'perhaps out of memory'
    assert info.signal == signal.SIGKILL
    assert not info.is_clean


def test_cgroup_oom_and_requested_kills_are_named() -> None:
    status = _status_of(sig=signal.SIGKILL)
    assert 'cgroup OOM killer' in str(describe_exit(status, oom_killed=True))
    assert 'event loop' in str(describe_exit(status, requested=StopReason.HANG))
    assert str(describe_exit(status, requested=StopReason.DRAIN_DEADLINE)) == 'killed by SIGKILL (drain-deadline)'


def test_oom_kill_count(tmp_path: Path) -> None:
    events = tmp_path / 'memory.events'
    events.write_text('low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n')
    assert oom_kill_count(events) == 2
    assert oom_kill_count(tmp_path / 'missing') == 0


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGSEGV])
def test_other_signals(sig: int) -> None:
    info = describe_exit(_status_of(sig=sig))
    assert info.text == f'killed by {signal.Signals(sig).name}'
    assert info.hint == ''
