"""What the parent and its children say to each other: one dataclass per message, one `encode`, one `decode`.

Each message is one JSON object on one line of the child's socket, its kind in `type`:

  child → parent
    ready       {}                                   on_startup ran and Redis answered
    claimed     {ids}                                these in-progress leases are now held
    settled     {ids, complete, failed, retried, ongoing}
                                                     these jobs' finish or re-queue is committed, and the counters
    heartbeat   {complete, failed, retried, ongoing, held, redis_error, stats}
                                                     sent from the event loop; `stats` is metrics.JobStats on the wire
    boot_error  {error}                              the last error line before the child gives up booting
  parent → child
    drain       {wait_s}                             stop claiming, let running jobs finish within wait_s, exit
    stop        {}                                   cancel running jobs now (they are re-queued), exit

`decode` raises `ProtocolError` for anything else; the parent logs that and carries on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from arq_supervise.health import Counters
from arq_supervise.metrics import JobStats

#: the longest line the parent keeps from a child before it gives up on that child's stream
MAX_LINE_BYTES = 16 * 2**20


class ProtocolError(ValueError):
    """A line that is not a message we know: logged and skipped, never fatal."""


@dataclass(frozen=True, slots=True)
class Ready:
    type = 'ready'


@dataclass(frozen=True, slots=True)
class Claimed:
    ids: tuple[str, ...]
    type = 'claimed'


@dataclass(frozen=True, slots=True)
class Settled:
    ids: tuple[str, ...]
    counters: Counters
    type = 'settled'


@dataclass(frozen=True, slots=True)
class Heartbeat:
    counters: Counters
    held: tuple[str, ...] = ()
    redis_error: str | None = None
    stats: JobStats | None = field(default=None, compare=False)
    type = 'heartbeat'


@dataclass(frozen=True, slots=True)
class BootError:
    error: str
    type = 'boot_error'


@dataclass(frozen=True, slots=True)
class Drain:
    wait_s: float | None = None
    type = 'drain'


@dataclass(frozen=True, slots=True)
class Stop:
    type = 'stop'


ChildMessage = Ready | Claimed | Settled | Heartbeat | BootError
Command = Drain | Stop
Message = ChildMessage | Command


def encode(message: Message) -> bytes:
    """One line: the message's fields as JSON, its kind in `type`."""
    body: dict[str, Any] = {'type': message.type}
    match message:
        case Claimed(ids=ids):
            body['ids'] = list(ids)
        case Settled(ids=ids, counters=counters):
            body.update(ids=list(ids), **_counters(counters))
        case Heartbeat(counters=counters, held=held, redis_error=redis_error, stats=stats):
            body.update(_counters(counters), held=list(held), redis_error=redis_error)
            body['stats'] = stats.to_wire() if stats is not None else None
        case BootError(error=error):
            body['error'] = error
        case Drain(wait_s=wait_s):
            body['wait_s'] = wait_s
    return json.dumps(body, separators=(',', ':')).encode() + b'\n'


def decode(line: bytes) -> Message:
    """The message on one line; `ProtocolError` when it is not JSON, not an object, of no known kind or malformed."""
    try:
        body = json.loads(line)
    except ValueError as e:
        raise ProtocolError(f'not JSON: {line[:200]!r}') from e
    if not isinstance(body, dict):
        raise ProtocolError(f'not an object: {line[:200]!r}')
    parse = _PARSERS.get(str(body.get('type')))
    if parse is None:
        raise ProtocolError(f'unknown message type {body.get("type")!r}')
    try:
        return parse(body)
    except (TypeError, ValueError, AttributeError) as e:
        raise ProtocolError(f'malformed {body.get("type")} message: {e}') from e


def _counters(counters: Counters) -> dict[str, int]:
    return {'complete': counters.complete, 'failed': counters.failed, 'retried': counters.retried,
            'ongoing': counters.ongoing}  # fmt: skip


def _read_counters(body: Mapping[str, Any]) -> Counters:
    return Counters(*(_int(body.get(name)) for name in ('complete', 'failed', 'retried', 'ongoing')))


def _int(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f'{value!r} is not a number')
    return int(value)


def _ids(value: Any) -> tuple[str, ...]:
    # the types of a list at C speed: the parent reads every id its children claim and settle
    if not isinstance(value, list) or (value and set(map(type, value)) != {str}):
        raise ValueError(f'ids must be a list of strings, not {value!r}')
    return tuple(value)


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _wait_s(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f'wait_s must be a non-negative number, not {value!r}')
    return float(value)


_PARSERS: dict[str, Callable[[dict[str, Any]], Message]] = {
    'ready': lambda body: Ready(),
    'claimed': lambda body: Claimed(_ids(body.get('ids'))),
    'settled': lambda body: Settled(_ids(body.get('ids')), _read_counters(body)),
    'heartbeat': lambda body: Heartbeat(
        _read_counters(body),
        _ids(body.get('held', [])),
        _optional_str(body.get('redis_error')),
        JobStats.from_wire(body['stats']) if body.get('stats') is not None else None,
    ),
    'boot_error': lambda body: BootError(str(body.get('error'))),
    'drain': lambda body: Drain(_wait_s(body.get('wait_s'))),
    'stop': lambda body: Stop(),
}
