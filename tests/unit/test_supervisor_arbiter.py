"""The Arbiter's state table, row by row, with a fake clock and fake children: no process, no sleep.

Its Redis link points at a port where nothing listens, so every release waits in the ReleaseQueue, where the test
reads which jobs were released and whether a death was counted against them.
"""

from __future__ import annotations

import mmap
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from arq.connections import RedisSettings
from arq_supervise.arbiter import Arbiter, State
from arq_supervise.blame import (
    PENDING_BYTES,
    REGION_SIZE,
    Blame,
    BlameRecorder,
    new_region,
    pending_claims,
    reported_late_ok,
)
from arq_supervise.config import SupervisorConfig
from arq_supervise.exits import ExitCode
from arq_supervise.health import Counters
from arq_supervise.parent_redis import BoundedRedisLink
from arq_supervise.process import Child, ChildState, StopReason
from arq_supervise.protocol import BootError, Claimed, Drain, Heartbeat, Ready, Settled, Stop
from arq_supervise.settings import WorkerSettings
from tests.support.redis_server import free_port
from tests.unit.fake_processes import FakeClock, FakeProcesses


async def noop(ctx: dict[str, object]) -> None:
    return None


class FakeCheck:
    """The short-lived process that tries new settings on HUP; the test decides how it exits."""

    def __init__(self, pid: int, deadline: float, problem: str | None) -> None:
        self.pid = pid
        self.deadline = deadline
        self.problem = problem
        self.killed = False

    def verdict(self, status: int) -> str | None:
        return self.problem

    def kill(self) -> None:
        self.killed = True


class Harness:
    def __init__(self, tmp_path: Path, **options: object) -> None:
        self.clock = FakeClock()
        self.os = FakeProcesses()
        dead = RedisSettings(port=free_port(), conn_timeout=0.1)
        settings = WorkerSettings(
            'tests.app.WorkerSettings', {'functions': [noop], 'queue_name': 'q', 'redis_settings': dead}
        )
        config = SupervisorConfig(settings_path=settings.path, status_file=tmp_path / 'status.json', **options)  # type: ignore[arg-type]
        self.check_problem: str | None = None
        self.checks: list[FakeCheck] = []
        self.loaded = 0
        self.arbiter = Arbiter(config, settings, clock=self.clock, processes=self.os, redis=BoundedRedisLink(dead),
                               load=self.load, check_settings=self.check,  # type: ignore[arg-type]
                               forget_modules=list)  # this process's modules (tests included) stay  # fmt: skip

    def load(self) -> WorkerSettings:
        self.loaded += 1
        return self.arbiter.settings

    def check(self, path: str, now: float, timeout_s: float) -> FakeCheck:
        self.checks.append(FakeCheck(9000 + len(self.checks), now + timeout_s, self.check_problem))
        return self.checks[-1]

    def turn(self, *signals: int, after_s: float = 0.0) -> None:
        self.clock.advance(after_s)
        self.arbiter.turn(list(signals), self.os.readable())

    def children(self) -> list[Child]:
        return sorted(self.arbiter.children.values(), key=lambda c: c.pid)

    def ready_all(self) -> list[int]:
        self.turn()
        pids = [c.pid for c in self.children() if c.state is ChildState.BOOTING]
        for pid in pids:
            self.os.say(pid, Ready())
        self.turn()
        return pids

    def released(self) -> list[tuple[list[str], bool]]:
        return [(p.job_ids, p.count_death) for p in self.arbiter.releases.pending]


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path, procs=2)


def test_running_forks_a_child_per_empty_slot_and_marks_ready(h: Harness) -> None:
    h.turn()
    assert [(c.slot, c.state) for c in h.children()] == [(1, ChildState.BOOTING), (2, ChildState.BOOTING)]
    first = h.children()[0].pid
    h.os.say(first, Ready())
    h.turn(after_s=0.3)
    assert h.arbiter.children[first].state is ChildState.READY
    assert h.arbiter.children[first].ready_at == h.clock.now
    assert not h.arbiter.is_ready()
    h.ready_all()
    assert h.arbiter.is_ready()


def test_crash_releases_held_jobs_uncounted_and_replaces_at_once_then_backs_off(h: Harness) -> None:
    one, _ = h.ready_all()
    h.os.say(one, Claimed(('a', 'b')), Settled(('a',), Counters(complete=1)))
    h.turn()
    assert h.arbiter.children[one].held == {'b'}
    h.os.exit(one, sig=signal.SIGKILL)
    h.turn()
    assert one not in h.arbiter.children
    assert h.released() == [(['b'], False)]  # no evidence against b: no death counted
    [replacement] = [c.pid for c in h.children() if c.slot == 1]
    assert h.arbiter.fleet.history[1].restarts == 1
    h.os.exit(replacement, code=13)  # crashed again before it was ready: the slot now waits
    h.turn()
    assert not [c for c in h.children() if c.slot == 1]
    h.turn(after_s=0.4)
    assert not [c for c in h.children() if c.slot == 1]
    h.turn(after_s=0.2)
    assert [c.slot for c in h.children() if c.slot == 1] == [1]


