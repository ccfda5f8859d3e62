"""The arbiter's record of its children: the live ones, each slot's history, and what the dead ones left behind.

The arbiter changes it; the reports (status file, health keys, /metrics, probes) only read it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from arq_supervise import health
from arq_supervise.health import ChildStatus, Counters
from arq_supervise.metrics import FleetView, JobStats
from arq_supervise.process import Child, ChildState, ExitInfo, StopReason
from arq_supervise.restart import BackoffPolicy, SlotHistory, after_exit


@dataclass
class Fleet:
    children: dict[int, Child] = field(default_factory=dict)
    history: dict[int, SlotHistory] = field(default_factory=dict)
    #: counters and statistics of the children that have exited, so totals only go up
    retired: Counters = Counters()
    retired_stats: JobStats = field(default_factory=JobStats)
    restarts_by_cause: Counter[str] = field(default_factory=Counter)

    def slot_history(self, slot: int) -> SlotHistory:
        return self.history.get(slot, SlotHistory())

    def in_slot(self, slot: int) -> list[Child]:
        return [c for c in self.children.values() if c.slot == slot]

    def record_exit(self, child: Child, info: ExitInfo, crashed: bool, now: float, policy: BackoffPolicy) -> None:
        """Fold the child's last counters into the totals and move its slot's history on."""
        self.retired = health.retire(self.retired, child.counters)
        self.retired_stats.add(child.stats)
        self.restarts_by_cause[exit_cause(child.stop_reason, crashed)] += 1
        self.history[child.slot] = after_exit(
            policy, self.slot_history(child.slot),
            now=now, ready_at=child.ready_at, crashed=crashed, description=str(info),
            productive=child.ready_at is not None and child.counters.jobs_done > 0,
        )  # fmt: skip

    def totals(self) -> Counters:
        return self.retired + health.total(c.counters for c in self.children.values())

    def ready_count(self) -> int:
        return sum(1 for c in self.children.values() if c.state is ChildState.READY and not c.is_stopping)

    def is_live(self) -> bool:
        """At least one child is heartbeating (the loop that answers the question is alive too)."""
        return any(c.state is ChildState.READY for c in self.children.values())

    def child_status(self, c: Child, now: float) -> ChildStatus:
        history = self.slot_history(c.slot)
        state = 'unresponsive' if c.is_unresponsive else c.state.value
        return ChildStatus(
            slot=c.slot, pid=c.pid, state=state, complete=c.counters.complete,
            failed=c.counters.failed, retried=c.counters.retried, ongoing=c.counters.ongoing, held=len(c.held),
            memory_mib=None if c.memory_mib is None else round(c.memory_mib, 1),
            heartbeat_age_s=None if c.last_heartbeat_at is None else round(now - c.last_heartbeat_at, 2),
            redis_error=c.redis_error, restarts=history.restarts, last_exit=history.last_exit,
        )  # fmt: skip

    def statuses(self, now: float) -> list[ChildStatus]:
        return [self.child_status(c, now) for c in sorted(self.children.values(), key=lambda c: c.started_at)]

    def states(self, now: float) -> tuple[tuple[int, str], ...]:
        """Each child's pid and state as reported: a change is published at once."""
        return tuple((c.pid, c.state) for c in self.statuses(now))

    def metrics_view(self, queue_depth: int | None, now: float) -> FleetView:
        stats = JobStats()
        stats.add(self.retired_stats)
        for child in self.children.values():
            stats.add(child.stats)
        states = Counter(self.child_status(c, now).state for c in self.children.values())
        memory = {c.slot: c.memory_mib for c in self.children.values() if c.memory_mib is not None}
        return FleetView(stats, queue_depth, states, self.restarts_by_cause, memory)


def exit_cause(reason: StopReason | None, crashed: bool) -> str:
    if reason is not None:
        return reason.value
    return 'crash' if crashed else 'exit'
