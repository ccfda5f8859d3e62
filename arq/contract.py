"""The Redis contract of the worker and the supervisor: typed arguments in, parsed replies out, for each script.

The Lua lives in `arq.scripts`; what each script takes and returns lives here, next to nothing else, so the worker
(async) and the supervisor's parent (sync) build the same arguments and read the same replies. The functions are
pure: the caller runs the script with its own client (`keys=..., args=...`).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .constants import (
    abort_jobs_ss,
    claim_record_prefix,
    in_progress_key_prefix,
    job_deaths_key_prefix,
    job_done_channel_prefix,
    job_key_prefix,
    recent_outcomes_key_prefix,
    recent_outcomes_ttl_ms,
    result_key_prefix,
    retry_counter_ttl_s,
    retry_key_prefix,
    wake_list_prefix,
)

_LENGTH = struct.Struct('>I')

#: `keep_result_ms` and a settlement's `result_px` say "keep the result forever" with this one value
KEEP_FOREVER_MS = 0


def lease_token(worker_id: str, claim_number: int) -> str:
    """The in-progress key's value for one claim: fences every later write of that worker to that job."""
    return f'{worker_id}:{claim_number:x}'


def parse_lease_token(token: str) -> tuple[str, int | None]:
    """(worker id, claim number) of a `lease_token`; the whole token as the worker id when it is not in that format
    (a worker id may hold colons: the claim number is the last part)."""
    worker_id, sep, claim = token.rpartition(':')
    if not sep or not worker_id or not claim:
        return token, None
    try:
        return worker_id, int(claim, 16)
    except ValueError:
        return token, None


def claim_record_key(worker_id: str, lane: int = 0) -> str:
    """Where a claim lane keeps its last claim's token and ids (lane 0 keeps the worker's original key)."""
    return f'{claim_record_prefix}{worker_id}' + (f':lane{lane}' if lane else '')


def worker_prefix(worker_id: str) -> str:
    """What every lease token of a worker starts with (how the supervisor recognises a dead child's leases)."""
    return worker_id + ':'


# --- claim ---


@dataclass(slots=True)
class Claim:
    """A job this worker holds the in-progress lease of, as the claim script returned it."""

    job_id: str
    payload: bytes | None
    job_try: int
    score: int
    aborted: bool
    token: str = ''


@dataclass(frozen=True, slots=True)
class ClaimReply:
    queued: int
    next_score: int | None
    jobs: list[Claim]


def claim_args(
    *,
    queue: str,
    worker_id: str,
    token: str,
    now_ms: int,
    lease_ms: int,
    want: int,
    read_limit: int,
    check_abort: bool,
    recover: bool,
    lane: int = 0,
) -> tuple[list[str], list[Any]]:
    args = [
        now_ms, lease_ms, want, read_limit, retry_counter_ttl_s, int(check_abort), job_key_prefix,
        in_progress_key_prefix, retry_key_prefix, abort_jobs_ss, claim_record_key(worker_id, lane), token, int(recover),
        wake_list_prefix + queue,
    ]  # fmt: skip
    return [queue], args


def parse_claim(reply: Sequence[Any], token: str) -> ClaimReply:
    jobs = [
        Claim(
            job_id=reply[i].decode(),
            payload=reply[i + 1],
            job_try=int(reply[i + 2]),
            score=int(float(reply[i + 3])),
            aborted=bool(reply[i + 4]),
            token=token,
        )
        for i in range(2, len(reply), 5)
    ]
    return ClaimReply(int(reply[0]), int(float(reply[1])) if reply[1] is not None else None, jobs)


# --- settle ---

SUCCESS, FAILURE, REQUEUE, REQUEUE_GIVE_BACK = 's', 'f', 'r', 'g'
_PACKED_OPS = {op: _LENGTH.pack(1) + op.encode() for op in (SUCCESS, FAILURE, REQUEUE, REQUEUE_GIVE_BACK)}


@dataclass(slots=True)
class Settlement:
    """How a job leaves its worker, in the order of the settle script's fields."""

    job_id: str
    op: str  # SUCCESS, FAILURE, REQUEUE or REQUEUE_GIVE_BACK
    token: str = ''
    tombstone_ms: int = 0
    result: bytes = b''
    result_px: int = KEEP_FOREVER_MS
    score_incr: int = 0
    #: the job's score when it was claimed; not sent, but a re-queue in its place is deferred from it
    score: int = 0

    @property
    def finishes(self) -> bool:
        return self.op in (SUCCESS, FAILURE)

    def packed(self) -> bytes:
        """The settle script's 7 fields of this job, each a 4-byte big-endian length and its bytes."""
        # one join of the pieces written out (a generator of 7 fields cost a settle more than its Redis call's packing)
        job_id, token, result = self.job_id.encode(), self.token.encode(), self.result
        tomb, px, incr = b'%d' % self.tombstone_ms, b'%d' % self.result_px, b'%d' % self.score_incr
        size = _LENGTH.pack
        return b''.join((
            size(len(job_id)), job_id, _PACKED_OPS[self.op], size(len(token)), token, size(len(tomb)), tomb,
            size(len(result)), result, size(len(px)), px, size(len(incr)), incr,
        ))  # fmt: skip


