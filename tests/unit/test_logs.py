"""arq.logs: the default config's formatter writes exactly what logging.Formatter writes, only faster."""

from __future__ import annotations

import io
import logging
import logging.config
import time

import pytest

from arq.logs import Formatter, default_log_config, log_job_line


def _record(created: float, message: str = 'm') -> logging.LogRecord:
    record = logging.LogRecord('arq.worker', logging.INFO, __file__, 1, message, None, None)
    record.created, record.msecs = created, (created - int(created)) * 1000
    return record


@pytest.mark.parametrize('datefmt', ['%H:%M:%S', '%Y-%m-%d %H:%M:%S %Z', None])
def test_the_formatter_writes_what_logging_writes_across_seconds(datefmt: str | None) -> None:
    fmt = '%(asctime)s: %(message)s'
    ours, theirs = Formatter(fmt, datefmt), logging.Formatter(fmt, datefmt)
    start = 1_700_000_000.0
    for created in (start, start + 0.5, start + 0.999, start + 1.0, start + 61.25, start + 3600.0, start + 1.5):
        record = _record(created)
        assert ours.format(record) == theirs.format(record)


def test_a_datefmt_passed_per_call_is_not_mixed_up_with_the_cached_one() -> None:
    formatter, record = Formatter(datefmt='%H:%M:%S'), _record(1_700_000_000.25)
    assert formatter.formatTime(record, '%H:%M:%S') == time.strftime('%H:%M:%S', time.localtime(record.created))
    assert formatter.formatTime(record, '%Y') == time.strftime('%Y', time.localtime(record.created))


def test_the_default_config_writes_arqs_job_lines() -> None:
    stream = io.StringIO()
    config = default_log_config(False)
    config['handlers']['arq.standard']['stream'] = stream
    logging.config.dictConfig(config)
    try:
        logging.getLogger('arq.worker').info('%6.2fs → %s()', 0.01, 'abc:noop')
        [handler] = logging.getLogger('arq').handlers
        assert isinstance(handler.formatter, Formatter)
        assert stream.getvalue().endswith(':   0.01s → abc:noop()\n')
        assert len(stream.getvalue()) == len('12:34:56:   0.01s → abc:noop()\n')
    finally:
        logging.getLogger('arq').handlers.clear()
        logging.getLogger('arq').setLevel(logging.NOTSET)


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_job_line_is_the_record_logger_info_makes_from_the_same_line() -> None:
    """Same message, level, caller (file, line, function, module) and job id; and nothing when INFO is off."""
    logger, keep = logging.getLogger('arq.test-job-line'), _Keep()
    logger.addHandler(keep)
    logger.setLevel(logging.INFO)
    try:
        # both calls on one line, so the caller's line is the same
        log_job_line(logger, '%s', 1, job_id='j1'); logger.info('%s', 1, extra={'job_id': 'j1'})  # noqa: E702  # fmt: skip
        ours, theirs = keep.records
        for name in ('name', 'levelno', 'pathname', 'filename', 'module', 'lineno', 'funcName', 'job_id', 'exc_info'):
            assert getattr(ours, name) == getattr(theirs, name), name
        assert ours.getMessage() == theirs.getMessage() == '1'
        logger.setLevel(logging.WARNING)
        log_job_line(logger, 'hidden', job_id='j2')
        assert len(keep.records) == 2
    finally:
        logger.removeHandler(keep)
        logger.setLevel(logging.NOTSET)
