"""arq's logging setup (`arq` and `arq-supervise` apply it), and cheaper ways to the very same job lines."""

from __future__ import annotations

import logging
import sys
from typing import Any


def log_job_line(logger: logging.Logger, msg: str, *args: object, job_id: str) -> None:
    """`logger.info(msg, *args, extra={'job_id': job_id})` from the caller's line: the same record through the same
    handlers, without logging's caller lookup (a walk up the stack per record, an eighth of a job line's cost; a
    worker writes two lines per job). The caller is always the frame right above."""
    if not logger.isEnabledFor(logging.INFO):
        return
    caller = sys._getframe(1)
    code = caller.f_code
    record = logger.makeRecord(
        logger.name, logging.INFO, code.co_filename, caller.f_lineno, msg, args, None, code.co_name, {'job_id': job_id}
    )
    logger.handle(record)


class Formatter(logging.Formatter):
    """`logging.Formatter`, with each second's `%(asctime)s` formatted once.

    A `datefmt` is applied by `time.strftime`, which has no field finer than a second, so the text is the same for
    every record of one second; formatting it (localtime and strftime) was a tenth of a job line's cost at INFO, and
    a worker writes two lines per job. Without `datefmt` (milliseconds are appended) every record is formatted.
    """

    _cached: tuple[int, str | None, str] = (-1, None, '')

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's)
        if datefmt is None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        cached_second, cached_fmt, text = self._cached
        if cached_second != second or cached_fmt != datefmt:
            text = super().formatTime(record, datefmt)
            self._cached = (second, datefmt, text)
        return text


def default_log_config(verbose: bool) -> dict[str, Any]:
    """
    Setup default config. for dictConfig.

    :param verbose: level: DEBUG if True, INFO if False
    :return: dict suitable for ``logging.config.dictConfig``
    """
    log_level = 'DEBUG' if verbose else 'INFO'
    return {
        'version': 1,
        'disable_existing_loggers': False,
        'handlers': {
            'arq.standard': {'level': log_level, 'class': 'logging.StreamHandler', 'formatter': 'arq.standard'}
        },
        'formatters': {
            'arq.standard': {'format': '%(asctime)s: %(message)s', 'datefmt': '%H:%M:%S', 'class': 'arq.logs.Formatter'}
        },
        'loggers': {'arq': {'handlers': ['arq.standard'], 'level': log_level}},
    }
