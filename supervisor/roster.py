"""The children as the arbiter manages them: their messages, exits, deadlines, spawning, draining and replacing.

The arbiter (arbiter.py) owns the loop, the signals and its own state; it tells the roster what to do and the roster
keeps `Fleet`'s record of the children consistent through `Child`'s transitions.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import signal
from collections import deque
from collections.abc import Callable

from arq_supervise import logs, protocol
from arq_supervise.blame import Blame, new_region
from arq_supervise.child import DUMP_SIGNAL, ChildSpec, run_child
from arq_supervise.config import SupervisorConfig
from arq_supervise.fleet import Fleet
from arq_supervise.health import Counters
from arq_supervise.parent_redis import BoundedRedisLink
from arq_supervise.process import Child, ChildState, ExitInfo, Processes, StopReason, describe_exit
from arq_supervise.release import ReleaseQueue, child_worker_id
from arq_supervise.restart import BackoffPolicy, SlotHistory, recycle_limit, should_halt
from arq_supervise.settings import WorkerSettings

logger = logging.getLogger('arq_supervise.arbiter')

#: --max-memory-per-child asks for a rolling replacement; this many times the limit kills the child at once
MEMORY_KILL_FACTOR = 2.0
#: a job whose steps grew the peak memory by less than this is not blamed for a SIGKILL (arq_supervise.blame)
MIN_BLAMED_GROWTH_MIB = 32.0
#: with --max-jobs-per-child, a child's successor is started once it has run this fraction of its limit
REPLACE_AT_FRACTION = 0.9


class Roster:
    """Spawns, watches, drains and replaces the children of one supervisor; never waits."""

    def __init__(
        self,
        config: SupervisorConfig,
        settings: WorkerSettings,
        *,
        processes: Processes,
        redis: BoundedRedisLink,
        releases: ReleaseQueue,
        close_in_child: Callable[[], None],
        job_completion_wait_s: float,
    ) -> None:
        self.config = config
        self.settings = settings
        self.processes = processes
        self.redis = redis
        self.releases = releases
        self.close_in_child = close_in_child
        self.job_completion_wait_s = job_completion_wait_s
        self.fleet = Fleet()
        self.children = self.fleet.children  # the same dicts, by their short names
        self.history = self.fleet.history
        self.backoff = BackoffPolicy(config.backoff_base_s, config.backoff_max_s, config.stable_s)
        self.replacements: deque[tuple[int, StopReason]] = deque()
        self.boot_failures = 0
        #: set when boot failures in a row reached the limit: the last one's reason
        self.halt_reason: str | None = None
        self.burst_done: set[int] = set()
        #: a boot failure's traceback has been asked of a child since the last successful boot (one is enough)
        self.boot_traceback_asked = False
        #: the child (by slot order) whose unique memory is read on the next status turn (measure_memory)
        self.memory_turn = -1

    # --- messages and exits ---

    def read_messages(self, readable: set[int], now: float) -> None:
        for child in list(self.children.values()):
            if child.fileno() in readable:
                for message in child.receive():
                    self.on_message(child, message, now)

    def on_message(self, child: Child, message: protocol.ChildMessage, now: float) -> None:
        match message:
            case protocol.Heartbeat():
                self.on_heartbeat(child, message, now)
            case protocol.Claimed(ids=ids):
                child.held.update(ids)
            case protocol.Settled(ids=ids, counters=counters):
                child.held.difference_update(ids)
                self.on_counters(child, counters)
            case protocol.Ready():
                self.on_ready(child, now)
            case protocol.BootError(error=error):
                child.boot_error = error

    def on_heartbeat(self, child: Child, message: protocol.Heartbeat, now: float) -> None:
        child.last_heartbeat_at = now
        if message.stats is not None:
            child.stats = message.stats
        child.held = set(message.held)
        self.on_counters(child, message.counters)
        if message.redis_error != child.redis_error:
            log = logger.warning if message.redis_error else logger.info
            log('child redis status slot=%d pid=%d error=%s', child.slot, child.pid, message.redis_error or 'none')
            child.redis_error = message.redis_error

    def on_counters(self, child: Child, counters: Counters) -> None:
        child.counters = counters
        limit = child.recycle_after_jobs
        if limit is not None and counters.jobs_done >= limit:
            why = f'jobs={counters.jobs_done} limit={child.job_limit}'
            self.request_replacement(child, StopReason.RECYCLE, why)

    def on_ready(self, child: Child, now: float) -> None:
        child.mark_ready(now)
        self.boot_failures = 0
        self.boot_traceback_asked = False
        logger.info('child ready slot=%d pid=%d boot_s=%.2f', child.slot, child.pid, now - child.started_at)
        for old in list(self.children.values()):
            if old.slot == child.slot and old.retiring and not old.is_stopping and old is not child:
                self.drain_child(old, old.retiring, now)

    def reap(self, now: float) -> list[tuple[int, int]]:
        """Collect every exited child, ours or (as PID 1) anyone's; return the others' (pid, status)."""
        strangers = []
        for pid, status in self.processes.reap():
            child = self.children.pop(pid, None)
            if child is None:
                strangers.append((pid, status))
                continue
            self.on_exit(child, status, now)
        return strangers

    def on_exit(self, child: Child, status: int, now: float) -> None:
        for message in child.receive():  # the last claims, settles and counters
            self.on_message(child, message, now)
        oom = self.processes.oom_kills() > child.oom_kills_at_start
        info = describe_exit(status, requested=child.stop_reason, oom_killed=oom)
        crashed = (child.stop_reason is None and not info.is_clean) or child.is_unresponsive
        log = logger.warning if crashed else logger.info
        log('child exited slot=%d pid=%d status="%s" jobs_held=%d ran_s=%.1f', child.slot, child.pid, info,
            len(child.all_held()), now - child.started_at)  # fmt: skip
        # even holding nothing we knew of: it may have died between a claim and its report (never before READY)
        if not info.is_clean and (child.ready_at is not None or child.all_held()):
            self.release_held(child, info, crashed, now)
        child.mark_exited()
        self.fleet.record_exit(child, info, crashed, now, self.backoff)
        if crashed and child.ready_at is None:
            self.on_boot_failure(child, info, now)
        if self.config.burst and info.is_clean and child.stop_reason is None:
            self.burst_done.add(child.slot)

    def release_held(self, child: Child, info: ExitInfo, crashed: bool, now: float) -> None:
        """Give a dead child's jobs back; a crash counts a death only against the job with evidence against it.

        Blame needs evidence: the job whose step was executing when the child died or hung, or the one that grew its
        memory before a memory kill. Without it every job is released uncounted: random kills (the OOM killer, a node
        problem, an operator) once failed a fifth of innocent long jobs as poison. Their try count still rises with
        each claim, so `max_tries` still bounds a job that keeps dying without leaving evidence.
        """
        held = sorted(child.all_held())
        culprit = self.culprit(child, info) if crashed else None
        if culprit is None:
            if crashed:
                logger.info('no job to blame for the exit of its worker, releasing all slot=%d pid=%d jobs=%d',
                            child.slot, child.pid, len(held))  # fmt: skip
            worker_id = child_worker_id(child.pid)
            self.releases.release(held, death=info.text, count_death=False, now=now, worker_id=worker_id)
            return
        # the culprit may be a job whose claim had not reached us yet: the region names it all the same
        others = [j for j in held if j != culprit]
        logger.warning('job to blame for the exit of its worker job_id=%s slot=%d pid=%d others_released=%d',
                       culprit, child.slot, child.pid, len(others))  # fmt: skip
        worker_id = child_worker_id(child.pid)
        self.releases.release([culprit], death=info.text, count_death=True, now=now, worker_id=worker_id)
        # the other jobs of the dead child (also those it never told us of) are released uncounted
        self.releases.release(others, death=info.text, count_death=False, now=now, worker_id=worker_id)

    def culprit(self, child: Child, info: ExitInfo) -> str | None:
        """The job whose code was running when the child hung or died; for a kill over the memory limit (or
        a SIGKILL nobody here sent, like the kernel's OOM killer) the job that grew its memory the most."""
        if child.blame_region is None or child.blame_region.closed:
            return None
        blame = Blame.read(child.blame_region, child.all_held())
        if blame.running is not None:
            return blame.running
        memory_kill = child.stop_reason is StopReason.MEMORY_KILL or (
            child.stop_reason is None and info.signal == signal.SIGKILL
        )
        if memory_kill and blame.top_grower is not None and blame.top_growth_mib >= MIN_BLAMED_GROWTH_MIB:
            return blame.top_grower
        return None

    def on_boot_failure(self, child: Child, info: ExitInfo, now: float) -> None:
        reason = child.boot_error or str(info)
        predecessors = [c for c in self.children.values() if c.slot == child.slot and c.retiring]
        if predecessors:  # a rolling replacement failed: keep the old child rather than lose the slot
            logger.error('replacement failed to boot, keeping the old child slot=%d error="%s"', child.slot, reason)
            for old in predecessors:
                old.keep_serving()
            return
        self.boot_failures += 1
        if should_halt(self.boot_failures, self.config.max_boot_failures) and self.halt_reason is None:
            self.halt_reason = reason

    # --- deadlines ---

    def enforce_deadlines(self, now: float) -> None:
        for child in list(self.children.values()):
            if child.kill_deadline is not None and now >= child.kill_deadline:
                if not child.sigkill_sent:
                    self.kill(child)
            elif not child.is_unresponsive:
                self.check_liveness(child, now)

    def check_liveness(self, child: Child, now: float) -> None:
        if child.state is ChildState.BOOTING:
            if now - child.started_at > self.config.boot_timeout_s:
                self.kill_unresponsive(child, StopReason.BOOT_TIMEOUT, now - child.started_at, now)
            return
        last = child.last_heartbeat_at or child.ready_at or child.started_at
        if now - last > self.config.heartbeat_timeout_s:
            self.kill_unresponsive(child, StopReason.HANG, now - last, now)

    def kill_unresponsive(self, child: Child, reason: StopReason, silent_s: float, now: float) -> None:
        """Dump the child's Python stacks to the log (faulthandler), then SIGKILL it a moment later."""
        held = sorted(child.all_held())
        logger.error('child unresponsive, dumping its stack then killing it slot=%d pid=%d reason=%s silent_s=%.1f '
                     'jobs_held=%s', child.slot, child.pid, reason.value, silent_s, held)  # fmt: skip
        child.mark_unresponsive(reason, now + self.config.dump_wait_s, DUMP_SIGNAL)

    def kill(self, child: Child) -> None:
        if not child.is_unresponsive:
            logger.warning('drain deadline passed, killing slot=%d pid=%d jobs_held=%d',
                           child.slot, child.pid, len(child.all_held()))  # fmt: skip
        child.kill()

    def terminate_all(self) -> None:
        """Last resort when the loop itself failed: children drain on SIGTERM (and on losing us) by themselves."""
        for child in self.children.values():
            child.channel.signal(signal.SIGTERM)

    # --- keeping the right children ---

    def spawn_missing(self, now: float, target_procs: int) -> None:
        for slot in range(1, target_procs + 1):
            if slot in self.burst_done or any(c.slot == slot and not c.retiring for c in self.children.values()):
                continue
            if now >= self.history.get(slot, SlotHistory()).not_before:
                self.spawn(slot, now)

    def spawn(self, slot: int, now: float) -> None:
        self.redis.close()  # never fork while holding a Redis connection
        logs.flush()
        region = new_region()
        job_limit = None
        if self.config.max_jobs_per_child:
            job_limit = recycle_limit(self.config.max_jobs_per_child, self.config.recycle_jitter)
        spec = ChildSpec(
            job_limit=job_limit,
            slot=slot,
            parent_pid=os.getpid(),
            settings=self.settings,
            heartbeat_interval_s=self.config.heartbeat_interval_s,
            lease_s=self.config.effective_lease_s,
            worker_overrides=self.worker_overrides(),
            blame_region=region,
            log_boot_traceback=self.config.verbose or not self.boot_traceback_asked,
        )
        self.boot_traceback_asked = True
        oom_kills = self.processes.oom_kills()
        pid, channel = self.processes.spawn(slot, now, functools.partial(run_child, spec), self.close_in_child)
        child = Child(slot=slot, pid=pid, channel=channel, started_at=now, oom_kills_at_start=oom_kills,
                      blame_region=region)  # fmt: skip
        if job_limit is not None:  # its successor boots while it runs its last jobs, so capacity does not dip
            child.job_limit = job_limit
            child.recycle_after_jobs = math.ceil(job_limit * REPLACE_AT_FRACTION)
        self.children[child.pid] = child
        logger.info('spawned child slot=%d pid=%d restarts=%d', slot, child.pid,
                    self.history.get(slot, SlotHistory()).restarts)  # fmt: skip

    def worker_overrides(self) -> dict[str, object]:
        overrides: dict[str, object] = {}
        if self.config.job_completion_wait_s is not None:
            overrides['job_completion_wait'] = self.config.job_completion_wait_s
        # always said: a child that drains the queue and exits would otherwise be replaced at once, again and again
        overrides['burst'] = self.config.burst
        if self.config.stop_unleased_jobs:
            overrides['stop_unleased_jobs'] = True
        return overrides

    def drain_child(self, child: Child, reason: StopReason, now: float) -> None:
        if child.is_stopping:
            if reason is StopReason.SHUTDOWN and child.kill_deadline is not None:  # a replacement's longer wait
                child.shorten_deadline(now + self.job_completion_wait_s + self.config.stop_margin_s)
            return
        # a planned replacement lets running jobs finish even when job_completion_wait is arq's default of 0
        wait_s = self.job_completion_wait_s
        if reason is not StopReason.SHUTDOWN:
            wait_s = max(wait_s, self.config.replace_wait_s)
        child.begin_drain(reason, wait_s, now + wait_s + self.config.stop_margin_s)
        logger.info('draining child slot=%d pid=%d reason=%s', child.slot, child.pid, reason.value)

    def request_replacement(self, child: Child, reason: StopReason, why: str) -> None:
        if not child.is_replaceable or any(slot == child.slot for slot, _ in self.replacements):
            return
        logger.info('child to be replaced slot=%d pid=%d reason=%s %s', child.slot, child.pid, reason.value, why)
        self.replacements.append((child.slot, reason))

    def start_next_replacement(self) -> bool:
        """One slot at a time: the old child keeps working until its successor is READY. True when none is left."""
        if any(c.retiring and not c.is_stopping for c in self.children.values()):
            return False
        while self.replacements:
            slot, reason = self.replacements.popleft()
            current = [c for c in self.children.values() if c.slot == slot and c.is_replaceable]
            if current:
                current[0].schedule_retirement(reason)
                return False
        return True

    def scale_down(self, now: float, target_procs: int) -> None:
        for child in list(self.children.values()):
            if child.slot > target_procs and not child.is_stopping:
                self.drain_child(child, StopReason.SCALE_DOWN, now)
                self.history.pop(child.slot, None)

    def measure_memory(self) -> None:
        """Unique memory per child; over the limit a rolling replacement, over twice the limit a kill.

        USS is exact but costs ~0.6 ms a child (it sums /proc/<pid>/smaps): 5 ms of the loop at --procs 8, every
        second. RSS (statm) costs ~0.03 ms and is never below USS. So each turn reads the USS of one child in turn (for
        the status), of a new child, and, with a limit, of each child whose RSS is over the limit: exact enforcement.
        """
        limit = self.config.max_memory_per_child_mib
        children = sorted(self.children.values(), key=lambda c: c.slot)
        self.memory_turn = (self.memory_turn + 1) % max(len(children), 1)
        for i, child in enumerate(children):
            due = i == self.memory_turn or child.memory_mib is None
            if not due and limit is not None:
                resident_mib = self.processes.resident_mib(child.pid)
                due = resident_mib is not None and resident_mib > limit
            memory_mib = self.processes.memory_mib(child.pid) if due else None
            if memory_mib is None:
                continue
            child.memory_mib = memory_mib
            if limit is not None:
                self.enforce_memory_limit(child, memory_mib, limit)

    def enforce_memory_limit(self, child: Child, memory_mib: float, limit: float) -> None:
        if memory_mib > limit * MEMORY_KILL_FACTOR and not child.is_unresponsive:
            # a replacement drains gracefully, for up to replace_wait_s: a job eating memory fast gets no such wait
            logger.error('child over %g times the memory limit, killing it slot=%d pid=%d uss_mib=%.0f limit=%g '
                         'jobs_held=%d', MEMORY_KILL_FACTOR, child.slot, child.pid, memory_mib, limit,
                         len(child.all_held()))  # fmt: skip
            child.kill(StopReason.MEMORY_KILL)
        elif child.state is ChildState.READY and memory_mib > limit:
            self.request_replacement(child, StopReason.MEMORY, f'uss_mib={memory_mib:.0f} limit={limit:g}')
