"""One truthful account of Redis trouble for a worker whose parts (poll loop, settles) meet it separately.

Each part reports its failures and successes under its own name. The trouble is over only when every part that met
it has succeeded since: a poll loop that reads fine while settles keep failing (a full Redis refuses writes, not
reads) must not announce `redis connection restored`, and the error a supervisor shows stays the true one.
"""

from __future__ import annotations

import logging

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
