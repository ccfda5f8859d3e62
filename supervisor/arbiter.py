"""The parent: a synchronous, single-threaded loop that forks, watches, drains, replaces and reports its children."""

from __future__ import annotations

import enum
import functools
import logging
import os
import signal
import socket
import time
from collections import Counter, deque
from time import monotonic

import psutil  # type: ignore[import-untyped]
import setproctitle

from arq_supervise import health, logs
from arq_supervise.blame import Blame, new_region
from arq_supervise.child import DUMP_SIGNAL, ChildSpec, run_child
from arq_supervise.config import SupervisorConfig
from arq_supervise.exits import ExitCode
from arq_supervise.health import ChildStatus, Counters, HealthPublisher
from arq_supervise.metrics import FleetView, JobStats, MetricsServer
from arq_supervise.metrics import render as render_metrics
from arq_supervise.notify import sd_notify
from arq_supervise.process import Child, ChildState, ExitInfo, StopReason, describe_exit, fork_child, oom_kill_count
from arq_supervise.release import JobReleaser, RedisLink, ReleaseQueue, child_worker_id
from arq_supervise.reporting import Reporter, Snapshot
from arq_supervise.restart import BackoffPolicy, SlotHistory, after_exit, recycle_limit, should_halt
from arq_supervise.settings import WorkerSettings
from arq_supervise.signals import SignalQueue
from arq_supervise.watch import CodeWatcher

logger = logging.getLogger('arq_supervise.arbiter')

HANDLED_SIGNALS = (
    signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD,
)  # fmt: skip
#: reasons for which the parent kills a child itself; the jobs it held count a death against them
KILLED_FOR_CAUSE = (StopReason.HANG, StopReason.BOOT_TIMEOUT, StopReason.MEMORY_KILL)
#: --max-memory-per-child asks for a rolling replacement; this many times the limit kills the child at once
MEMORY_KILL_FACTOR = 2.0
#: a job whose steps grew the peak memory by less than this is not blamed for a SIGKILL (arq_supervise.blame)
MIN_BLAMED_GROWTH_MIB = 32.0


class State(enum.Enum):
    RUNNING = 'running'
    DRAINING = 'draining'
    STOPPED = 'stopped'


