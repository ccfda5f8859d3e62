from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from arq_supervise import health
from arq_supervise.health import ChildStatus, Counters


def test_counters_sum_and_retire() -> None:
    a = Counters(complete=3, failed=1, retried=2, ongoing=4)
    b = Counters(complete=1, ongoing=2)
    assert health.total([a, b]) == Counters(4, 1, 2, 6)
    assert health.retire(Counters(10, 0, 0, 0), a) == Counters(13, 1, 2, 0)
    assert a.jobs_done == 6


def test_health_check_line_matches_arq_format() -> None:
    line = health.health_check_line(Counters(2, 1, 1, 2), 3, datetime(2024, 11, 28, 21, 45, 26))
    assert line == 'Nov-28 21:45:26 j_complete=2 j_failed=1 j_retried=1 j_ongoing=2 queued=3'


def test_keys() -> None:
    assert health.health_check_key('arq:queue') == 'arq:queue:health-check'
    assert health.health_check_key('arq:queue', 'custom') == 'custom'
    assert health.supervisor_key('q', 'host1', 42) == 'arq:supervisor:q:host1:42'


def _document(state: str = 'running', ready: int = 2) -> dict[str, object]:
    child = ChildStatus(1, 10, 'ready', 0, 0, 0, 0, 0, 12.5, 0.4, None, 0, None)
    doc = health.status_document(
        pid=1,
        host='h',
        queue_name='q',
        state=state,
        procs=2,
        totals=Counters(),
        children=[child, child],
        now_wall=100.0,
    )
    doc['ready'] = ready
    return doc


def test_status_document_and_check() -> None:
    doc = _document()
    assert doc['children'][0]['memory_mib'] == 12.5  # type: ignore[index]
    assert health.check_status(doc, now_wall=101.0, max_age_s=5, pid_alive=True) is None
    assert 'not running' in str(health.check_status(doc, now_wall=101.0, max_age_s=5, pid_alive=False))
    assert 'old' in str(health.check_status(doc, now_wall=120.0, max_age_s=5, pid_alive=True))
    assert health.check_status(_document(ready=1), now_wall=101, max_age_s=5, pid_alive=True) == '1/2 children ready'
    assert 'draining' in str(health.check_status(_document('draining'), now_wall=101, max_age_s=5, pid_alive=True))


def test_status_file_is_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / 'status.json'
    health.write_status_file(path, {'a': 1})
    health.write_status_file(path, {'a': 2})
    assert json.loads(path.read_text()) == {'a': 2}
    assert os.listdir(tmp_path) == ['status.json']


def test_default_status_file_is_named_after_the_queue(monkeypatch: object) -> None:
    assert health.default_status_file('arq:queue').name == 'arq-supervise.arq_queue.json'


def test_pid_alive() -> None:
    assert health.pid_alive(os.getpid())
    assert not health.pid_alive(2**22 + 12345)


def test_live_only_check_ignores_children_but_not_a_dead_or_stuck_parent() -> None:
    booting = _document(ready=0)
    assert health.check_status(booting, now_wall=101, max_age_s=5, pid_alive=True, live_only=True) is None
    assert health.check_status(booting, now_wall=120, max_age_s=5, pid_alive=True, live_only=True)
    assert health.check_status(booting, now_wall=101, max_age_s=5, pid_alive=False, live_only=True)


def test_status_file_owner_is_a_live_fresh_running_other_supervisor(tmp_path: Path) -> None:
    path = tmp_path / 'status.json'
    assert health.status_file_owner(path, now_wall=100.0, own_pid=1) is None  # no file
    other = os.getppid()  # alive, and not us
    path.write_text(json.dumps({'pid': other, 'state': 'running', 'updated_at': 99.0}))
    assert health.status_file_owner(path, now_wall=100.0, own_pid=os.getpid())['pid'] == other
    assert health.status_file_owner(path, now_wall=100.0, own_pid=other) is None  # ourselves (PID 1 again)
    assert health.status_file_owner(path, now_wall=200.0, own_pid=os.getpid()) is None  # stale: killed long ago
    path.write_text(json.dumps({'pid': other, 'state': 'stopped', 'updated_at': 99.0}))
    assert health.status_file_owner(path, now_wall=100.0, own_pid=os.getpid()) is None
    path.write_text('{not json')
    assert health.status_file_owner(path, now_wall=100.0, own_pid=os.getpid()) is None
