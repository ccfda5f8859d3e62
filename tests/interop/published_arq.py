"""Drive the published arq 0.26.3 from its own virtual environment; the interop tests run this as a subprocess.

    python published_arq.py REDIS_PORT DB QUEUE COMMAND [JSON]

Commands (JSON argument and output on stdout):
  enqueue  [{"function", "args", "kwargs", "job_id", "defer_by", "serializer"}...]  -> [job_id or null, ...]
  results  {"ids": [...], "timeout": s, "serializer": "pickle"|"msgpack"}            -> {id: outcome}
  status   {"ids": [...]}                                                             -> {id: status}
  abort    {"id": ..., "timeout": s}                                                  -> true/false
  worker   {"burst": bool, "max_jobs": n, "health_check_key": k, "cron_second": s,
            "serializer": ..., "poll_delay": s, "allow_abort_jobs": bool,
            "retry_jobs": bool}                                                       -> {"complete": n, ...}
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

# the repository root goes at the END of sys.path: `tests.interop.interop_jobs` becomes importable while `arq`
# still resolves to the published package installed in this virtual environment
sys.path.append(str(Path(__file__).resolve().parents[2]))

import arq  # noqa: E402
from arq.connections import RedisSettings, create_pool  # noqa: E402
from arq.jobs import Job  # noqa: E402

if arq.VERSION != '0.26.3' or 'site-packages' not in arq.__file__:
    raise SystemExit(f'expected the published arq 0.26.3, imported {arq.VERSION} from {arq.__file__}')


def serializers(name: str | None) -> dict[str, Any]:
    if name == 'msgpack':
        import msgpack

        return {'job_serializer': msgpack.packb, 'job_deserializer': functools.partial(msgpack.unpackb, raw=False)}
    return {}


def describe(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


def outcome(exc: BaseException) -> dict[str, Any]:
    cls = type(exc)
    out = {'ok': False, 'type': f'{cls.__module__}.{cls.__qualname__}', 'str': str(exc), 'args': describe(exc.args)}
    if hasattr(exc, 'defer_score'):
        out['defer_score'] = exc.defer_score
    return out


async def main(port: int, db: int, queue: str, command: str, arg: Any) -> Any:
    settings = RedisSettings(host='127.0.0.1', port=port, database=db)
    if command == 'worker':
        return await run_worker(settings, queue, arg)
    ser = serializers(arg.get('serializer') if isinstance(arg, dict) else None)
    pool = await create_pool(settings, default_queue_name=queue, **ser)
    try:
        if command == 'enqueue':
            out = []
            for spec in arg:
                pool.job_serializer = serializers(spec.get('serializer')).get('job_serializer')
                defer_by = spec.get('defer_by')
                job = await pool.enqueue_job(
                    spec['function'],
                    *spec.get('args', []),
                    _job_id=spec.get('job_id'),
                    _defer_by=timedelta(seconds=defer_by) if defer_by else None,
                    **spec.get('kwargs', {}),
                )
                out.append(job.job_id if job else None)
            return out
        if command == 'results':
            results = {}
            for job_id in arg['ids']:
                job = Job(job_id, pool, _queue_name=queue, _deserializer=ser.get('job_deserializer'))
                try:
                    value = await job.result(timeout=arg.get('timeout', 10), poll_delay=0.05)
                except BaseException as e:  # noqa: BLE001 - the outcome is what the test looks at
                    results[job_id] = outcome(e)
                else:
                    results[job_id] = {'ok': True, 'value': describe(value)}
                info = await job.result_info()
                if info is not None:
                    results[job_id].update(
                        job_try=info.job_try,
                        success=info.success,
                        function=info.function,
                        queue_name=info.queue_name,
                        result_job_id=info.job_id,
                        enqueue_time=info.enqueue_time.astimezone(UTC).isoformat(),
                    )
            return results
        if command == 'status':
            return {job_id: (await Job(job_id, pool, _queue_name=queue).status()).value for job_id in arg['ids']}
        if command == 'abort':
            return await Job(arg['id'], pool, _queue_name=queue).abort(timeout=arg.get('timeout', 10), poll_delay=0.05)
        raise SystemExit(f'unknown command {command}')
    finally:
        await pool.aclose()


async def run_worker(settings: RedisSettings, queue: str, arg: dict[str, Any]) -> dict[str, int]:
    from arq.cron import cron
    from arq.worker import Worker
    from tests.interop import interop_jobs

    cron_jobs = None
    if arg.get('cron_second') is not None:
        cron_jobs = [cron(interop_jobs.cron_tick, second=arg['cron_second'], microsecond=0)]
    worker = Worker(
        functions=interop_jobs.FUNCTIONS,
        cron_jobs=cron_jobs,
        queue_name=queue,
        redis_settings=settings,
        burst=arg.get('burst', True),
        poll_delay=arg.get('poll_delay', 0.05),
        max_jobs=arg.get('max_jobs', 10),
        health_check_key=arg.get('health_check_key'),
        allow_abort_jobs=arg.get('allow_abort_jobs', False),
        retry_jobs=arg.get('retry_jobs', True),
        **serializers(arg.get('serializer')),
    )
    try:
        await worker.async_run()  # a SIGTERM cancels it (non-burst workers are stopped that way)
    finally:
        counts = {'complete': worker.jobs_complete, 'failed': worker.jobs_failed, 'retried': worker.jobs_retried}
        await worker.close()
    return counts


if __name__ == '__main__':
    port_, db_, queue_, command_ = sys.argv[1:5]
    arg_ = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
    result = asyncio.run(main(int(port_), int(db_), queue_, command_, arg_))
    print(json.dumps(result))