class Arbiter:
    """The supervisor's state machine. Handlers only change state and send commands; they never wait.

    ============  ==============================  ==============================================  =========
    state         event                           action                                          next
    ============  ==============================  ==============================================  =========
    RUNNING       slot empty, backoff elapsed     fork a child (BOOTING)                          RUNNING
    RUNNING       child says ready                child READY; drain the retiring one it replaces RUNNING
    RUNNING       child exits, crashed            release its jobs; backoff the slot              RUNNING
    RUNNING       child dies before READY (x N)   boot failures in a row reach the limit: drain   DRAINING
    RUNNING       heartbeat / boot timeout        dump its stack (SIGUSR2), SIGKILL after a beat  RUNNING
    RUNNING       jobs / memory over the limit    queue a rolling replacement of that slot        RUNNING
    RUNNING       SIGHUP                          queue a rolling replacement of every slot       RUNNING
    RUNNING       SIGTTIN / SIGTTOU               one slot more / drain the highest slot          RUNNING
    RUNNING       SIGTERM / SIGINT                `drain` every child, deadline wait + margin     DRAINING
    RUNNING       SIGQUIT                         `stop` every child, short deadline              DRAINING
    RUNNING       --burst: every slot exited 0    nothing left to do                              STOPPED
    DRAINING      SIGTERM / SIGINT / SIGQUIT      `stop` every child, short deadline              DRAINING
    DRAINING      a child's deadline passes       SIGKILL, release what it held                   DRAINING
    DRAINING      no child left                   exit with the exit code                         STOPPED
    ============  ==============================  ==============================================  =========
    """

    def __init__(self, config: SupervisorConfig, settings: WorkerSettings, watcher: CodeWatcher | None = None) -> None:
        self.config = config
        self.watcher = watcher
        self.reexec_requested = False
        self.settings = settings
        self.state = State.RUNNING
        self.exit_code = ExitCode.OK
        self.target_procs = config.procs
        self.children: dict[int, Child] = {}
        self.history: dict[int, SlotHistory] = {}
        self.backoff = BackoffPolicy(config.backoff_base_s, config.backoff_max_s, config.stable_s)
        self.boot_failures = 0
        self.burst_done: set[int] = set()
        self.retired = Counters()
        self.retired_stats = JobStats()
        self.restarts_by_cause: Counter[str] = Counter()
        self.metrics: MetricsServer | None = None
        self.replacements: deque[tuple[int, StopReason]] = deque()
        self.signals = SignalQueue()
        self.redis = RedisLink(settings.redis_settings)
        self.releases = ReleaseQueue(JobReleaser(self.redis, settings), retry_for_s=config.effective_lease_s / 2)
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.job_completion_wait_s = (
            config.job_completion_wait_s if config.job_completion_wait_s is not None else settings.job_completion_wait_s
        )
        queue = settings.queue_name
        publisher = HealthPublisher(
            queue_name=queue,
            health_key=health.health_check_key(queue, settings.health_check_key),
            supervisor_key=health.supervisor_key(queue, self.host, self.pid),
            interval_s=config.health_interval_s,
        )
        status_file = config.status_file or health.default_status_file(queue)
        self.reporter = Reporter(config, self.redis, publisher, status_file)
        self.reloading = False

    # --- the loop ---

    def run(self) -> int:
        logger.info('starting supervisor pid=%d procs=%d queue=%s settings=%s job_completion_wait=%.1fs lease=%.1fs',
                    self.pid, self.target_procs, self.settings.queue_name, self.settings.path,
                    self.job_completion_wait_s, self.config.effective_lease_s)  # fmt: skip
        setproctitle.setproctitle(f'arq-supervise: supervisor [{self.settings.queue_name}] {self.settings.path}')
        try:
            self.start_metrics()
        except OSError as e:  # a port in use: a wrong value for the option, not a crash
            logger.error('cannot serve metrics on --metrics-port %d: %s', self.config.metrics_port, e.strerror or e)
            self.exit_code = ExitCode.USAGE
            self.finish()
            return int(self.exit_code)
        try:
            with self.signals.installed(HANDLED_SIGNALS):
                self.loop()
        except Exception:
            logger.exception('unhandled exception in arbiter')
            self.terminate_all()
            self.exit_code = ExitCode.UNEXPECTED
        finally:
            self.finish()
        logger.info('supervisor stopped pid=%d exit_code=%d', self.pid, self.exit_code)
        return int(self.exit_code)

    def loop(self) -> None:
        received: list[int] = []
        readable: set[int] = set()
        while True:
            now = monotonic()
            for signum in received:
                self.handle(signum, now)
            self.read_messages(readable, now)
            self.reap(now)
            self.enforce_deadlines(now)
            self.manage(now)
            if self.state is State.STOPPED:
                return
            self.publish(now)
            fds = [c.fileno() for c in self.children.values() if not c.eof]
            if self.metrics is not None:
                fds += self.metrics.filenos()
            received, readable = self.signals.wait(fds, self.next_wakeup_s(monotonic()))
            if self.metrics is not None:
                self.metrics.handle(readable)

    def next_wakeup_s(self, now: float) -> float:
        deadlines = [c.kill_deadline for c in self.children.values() if c.kill_deadline is not None]
        if self.state is State.RUNNING:
            deadlines += [h.not_before for h in self.history.values() if h.not_before > now]
        return max(0.0, min([self.config.tick_s, *(d - now for d in deadlines)]))

    # --- signals ---

    def handle(self, signum: int, now: float) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.handle_term(signal.Signals(signum), now)
        elif signum == signal.SIGQUIT:
            self.handle_quit(now)
        elif signum == signal.SIGHUP:
            self.handle_hup()
        elif signum == signal.SIGTTIN:
            self.handle_ttin()
        elif signum == signal.SIGTTOU:
            self.handle_ttou()
        # SIGCHLD only wakes the loop: reap() runs on every turn

    def handle_term(self, sig: signal.Signals, now: float) -> None:
        if self.state is State.RUNNING:
            logger.info('%s received: draining children=%d job_completion_wait=%.1fs',
                        sig.name, len(self.children), self.job_completion_wait_s)  # fmt: skip
            self.shutdown(now)
        else:
            logger.info('second %s received: cancelling running jobs now', sig.name)
            self.stop_quickly(now)

    def handle_quit(self, now: float) -> None:
        logger.info('SIGQUIT received: cancelling running jobs now')
        self.shutdown(now)
        self.stop_quickly(now)

    def handle_hup(self) -> None:
        if self.state is not State.RUNNING:
            return
        slots = sorted({c.slot for c in self.children.values() if not c.is_stopping and not c.retiring})
        logger.info('SIGHUP received: replacing children one by one slots=%s', slots)
        self.replacements.extend((slot, StopReason.RELOAD) for slot in slots)
        self.reloading = True
        sd_notify('RELOADING=1', f'MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}')

    def handle_ttin(self) -> None:
        self.target_procs += 1
        logger.info('SIGTTIN received: procs=%d', self.target_procs)

    def handle_ttou(self) -> None:
        self.target_procs = max(1, self.target_procs - 1)
        logger.info('SIGTTOU received: procs=%d', self.target_procs)

    def shutdown(self, now: float) -> None:
        if self.state is not State.RUNNING:
            return
        self.state = State.DRAINING
        # systemd's TimeoutStopSec may be shorter than our drain: ask for the time the drain can take
        extend_us = int((self.job_completion_wait_s + self.config.stop_margin_s + 1) * 1_000_000)
        sd_notify('STOPPING=1', f'STATUS=draining {len(self.children)} children', f'EXTEND_TIMEOUT_USEC={extend_us}')
        for child in list(self.children.values()):
            self.drain_child(child, StopReason.SHUTDOWN, now)

    def stop_quickly(self, now: float) -> None:
        for child in self.children.values():
            child.send(health.CMD_STOP)
            quick = now + self.config.quick_stop_s
            child.kill_deadline = quick if child.kill_deadline is None else min(child.kill_deadline, quick)

    # --- children's messages and exits ---

    def read_messages(self, readable: set[int], now: float) -> None:
        for child in list(self.children.values()):
            if child.fileno() in readable:
                for message in child.receive():
                    self.on_message(child, message, now)

    def on_message(self, child: Child, message: dict[str, object], now: float) -> None:
        kind = message.get('type')
        if kind == 'heartbeat':
            self.on_heartbeat(child, message, now)
        elif kind == 'claimed':
            child.held.update(_ids(message))
        elif kind == 'settled':
            child.held.difference_update(_ids(message))
            self.on_counters(child, message)
        elif kind == 'ready':
            self.on_ready(child, now)
        elif kind == 'boot_error':
            child.boot_error = str(message.get('error'))
        else:
            logger.warning('unexpected message slot=%d pid=%d message=%r', child.slot, child.pid, message)

    def on_heartbeat(self, child: Child, message: dict[str, object], now: float) -> None:
        child.last_heartbeat_at = now
        if message.get('stats') is not None:
            child.stats = JobStats.from_wire(message['stats'])
        child.held = set(_ids(message, 'held'))
        self.on_counters(child, message)
        redis_error = message.get('redis_error')
        if redis_error != child.redis_error:
            log = logger.warning if redis_error else logger.info
            log('child redis status slot=%d pid=%d error=%s', child.slot, child.pid, redis_error or 'none')
            child.redis_error = str(redis_error) if redis_error else None

    def on_counters(self, child: Child, message: dict[str, object]) -> None:
        child.counters = Counters.from_message(message)
        limit = child.recycle_after_jobs
        if limit is not None and child.counters.jobs_done >= limit:
            self.request_replacement(child, StopReason.RECYCLE, f'jobs={child.counters.jobs_done} limit={limit}')

    def on_ready(self, child: Child, now: float) -> None:
        if child.state is ChildState.BOOTING:
            child.state = ChildState.READY
        child.ready_at = now
        self.boot_failures = 0
        logger.info('child ready slot=%d pid=%d boot_s=%.2f', child.slot, child.pid, now - child.started_at)
        for old in self.children.values():
            if old.slot == child.slot and old.retiring and not old.is_stopping and old is not child:
                self.drain_child(old, old.retiring, now)

    def reap(self, now: float) -> None:
        """Collect every exited child, ours or (as PID 1) anyone's."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                logger.debug('reaped a process we did not start pid=%d status=%d', pid, status)
                continue
            self.on_exit(child, status, now)

    def on_exit(self, child: Child, status: int, now: float) -> None:
        for message in child.receive():  # the last claims, settles and counters
            self.on_message(child, message, now)
        child.close()
        child.state = ChildState.EXITED
        oom = oom_kill_count() > child.oom_kills_at_start
        info = describe_exit(status, requested=child.stop_reason, oom_killed=oom)
        crashed = (child.stop_reason is None and not info.is_clean) or child.stop_reason in KILLED_FOR_CAUSE
        self.retired = health.retire(self.retired, child.counters)
        self.retired_stats.add(child.stats)
        self.restarts_by_cause[_exit_cause(child.stop_reason, crashed)] += 1
        log = logger.warning if crashed else logger.info
        log('child exited slot=%d pid=%d status="%s" jobs_held=%d ran_s=%.1f', child.slot, child.pid, info,
            len(child.held), now - child.started_at)  # fmt: skip
        if not info.is_clean:  # even holding nothing we knew of: it may have died between a claim and its report
            self.release_held(child, info, crashed, now)
        if child.blame_region is not None:
            child.blame_region.close()
        self.history[child.slot] = after_exit(
            self.backoff, self.history.get(child.slot, SlotHistory()),
            now=now, ready_at=child.ready_at, crashed=crashed, description=str(info),
            productive=child.ready_at is not None and child.counters.jobs_done > 0,
        )  # fmt: skip
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
        held = sorted(child.held)
        culprit = self.culprit(child, info) if crashed else None
        if culprit is None:
            if crashed:
                logger.info('no job to blame for the exit of its worker, releasing all slot=%d pid=%d jobs=%d',
                            child.slot, child.pid, len(held))  # fmt: skip
            worker_id = child_worker_id(child.pid)
            self.releases.release(held, death=info.text, count_death=False, now=now, worker_id=worker_id)
            return
        logger.warning('job to blame for the exit of its worker job_id=%s slot=%d pid=%d others_released=%d',
                       culprit, child.slot, child.pid, len(held) - 1)  # fmt: skip
        worker_id = child_worker_id(child.pid)
        self.releases.release([culprit], death=info.text, count_death=True, now=now, worker_id=worker_id)
        # the other jobs of the dead child (also those it never told us of) are released uncounted
        others = [j for j in held if j != culprit]
        self.releases.release(others, death=info.text, count_death=False, now=now, worker_id=worker_id)

    def culprit(self, child: Child, info: ExitInfo) -> str | None:
        """The held job whose code was running when the child hung or died; for a kill over the memory limit (or
        a SIGKILL nobody here sent, like the kernel's OOM killer) the job that grew its memory the most."""
        if child.blame_region is None or child.blame_region.closed:
            return None
        blame = Blame.read(child.blame_region, child.held)
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
                if not old.is_stopping:
                    old.retiring = None
            return
        self.boot_failures += 1
        if self.state is State.RUNNING and should_halt(self.boot_failures, self.config.max_boot_failures):
            logger.error('children failed to boot %d times in a row, stopping; last error: %s',
                         self.boot_failures, reason)  # fmt: skip
            self.exit_code = ExitCode.BOOT_ERROR
            self.shutdown(now)

    # --- deadlines ---

    def enforce_deadlines(self, now: float) -> None:
        for child in list(self.children.values()):
            if child.kill_deadline is not None and now >= child.kill_deadline:
                if not child.sigkill_sent:
                    self.kill(child)
            elif child.stop_reason not in KILLED_FOR_CAUSE:
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
        logger.error('child unresponsive, dumping its stack then killing it slot=%d pid=%d reason=%s silent_s=%.1f '
                     'jobs_held=%s', child.slot, child.pid, reason.value, silent_s, sorted(child.held))  # fmt: skip
        child.stop_reason = reason
        child.signal(DUMP_SIGNAL)
        child.kill_deadline = now + self.config.dump_wait_s

    def kill(self, child: Child) -> None:
        if child.stop_reason not in KILLED_FOR_CAUSE:
            logger.warning('drain deadline passed, killing slot=%d pid=%d jobs_held=%d',
                           child.slot, child.pid, len(child.held))  # fmt: skip
            child.stop_reason = StopReason.DRAIN_DEADLINE
        child.signal(signal.SIGKILL)
        child.sigkill_sent = True

    def terminate_all(self) -> None:
        """Last resort when the loop itself failed: children drain on SIGTERM (and on losing us) by themselves."""
        for child in self.children.values():
            child.signal(signal.SIGTERM)

    # --- keeping the right children ---

    def manage(self, now: float) -> None:
        if self.state is State.RUNNING and self.watcher is not None and (changed := self.watcher.changes(now)):
            logger.info('code changed, restarting files=%s', changed[:5])
            self.reexec_requested = True
            self.shutdown(now)
            self.stop_quickly(now)
        if self.state is State.RUNNING:
            self.scale_down(now)
            self.start_next_replacement()
            self.spawn_missing(now)
            if self.config.burst and not self.children and len(self.burst_done) >= self.target_procs:
                self.finish_burst()
        elif self.state is State.DRAINING and not self.children:
            self.state = State.STOPPED

    def spawn_missing(self, now: float) -> None:
        for slot in range(1, self.target_procs + 1):
            if slot in self.burst_done or any(c.slot == slot and not c.retiring for c in self.children.values()):
                continue
            if now >= self.history.get(slot, SlotHistory()).not_before:
                self.spawn(slot, now)

    def spawn(self, slot: int, now: float) -> None:
        self.redis.drop()  # never fork while holding a Redis connection
        logs.flush()
        region = new_region()
        spec = ChildSpec(
            slot=slot,
            parent_pid=self.pid,
            settings=self.settings,
            heartbeat_interval_s=self.config.heartbeat_interval_s,
            lease_s=self.config.effective_lease_s,
            worker_overrides=self.worker_overrides(),
            blame_region=region,
        )
        child = fork_child(slot, now, functools.partial(run_child, spec), self.close_in_child, region)
        if self.config.max_jobs_per_child:
            child.recycle_after_jobs = recycle_limit(self.config.max_jobs_per_child, self.config.recycle_jitter)
        self.children[child.pid] = child
        logger.info('spawned child slot=%d pid=%d restarts=%d', slot, child.pid,
                    self.history.get(slot, SlotHistory()).restarts)  # fmt: skip

    def worker_overrides(self) -> dict[str, object]:
        overrides: dict[str, object] = {}
        if self.config.job_completion_wait_s is not None:
            overrides['job_completion_wait'] = self.config.job_completion_wait_s
        if self.config.burst:
            overrides['burst'] = True
        return overrides

    def close_in_child(self) -> None:
        """Runs in a new child: close what it inherited from the parent."""
        self.signals.forget_in_child()
        for child in self.children.values():
            child.sock.close()
            if child.blame_region is not None:
                child.blame_region.close()
        if self.metrics is not None:
            self.metrics.close()

    def drain_child(self, child: Child, reason: StopReason, now: float) -> None:
        if child.is_stopping:
            if reason is StopReason.SHUTDOWN and child.kill_deadline is not None:  # a replacement's longer wait
                shutdown_deadline = now + self.job_completion_wait_s + self.config.stop_margin_s
                child.kill_deadline = min(child.kill_deadline, shutdown_deadline)
            return
        # a planned replacement lets running jobs finish even when job_completion_wait is arq's default of 0
        wait_s = self.job_completion_wait_s
        if reason is not StopReason.SHUTDOWN:
            wait_s = max(wait_s, self.config.replace_wait_s)
        child.stop_reason = reason
        child.state = ChildState.DRAINING
        child.send(health.CMD_DRAIN + f' {wait_s:g}'.encode())
        child.kill_deadline = now + wait_s + self.config.stop_margin_s
        logger.info('draining child slot=%d pid=%d reason=%s', child.slot, child.pid, reason.value)

    def request_replacement(self, child: Child, reason: StopReason, why: str) -> None:
        if child.retiring or child.is_stopping or any(slot == child.slot for slot, _ in self.replacements):
            return
        logger.info('child to be replaced slot=%d pid=%d reason=%s %s', child.slot, child.pid, reason.value, why)
        self.replacements.append((child.slot, reason))

    def start_next_replacement(self) -> None:
        """One slot at a time: the old child keeps working until its successor is READY."""
        if any(c.retiring and not c.is_stopping for c in self.children.values()):
            return
        while self.replacements:
            slot, reason = self.replacements.popleft()
            current = [c for c in self.children.values() if c.slot == slot and not c.retiring and not c.is_stopping]
            if current:
                current[0].retiring = reason
                return
        if self.reloading:
            self.reloading = False
            logger.info('reload complete')
            sd_notify('READY=1')

    def scale_down(self, now: float) -> None:
        for child in list(self.children.values()):
            if child.slot > self.target_procs and not child.is_stopping:
                self.drain_child(child, StopReason.SCALE_DOWN, now)
                self.history.pop(child.slot, None)

    def finish_burst(self) -> None:
        totals = self.totals()
        logger.info('burst finished j_complete=%d j_failed=%d j_retried=%d',
                    totals.complete, totals.failed, totals.retried)  # fmt: skip
        if self.config.fail_on_job_failure and totals.failed:
            self.exit_code = ExitCode.UNEXPECTED
        self.state = State.STOPPED

    # --- health ---

    def start_metrics(self) -> None:
        if self.config.metrics_port is None:
            return
        self.metrics = MetricsServer(self.config.metrics_port, self.render_metrics, self.is_live, self.is_ready)
        logger.info('serving metrics port=%d', self.metrics.port)

    def render_metrics(self) -> bytes:
        stats = JobStats()
        stats.add(self.retired_stats)
        for child in self.children.values():
            stats.add(child.stats)
        states = Counter(self.child_status(c, monotonic()).state for c in self.children.values())
        memory = {c.slot: c.memory_mib for c in self.children.values() if c.memory_mib is not None}
        view = FleetView(stats, self.reporter.publisher.last_queued, states, self.restarts_by_cause, memory)
        return render_metrics(lambda: view)

    def is_live(self) -> bool:
        """The parent's loop answers and at least one child is heartbeating."""
        return any(c.state is ChildState.READY for c in self.children.values())

    def is_ready(self) -> bool:
        ready = sum(1 for c in self.children.values() if c.state is ChildState.READY and not c.is_stopping)
        return self.state is State.RUNNING and ready >= self.target_procs

    def totals(self) -> Counters:
        return self.retired + health.total(c.counters for c in self.children.values())

    def publish(self, now: float) -> None:
        if self.reporter.status_due(now):
            self.measure_memory()
            self.reporter.write_status(self.snapshot(now))
        if self.reporter.health_due(now):
            self.releases.retry(now)
            self.reporter.publish_health(now, self.snapshot(now))
        self.reporter.keep_watchdog_fed(now)

    def measure_memory(self) -> None:
        """Unique memory (USS) per child: what recycling it would free, unlike peak RSS."""
        limit = self.config.max_memory_per_child_mib
        for child in self.children.values():
            try:
                child.memory_mib = psutil.Process(child.pid).memory_full_info().uss / 2**20
            except (psutil.Error, OSError):
                continue
            if limit is None:
                continue
            if child.memory_mib > limit * MEMORY_KILL_FACTOR and child.stop_reason not in KILLED_FOR_CAUSE:
                # a replacement drains gracefully, for up to replace_wait_s: a job eating memory fast gets no such wait
                logger.error('child over %g times the memory limit, killing it slot=%d pid=%d uss_mib=%.0f limit=%g '
                             'jobs_held=%d', MEMORY_KILL_FACTOR, child.slot, child.pid, child.memory_mib, limit,
                             len(child.held))  # fmt: skip
                child.stop_reason = StopReason.MEMORY_KILL
                self.kill(child)
            elif child.state is ChildState.READY and child.memory_mib > limit:
                self.request_replacement(child, StopReason.MEMORY, f'uss_mib={child.memory_mib:.0f} limit={limit:g}')

    def snapshot(self, now: float) -> Snapshot:
        return Snapshot(
            pid=self.pid,
            host=self.host,
            queue_name=self.settings.queue_name,
            state=self.state.value,
            procs=self.target_procs,
            totals=self.totals(),
            children=[self.child_status(c, now) for c in sorted(self.children.values(), key=lambda c: c.started_at)],
        )

    def child_status(self, c: Child, now: float) -> ChildStatus:
        history = self.history.get(c.slot, SlotHistory())
        state = 'unresponsive' if c.stop_reason in KILLED_FOR_CAUSE else c.state.value
        return ChildStatus(
            slot=c.slot, pid=c.pid, state=state, complete=c.counters.complete,
            failed=c.counters.failed, retried=c.counters.retried, ongoing=c.counters.ongoing, held=len(c.held),
            memory_mib=None if c.memory_mib is None else round(c.memory_mib, 1),
            heartbeat_age_s=None if c.last_heartbeat_at is None else round(now - c.last_heartbeat_at, 2),
            redis_error=c.redis_error, restarts=history.restarts, last_exit=history.last_exit,
        )  # fmt: skip

    def finish(self) -> None:
        """Leave no trace that says we are alive: final status, our Redis key gone, pending releases tried."""
        self.state = State.STOPPED
        now = monotonic()
        self.releases.retry(now)
        self.reporter.finish(self.snapshot(now))
        self.redis.drop()
        if self.metrics is not None:
            self.metrics.close()


def _exit_cause(reason: StopReason | None, crashed: bool) -> str:
    if reason is not None:
        return reason.value
    return 'crash' if crashed else 'exit'


def _ids(message: dict[str, object], name: str = 'ids') -> list[str]:
    value = message.get(name)
    return [str(v) for v in value] if isinstance(value, list) else []
