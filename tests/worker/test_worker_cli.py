"""The `arq` command: --custom-log-dict, -v, and --burst overriding the settings class."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import redis

from tests.support.redis_server import RedisServer
from tests.worker.helpers import run_arq_cli, write_settings_module


def settings_source(redis_server: RedisServer, redis_db: int, queue_name: str, log_file: Path) -> str:
    return f"""
from arq.connections import RedisSettings


async def say(ctx, word):
    return word.upper()


class WorkerSettings:
    functions = [say]
    redis_settings = RedisSettings(host='127.0.0.1', port={redis_server.port}, database={redis_db})
    queue_name = {queue_name!r}
    burst = False


LOG_CONFIG = {{
    'version': 1,
    'disable_existing_loggers': False,
    'handlers': {{'file': {{'class': 'logging.FileHandler', 'filename': {str(log_file)!r}, 'formatter': 'plain'}}}},
    'formatters': {{'plain': {{'format': 'CUSTOM %(levelname)s %(message)s'}}}},
    'loggers': {{'arq': {{'handlers': ['file'], 'level': 'INFO'}}}},
}}
"""


def enqueue_raw(sync_redis: redis.Redis, queue_name: str, job_id: str) -> None:
    et = int(time.time() * 1000)
    sync_redis.psetex(
        f'arq:job:{job_id}', 60_000, pickle.dumps({'t': None, 'f': 'say', 'a': ('hi',), 'k': {}, 'et': et})
    )
    sync_redis.zadd(queue_name, {job_id: et})


def test_cli_custom_log_dict_configures_logging(
    tmp_path: Path, redis_server: RedisServer, redis_db: int, queue_name: str, sync_redis: redis.Redis
) -> None:
    log_file = tmp_path / 'arq.log'
    write_settings_module(tmp_path, 'cli_logdict', settings_source(redis_server, redis_db, queue_name, log_file))
    enqueue_raw(sync_redis, queue_name, 'logged-job')
    proc = run_arq_cli(
        ['--burst', '--custom-log-dict', 'cli_logdict.LOG_CONFIG', 'cli_logdict.WorkerSettings'], cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    lines = log_file.read_text().splitlines()
    assert any(line.startswith('CUSTOM INFO ') and '→ logged-job:say(' in line for line in lines), lines
    assert '→ logged-job' not in proc.stderr


def test_cli_burst_flag_overrides_settings_and_verbose_is_accepted(
    tmp_path: Path, redis_server: RedisServer, redis_db: int, queue_name: str, sync_redis: redis.Redis
) -> None:
    write_settings_module(
        tmp_path, 'cli_verbose', settings_source(redis_server, redis_db, queue_name, tmp_path / 'unused.log')
    )
    enqueue_raw(sync_redis, queue_name, 'verbose-job')
    proc = run_arq_cli(['--burst', '-v', 'cli_verbose.WorkerSettings'], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert pickle.loads(sync_redis.get('arq:result:verbose-job'))['r'] == 'HI'
    assert "← verbose-job:say ● 'HI'" in proc.stderr
