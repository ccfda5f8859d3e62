from __future__ import annotations

import random

import pytest

from arq_supervise.restart import BackoffPolicy, SlotHistory, after_exit, recycle_limit, should_halt

POLICY = BackoffPolicy(base_s=0.5, max_s=30.0, stable_s=30.0)


@pytest.mark.parametrize(
    ('failures', 'delay'), [(0, 0.0), (1, 0.0), (2, 0.5), (3, 1.0), (4, 2.0), (8, 30.0), (50, 30.0)]
)
def test_backoff_is_immediate_once_then_doubles_up_to_the_cap(failures: int, delay: float) -> None:
    assert POLICY.delay_s(failures) == delay


def test_crash_loop_backs_off_further_with_each_crash() -> None:
    history, now = SlotHistory(), 100.0
    delays = []
    for _ in range(5):
        history = after_exit(POLICY, history, now=now, ready_at=now - 1, crashed=True, description='killed by SIGKILL')
        delays.append(history.not_before - now)
        now = history.not_before + 2
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0]
    assert history.restarts == 5
    assert history.last_exit == 'killed by SIGKILL'


def test_backoff_resets_after_the_child_was_ready_for_stable_s() -> None:
    history = SlotHistory(failures=6, restarts=6, not_before=0.0)
    history = after_exit(POLICY, history, now=1000.0, ready_at=1000.0 - 31, crashed=True, description='x')
    assert history.failures == 1
    assert history.not_before == 1000.0


def test_short_lived_ready_child_does_not_reset_backoff() -> None:
    history = SlotHistory(failures=3)
    history = after_exit(POLICY, history, now=1000.0, ready_at=995.0, crashed=True, description='x')
    assert history.failures == 4
    assert history.not_before == 1000.0 + 2.0


def test_requested_exit_never_delays_the_respawn() -> None:
    history = SlotHistory(failures=3, restarts=3, not_before=50.0)
    history = after_exit(POLICY, history, now=60.0, ready_at=None, crashed=False, description='exited cleanly')
    assert history.not_before == 60.0
    assert history.failures == 3
    assert history.restarts == 3


def test_recycle_limit_stays_within_the_jitter() -> None:
    rng = random.Random(1)
    limits = {recycle_limit(100, 0.1, rng) for _ in range(200)}
    assert min(limits) >= 100
    assert max(limits) <= 110
    assert len(limits) > 5
    assert recycle_limit(5, 0.1) == 5  # too small to spread


def test_halt_after_the_limit_of_boot_failures_in_a_row() -> None:
    assert not should_halt(2, 3)
    assert should_halt(3, 3)
