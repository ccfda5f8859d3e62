"""Restart policy: capped exponential backoff per slot and the boot-failure streak. Pure functions of time."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Delay before re-spawning a slot whose child crashed `failures` times in a row.

    The first crash is replaced at once (a single OOM kill should cost no time); later ones wait
    `base_s * 2**(failures - 2)`, capped at `max_s`. A child that stays READY for `stable_s` clears the slot's record.
    """

    base_s: float = 0.5
    max_s: float = 30.0
    stable_s: float = 30.0

    def delay_s(self, failures: int) -> float:
        if failures <= 1:
            return 0.0
        return float(min(self.base_s * 2 ** (failures - 2), self.max_s))


@dataclass(frozen=True, slots=True)
class SlotHistory:
    """What a slot remembers across its children: consecutive crashes and when it may spawn again."""

    failures: int = 0
    restarts: int = 0
    not_before: float = 0.0
    last_exit: str | None = None


def after_exit(
    policy: BackoffPolicy,
    history: SlotHistory,
    *,
    now: float,
    ready_at: float | None,
    crashed: bool,
    description: str,
    productive: bool = False,
) -> SlotHistory:
    """The slot's history once its child has exited at `now`.

    :param ready_at: when the child became READY (None if it never did)
    :param crashed: False for exits we asked for (drain, recycle, scale-down), which never delay a respawn
    :param productive: the child finished a job after it became READY. Its death is not a crash loop (those never
      get that far), so the slot starts over: replaced at once, like a first crash. Without this, a fleet whose
      children are killed now and then (the OOM killer, an operator) backs off to 30 s per slot and stops working.
    """
    failures = history.failures
    if productive or (ready_at is not None and now - ready_at >= policy.stable_s):
        failures = 0
    if not crashed:
        return replace(history, failures=failures, not_before=now, last_exit=description)
    failures += 1
    return SlotHistory(
        failures=failures,
        restarts=history.restarts + 1,
        not_before=now + policy.delay_s(failures),
        last_exit=description,
    )


def recycle_limit(max_jobs: int, jitter: float, rng: random.Random | None = None) -> int:
    """Jobs after which one child is recycled: `max_jobs` raised by a random fraction up to `jitter`."""
    spread = int(max_jobs * max(jitter, 0.0))
    return max_jobs + (rng or random).randint(0, spread) if spread else max_jobs


def should_halt(consecutive_boot_failures: int, limit: int) -> bool:
    """Whether boot failures in a row (any slot, no READY child in between) mean the setup is broken."""
    return consecutive_boot_failures >= limit
