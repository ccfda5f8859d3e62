"""Job functions as the worker sees them (`func()`), and the error `Worker.run_check` raises.

Part of arq.worker's public names (imported there, as arq has them).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .contract import KEEP_FOREVER_MS
from .jobs import JobResult
from .typing import SecondsTimedelta, WorkerCoroutine
from .utils import import_string, to_seconds

if TYPE_CHECKING:
    from .cron import CronJob


@dataclass
class Function:
    name: str
    coroutine: WorkerCoroutine
    timeout_s: float | None
    keep_result_s: float | None
    keep_result_forever: bool | None
    max_tries: int | None


def func(
    coroutine: str | Function | WorkerCoroutine,
    *,
    name: str | None = None,
    keep_result: SecondsTimedelta | None = None,
    timeout: SecondsTimedelta | None = None,
    keep_result_forever: bool | None = None,
    max_tries: int | None = None,
) -> Function:
    """
    Wrapper for a job function which lets you configure more settings.

    :param coroutine: coroutine function to call, can be a string to import
    :param name: name for function, if None, ``coroutine.__qualname__`` is used
    :param keep_result: duration to keep the result for, if 0 the result is not kept
    :param keep_result_forever: whether to keep results forever, if None use Worker default, wins over ``keep_result``
    :param timeout: maximum time the job should take
    :param max_tries: maximum number of tries allowed for the function, use 1 to prevent retrying
    """
    if isinstance(coroutine, Function):
        return coroutine
    if isinstance(coroutine, str):
        name = name or coroutine
        coroutine_ = import_string(coroutine)
    else:
        coroutine_ = coroutine
    if not inspect.iscoroutinefunction(coroutine_):
        raise RuntimeError(f'{coroutine_!r} is not a coroutine function: job functions must be defined with async def')
    if max_tries is not None and max_tries < 1:
        raise ValueError(f'max_tries must be at least 1, got {max_tries}')
    return Function(
        name=name or coroutine_.__qualname__,
        coroutine=coroutine_,
        timeout_s=_positive_seconds(timeout, 'timeout'),
        keep_result_s=to_seconds(keep_result, 'keep_result'),
        keep_result_forever=keep_result_forever,
        max_tries=max_tries,
    )


def _positive_seconds(value: SecondsTimedelta | None, name: str) -> float | None:
    seconds = to_seconds(value, name)
    if seconds is not None and seconds <= 0:
        raise ValueError(f'{name} must be positive, got {value!r}')
    return seconds


def keep_result_ms(keep_result_s: float, keep_result_forever: bool, function: Function | CronJob | None) -> int | None:
    """
    How long to keep a job's result in ms, the function's settings winning over the worker's: None stores none,
    KEEP_FOREVER_MS keeps it forever (arq sent the invalid `PX 0` there).
    """
    if function is not None:
        if function.keep_result_forever is not None:
            keep_result_forever = function.keep_result_forever
        if function.keep_result_s is not None:
            keep_result_s = function.keep_result_s
    if keep_result_forever:
        return KEEP_FOREVER_MS
    keep_ms = int(keep_result_s * 1000)
    return keep_ms if keep_ms > 0 else None


class FailedJobs(RuntimeError):
    def __init__(self, count: int, job_results: list[JobResult]):
        self.count = count
        self.job_results = job_results

    def __str__(self) -> str:
        if self.count == 1 and self.job_results:
            return f'1 job failed {self.job_results[0].result!r}'
        return f'{self.count} jobs failed:\n' + '\n'.join(repr(r.result) for r in self.job_results)

    def __repr__(self) -> str:
        return f'<{self}>'


FailedJobs.__module__ = 'arq.worker'


def function_table(
    functions: Sequence[Function | WorkerCoroutine], cron_jobs: Sequence[CronJob]
) -> dict[str, Function | CronJob]:
    """The worker's functions by name, cron jobs included; refuses what is not a job."""
    from .cron import CronJob

    table: dict[str, Function | CronJob] = {f.name: f for f in map(func, functions)}
    for cron_job in cron_jobs:
        if not isinstance(cron_job, CronJob):
            raise TypeError(f'cron_jobs must be made with arq.cron.cron(), got {cron_job!r}')
        table[cron_job.name] = cron_job
    if not table:
        raise RuntimeError('at least one function or cron_job must be registered')
    return table
