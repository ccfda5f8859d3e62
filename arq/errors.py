"""The exceptions a job function raises to steer its own outcome, and the one a failed job is stored with.

arq.worker exports them, as arq does; the published arq pickles them under `arq.worker`, so they keep that module
path and results are readable both ways.
"""

from __future__ import annotations

from typing import Any

from .typing import SecondsTimedelta
from .utils import to_ms


class Retry(RuntimeError):
    """
    Special exception to retry the job (if ``max_retries`` hasn't been reached).

    :param defer: duration to wait before rerunning the job
    """

    def __init__(self, defer: SecondsTimedelta | None = None):
        self.defer_score: int | None = to_ms(defer, 'defer')

    def __repr__(self) -> str:
        return f'<Retry defer {(self.defer_score or 0) / 1000:0.2f}s>'

    def __str__(self) -> str:
        return repr(self)


class JobExecutionFailed(RuntimeError):
    def __eq__(self, other: Any) -> bool:
        if isinstance(other, JobExecutionFailed):
            return self.args == other.args
        return False

    def __hash__(self) -> int:
        return hash(self.args)


class RetryJob(RuntimeError):
    pass


for _cls in (Retry, JobExecutionFailed, RetryJob):
    _cls.__module__ = 'arq.worker'