def settle_args(
    queue: str, batch: Sequence[Settlement], *, now_ms: int, recent_cap: int = 0
) -> tuple[list[str], list[Any]]:
    """`recent_cap` > 0 also indexes finished jobs under `arq:recent:<queue>:complete|failed` (the dashboard's)."""
    args: list[Any] = [
        job_key_prefix, in_progress_key_prefix, retry_key_prefix, result_key_prefix, abort_jobs_ss,
        job_done_channel_prefix, job_deaths_key_prefix, recent_outcomes_key_prefix + queue + ':', recent_cap,
        recent_outcomes_ttl_ms, now_ms,
    ]  # fmt: skip
    args.append(b''.join(settlement.packed() for settlement in batch))
    return [queue], args


@dataclass(frozen=True, slots=True)
class SettleReply:
    #: dropped: another worker holds the job, or nobody does and it waits to run again
    lost: list[str]
    #: dropped: settled already, by another worker's run or by this settle itself when sent again after a lost reply
    gone: list[str]


def parse_settle(reply: Sequence[Any]) -> SettleReply:
    pairs = [(_text(reply[i]), _text(reply[i + 1])) for i in range(0, len(reply), 2)]
    return SettleReply([job_id for job_id, why in pairs if why != 'g'], [job_id for job_id, why in pairs if why == 'g'])


def settle_and_claim_args(
    settle: tuple[list[str], list[Any]], claim: tuple[list[str], list[Any]]
) -> tuple[list[str], list[Any]]:
    """scripts.SETTLE_AND_CLAIM's arguments, from `settle_args(...)` and `claim_args(...)` of the same queue."""
    (keys, settle_argv), (_, claim_argv) = settle, claim
    return keys, [len(settle_argv), *settle_argv, *claim_argv]


def parse_settle_and_claim(reply: Sequence[Any], token: str) -> tuple[SettleReply, ClaimReply | None]:
    """The claim's reply is None when Redis was full (it claimed nothing: see scripts.SETTLE_AND_CLAIM)."""
    return parse_settle(reply[0]), None if reply[1] is None else parse_claim(reply[1], token)


# --- lease refresh ---


def refresh_args(queue: str, lease_ms: int, held: dict[str, str]) -> tuple[list[str], list[Any]]:
    """`held` maps each job id to its lease token."""
    args: list[Any] = [lease_ms, in_progress_key_prefix]
    for job_id, token in held.items():
        args.extend((job_id, token))
    return [queue], args


def parse_refresh(reply: Sequence[Any]) -> tuple[int, list[str]]:
    """(how many lapsed leases were taken again, the ids whose lease another worker holds now)."""
    return int(reply[0]), [_text(job_id) for job_id in reply[1:]]


def renew_for_args(lease_ms: int, holders: dict[str, str]) -> tuple[list[str], list[Any]]:
    """`holders` maps each job id to the worker id holding it (see scripts_fleet.RENEW_FOR)."""
    args: list[Any] = [lease_ms, in_progress_key_prefix]
    for job_id, worker_id in holders.items():
        args.extend((job_id, worker_prefix(worker_id)))
    return [], args


# --- release of a dead worker's jobs ---


@dataclass(frozen=True, slots=True)
class Released:
    job_id: str
    poisoned: bool  # the death made it reach the limit: the caller fails it with `token`
    deaths: int
    payload: bytes | None
    job_try: int
    token: str


def release_args(
    queue: str,
    worker_id: str | None,
    job_ids: Sequence[str],
    *,
    count_death: bool,
    max_deaths: int,
    deaths_ttl_ms: int,
    now_ms: int,
    scan_limit: int = 1000,
) -> tuple[list[str], list[Any]]:
    """Without `worker_id`, `job_ids` are released whoever holds them, and no others are looked for."""
    prefix = worker_prefix(worker_id) if worker_id is not None else ''
    scan_limit = scan_limit if worker_id is not None else 0
    args: list[Any] = [
        prefix, int(count_death), max_deaths, deaths_ttl_ms, wake_list_prefix + queue,
        in_progress_key_prefix, job_deaths_key_prefix, job_key_prefix, retry_key_prefix, scan_limit, now_ms,
        *job_ids,
    ]  # fmt: skip
    return [queue], args


def parse_release(reply: Sequence[Any]) -> list[Released]:
    return [
        Released(_text(row[0]), int(row[1]) == 2, int(row[2]), row[3], int(row[4] or 1), _text(row[5])) for row in reply
    ]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
