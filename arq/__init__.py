"""Our own arq: the arq 0.26.3 job queue (asyncio + Redis), same API and wire format, sturdier inside."""

from .connections import ArqRedis, RedisSettings, create_pool
from .cron import cron
from .jobs import Job, JobStatus
from .version import VERSION
from .worker import Retry, Worker, check_health, func, run_worker

__version__ = VERSION

__all__ = (
    'ArqRedis',
    'create_pool',
    'cron',
    'VERSION',
    'Job',
    'JobStatus',
    'func',
    'RedisSettings',
    'Retry',
    'Worker',
    'check_health',
    'run_worker',
)
