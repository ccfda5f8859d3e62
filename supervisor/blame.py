"""Which job a dead or hung child was running: written by the child into memory it shares with the parent.

A child that dies or hangs usually holds several jobs, but usually only one of them is to blame. Counting the death
against all of them poisons the innocent ones: they are released together with the culprit, claimed together by the
next worker, and caught in its death too. So each child records, in a small anonymous shared mapping the parent
created before the fork:

* the job whose code is executing right now (set before each step of a job's coroutine, cleared after it). A loop
  blocked by a job, or a job that calls `os._exit`, leaves its own id there;
* the job whose steps grew the process's peak memory the most, and by how much (for a kill over the memory limit,
  which rarely lands inside the guilty step).

Ids are stored as 16-byte digests, so a 10 KB job id costs the same as a short one. Writes are plain stores into
the mapping: a handful of nanoseconds per step, and a `getrusage` after a long step or every 32nd short one.
"""

from __future__ import annotations

import functools
import hashlib
import mmap
import resource
import struct
from collections.abc import Callable, Coroutine, Generator, Iterable
from dataclasses import dataclass
from time import perf_counter
from typing import Any

DIGEST_SIZE = 16
#: the peak memory is read after every step this long (touching 32 MiB of new pages takes longer)...
LONG_STEP_S = 0.0005
#: ...and after every this many shorter ones
SAMPLE_EVERY = 32
#: the region: digest of the running job, then digest of the top memory grower and its growth in KiB
_GROWER = struct.Struct(f'<{DIGEST_SIZE}sQ')
REGION_SIZE = DIGEST_SIZE + _GROWER.size
_RUNNING = slice(0, DIGEST_SIZE)
_TOP = slice(DIGEST_SIZE, REGION_SIZE)
_IDLE = bytes(DIGEST_SIZE)


def digest(job_id: str) -> bytes:
    return hashlib.blake2b(job_id.encode(errors='surrogatepass'), digest_size=DIGEST_SIZE).digest()


def new_region() -> mmap.mmap:
    """Anonymous and shared: created in the parent before the fork, the same pages in both processes."""
    return mmap.mmap(-1, REGION_SIZE)


@dataclass(frozen=True)
class Blame:
    """What a child's region says (read by the parent): ids among `held`, or None when the region names none."""

    running: str | None
    top_grower: str | None
    top_growth_mib: float

    @classmethod
    def read(cls, region: mmap.mmap, held: Iterable[str]) -> Blame:
        running = bytes(region[_RUNNING])
        grower, growth_kib = _GROWER.unpack(region[_TOP])
        by_digest = {digest(job_id): job_id for job_id in held}
        return cls(by_digest.get(running), by_digest.get(grower), growth_kib / 1024)


class BlameRecorder:
    """The child's side: wraps job coroutines so their steps are recorded in the region."""

    def __init__(self, region: mmap.mmap) -> None:
        self.region = region
        self.peak_kib = _peak_rss_kib()
        self.growth_kib: dict[bytes, int] = {}
        self.top: bytes = _IDLE
        self.steps = 0

    def wrap(self, function: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
        """A job function whose coroutine records its steps; `ctx['job_id']` names the job."""

        def call(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            coroutine = function(ctx, *args, **kwargs)
            if not hasattr(coroutine, 'send'):
                return coroutine
            return _Recorded(coroutine, digest(str(ctx.get('job_id', ''))), self)

        return functools.update_wrapper(call, function)

    def step_done(self, job: bytes, step_s: float) -> None:
        # reading the peak (a getrusage system call) after every step cost more than the step of a short job; a step
        # that grows memory enough to matter takes time to touch its pages, so short steps are sampled
        self.steps += 1
        if step_s < LONG_STEP_S and self.steps % SAMPLE_EVERY:
            return
        peak = _peak_rss_kib()
        if peak <= self.peak_kib:
            return
        grown = self.growth_kib.get(job, 0) + peak - self.peak_kib
        self.peak_kib = peak
        self.growth_kib[job] = grown
        if job == self.top or grown > self.growth_kib.get(self.top, 0):
            self.top = job
            self.region[_TOP] = _GROWER.pack(job, grown)

    def job_done(self, job: bytes) -> None:
        if self.growth_kib.pop(job, None) is None or job != self.top:
            return
        self.top = max(self.growth_kib, key=self.growth_kib.__getitem__, default=_IDLE)
        self.region[_TOP] = _GROWER.pack(self.top, self.growth_kib.get(self.top, 0))


class _Recorded:
    """Awaitable proxy of a job's coroutine: marks the region around each step it runs."""

    __slots__ = ('_coroutine', '_job', '_recorder')

    def __init__(self, coroutine: Coroutine[Any, Any, Any], job: bytes, recorder: BlameRecorder) -> None:
        self._coroutine = coroutine
        self._job = job
        self._recorder = recorder

    def __await__(self) -> Generator[Any, None, Any]:
        return self

    def __iter__(self) -> _Recorded:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def send(self, value: Any) -> Any:
        return self._step(self._coroutine.send, value)

    def throw(self, *exc: Any) -> Any:
        return self._step(self._coroutine.throw, *exc)

    def close(self) -> None:
        self._coroutine.close()
        self._recorder.job_done(self._job)

    def _step(self, advance: Callable[..., Any], *args: Any) -> Any:
        recorder = self._recorder
        recorder.region[_RUNNING] = self._job
        finished = True  # unless the step yields: StopIteration (it returned) or an exception ends the job
        started = perf_counter()
        try:
            result = advance(*args)
            finished = False
            return result
        finally:
            recorder.region[_RUNNING] = _IDLE
            recorder.step_done(self._job, perf_counter() - started)
            if finished:
                recorder.job_done(self._job)


def _peak_rss_kib() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