def test_boot_failures_in_a_row_drain_and_exit_3(h: Harness) -> None:
    for _ in range(3):
        h.turn(after_s=60)
        for child in h.children():
            if child.state is ChildState.BOOTING:
                h.os.say(child.pid, BootError('ConnectionError: refused'))
                h.os.exit(child.pid, code=3)
        h.turn()
        if h.arbiter.state is not State.RUNNING:
            break
    assert h.arbiter.state is State.STOPPED  # draining with no child left
    assert h.arbiter.exit_code == ExitCode.BOOT_ERROR


def test_silent_child_gets_a_stack_dump_then_sigkill_and_its_job_is_blamed_by_evidence(h: Harness) -> None:
    one, two = h.ready_all()
    h.os.say(one, Claimed(('j1',)))
    h.os.say(two, Heartbeat(Counters()))
    h.turn(after_s=9)
    h.os.say(two, Heartbeat(Counters()))
    h.turn(after_s=2)  # one: 11 s without a heartbeat; two: 2 s
    assert h.os.signals_to(one) == [signal.SIGUSR2]
    assert h.os.signals_to(two) == []
    assert h.arbiter.fleet.child_status(h.arbiter.children[one], h.clock.now).state == 'unresponsive'
    h.turn(after_s=0.2)
    assert h.os.signals_to(one) == [signal.SIGUSR2]
    h.turn(after_s=0.4)
    assert h.os.signals_to(one) == [signal.SIGUSR2, signal.SIGKILL]
    h.os.exit(one, sig=signal.SIGKILL)
    h.turn()
    assert h.released() == [(['j1'], False)]  # its blame region names no job: nothing counted
    assert h.arbiter.fleet.restarts_by_cause['hang'] == 1


class _ForkedRegion(mmap.mmap):
    """The parent's close leaves the child's mapping open, as after a fork."""

    def close(self) -> None:
        pass


def _run_one_step(region: mmap.mmap, job_id: str, during_step: Callable[[], None]) -> None:
    """One step of a job recorded in `region` (as in a child), calling `during_step` while it executes."""

    async def job(ctx: dict[str, object]) -> None:
        during_step()

    with pytest.raises(StopIteration):
        BlameRecorder(region).wrap(job)({'job_id': job_id}).send(None)


def test_a_job_whose_claim_was_not_reported_yet_is_blamed_when_it_kills_the_child(h: Harness) -> None:
    one, _ = h.ready_all()
    h.os.say(one, Claimed(('a',)))  # 'b' was claimed too, but its claim waits in the child's 20 ms batch
    h.turn()
    child = h.arbiter.children[one]
    child.blame_region = _ForkedRegion(-1, REGION_SIZE)

    def die() -> None:
        h.os.exit(one, sig=signal.SIGKILL)
        h.turn()

    _run_one_step(child.blame_region, 'b', die)
    assert h.released() == [(['b'], True), (['a'], False)]


def test_claims_not_reported_yet_are_read_from_the_region_and_released_with_the_dead_childs_jobs(h: Harness) -> None:
    one, _ = h.ready_all()
    h.os.say(one, Claimed(('a',)))
    h.turn()
    child = h.arbiter.children[one]
    assert child.blame_region is not None
    recorder = BlameRecorder(child.blame_region)
    assert recorder.note_claims(['x', 'y'])  # claimed, then the loop blocked before the batch of messages went
    assert child.all_held() == {'a', 'x', 'y'}  # so the parent renews their leases too
    h.os.exit(one, sig=signal.SIGKILL)
    h.turn()
    assert h.released() == [(['a', 'x', 'y'], False)]


def test_pending_claims_fill_the_region_then_are_cleared_once_reported() -> None:
    region = new_region()
    recorder = BlameRecorder(region)
    assert recorder.note_claims(['j1', 'j2']) and recorder.note_claims(['é3'])
    assert pending_claims(region) == ['j1', 'j2', 'é3']
    recorder.claims_reported()
    assert pending_claims(region) == []
    assert not recorder.note_claims(['x' * (PENDING_BYTES + 1)])  # does not fit: the claim is reported at once
    assert not recorder.note_claims(['ok', 'é' * 121])  # the running field could not name the second: at once too
    assert pending_claims(region) == []


