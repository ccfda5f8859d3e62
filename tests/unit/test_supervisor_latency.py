from __future__ import annotations

from arq_supervise.latency import LoopLatency


def test_busy_time_per_turn_p99_and_the_longest_stall() -> None:
    latency = LoopLatency(window=100)
    now = 0.0
    for turn in range(100):
        latency.woke(now)
        now += 0.5 if turn == 50 else 0.001
        latency.waiting(now)
        now += 0.5  # waiting does not count
    summary = latency.summary()
    assert summary == {'p99_ms': 1.0, 'max_ms': 500.0, 'turns': 100}
    for _ in range(100):  # the stall leaves the window, not the maximum
        latency.woke(now)
        latency.waiting(now + 0.002)
    assert latency.summary()['p99_ms'] == 2.0
    assert latency.summary()['max_ms'] == 500.0


def test_no_turn_yet_reads_zero() -> None:
    latency = LoopLatency()
    latency.waiting(5.0)  # a wait before any wake-up is not a turn
    assert latency.summary() == {'p99_ms': 0.0, 'max_ms': 0.0, 'turns': 0}
