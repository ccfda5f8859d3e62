"""The supervisor's own jobs/s window and how `status` judges a record by its age."""

from __future__ import annotations

from arq_supervise.reporting import RateWindow
from arq_supervise.status import judge, render_table


def test_rate_window_measures_between_its_own_samples() -> None:
    window = RateWindow(window_s=10)
    assert window.per_s() is None
    for second in range(31):  # idle for 10 s, then 100 jobs/s
        window.observe(float(second), max(0, second - 10) * 100)
    assert window.per_s() == 100.0
    assert window.span_s == 10.0
    window.observe(30.5, 2050)  # half a second later: still over the last ~10 s, not over half a second
    assert window.per_s() == 100.0


def test_rate_window_needs_a_second_of_samples() -> None:
    window = RateWindow()
    window.observe(0.0, 0)
    window.observe(0.5, 50)
    assert window.per_s() is None


def _doc(**extra: object) -> dict[str, object]:
    return {'pid': 4242, 'host': 'h', 'state': 'running', 'updated_at': 1000.0, 'health_interval_s': 5.0, **extra}


def test_judge_by_age_and_by_pid_on_the_same_host() -> None:
    def alive(pid: int) -> bool:
        return True

    assert judge(_doc(), now_wall=1011.0, pid_namespace=None, pid_alive=alive)['verdict'] == 'live'
    stale = judge(_doc(), now_wall=1013.0, pid_namespace=None, pid_alive=alive)
    assert stale['verdict'] == 'stale' and stale['stale'] and stale['age_s'] == 13.0
    fast = _doc(health_interval_s=0.5)
    assert judge(fast, now_wall=1003.5, pid_namespace=None, pid_alive=alive)['verdict'] == 'stale'
    local = _doc(pid_namespace='boot:1')
    assert judge(local, now_wall=1001.0, pid_namespace='boot:1', pid_alive=lambda pid: False)['verdict'] == 'gone'
    assert judge(local, now_wall=1001.0, pid_namespace='boot:2', pid_alive=lambda pid: False)['verdict'] == 'live'


def test_table_shows_age_and_why_a_record_is_not_fresh() -> None:
    def alive(pid: int) -> bool:
        return True

    rows = [
        judge(_doc(), now_wall=1002.0, pid_namespace=None, pid_alive=alive),
        judge(_doc(pid=7, publish_error='NOREPLICAS Not enough good replicas to write.'), now_wall=1040.0,
              pid_namespace=None, pid_alive=alive),
    ]  # fmt: skip
    table = render_table(rows, 'q')
    assert '1 supervisor(s) running, 1 not refreshed' in table
    assert 'not refreshed for 40s: NOREPLICAS' in table
    assert 'stale' in table and ' 2s ' in table
