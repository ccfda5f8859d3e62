"""The supervisor's text log lines: logging's own format, made cheaper (role in the format, time once a second)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from arq_supervise import logs
from arq_supervise.logs import TextFormatter


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logs.set_role('supervisor')


@pytest.mark.parametrize('created', [1700000000.0005, 1700000000.9996, 1700000001.999, 1700000002.5])
def test_text_lines_are_those_of_loggings_formatter(created: float) -> None:
    record = logging.LogRecord('arq.worker', logging.INFO, 'x.py', 1, '%6.2fs → %s', (0.5, 'j:f'), None)
    record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0
    plain = logging.Formatter('%(asctime)s [%(process)d] worker 1 %(levelname)s %(name)s: %(message)s')
    ours = TextFormatter('worker 1')
    assert ours.format(record) == plain.format(record)
    assert ours.format(record) == plain.format(record)  # the second time from the cached second


def test_set_role_names_the_process_in_later_text_lines(restore_root: None) -> None:
    logs.configure('text')
    stream = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    logging.getLogger('arq.worker').info('before')
    logs.set_role('worker 3')
    logging.getLogger('arq.worker').info('after %d%%', 100)
    before, after = stream.getvalue().splitlines()
    assert ' supervisor INFO arq.worker: before' in before
    assert ' worker 3 INFO arq.worker: after 100%' in after
