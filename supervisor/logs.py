"""Logging for the parent and its children: one event per line, every line names its process and role."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time

_context = {'role': 'supervisor'}


class _RoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.role = _context['role']
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document = {
            'ts': time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(record.created)) + f'.{int(record.msecs):03d}',
            'level': record.levelname,
            'logger': record.name,
            'pid': record.process,
            'role': getattr(record, 'role', _context['role']),
            'message': record.getMessage(),
        }
        slot = getattr(record, 'role', _context['role']).rpartition(' ')[2]
        if slot.isdigit():
            document['slot'] = int(slot)
        job_id = getattr(record, 'job_id', None)
        if job_id is not None:
            document['job_id'] = job_id
        if record.exc_info:
            document['exc'] = self.formatException(record.exc_info)
        return json.dumps(document)


def configure(log_format: str = 'text', verbose: bool = False) -> None:
    """Install one stderr handler on the root logger (children inherit it across fork)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RoleFilter())
    if log_format == 'json':
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter('%(asctime)s [%(process)d] %(role)s %(levelname)s %(name)s: %(message)s')
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def set_role(role: str) -> None:
    """Name this process in every later log line, e.g. 'worker 2' in a child."""
    _context['role'] = role


def flush() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
