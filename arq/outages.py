"""One truthful account of Redis trouble for a worker whose parts (poll loop, settles) meet it separately.

Each part reports its failures and successes under its own name. The trouble is over only when every part that met
it has succeeded since: a poll loop that reads fine while settles keep failing (a full Redis refuses writes, not
reads) must not announce `redis connection restored`, and the error a supervisor shows stays the true one.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

logger = logging.getLogger('arq.worker')


class RedisOutages:
    def __init__(self) -> None:
        self._errors: dict[str, str] = {}  # part -> its last error, while it is failing

    @property
    def error(self) -> str | None:
        """The current error ('ConnectionError: ...'), or None when every part works."""
        return next(iter(self._errors.values()), None)

    def failed(self, part: str, error: BaseException, retry_in_s: float) -> None:
        """Log an error once when it starts or changes (then at debug level while it persists)."""
        text = f'{error.__class__.__name__}: {error}'
        known = text in self._errors.values()
        self._errors[part] = text
        log = logger.debug if known else logger.warning
        log('redis error in %s, %s; retrying in %0.1fs', part, text, retry_in_s)

    def succeeded(self, part: str) -> None:
        if self._errors.pop(part, None) is not None and not self._errors:
            logger.info('redis connection restored')


class LoopBackoff:
    """The worker loop's wait after a failed turn: doubling from START_S up to MAX_S, reset by a good turn."""

    START_S, MAX_S = 0.1, 5.0
    #: errors that mean "Redis trouble: back off and try again"; any other is a bug or bad data, logged in full
    TRANSIENT = (RedisError, OSError, asyncio.TimeoutError)

    def __init__(self, outages: RedisOutages, part: str) -> None:
        self.outages = outages
        self.part = part
        self.wait_s = self.START_S

    def failed(self, error: Exception) -> float:
        """Report `error` (never raised: it must not kill the worker and its jobs); returns how long to wait."""
        wait_s = self.wait_s
        if isinstance(error, self.TRANSIENT):
            self.outages.failed(self.part, error, wait_s)
        else:
            logger.exception('unexpected error in the %s; carrying on in %0.1fs', self.part, wait_s, exc_info=error)
        self.wait_s = min(wait_s * 2, self.MAX_S)
        return wait_s

    def succeeded(self) -> None:
        self.outages.succeeded(self.part)
        self.wait_s = self.START_S
