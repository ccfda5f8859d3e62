"""What runs after fork: a clean process, a uvloop loop, one arq Worker, heartbeats to the parent, os._exit.

The child owns nothing of the parent's: signal handlers go back to their defaults, the parent's descriptors are
closed, Redis is connected afresh. SIGINT is ignored (a terminal's Ctrl+C reaches the whole group, and the parent
decides); a direct SIGTERM, a `drain` command, or EOF on the parent's socket (the parent died) start a drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import faulthandler
import logging
import mmap
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

import setproctitle
import uvloop

from arq.observer import WorkerObserver
from arq.worker import Worker, func
from arq_supervise import logs, protocol
from arq_supervise.blame import BlameRecorder
from arq_supervise.exits import ExitCode
from arq_supervise.health import Counters
from arq_supervise.holdings import HeldChanges
from arq_supervise.metrics import JobStats
from arq_supervise.release import RECENT_OUTCOMES, child_worker_id
from arq_supervise.settings import WorkerSettings
from arq_supervise.signals import reset_all_handlers

logger = logging.getLogger('arq_supervise.child')

#: the parent sends this to a child whose heartbeats stopped, to get its stack in the log before SIGKILL
DUMP_SIGNAL = signal.SIGUSR2
PR_SET_PDEATHSIG = 1
#: messages to the parent are written together this often (ParentLink; unreported claims wait in the blame region)
FLUSH_AFTER_S = 0.05
#: after a job settles, its counters reach the parent (and /metrics) this soon, not at the next heartbeat
STATS_FLUSH_S = 0.25
#: the function label of a job whose function this worker does not have: payloads must not mint new series
UNKNOWN_FUNCTION = '<unknown>'


@dataclass(frozen=True)
class ChildSpec:
    """Everything a child needs, decided by the parent before the fork."""

    slot: int
    parent_pid: int
    settings: WorkerSettings
    heartbeat_interval_s: float
    lease_s: float
    worker_overrides: dict[str, Any] = field(default_factory=dict)
    #: memory shared with the parent where the child records which job it is running (arq_supervise.blame)
    blame_region: mmap.mmap | None = None
    #: --max-jobs-per-child: claim no more jobs than this, then wait to be drained
    job_limit: int | None = None
    #: log the traceback of a boot failure (the parent asks for it once per run of failures, so one is logged)
    log_boot_traceback: bool = True


def run_child(spec: ChildSpec, sock: socket.socket) -> NoReturn:
    """The child's whole life; never returns and never unwinds into the parent's stack."""
    code: int = ExitCode.BOOT_ERROR
    try:
        _prepare_process(spec)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            code = runner.run(ChildRunner(spec, sock).run())
    except BaseException:
        logger.exception('unhandled error in worker process slot=%d pid=%d', spec.slot, os.getpid())
        code = ExitCode.UNEXPECTED if code != ExitCode.BOOT_ERROR else code
    finally:
        logs.flush()
        os._exit(code)


def _prepare_process(spec: ChildSpec) -> None:
    reset_all_handlers()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # until the event loop installs the drain handler, a stray SIGTERM must not kill us; losing the parent
    # in that window is still noticed, through EOF on its socket
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent()
    if os.getppid() != spec.parent_pid:  # the parent died between fork and prctl
        raise SystemExit(ExitCode.UNEXPECTED)
    faulthandler.enable(all_threads=True)
    faulthandler.register(DUMP_SIGNAL, all_threads=True, chain=False)
    logs.set_role(f'worker {spec.slot}')
    setproctitle.setproctitle(f'arq-supervise: worker {spec.slot} [{spec.settings.queue_name}]')


def _die_with_parent() -> None:
    """Ask the kernel for a SIGTERM (a drain) if the parent dies; the socket EOF is the portable backstop."""
    if not sys.platform.startswith('linux'):  # pragma: no cover
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class ParentLink:
    """The child's end of its socket: JSON lines out, commands in. Writes never block the event loop.

    Messages are written together every FLUSH_AFTER_S: a busy child settles a batch of jobs every loop turn, and a
    write (a system call, and a wake-up of the parent) per batch cost more than the jobs. Claims wait too: the blame
    region names a running job the parent has not heard of yet (see ParentReporter.claimed). `collect` is asked for
    the messages made at write time (the window's netted claims and settles).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.collect: Callable[[], list[protocol.ChildMessage]] = list
        self._pending: list[bytes] = []
        self._flush_at: asyncio.TimerHandle | None = None

    def send(self, message: protocol.ChildMessage | None = None, *, now: bool = False) -> None:
        """Queue `message` (None: only what `collect` will give); `now`: write at once, with what waits."""
        if self.writer.is_closing():
            return
        if message is not None:
            self._pending.append(protocol.encode(message))
        if now:
            if self._flush_at is not None:
                self._flush_at.cancel()
            self._write_pending()
        elif self._flush_at is None:
            self._flush_at = asyncio.get_running_loop().call_later(FLUSH_AFTER_S, self._write_pending)

    def _write_pending(self) -> None:
        self._flush_at = None
        self._pending.extend(map(protocol.encode, self.collect()))
        if self._pending and not self.writer.is_closing():
            self.writer.write(b''.join(self._pending))
        self._pending.clear()

    async def flush(self, timeout_s: float = 1.0) -> None:
        if self._flush_at is not None:
            self._flush_at.cancel()
        self._write_pending()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout_s):
                await self.writer.drain()