def test_the_blame_region_names_the_running_job_by_id_or_long_ids_by_digest_among_the_held() -> None:
    region = new_region()
    long_id = 'x' * 1000
    seen: list[tuple[str | None, str | None]] = []
    for job_id in ('short', 'é' * 120, long_id):
        _run_one_step(region, job_id, lambda: seen.append((Blame.read(region, ()).running,
                                                           Blame.read(region, [long_id, 'y']).running)))  # fmt: skip
    assert seen == [('short', 'short'), ('é' * 120, 'é' * 120), (None, long_id)]
    assert Blame.read(region, [long_id]).running is None  # the step is over
    assert [reported_late_ok(i) for i in ('short', 'é' * 120, 'é' * 121, long_id)] == [True, True, False, False]


def test_boot_timeout_kills_a_child_that_never_becomes_ready(tmp_path: Path) -> None:
    h = Harness(tmp_path, procs=1, boot_timeout_s=5)
    h.turn()
    [child] = h.children()
    h.turn(after_s=5.1)
    assert child.stop_reason is StopReason.BOOT_TIMEOUT
    h.turn(after_s=0.5)
    assert h.os.signals_to(child.pid) == [signal.SIGUSR2, signal.SIGKILL]


def test_jobs_over_the_limit_replace_the_child_its_successor_ready_first(tmp_path: Path) -> None:
    h = Harness(tmp_path, procs=1, max_jobs_per_child=10, recycle_jitter=0)
    [old] = h.ready_all()
    h.os.say(old, Settled(('x',), Counters(complete=10)))
    h.turn()
    [_, new] = [c.pid for c in h.children()]
    assert h.arbiter.children[old].retiring is StopReason.RECYCLE
    assert h.os.channels[old].sent == []  # keeps working until its successor is ready
    h.os.say(new, Ready())
    h.turn()
    assert h.os.channels[old].sent == [Drain(30.0)]
    assert h.arbiter.children[old].state is ChildState.DRAINING
    h.os.exit(old)
    h.turn()
    assert [c.pid for c in h.children()] == [new]
    assert h.arbiter.fleet.restarts_by_cause['recycle'] == 1


def test_memory_over_the_limit_replaces_and_twice_the_limit_kills(tmp_path: Path) -> None:
    h = Harness(tmp_path, procs=2, max_memory_per_child_mib=100)
    one, two = h.ready_all()
    h.os.memory.update({one: 150, two: 250})
    h.turn(after_s=1)  # measured once a second; the replacement starts on the next turn
    h.turn()
    assert h.arbiter.children[one].retiring is StopReason.MEMORY
    assert h.os.signals_to(two) == [signal.SIGKILL]
    assert h.arbiter.children[two].stop_reason is StopReason.MEMORY_KILL


def test_unique_memory_is_read_for_one_child_a_turn_without_a_limit(tmp_path: Path) -> None:
    h = Harness(tmp_path, procs=4)
    pids = h.ready_all()
    h.os.memory.update(dict.fromkeys(pids, 20))
    h.turn(after_s=1)  # the first reading of every new child
    h.os.uss_reads.clear()
    for _ in range(4):
        h.turn(after_s=1)
    assert sorted(h.os.uss_reads) == sorted(pids)  # each child once in four turns, not every child every turn


def test_with_a_limit_unique_memory_is_read_only_where_rss_is_over_it(tmp_path: Path) -> None:
    h = Harness(tmp_path, procs=3, max_memory_per_child_mib=100)
    one, two, three = h.ready_all()
    h.os.memory.update({one: 20, two: 20, three: 120})
    h.os.resident.update({one: 60, two: 130, three: 150})  # two: shared pages push RSS over, its USS is fine
    h.turn(after_s=1)
    h.os.uss_reads.clear()
    h.turn(after_s=1)
    assert {two, three} <= set(h.os.uss_reads) and len(h.os.uss_reads) <= 3
    h.turn()
    assert h.arbiter.children[three].retiring is StopReason.MEMORY
    assert h.arbiter.children[two].retiring is None and h.arbiter.children[one].retiring is None


