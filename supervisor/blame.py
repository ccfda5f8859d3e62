"""Which job a dead or hung child was running: written by the child into memory it shares with the parent.

A child that dies or hangs usually holds several jobs, but usually only one of them is to blame. Counting the death
against all of them poisons the innocent ones: they are released together with the culprit, claimed together by the
next worker, and caught in its death too. So each child records, in a small anonymous shared mapping the parent
created before the fork:

* the job whose code is executing right now (set before each step of a job's coroutine, cleared after it). A loop
  blocked by a job, or a job that calls `os._exit`, leaves its own id there. The id itself is stored (up to
  `MAX_ID_BYTES`), so the parent can blame a job it has not been told of yet: claims reach the parent in the 20 ms
  batches of the other messages, not one write (and one wake-up of the parent) per claim. A longer id is stored as
  its digest, and its claim is reported at once (`reported_late_ok`);
* the job whose steps grew the process's peak memory the most, and by how much (for a kill over the memory limit,
  which rarely lands inside the guilty step; growing memory takes long enough that its claim has been reported).
  Stored as a 16-byte digest;
* the jobs claimed since the last batch of messages went (`note_claims`), so the parent renews their leases and
  releases them even when the first of them blocks the loop before its claim could be reported. Ids that do not
  fit are reported at once instead.

Writes are plain stores into the mapping: a handful of nanoseconds per step, and a `getrusage` after a long step or
every 32nd short one.
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
#: a running job's id up to this long (UTF-8) is stored whole; a longer one as its digest
MAX_ID_BYTES = 240
#: the peak memory is read after every step this long (touching 32 MiB of new pages takes longer)...
LONG_STEP_S = 0.0005
#: ...and after every this many shorter ones
SAMPLE_EVERY = 32
#: the region: the running job (its id's length, or _AS_DIGEST, then its id or digest), then the digest of the top
#: memory grower and its growth in KiB
_LENGTH = struct.Struct('<H')
_AS_DIGEST = 0xFFFF
_RUNNING = slice(0, _LENGTH.size + MAX_ID_BYTES)
_RUNNING_LENGTH = slice(0, _LENGTH.size)
_GROWER = struct.Struct(f'<{DIGEST_SIZE}sQ')
_TOP = slice(_RUNNING.stop, _RUNNING.stop + _GROWER.size)
#: then the claims not reported yet: their length, then the ids separated by newlines
PENDING_BYTES = 4094
_PENDING_LENGTH = slice(_TOP.stop, _TOP.stop + _LENGTH.size)
_PENDING_START = _PENDING_LENGTH.stop
REGION_SIZE = _PENDING_START + PENDING_BYTES
_LENGTHS = [_LENGTH.pack(n) for n in range(MAX_ID_BYTES + 1)]
_EMPTY = _LENGTHS[0]  # a field's length when nothing is in it
_IDLE = bytes(DIGEST_SIZE)


def digest(job_id: str) -> bytes:
    return hashlib.blake2b(job_id.encode(errors='surrogatepass'), digest_size=DIGEST_SIZE).digest()


def reported_late_ok(job_id: str) -> bool:
    """Whether the region can name this job while it runs, so its claim may reach the parent with the next batch."""
    # a character is at most 4 bytes in UTF-8: most ids need no encoding to tell
    return len(job_id) * 4 <= MAX_ID_BYTES or len(job_id.encode(errors='surrogatepass')) <= MAX_ID_BYTES


def _running_mark(job_id: str) -> bytes:
    """What the region's running field starts with while `job_id` runs (its length then the id, or the digest)."""
    raw = job_id.encode(errors='surrogatepass')
    if len(raw) > MAX_ID_BYTES:
        return _LENGTH.pack(_AS_DIGEST) + digest(job_id)
    return _LENGTHS[len(raw)] + raw


def new_region() -> mmap.mmap:
    """Anonymous and shared: created in the parent before the fork, the same pages in both processes."""
    return mmap.mmap(-1, REGION_SIZE)


@dataclass(frozen=True)
class Blame:
    """What a child's region says (read by the parent), or None where it names nobody. The running job is named
    whether or not its claim was reported (unless its id was too long to store: then only among `held`); the top
    grower only among `held`."""

    running: str | None
    top_grower: str | None
    top_growth_mib: float

    @classmethod
    def read(cls, region: mmap.mmap, held: Iterable[str]) -> Blame:
        (length,) = _LENGTH.unpack(region[_RUNNING_LENGTH])
        stored = bytes(region[_RUNNING_LENGTH.stop : _RUNNING.stop])
        grower, growth_kib = _GROWER.unpack(region[_TOP])
        by_digest = {digest(job_id): job_id for job_id in held}
        if length == _AS_DIGEST:
            running = by_digest.get(stored[:DIGEST_SIZE])
        else:
            running = stored[:length].decode(errors='surrogatepass') if 0 < length <= MAX_ID_BYTES else None
        return cls(running, by_digest.get(grower), growth_kib / 1024)


