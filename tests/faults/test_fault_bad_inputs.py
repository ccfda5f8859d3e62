"""Fault 8: bad inputs. Each gets a clear message, and nothing else is lost.

Jobs with bad payloads, odd ids, huge arguments, unknown functions and unserialisable outcomes go through one
`arq-supervise --procs 2` fleet shared by the module: after each case the job has a failed result that says what
was wrong (or it succeeded, for inputs that are odd but valid), its keys are gone, a good job still runs, and no
worker was replaced. Bad settings, bad flags and bad Redis servers each start their own supervisor and check its
exit code and its one-line message.
"""

from __future__ import annotations

import asyncio
import pickle
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgpack
import pytest

from arq.connections import RedisSettings, create_pool
from tests.faults.harness import Fleet, RedisFactory, supervise_command
from tests.support.redis_server import RedisServer, free_port

pytestmark = pytest.mark.slow

EXTRA_JOBS = """
import threading as _threading


async def size(ctx, data):
    await _ledger(ctx)
    return len(data)


async def unpicklable_result(ctx):
    await _ledger(ctx)
    return _threading.Lock()


class HoldsALock(Exception):
    def __init__(self):
        super().__init__('an exception holding a lock')
        self.lock = _threading.Lock()


async def unpicklable_exception(ctx):
    await _ledger(ctx)
    raise HoldsALock()


WorkerSettings.functions = [*WorkerSettings.functions, size, unpicklable_result, unpicklable_exception]
"""


@dataclass
class Shared:
    fleet: Fleet
    pids: list[int]
    redis_settings: RedisSettings

    def enqueue(self, function: str, *args: Any, **kwargs: Any) -> str | None:
        async def go() -> str | None:
            pool = await create_pool(self.redis_settings)
            try:
                job = await pool.enqueue_job(function, *args, _queue_name=self.fleet.queue, **kwargs)
                return None if job is None else job.job_id
            finally:
                await pool.aclose()

        return asyncio.run(go())

    def result(self, job_id: str, timeout: float = 15) -> dict[str, Any]:
        found: dict[str, Any] = self.fleet.wait_for(
            lambda: self.fleet.result(job_id), timeout=timeout, message=f'a result for {job_id[:60]!r}'
        )
        return found

    def assert_unharmed(self, job_id: str) -> None:
        """The job's keys are gone, no worker was replaced, and a good job still runs."""
        r = self.fleet.redis
        assert r.zscore(self.fleet.queue, job_id) is None
        assert not r.exists(f'arq:job:{job_id}', f'arq:in-progress:{job_id}', f'arq:retry:{job_id}')
        assert self.fleet.children() == self.pids, 'a worker was replaced'
        probe = self.enqueue('work', 0)
        assert probe is not None
        assert self.result(probe)['s'] is True


@pytest.fixture(scope='module')
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    directory = tmp_path_factory.mktemp('bad-inputs')
    server = RedisServer(directory=directory / 'redis')
    server.start()
    fleet = Fleet(directory / 'fleet', 'bad-inputs', server.port, 0)
    try:
        fleet.start('--procs', '2', settings=fleet.write_jobs(extra=EXTRA_JOBS))
        pids = fleet.wait_ready(2)
        yield Shared(fleet, pids, RedisSettings(host='127.0.0.1', port=server.port))
        assert fleet.children() == pids, 'a worker was replaced during the bad inputs'
        assert not fleet.redis.zcard(fleet.queue)
        assert not list(fleet.redis.scan_iter(match='arq:in-progress:*')), 'an in-progress key was left behind'
    finally:
        leftovers = fleet.cleanup()
        server.stop()
    assert not leftovers, f'processes outlived the test: {leftovers}'


# --- payloads written straight into arq:job:<id> ---


def _job(**fields: Any) -> dict[str, Any]:
    return {'t': 1, 'f': 'work', 'a': (0,), 'k': {}, 'et': int(time.time() * 1000), **fields}


class _Boom:
    def __reduce__(self) -> tuple[Any, ...]:
        return (int, ('not a number',))  # raises when unpickled: pickle runs code from the payload