def test_sighup_replaces_every_slot_one_at_a_time_once_the_new_settings_load(h: Harness) -> None:
    one, two = h.ready_all()
    h.turn(signal.SIGHUP)
    [check] = h.checks
    assert h.arbiter.children[one].retiring is None and h.loaded == 0  # nothing happens before the check passed
    h.os.exited.append((check.pid, 0))
    h.turn()
    assert h.loaded == 1
    assert h.arbiter.children[one].retiring is StopReason.RELOAD
    assert h.arbiter.children[two].retiring is None
    [new_one] = [c.pid for c in h.children() if c.pid not in (one, two)]
    h.os.say(new_one, Ready())
    h.turn()
    h.os.exit(one)
    h.turn()
    assert h.arbiter.children[two].retiring is StopReason.RELOAD
    [new_two] = [c.pid for c in h.children() if c.pid not in (two, new_one)]
    h.os.say(new_two, Ready())
    h.turn()
    h.os.exit(two)
    h.turn()
    assert sorted(h.arbiter.children) == [new_one, new_two]
    assert not h.arbiter.reloading


def test_ttin_adds_a_slot_ttou_drains_the_highest_and_stops_at_one(h: Harness) -> None:
    h.ready_all()
    h.turn(signal.SIGTTIN)
    assert sorted(c.slot for c in h.children()) == [1, 2, 3]
    h.turn(signal.SIGTTOU, signal.SIGTTOU)
    assert sorted(c.slot for c in h.children() if c.state is ChildState.DRAINING) == [2, 3]
    h.turn(signal.SIGTTOU)
    assert h.arbiter.target_procs == 1


def test_sigterm_drains_then_kills_past_the_deadline_then_stops(h: Harness) -> None:
    one, two = h.ready_all()
    h.os.say(two, Claimed(('long',)))
    h.turn(signal.SIGTERM)
    assert h.arbiter.state is State.DRAINING
    assert h.os.channels[one].sent == [Drain(0.0)] == h.os.channels[two].sent
    h.os.exit(one)
    h.turn(after_s=4.9)
    assert h.os.signals_to(two) == []
    h.turn(after_s=0.2)  # job_completion_wait 0 + stop margin 5 s
    assert h.os.signals_to(two) == [signal.SIGKILL]
    h.os.exit(two, sig=signal.SIGKILL)
    h.turn()
    assert h.released() == [(['long'], False)]
    assert h.arbiter.state is State.STOPPED and h.arbiter.exit_code == ExitCode.OK


def test_second_sigterm_or_sigquit_cancels_running_jobs_with_a_short_deadline(h: Harness) -> None:
    one, _ = h.ready_all()
    h.turn(signal.SIGTERM)
    h.turn(signal.SIGTERM, after_s=1)
    assert h.os.channels[one].sent == [Drain(0.0), Stop()]
    assert h.arbiter.children[one].kill_deadline == h.clock.now + 3
    quitting = Harness(h.arbiter.config.status_file.parent, procs=1)  # type: ignore[union-attr]
    [pid] = quitting.ready_all()
    quitting.turn(signal.SIGQUIT)
    assert quitting.arbiter.state is State.DRAINING
    assert quitting.os.channels[pid].sent == [Drain(0.0), Stop()]


def test_burst_stops_once_every_slot_exited_cleanly(tmp_path: Path) -> None:
    h = Harness(tmp_path, procs=2, burst=True)
    one, two = h.ready_all()
    h.os.exit(one)
    h.turn()
    assert h.arbiter.state is State.RUNNING and [c.pid for c in h.children()] == [two]
    h.os.exit(two)
    h.turn()
    assert h.arbiter.state is State.STOPPED


def test_a_heartbeat_replaces_held_ids_and_counters(h: Harness) -> None:
    one, _ = h.ready_all()
    h.os.say(one, Claimed(('a', 'b')), Heartbeat(Counters(complete=4, ongoing=1), held=('b',), redis_error='down'))
    h.turn()
    child = h.arbiter.children[one]
    assert child.held == {'b'} and child.counters == Counters(complete=4, ongoing=1) and child.redis_error == 'down'
    assert h.arbiter.totals().complete == 4


def test_sighup_with_settings_that_do_not_load_keeps_the_children(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    h.ready_all()
    h.check_problem = 'SyntaxError: invalid syntax (app.py, line 3)'
    h.turn(signal.SIGHUP)
    h.turn(signal.SIGHUP)  # a second HUP while the first is being checked changes nothing
    [check] = h.checks
    h.os.exited.append((check.pid, 4 << 8))
    h.turn()
    assert h.loaded == 0 and not h.arbiter.reloading
    assert all(c.retiring is None and not c.is_stopping for c in h.children())
    assert 'reload refused, the current children keep running: SyntaxError' in caplog.text


def test_a_settings_check_that_hangs_is_killed_at_the_boot_timeout(h: Harness) -> None:
    h.ready_all()
    h.turn(signal.SIGHUP)
    h.turn(after_s=59)
    assert not h.checks[0].killed
    h.turn(after_s=2)
    assert h.checks[0].killed