class BlameRecorder:
    """The child's side: wraps job coroutines so their steps are recorded in the region."""

    def __init__(self, region: mmap.mmap) -> None:
        self.region = region
        self.peak_kib = _peak_rss_kib()
        self.growth_kib: dict[str, int] = {}  # job id -> KiB its steps grew the peak by
        self.top: str | None = None
        self.steps = 0
        self._pending_bytes = 0

    def note_claims(self, job_ids: Iterable[str]) -> bool:
        """Record claims not reported yet; False when they do not fit, or when the running field could not name one
        of them (`reported_late_ok`): then report them at once."""
        encoded = [job_id.encode(errors='surrogatepass') for job_id in job_ids]
        if max(map(len, encoded), default=0) > MAX_ID_BYTES:
            return False
        data = b''.join(raw + b'\n' for raw in encoded)
        end = self._pending_bytes + len(data)
        if end > PENDING_BYTES:
            return False
        self.region[_PENDING_START + self._pending_bytes : _PENDING_START + end] = data
        self.region[_PENDING_LENGTH] = _LENGTH.pack(end)  # after the ids: a reader never sees a length too long
        self._pending_bytes = end
        return True

    def claims_reported(self) -> None:
        """The claims noted so far are on their way to the parent."""
        if self._pending_bytes:
            self.region[_PENDING_LENGTH] = _EMPTY
            self._pending_bytes = 0

    def wrap(self, function: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
        """A job function whose coroutine records its steps; `ctx['job_id']` names the job."""

        def call(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            coroutine = function(ctx, *args, **kwargs)
            if not hasattr(coroutine, 'send'):
                return coroutine
            return _Recorded(coroutine, str(ctx.get('job_id', '')), self)

        return functools.update_wrapper(call, function)

    def sample_peak(self, job_id: str) -> None:
        """Read the process's peak memory after a step of `job_id`: a growth since the last reading is its doing.
        Called after every long step and every SAMPLE_EVERY-th step (by _Recorded): a getrusage system call after
        every step cost more than the step of a short job, and a step that grows memory enough to matter takes time
        to touch its pages."""
        peak = _peak_rss_kib()
        if peak <= self.peak_kib:
            return
        grown = self.growth_kib.get(job_id, 0) + peak - self.peak_kib
        self.peak_kib = peak
        self.growth_kib[job_id] = grown
        if job_id == self.top or grown > self.growth_kib.get(self.top or '', 0):
            self._set_top(job_id)

    def job_done(self, job_id: str) -> None:
        if self.growth_kib.pop(job_id, None) is None or job_id != self.top:
            return
        self._set_top(max(self.growth_kib, key=self.growth_kib.__getitem__, default=None))

    def _set_top(self, job_id: str | None) -> None:
        """Only here is a digest made: once per growth of the peak, not once per job."""
        self.top = job_id
        grown = self.growth_kib.get(job_id, 0) if job_id is not None else 0
        self.region[_TOP] = _GROWER.pack(digest(job_id) if job_id is not None else _IDLE, grown)


class _Recorded:
    """Awaitable proxy of a job's coroutine: marks the region around each step it runs.

    `send` runs at every step of every job, so it has `_step_ended` written out: it touches the recorder's fields
    directly, and only a long step, every SAMPLE_EVERY-th one and a job's end call out.
    """

    __slots__ = ('_coroutine', '_job_id', '_mark', '_marked', '_recorder')

    def __init__(self, coroutine: Coroutine[Any, Any, Any], job_id: str, recorder: BlameRecorder) -> None:
        self._coroutine = coroutine
        self._job_id = job_id
        self._mark = _running_mark(job_id)
        self._marked = slice(0, len(self._mark))  # the part of the running field it overwrites
        self._recorder = recorder

    def __await__(self) -> Generator[Any, None, Any]:
        return self

    def __iter__(self) -> _Recorded:
        return self

    def send(self, value: Any = None) -> Any:
        recorder = self._recorder
        recorder.region[self._marked] = self._mark
        started = perf_counter()
        try:
            result = self._coroutine.send(value)
        except BaseException:  # StopIteration (it returned) or an exception: the job is done
            self._job_ended(started)
            raise
        recorder.region[_RUNNING_LENGTH] = _EMPTY
        recorder.steps += 1
        if recorder.steps % SAMPLE_EVERY == 0 or perf_counter() - started >= LONG_STEP_S:
            recorder.sample_peak(self._job_id)
        return result

    __next__ = send  # a step resumed without a value (most of them): no extra call

    def throw(self, *exc: Any) -> Any:
        recorder = self._recorder
        recorder.region[self._marked] = self._mark
        started = perf_counter()
        try:
            result = self._coroutine.throw(*exc)
        except BaseException:
            self._job_ended(started)
            raise
        self._step_ended(started)
        return result

    def close(self) -> None:
        self._coroutine.close()
        self._recorder.job_done(self._job_id)

    def _step_ended(self, started: float) -> None:
        recorder = self._recorder
        recorder.region[_RUNNING_LENGTH] = _EMPTY
        recorder.steps += 1
        if recorder.steps % SAMPLE_EVERY == 0 or perf_counter() - started >= LONG_STEP_S:
            recorder.sample_peak(self._job_id)

    def _job_ended(self, started: float) -> None:
        self._step_ended(started)
        if self._job_id in self._recorder.growth_kib:  # it grew the peak: the top grower may change
            self._recorder.job_done(self._job_id)


def pending_claims(region: mmap.mmap) -> list[str]:
    """The parent's side of `note_claims`: the ids a child claimed and has not reported yet (read without a lock: an
    id torn by a concurrent write is harmless, as every use of these ids is fenced by the child's lease tokens)."""
    if region.closed:
        return []
    (length,) = _LENGTH.unpack(region[_PENDING_LENGTH])
    data = bytes(region[_PENDING_START : _PENDING_START + min(length, PENDING_BYTES)])
    return [raw.decode(errors='replace') for raw in data.split(b'\n') if raw]


def _peak_rss_kib() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