PAYLOADS: dict[str, tuple[bytes, str]] = {
    # name: (payload, what the worker's log line says; the failed result reads `unable to deserialize job`, as arq's)
    'garbage-bytes': (b'\x00\xff\xfe garbage \x80\x81', 'unable to deserialize job'),
    'empty': (b'', 'unable to deserialize job'),
    'truncated-pickle': (pickle.dumps(_job(a=('x' * 1000,)))[:-40], 'unable to deserialize job'),
    'msgpack-for-a-pickle-worker': (msgpack.packb(_job(a=[0])), 'unable to deserialize job'),
    'json-for-a-pickle-worker': (b'{"t": 1, "f": "work", "a": [0], "k": {}, "et": 1}', 'unable to deserialize job'),
    'pickled-list-not-dict': (pickle.dumps([1, 2, 3]), 'unable to deserialize job'),
    'missing-fields': (pickle.dumps({'f': 'work'}), "KeyError: 'a'"),
    'function-name-not-str': (pickle.dumps(_job(f=42)), 'function name is a int, not a str'),
    'args-not-a-sequence': (pickle.dumps(_job(a={'x': 1})), 'args must be a sequence'),
    'kwargs-not-a-dict': (pickle.dumps(_job(k=[1, 2])), 'kwargs a dict'),
    'enqueue-time-not-a-number': (pickle.dumps(_job(et='yesterday')), 'malformed enqueue time'),
    'job-try-not-an-int': (pickle.dumps(_job(t='first')), "or job try 'first'"),
    'pickle-of-a-missing-class': (b'cno_such_module\nThing\n)\x81.', 'unable to deserialize job'),
    'pickle-that-raises-on-load': (pickle.dumps(_job(a=(_Boom(),))), 'unable to deserialize job'),
}


@pytest.mark.parametrize('name', list(PAYLOADS))
def test_bad_payload_fails_that_job_with_a_result_that_says_so(shared: Shared, name: str) -> None:
    payload, expected = PAYLOADS[name]
    job_id = f'payload-{name}'
    r = shared.fleet.redis
    r.psetex(f'arq:job:{job_id}', 60_000, payload)
    r.zadd(shared.fleet.queue, {job_id: int(time.time() * 1000)})
    result = shared.result(job_id)
    message = f'{type(result["r"]).__name__}: {result["r"]}'
    print(f'{name}: {message}')
    assert result['s'] is False
    assert str(result['r']) == 'unable to deserialize job', message
    logged = [line for line in shared.fleet.log().splitlines() if f'deserializing job {job_id} failed' in line]
    assert logged and expected in logged[-1], logged
    assert not r.exists(f'ledger:runs:{job_id}'), 'a job with a bad payload ran'
    shared.assert_unharmed(job_id)


def test_job_id_in_the_queue_without_a_payload_fails_as_expired(shared: Shared) -> None:
    r = shared.fleet.redis
    r.zadd(shared.fleet.queue, {'payload-missing': int(time.time() * 1000)})
    result = shared.result('payload-missing')
    assert result['s'] is False and str(result['r']) == 'job expired'
    shared.assert_unharmed('payload-missing')


# --- odd but valid inputs: they must simply work ---

ODD_IDS = {
    'spaces': 'a job id with spaces',
    'control-chars': 'tab\there\nnewline\rreturn',
    'unicode': 'ünïcødé-✓-作业-🚀',
    'glob-chars': 'star*question?[brackets]',
    'colons-like-keys': 'arq:job:arq:in-progress:nested',
    'path-like': '../../etc/passwd',
    'quotes-and-lua': "'\"]]--[[ return redis.call('flushall')",
    '10-kb-long': 'x' * 10_240,
}


@pytest.mark.parametrize('name', list(ODD_IDS))
def test_odd_job_id_runs_and_its_result_is_found(shared: Shared, name: str) -> None:
    job_id = ODD_IDS[name]
    assert shared.enqueue('work', 0, _job_id=job_id) == job_id
    result = shared.result(job_id)
    assert result['s'] is True and result['r'] == 'ok'
    assert len(shared.fleet.redis.smembers(f'ledger:runs:{job_id}')) == 1
    assert shared.enqueue('work', 0, _job_id=job_id) is None, 'the finished id is still unique (arq: result kept)'
    shared.assert_unharmed(job_id)