class ParentReporter(WorkerObserver):
    """What the worker observes, told to the parent: readiness, the jobs it holds, per-function statistics."""

    def __init__(self, link: ParentLink) -> None:
        self.link = link
        self._stats = JobStats()
        self._finished: list[tuple[str, str, float, int]] = []  # jobs' ends not folded into the statistics yet
        self.is_ready = False
        self.worker: Worker | None = None  # set once the worker exists: its counters ride along
        self._stats_flush: asyncio.TimerHandle | None = None
        self._changes = HeldChanges()
        link.collect = self._held_changes
        #: where claims wait to be reported (the blame region); without it every claim is reported at once
        self.recorder: BlameRecorder | None = None

    def ready(self) -> None:
        self.is_ready = True
        # at once: the first job may block the loop before a batch would go (and the parent waits for READY)
        self.link.send(protocol.Ready(), now=True)

    def claimed(self, job_ids: Sequence[str]) -> None:
        # reported with the next batch of messages; meanwhile the blame region lists them, so the parent renews and
        # releases them even if a job blocks the loop first, and names the one running if it kills us
        self._changes.claimed(job_ids)
        noted = self.recorder is not None and self.recorder.note_claims(job_ids)
        self.link.send(now=not noted)

    def settled(self, job_ids: Sequence[str]) -> None:
        # the counters ride along so the parent can recycle after exactly max-jobs-per-child jobs; the rest of a
        # heartbeat (held ids, statistics) waits for the next one
        self._changes.settled(job_ids)
        self.link.send()
        if self._stats_flush is None:  # the statistics follow shortly, once for all the batches settled meanwhile
            self._stats_flush = asyncio.get_running_loop().call_later(STATS_FLUSH_S, self._flush_stats)

    @property
    def stats(self) -> JobStats:
        if self._finished:
            self._stats.record_many(self._finished)
            self._finished = []
        return self._stats

    def job_finished(self, function: str, outcome: str, duration_s: float, lag_ms: int) -> None:
        self._finished.append((function, outcome, duration_s, lag_ms))

    def job_failed_early(self, function: str | None, outcome: str) -> None:
        """arq counts such a job in jobs_failed but never reports it as finished; it has no duration."""
        self._stats.count(function or UNKNOWN_FUNCTION, outcome)

    def heartbeat(self) -> protocol.Heartbeat:
        assert self.worker is not None
        worker = self.worker
        return protocol.Heartbeat(counters(worker), tuple(sorted(worker.held_job_ids)), worker.redis_error, self.stats)

    def _held_changes(self) -> list[protocol.ChildMessage]:
        """The window's claims and settles, netted per job (arq_supervise.holdings)."""
        settled_any = self._changes.settled_any
        claimed, settled = self._changes.take()
        if self.recorder is not None:
            self.recorder.claims_reported()
        messages: list[protocol.ChildMessage] = []
        if settled_any and self.worker is not None:
            messages.append(protocol.Settled(settled, counters(self.worker)))
        if claimed:
            messages.append(protocol.Claimed(claimed))
        return messages

    def _flush_stats(self) -> None:
        self._stats_flush = None
        self.link.send(self.heartbeat())


def blamed_jobs(kwargs: dict[str, Any], recorder: BlameRecorder) -> dict[str, Any]:
    """The worker's functions and cron jobs run through `recorder`, so the parent can tell which job hung or killed
    us."""
    functions = [replace(f, coroutine=recorder.wrap(f.coroutine)) for f in map(func, kwargs.get('functions') or ())]
    cron_jobs = [replace(c, coroutine=recorder.wrap(c.coroutine)) for c in kwargs.get('cron_jobs') or ()]
    return {**kwargs, 'functions': functions, 'cron_jobs': cron_jobs}


