"""Logging for the parent and its children: one event per line, every line names its process and role."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from datetime import datetime
from typing import Any

from pythonjsonlogger import json as jsonlogger
from pythonjsonlogger.core import RESERVED_ATTRS

_context = {'role': 'supervisor'}
#: the handler configure() installed, whose text format names the role
_context_handler: dict[str, logging.Handler] = {}


class _RoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.role = _context['role']
        return True


class TextFormatter(logging.Formatter):
    """`logging.Formatter`'s own lines, for less: the role is part of the format (not set on every record by a
    filter), and the time is formatted once a second (a supervised child logs two lines per job at INFO)."""

    def __init__(self, role: str) -> None:
        super().__init__(f'%(asctime)s [%(process)d] {role.replace("%", "%%")} %(levelname)s %(name)s: %(message)s')
        self._second: int | None = None
        self._time_text = ''

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._time_text = time.strftime(self.default_time_format, self.converter(record.created))
        return f'{self._time_text},{int(record.msecs):03d}'  # as logging's default_msec_format '%s,%03d'


class JsonFormatter(jsonlogger.JsonFormatter):
    """One JSON object per record: the usual fields, then every `extra` the record carries (arq's `job_id`, a
    failed job's exception extras, ...); `ts` is ISO 8601 local time with its UTC offset."""

    def __init__(self) -> None:
        super().__init__(
            '%(levelname)s %(name)s %(process)d %(message)s',
            rename_fields={'levelname': 'level', 'name': 'logger', 'process': 'pid', 'exc_info': 'exc'},
            reserved_attrs=[*RESERVED_ATTRS, 'role'],
            json_default=repr,
            json_ensure_ascii=False,
        )

    def add_fields(self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_record['ts'] = datetime.fromtimestamp(record.created).astimezone().isoformat(timespec='milliseconds')
        super().add_fields(log_record, record, message_dict)
        role = getattr(record, 'role', _context['role'])
        log_record['role'] = role
        slot = role.rpartition(' ')[2]
        if slot.isdigit():
            log_record['slot'] = int(slot)


def configure(log_format: str = 'text', verbose: bool = False) -> None:
    """Install one stderr handler on the root logger (children inherit it across fork)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == 'json':
        handler.addFilter(_RoleFilter())
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(_context['role']))
    _context_handler['handler'] = handler
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def set_role(role: str) -> None:
    """Name this process in every later log line, e.g. 'worker 2' in a child."""
    _context['role'] = role
    handler = _context_handler.get('handler')
    if handler is not None and isinstance(handler.formatter, TextFormatter):
        handler.setFormatter(TextFormatter(role))


def flush() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