def test_ten_megabyte_arguments_run(shared: Shared) -> None:
    data = b'\x00' * (10 * 2**20)
    job_id = shared.enqueue('size', data)
    assert job_id is not None
    result = shared.result(job_id, timeout=30)
    assert result['s'] is True and result['r'] == len(data)
    shared.assert_unharmed(job_id)


def test_defer_until_far_in_the_past_runs_now(shared: Shared) -> None:
    job_id = shared.enqueue('work', 0, _defer_until=datetime(2000, 1, 1, tzinfo=UTC))
    assert job_id is not None
    result = shared.result(job_id, timeout=5)
    assert result['s'] is True
    shared.assert_unharmed(job_id)


# --- jobs whose function or outcome is the problem ---

OUTCOMES = {
    'unknown-function': ('no_such_function', "function 'no_such_function' not found"),
    'result-not-picklable': ('unpicklable_result', 'unable to serialize result'),
    'exception-not-picklable': ('unpicklable_exception', 'unable to serialize result'),
}


@pytest.mark.parametrize('name', list(OUTCOMES))
def test_job_whose_function_or_outcome_is_bad_fails_with_a_clear_result(shared: Shared, name: str) -> None:
    function, expected = OUTCOMES[name]
    job_id = shared.enqueue(function)
    assert job_id is not None
    result = shared.result(job_id)
    assert result['s'] is False
    assert expected in str(result['r'])
    shared.assert_unharmed(job_id)


# --- bad arguments to enqueue_job: refused before anything reaches Redis ---

ENQUEUE_ARGS: dict[str, tuple[dict[str, Any], type[Exception], str]] = {
    'defer-by-a-string': ({'_defer_by': 'soon'}, TypeError, '_defer_by'),
    'defer-until-a-string': ({'_defer_until': '2030-01-01'}, TypeError, '_defer_until must be a datetime'),
    'defer-by-and-until': (
        {'_defer_by': 5, '_defer_until': datetime.now(UTC) + timedelta(seconds=5)},
        RuntimeError,
        'either',
    ),
    'expires-negative': ({'_expires': -1}, ValueError, '_expires must be positive'),
    'expires-zero': ({'_expires': 0}, ValueError, '_expires must be positive'),
}


@pytest.mark.parametrize('name', list(ENQUEUE_ARGS))
def test_bad_enqueue_arguments_are_refused_with_a_clear_error(shared: Shared, name: str) -> None:
    kwargs, error, expected = ENQUEUE_ARGS[name]
    job_id = f'refused-{name}'
    with pytest.raises(error, match=expected):
        shared.enqueue('work', 0, _job_id=job_id, **kwargs)
    assert not shared.fleet.redis.exists(f'arq:job:{job_id}')
    assert shared.fleet.redis.zscore(shared.fleet.queue, job_id) is None


# --- settings that are wrong: a supervisor of their own, an exit code and one line ---

SETTINGS_BASE = """
from arq.connections import RedisSettings
from arq.worker import func


async def work(ctx):
    return 1


class WorkerSettings:
    functions = [work]
    redis_settings = RedisSettings(host='127.0.0.1', port={port}, database={db}, conn_retries=0)
    queue_name = {queue!r}
"""

SETTINGS_CASES: dict[str, tuple[str, int, str]] = {
    # name: (appended to SETTINGS_BASE, exit code, text in the output)
    'raises-on-import': ("raise RuntimeError('settings are broken')\n", 4, 'RuntimeError: settings are broken'),
    'syntax-error': ('def broken(:\n', 4, 'SyntaxError'),
    'no-functions': ('WorkerSettings.functions = []\n', 4, 'define no functions'),
    'non-coroutine-function': (
        'def sync_job(ctx):\n    return 1\nWorkerSettings.functions = [sync_job]\n',
        4,
        'is not a coroutine function',
    ),
    'negative-function-timeout': (
        'WorkerSettings.functions = [func(work, timeout=-1)]\n',
        4,
        'timeout must be positive',
    ),
    'zero-job-timeout': ('WorkerSettings.job_timeout = 0\n', 4, 'job_timeout must be positive, got 0'),
    'negative-job-timeout': ('WorkerSettings.job_timeout = -5\n', 4, 'job_timeout must be positive, got -5'),
    'zero-max-jobs': ('WorkerSettings.max_jobs = 0\n', 4, 'max_jobs must be at least 1'),
    'startup-hook-raises': (
        "async def startup(ctx):\n    raise RuntimeError('no database')\nWorkerSettings.on_startup = startup\n",
        3,
        'RuntimeError: no database',
    ),
}