class ChildRunner:
    def __init__(self, spec: ChildSpec, sock: socket.socket) -> None:
        self.spec = spec
        self.sock = sock
        self.worker: Worker | None = None
        self.reporter: ParentReporter | None = None
        self.main_task: asyncio.Task[None] | None = None

    async def run(self) -> int:
        reader, writer = await asyncio.open_unix_connection(sock=self.sock)
        link = ParentLink(reader, writer)
        try:
            return await self._run_worker(link)
        finally:
            await link.flush()
            writer.close()

    async def _run_worker(self, link: ParentLink) -> int:
        spec = self.spec
        kwargs = {
            'recent_outcomes': RECENT_OUTCOMES,  # for the dashboard, unless the settings say otherwise
            **spec.settings.worker_kwargs,
            **spec.worker_overrides,
            'handle_signals': False,
            'write_health_key': False,
            'lease_s': spec.lease_s,
            'worker_id': child_worker_id(os.getpid()),  # the parent releases our leases by it if we die
        }
        reporter = ParentReporter(link)
        try:
            if spec.blame_region is not None:
                reporter.recorder = BlameRecorder(spec.blame_region)
                kwargs = blamed_jobs(kwargs, reporter.recorder)
            worker = Worker(**{**kwargs, 'observer': reporter})
        except Exception as e:
            return self._boot_failed(link, e)
        reporter.worker = worker
        worker.job_limit = spec.job_limit  # claim no job beyond it: the parent replaces us when our successor is ready
        self.worker, self.reporter = worker, reporter
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.drain)
        background = [asyncio.create_task(self._commands(link)), asyncio.create_task(self._heartbeats(link))]
        self.main_task = asyncio.create_task(worker.main())
        try:
            await self.main_task
        except asyncio.CancelledError:
            logger.info('stopped while booting slot=%d pid=%d', spec.slot, os.getpid())
        except Exception as e:
            if not reporter.is_ready:
                return self._boot_failed(link, e)
            logger.exception('worker failed slot=%d pid=%d', spec.slot, os.getpid())
            return ExitCode.UNEXPECTED
        finally:
            await self._close(worker)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            link.send(reporter.heartbeat())
        return ExitCode.OK

    def _boot_failed(self, link: ParentLink, error: BaseException) -> int:
        line = f'{type(error).__name__}: {error}'.splitlines()[0][:300] if str(error) else type(error).__name__
        logger.error('worker failed to boot slot=%d pid=%d error="%s"', self.spec.slot, os.getpid(), line,
                     exc_info=error if self.spec.log_boot_traceback else None)  # fmt: skip
        link.send(protocol.BootError(line))
        return ExitCode.BOOT_ERROR

    async def _close(self, worker: Worker) -> None:
        try:
            await worker.close()
        except Exception:
            logger.exception('error while closing the worker slot=%d pid=%d', self.spec.slot, os.getpid())

    def drain(self, wait_s: float | None = None) -> None:
        """Finish running jobs (within `wait_s`, else job_completion_wait) and exit; before READY, stop booting."""
        worker, main = self.worker, self.main_task
        if worker is None or main is None or main.done():
            return
        if self.reporter is not None and self.reporter.is_ready:
            worker.start_drain(wait_s)
        else:
            main.cancel()

    def stop(self) -> None:
        worker, main = self.worker, self.main_task
        if worker is None or main is None or main.done():
            return
        if self.reporter is not None and self.reporter.is_ready:
            worker.stop_now()
        else:
            main.cancel()

    async def _commands(self, link: ParentLink) -> None:
        while True:
            try:
                line = await link.reader.readline()
            except (OSError, ValueError):  # reset, or a line longer than the stream limit: treat as a lost parent
                line = b''
            if not line:
                logger.warning('parent went away, draining slot=%d pid=%d', self.spec.slot, os.getpid())
                self.drain()
                return
            try:
                command = protocol.decode(line)
            except protocol.ProtocolError as e:
                logger.warning('ignored a command from the parent slot=%d error=%s', self.spec.slot, e)
                continue
            if isinstance(command, protocol.Drain):
                self.drain(command.wait_s)
            elif isinstance(command, protocol.Stop):
                self.stop()

    async def _heartbeats(self, link: ParentLink) -> None:
        assert self.worker is not None and self.reporter is not None
        title = f'arq-supervise: worker {self.spec.slot} [{self.spec.settings.queue_name}]'
        while True:
            link.send(self.reporter.heartbeat())
            setproctitle.setproctitle(f'{title} j_ongoing={self.worker.jobs_ongoing}')
            await asyncio.sleep(self.spec.heartbeat_interval_s)


def counters(worker: Worker) -> Counters:
    return Counters(worker.jobs_complete, worker.jobs_failed, worker.jobs_retried, worker.jobs_ongoing)
