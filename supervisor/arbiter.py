"""The parent: a synchronous, single-threaded loop that forks, watches, drains, replaces and reports its children."""

from __future__ import annotations

import enum
import functools
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from time import monotonic

import setproctitle

from arq_supervise import health
from arq_supervise.config import SupervisorConfig
from arq_supervise.exits import ExitCode
from arq_supervise.health import Counters, HealthPublisher
from arq_supervise.latency import LoopLatency
from arq_supervise.leases import LeaseKeeper
from arq_supervise.metrics import MetricsServer
from arq_supervise.metrics import render as render_metrics
from arq_supervise.notify import sd_notify
from arq_supervise.parent_redis import CONNECT_TIMEOUT_S, BoundedRedisLink
from arq_supervise.process import ForkedProcesses, Processes, StopReason
from arq_supervise.release import JobReleaser, ReleaseQueue
from arq_supervise.reload import SettingsCheck, forget_application_modules
from arq_supervise.reporting import Reporter, Snapshot
from arq_supervise.roster import Roster
from arq_supervise.settings import SettingsError, WorkerSettings, load_settings
from arq_supervise.signals import SignalQueue

logger = logging.getLogger('arq_supervise.arbiter')

HANDLED_SIGNALS = (
    signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD,
)  # fmt: skip


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
    RUNNING       SIGHUP                          try the settings in a short-lived process       RUNNING
    RUNNING       that check passes               import afresh; roll every slot onto it          RUNNING
    RUNNING       that check fails                log why; the children keep running             RUNNING
    RUNNING       SIGTTIN / SIGTTOU               one slot more / drain the highest slot          RUNNING
    RUNNING       SIGTERM / SIGINT                `drain` every child, deadline wait + margin     DRAINING
    RUNNING       SIGQUIT                         `stop` every child, short deadline              DRAINING
    RUNNING       --burst: every slot exited 0    nothing left to do                              STOPPED
    DRAINING      SIGTERM / SIGINT / SIGQUIT      `stop` every child, short deadline              DRAINING
    DRAINING      a child's deadline passes       SIGKILL, release what it held                   DRAINING
    DRAINING      no child left                   exit with the exit code                         STOPPED
    ============  ==============================  ==============================================  =========
    """

    def __init__(
        self,
        config: SupervisorConfig,
        settings: WorkerSettings,
        *,
        clock: Callable[[], float] = monotonic,
        processes: Processes | None = None,
        redis: BoundedRedisLink | None = None,
        load: Callable[[], WorkerSettings] | None = None,
        check_settings: Callable[[str, float, float], SettingsCheck] = SettingsCheck,
        forget_modules: Callable[[], object] = forget_application_modules,
    ) -> None:
        """
        :param clock: monotonic seconds; every deadline is on this clock
        :param processes: how children are forked, reaped and measured (a fake one in unit tests)
        :param redis: the parent's Redis connection, for releases and the health keys
        :param load: imports the settings afresh on HUP (with the command line's overrides)
        :param check_settings: starts the short-lived process that tries the new settings first
        :param forget_modules: drops the application's modules before a reload imports them afresh (a unit test
          keeps its own)
        """
        self.config = config
        self.settings = settings
        self.clock = clock
        self.state = State.RUNNING
        self.exit_code = ExitCode.OK
        self.target_procs = config.procs
        self.metrics: MetricsServer | None = None
        self.latency = LoopLatency()
        self.signals = SignalQueue()
        self.redis = redis or BoundedRedisLink(
            settings.redis_settings,
            command_timeout_s=config.parent_redis_timeout_s,
            connect_timeout_s=max(CONNECT_TIMEOUT_S, 4 * config.parent_redis_timeout_s),
        )
        self.releases = ReleaseQueue(JobReleaser(self.redis, settings), retry_for_s=config.effective_lease_s / 2)
        self.leases = LeaseKeeper(self.redis, config.effective_lease_s)
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.job_completion_wait_s = (
            config.job_completion_wait_s if config.job_completion_wait_s is not None else settings.job_completion_wait_s
        )
        self.roster = Roster(config, settings, processes=processes or ForkedProcesses(), redis=self.redis,
                             releases=self.releases, close_in_child=self.close_in_child,
                             job_completion_wait_s=self.job_completion_wait_s)  # fmt: skip
        self.fleet = self.roster.fleet
        self.children = self.fleet.children
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
        self.load_settings = load or functools.partial(load_settings, settings.path)
        self.check_settings = check_settings
        self.forget_modules = forget_modules
        self.settings_check: SettingsCheck | None = None

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
            self.roster.terminate_all()
            self.exit_code = ExitCode.UNEXPECTED
        finally:
            self.finish()
        if self.exit_code is ExitCode.BOOT_ERROR:  # the reason goes on the last line, where people look
            logger.error('supervisor stopped pid=%d exit_code=%d: children failed to boot %d times in a row, '
                         'last error: %s', self.pid, self.exit_code, self.roster.boot_failures,
                         self.roster.halt_reason)  # fmt: skip
        else:
            logger.info('supervisor stopped pid=%d exit_code=%d', self.pid, self.exit_code)
        return int(self.exit_code)

    def loop(self) -> None:
        received: list[int] = []
        readable: set[int] = set()
        while True:
            self.turn(received, readable)
            if self.state is State.STOPPED:
                return
            fds = [c.fileno() for c in self.children.values() if not c.channel.eof]
            if self.metrics is not None:
                fds += self.metrics.filenos()
            self.latency.waiting(self.clock())
            received, readable = self.signals.wait(fds, self.next_wakeup_s(self.clock()))
            self.latency.woke(self.clock())
            if self.metrics is not None:
                self.metrics.handle(readable)

    def turn(self, received: list[int], readable: set[int]) -> None:
        """One pass: act on signals and messages, reap, enforce deadlines, keep the right children, report."""
        now = self.clock()
        for signum in received:
            self.handle(signum, now)
        self.roster.read_messages(readable, now)
        for pid, status in self.roster.reap(now):
            self.on_other_exit(pid, status, now)
        self.roster.enforce_deadlines(now)
        self.manage(now)
        if self.state is not State.STOPPED:
            self.publish(now)

    def next_wakeup_s(self, now: float) -> float:
        deadlines = [c.kill_deadline for c in self.children.values() if c.kill_deadline is not None]
        if self.state is State.RUNNING:
            deadlines += [h.not_before for h in self.fleet.history.values() if h.not_before > now]
        return max(0.0, min([self.config.tick_s, *(d - now for d in deadlines)]))

    # --- signals ---

    def handle(self, signum: int, now: float) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.handle_term(signal.Signals(signum), now)
        elif signum == signal.SIGQUIT:
            self.handle_quit(now)
        elif signum == signal.SIGHUP:
            self.handle_hup(now)
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

    def handle_hup(self, now: float) -> None:
        if self.state is not State.RUNNING or self.settings_check is not None:
            return
        logger.info('SIGHUP received: checking the new settings before replacing the children settings=%s',
                    self.settings.path)  # fmt: skip
        self.settings_check = self.check_settings(self.settings.path, now, self.config.boot_timeout_s)
        self.reloading = True
        sd_notify('RELOADING=1', f'MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}')

    def on_other_exit(self, pid: int, status: int, now: float) -> None:
        check = self.settings_check
        if check is None or pid != check.pid:
            logger.debug('reaped a process we did not start pid=%d status=%d', pid, status)
            return
        self.settings_check = None
        problem = check.verdict(status)
        settings = self.settings
        if problem is None:
            self.forget_modules()
            try:
                settings = self.load_settings()
            except SettingsError as e:
                problem = str(e)
        if problem is None and settings.queue_name != self.settings.queue_name:
            problem = f'the queue changed ({self.settings.queue_name!r} to {settings.queue_name!r}): restart instead'
        if problem is not None:
            logger.error('reload refused, the current children keep running: %s', problem)
            self.reloading = False
            sd_notify('READY=1')
            return
        self.settings = self.roster.settings = settings
        slots = sorted({c.slot for c in self.children.values() if c.is_replaceable})
        logger.info('new settings loaded, replacing children one by one slots=%s', slots)
        self.roster.replacements.extend((slot, StopReason.RELOAD) for slot in slots)

    def handle_ttin(self) -> None:
        self.target_procs += 1
        logger.info('SIGTTIN received: procs=%d', self.target_procs)

    def handle_ttou(self) -> None:
        if self.target_procs <= 1:
            logger.info('SIGTTOU received: procs stays 1, the minimum')
            return
        self.target_procs -= 1
        logger.info('SIGTTOU received: procs=%d', self.target_procs)

    def shutdown(self, now: float) -> None:
        if self.state is not State.RUNNING:
            return
        self.state = State.DRAINING
        # systemd's TimeoutStopSec may be shorter than our drain: ask for the time the drain can take
        extend_us = int((self.job_completion_wait_s + self.config.stop_margin_s + 1) * 1_000_000)
        sd_notify('STOPPING=1', f'STATUS=draining {len(self.children)} children', f'EXTEND_TIMEOUT_USEC={extend_us}')
        for child in list(self.children.values()):
            self.roster.drain_child(child, StopReason.SHUTDOWN, now)

    def stop_quickly(self, now: float) -> None:
        for child in self.children.values():
            child.hurry(now + self.config.quick_stop_s)

    # --- keeping the right children ---

    def manage(self, now: float) -> None:
        if self.settings_check is not None and now > self.settings_check.deadline:
            self.settings_check.kill()  # reaped like any exit: the reload is refused
        if self.state is State.RUNNING and self.roster.halt_reason is not None:
            logger.error('children failed to boot %d times in a row, stopping; last error: %s',
                         self.roster.boot_failures, self.roster.halt_reason)  # fmt: skip
            self.exit_code = ExitCode.BOOT_ERROR
            self.shutdown(now)
        if self.state is State.RUNNING:
            self.roster.scale_down(now, self.target_procs)
            if self.roster.start_next_replacement() and self.reloading and self.settings_check is None:
                self.reloading = False
                logger.info('reload complete')
                sd_notify('READY=1')
            self.roster.spawn_missing(now, self.target_procs)
            if self.config.burst and not self.children and len(self.roster.burst_done) >= self.target_procs:
                self.finish_burst()
        elif self.state is State.DRAINING and not self.children:
            self.state = State.STOPPED

    def close_in_child(self) -> None:
        """Runs in a new child: close what it inherited from the parent."""
        self.signals.forget_in_child()
        for child in self.children.values():
            child.channel.close()
            if child.blame_region is not None:
                child.blame_region.close()
        if self.metrics is not None:
            self.metrics.close()

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
        self.metrics = MetricsServer(self.config.metrics_port, self.render_metrics, self.fleet.is_live, self.is_ready,
                                     host=self.config.metrics_host)  # fmt: skip
        logger.info('serving metrics host=%s port=%d', self.config.metrics_host, self.metrics.port)

    def render_metrics(self) -> bytes:
        view = self.fleet.metrics_view(self.reporter.publisher.last_queued, self.clock())
        view = replace(view, loop_p99_s=self.latency.percentile_s(0.99), loop_max_s=self.latency.max_s)
        return render_metrics(lambda: view)

    def is_ready(self) -> bool:
        return self.state is State.RUNNING and self.fleet.ready_count() >= self.target_procs

    def totals(self) -> Counters:
        return self.fleet.totals()

    def publish(self, now: float) -> None:
        self.leases.renew(self.children.values(), now)
        if self.reporter.status_due(now):
            self.roster.measure_memory()
            self.reporter.rate.observe(now, self.totals().jobs_done)
            self.reporter.write_status(self.snapshot(now))
        if self.reporter.health_due(now, self.fleet.states(now)):
            self.releases.retry(now)
            self.reporter.publish_health(now, self.snapshot(now))
        self.reporter.keep_watchdog_fed(now)

    def snapshot(self, now: float) -> Snapshot:
        return Snapshot(pid=self.pid, host=self.host, queue_name=self.settings.queue_name, state=self.state.value,
                        procs=self.target_procs, totals=self.totals(), children=self.fleet.statuses(now),
                        loop=self.latency.summary(), restarts_by_cause=self.fleet.restarts_by_cause)  # fmt: skip

    def finish(self) -> None:
        """Leave no trace that says we are alive: final status, our Redis key gone, pending releases tried."""
        self.state = State.STOPPED
        now = self.clock()
        self.redis.wake()
        self.releases.retry(now)
        self.reporter.finish(self.snapshot(now))
        self.redis.close()
        if self.metrics is not None:
            self.metrics.close()