def _run_supervisor(tmp_path: Path, settings: str, *args: str, timeout: float = 40) -> subprocess.CompletedProcess[str]:
    module = f'bad_{abs(hash(settings)) % 10**8}'
    (tmp_path / f'{module}.py').write_text(settings)
    command = [*supervise_command(), '--procs', '1', '--status-file', str(tmp_path / 'status.json'), *args]
    env = Fleet(tmp_path / 'env', 'unused', 1, 0).env()
    env['PYTHONPATH'] = f'{tmp_path}:{env["PYTHONPATH"]}'
    return subprocess.run(
        [*command, f'{module}.WorkerSettings'], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=timeout, start_new_session=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.parametrize('name', list(SETTINGS_CASES))
def test_bad_settings_exit_with_their_code_and_one_clear_line(
    tmp_path: Path, redis_server: RedisServer, redis_db: int, queue_name: str, name: str
) -> None:
    extra, code, expected = SETTINGS_CASES[name]
    settings = SETTINGS_BASE.format(port=redis_server.port, db=redis_db, queue=queue_name) + extra
    done = _run_supervisor(tmp_path, settings)
    output = done.stdout + done.stderr
    last_line = output.strip().splitlines()[-2 if code == 3 else -1]
    print(f'{name}: exit {done.returncode}: {last_line}')
    assert done.returncode == code, output[-3000:]
    assert expected in last_line, output[-3000:]
    if code == 4:
        assert 'Traceback' not in output and len(output.strip().splitlines()) == 1


def test_shutdown_hook_that_raises_is_logged_and_the_exit_is_still_0(
    tmp_path: Path, redis_server: RedisServer, redis_db: int, queue_name: str
) -> None:
    settings = SETTINGS_BASE.format(port=redis_server.port, db=redis_db, queue=queue_name) + (
        "async def shutdown(ctx):\n    raise RuntimeError('cannot flush')\nWorkerSettings.on_shutdown = shutdown\n"
    )
    module_dir = tmp_path / 'fleet'
    fleet = Fleet(module_dir, queue_name, redis_server.port, redis_db)
    (module_dir / f'{fleet.module}.py').write_text(settings)
    try:
        fleet.start('--procs', '1', settings=f'{fleet.module}.WorkerSettings')
        fleet.wait_ready(1)
        fleet.signal(15)
        assert fleet.wait(timeout=15) == 0
        log = fleet.log()
        assert 'on_shutdown hook failed' in log and 'RuntimeError: cannot flush' in log
    finally:
        leftovers = fleet.cleanup()
    assert not leftovers


# --- every flag with a wrong value: exit 2, one line, no traceback ---

FLAG_CASES: dict[str, tuple[str, ...]] = {
    'procs-zero': ('--procs', '0'),
    'procs-not-a-number': ('--procs', 'many'),
    'job-completion-wait-negative': ('--job-completion-wait', '-1'),
    'job-completion-wait-not-a-number': ('--job-completion-wait', 'long'),
    'max-jobs-per-child-zero': ('--max-jobs-per-child', '0'),
    'max-memory-per-child-zero': ('--max-memory-per-child', '0'),
    'max-memory-per-child-negative': ('--max-memory-per-child', '-100'),
    'heartbeat-timeout-zero': ('--heartbeat-timeout', '0'),
    'heartbeat-timeout-below-two-beats': ('--heartbeat-timeout', '1.5'),
    'boot-timeout-zero': ('--boot-timeout', '0'),
    'health-interval-negative': ('--health-interval', '-1'),
    'status-file-is-a-directory': ('--status-file', '/'),
    'status-file-in-a-missing-directory': ('--status-file', '/nonexistent-dir/status.json'),
    'pid-file-in-a-missing-directory': ('--pid-file', '/nonexistent-dir/arq.pid'),
    'watch-missing-directory': ('--watch', '/nonexistent-dir'),
    'redis-url-wrong-scheme': ('--redis-url', 'http://127.0.0.1:6379'),
    'redis-url-bad-port': ('--redis-url', 'redis://127.0.0.1:port'),
    'metrics-port-out-of-range': ('--metrics-port', '70000'),
    'metrics-port-in-use': ('--metrics-port', '{busy_port}'),
    'log-format-unknown': ('--log-format', 'xml'),
    'unknown-flag': ('--frobnicate',),
    'settings-missing': (),
}


@pytest.fixture(scope='module')
def busy_port() -> Iterator[int]:
    listener = socket.create_server(('127.0.0.1', 0))  # loopback only; the metrics server's 0.0.0.0 overlaps it
    yield listener.getsockname()[1]
    listener.close()


@pytest.mark.parametrize('name', list(FLAG_CASES))
def test_wrong_flag_value_is_a_usage_error_on_one_line(
    tmp_path: Path, redis_server: RedisServer, busy_port: int, name: str
) -> None:
    args = [a.format(busy_port=busy_port) for a in FLAG_CASES[name]]
    settings = SETTINGS_BASE.format(port=redis_server.port, db=0, queue=f'flags-{name}')
    module = 'flag_settings'
    (tmp_path / f'{module}.py').write_text(settings)
    command = [*supervise_command(), *args]
    if name != 'settings-missing':
        command.append(f'{module}.WorkerSettings')
    env = Fleet(tmp_path / 'env', 'unused', 1, 0).env()
    env['PYTHONPATH'] = f'{tmp_path}:{env["PYTHONPATH"]}'
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30,
                          start_new_session=True, stdin=subprocess.DEVNULL)  # fmt: skip
    errors = [line for line in (done.stdout + done.stderr).splitlines() if 'Error' in line or 'ERROR' in line]
    print(f'{name}: exit {done.returncode}: {errors}')
    assert done.returncode == 2, done.stdout + done.stderr
    assert 'Traceback' not in done.stdout + done.stderr
    assert len(errors) == 1, done.stdout + done.stderr


# --- Redis that is wrong: exit 3 after three boot failures, the last error named ---


def _garbage_server() -> tuple[int, Callable[[], None]]:
    """A TCP server on loopback that answers anything with bytes that are not RESP."""
    listener = socket.create_server(('127.0.0.1', 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.settimeout(1)
                    conn.recv(4096)
                    conn.sendall(b'HTTP/1.1 400 Bad Request\r\n\r\n\x00\xff not redis')
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def close() -> None:
        stop.set()
        thread.join(timeout=5)
        listener.close()

    return listener.getsockname()[1], close


REDIS_CASES = {
    'wrong-password': 'AuthenticationError',
    'wrong-port': 'Connection refused',
    'not-redis': 'Protocol error',
}


@pytest.mark.parametrize('name', list(REDIS_CASES))
def test_wrong_redis_fails_the_boot_with_the_reason(
    tmp_path: Path, redis_servers: RedisFactory, queue_name: str, name: str
) -> None:
    close: Callable[[], None] = lambda: None  # noqa: E731
    if name == 'wrong-password':
        server = redis_servers('--requirepass', 'the-right-one')
        redis_settings = f"RedisSettings(host='127.0.0.1', port={server.port}, password='hunter2', conn_retries=0)"
    elif name == 'wrong-port':
        redis_settings = f"RedisSettings(host='127.0.0.1', port={free_port()}, conn_retries=0)"
    else:
        port, close = _garbage_server()
        redis_settings = f"RedisSettings(host='127.0.0.1', port={port}, conn_retries=0)"
    settings = (
        'from arq.connections import RedisSettings\n\n\nasync def work(ctx):\n    return 1\n\n\n'
        f'class WorkerSettings:\n    functions = [work]\n    redis_settings = {redis_settings}\n'
        f'    queue_name = {queue_name!r}\n'
    )
    try:
        started = time.monotonic()
        done = _run_supervisor(tmp_path, settings)
        took_s = time.monotonic() - started
    finally:
        close()
    output = done.stdout + done.stderr
    halt = [line for line in output.splitlines() if 'children failed to boot' in line][-1]  # the last line says it
    print(f'{name}: exit {done.returncode} after {took_s:.1f}s: {halt.split("last error: ")[-1]}')
    assert done.returncode == 3
    assert REDIS_CASES[name] in halt
    assert 'hunter2' not in output  # the password is never logged
